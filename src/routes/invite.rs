//! `GET /w/invite/{token}`: the link the elder taps. Only ever redirects to
//! the business's own wa.me address. The click is logged without making the
//! redirect wait for a disk write, and only a browser a person uses counts
//! as a person opening the link.

use crate::clicks::Click;
use crate::clock::now_ms;
use crate::db::sql::OptionalExtension;
use crate::db::DbError;
use crate::domain::{InviteToken, OrderId};
use crate::error::AppError;
use crate::links;
use crate::metrics::Metrics;
use crate::state::AppState;
use crate::token_cache::CachedToken;
use rocket::http::{ContentType, Header, Status};
use rocket::request::{FromRequest, Outcome, Request};
use rocket::response::{self, Responder, Response};
use rocket::{get, head, routes, State};
use std::io::Cursor;
use std::sync::Arc;

pub fn routes() -> Vec<rocket::Route> {
    routes![invite, invite_head]
}

const NOT_FOUND_PAGE: &str = include_str!("../../static/invite_not_found.html");
const EXPIRED_PAGE: &str = include_str!("../../static/invite_expired.html");

/// Link-preview fetchers: WhatsApp itself fetches the link when it is
/// forwarded, so these clicks are not people.
const PREVIEW_AGENTS: [&str; 10] = [
    "whatsapp/",
    "facebookexternalhit",
    "facebookcatalog",
    "facebot",
    "telegrambot",
    "twitterbot",
    "slackbot",
    "discordbot",
    "linkedinbot",
    "skypeuripreview",
];

/// For each byte, the agents whose name starts with it (either case), as
/// bits: most bytes of a browser's `User-Agent` start none.
const PREVIEW_STARTS: [u16; 256] = {
    let mut starts = [0u16; 256];
    let mut i = 0;
    while i < PREVIEW_AGENTS.len() {
        let b = PREVIEW_AGENTS[i].as_bytes()[0];
        starts[b as usize] |= 1 << i;
        starts[b.to_ascii_uppercase() as usize] |= 1 << i;
        i += 1;
    }
    starts
};

/// Whether any of `PREVIEW_AGENTS` is in the text, ASCII case ignored. Read
/// in place, once per redirect: lowercasing a copy and searching it ten
/// times was 1,800 instructions of a redirect's 118,000 under callgrind.
pub fn is_preview_fetcher(user_agent: &str) -> bool {
    let ua = user_agent.as_bytes();
    ua.iter().enumerate().any(|(i, &c)| {
        let mut agents = PREVIEW_STARTS[usize::from(c)];
        while agents != 0 {
            let p = PREVIEW_AGENTS[agents.trailing_zeros() as usize].as_bytes();
            if ua
                .get(i..i + p.len())
                .is_some_and(|w| w.eq_ignore_ascii_case(p))
            {
                return true;
            }
            agents &= agents - 1;
        }
        false
    })
}

/// Whether a request is a person's browser opening the link. No
/// browser a person uses sends `HEAD` to follow a link or leaves out its
/// `User-Agent`; those are monitors, scanners and scripts, so they are
/// answered like anyone else but never set the funnel's "link opened".
pub fn is_person(method_is_head: bool, user_agent: Option<&str>) -> bool {
    !method_is_head && user_agent.is_some_and(|ua| !ua.trim().is_empty() && !is_preview_fetcher(ua))
}

pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn html(status: Status, body: String) -> Response<'static> {
    Response::build()
        .status(status)
        .header(ContentType::HTML)
        .header(Header::new("Cache-Control", "no-store"))
        .sized_body(body.len(), Cursor::new(body))
        .finalize()
}

pub fn not_found_page() -> Response<'static> {
    html(Status::NotFound, NOT_FOUND_PAGE.to_owned())
}

fn expired_page(business_number: &str) -> Response<'static> {
    let chat = escape_html(&links::wa_me_chat(business_number));
    html(Status::Gone, EXPIRED_PAGE.replace("{{chat_link}}", &chat))
}

pub struct UserAgent(Option<String>);

/// The first 512 characters of a `User-Agent`, as stored with a click. A
/// text of at most 512 bytes has no more, and is copied whole rather than a
/// character at a time (once per redirect).
fn first_512_chars(text: &str) -> String {
    if text.len() <= 512 {
        return text.to_owned();
    }
    match text.char_indices().nth(512) {
        Some((end, _)) => text[..end].to_owned(),
        None => text.to_owned(),
    }
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for UserAgent {
    type Error = std::convert::Infallible;
    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, Self::Error> {
        Outcome::Success(UserAgent(
            req.headers().get_one("User-Agent").map(first_512_chars),
        ))
    }
}

pub enum InviteAnswer {
    Redirect(String),
    Page(Response<'static>),
    Error(AppError),
}

impl<'r> Responder<'r, 'static> for InviteAnswer {
    fn respond_to(self, req: &'r Request<'_>) -> response::Result<'static> {
        match self {
            InviteAnswer::Redirect(location) => Ok(Response::build()
                .status(Status::Found)
                .header(Header::new("Location", location))
                .header(Header::new("Cache-Control", "no-store"))
                .finalize()),
            InviteAnswer::Page(page) => Ok(page),
            InviteAnswer::Error(e) => e.respond_to(req),
        }
    }
}

struct Found {
    token_id: String,
    order_id: String,
    expires_at: i64,
}

#[get("/w/invite/<token>")]
async fn invite(
    token: &str,
    user_agent: UserAgent,
    state: &State<AppState>,
    metrics: &State<Arc<Metrics>>,
) -> InviteAnswer {
    answer(token, false, user_agent, state, metrics).await
}

/// Rocket would answer `HEAD` through the `GET` route, but by then the
/// request reads as a `GET`: this route keeps the method known.
#[head("/w/invite/<token>")]
async fn invite_head(
    token: &str,
    user_agent: UserAgent,
    state: &State<AppState>,
    metrics: &State<Arc<Metrics>>,
) -> InviteAnswer {
    answer(token, true, user_agent, state, metrics).await
}

async fn answer(
    token: &str,
    head: bool,
    user_agent: UserAgent,
    state: &AppState,
    metrics: &Metrics,
) -> InviteAnswer {
    let Some(token) = InviteToken::parse(token) else {
        return InviteAnswer::Page(not_found_page());
    };
    let found = match state.tokens.get(&token.uuid()) {
        Some(t) => Ok(Some(Found {
            token_id: t.token_id.into(),
            order_id: t.order_id.into(),
            expires_at: t.expires_at,
        })),
        None => lookup(token.as_string(), state).await,
    };
    let found = match found {
        Ok(Some(found)) => found,
        Ok(None) => return InviteAnswer::Page(not_found_page()),
        Err(e) => return InviteAnswer::Error(AppError::Unavailable(e.to_string())),
    };
    let now = now_ms();
    let business = &state.config.business_number;
    if found.expires_at <= now {
        return InviteAnswer::Page(expired_page(business));
    }
    let Ok(order) = OrderId::parse(&found.order_id) else {
        return InviteAnswer::Page(not_found_page());
    };
    // Recorded all the same (someone fetched the link), as a click that is
    // not a person's: the same column that sets preview fetchers apart.
    let preview = !is_person(head, user_agent.0.as_deref());
    metrics.invite_click(preview);
    state.clicks.record(Click {
        token_id: found.token_id,
        order_id: found.order_id,
        at: now,
        user_agent: user_agent.0,
        preview,
    });
    InviteAnswer::Redirect(links::wa_me_link(business, &order, &token))
}

/// A token not in memory yet, read on a blocking thread and remembered when
/// found.
async fn lookup(stored: String, state: &AppState) -> Result<Option<Found>, DbError> {
    let key = stored.clone();
    let found = state
        .db
        .reads
        .read(move |c| {
            let row = c
                .prepare_cached(
                    "SELECT id, order_id, expires_at FROM whatsapp_tokens WHERE token = $1",
                )?
                .query_row([&stored], |r| {
                    Ok(Found {
                        token_id: r.get(0)?,
                        order_id: r.get(1)?,
                        expires_at: r.get(2)?,
                    })
                })
                .optional()?;
            Ok::<_, DbError>(row)
        })
        .await?;
    if let (Some(f), Some(token)) = (&found, InviteToken::parse(&key)) {
        state.tokens.insert(
            token.uuid(),
            CachedToken {
                token_id: f.token_id.as_str().into(),
                order_id: f.order_id.as_str().into(),
                expires_at: f.expires_at,
            },
        );
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preview_fetchers_are_recognised() {
        assert!(is_preview_fetcher("WhatsApp/2.23.20.0 A"));
        assert!(is_preview_fetcher(
            "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)"
        ));
        assert!(!is_preview_fetcher(
            "Mozilla/5.0 (Linux; Android 14) AppleWebKit/537.36 Chrome/120 Mobile Safari/537.36"
        ));
    }

    proptest::proptest! {
        /// The same answer as lowercasing the text and searching it for
        /// each agent: any text, and texts holding an agent's name in
        /// any case.
        #[test]
        fn preview_fetchers_are_found_as_a_lowercase_search_finds_them(
            before in ".{0,40}",
            after in ".{0,40}",
            agent in 0..PREVIEW_AGENTS.len(),
            upper in proptest::collection::vec(proptest::bool::ANY, 32),
            with_agent in proptest::bool::ANY,
        ) {
            let name: String = PREVIEW_AGENTS[agent]
                .chars()
                .zip(upper.iter().cycle())
                .map(|(c, &up)| if up { c.to_ascii_uppercase() } else { c })
                .collect();
            let text = if with_agent { format!("{before}{name}{after}") } else { format!("{before}{after}") };
            let lower = text.to_ascii_lowercase();
            let expected = PREVIEW_AGENTS.iter().any(|p| lower.contains(p));
            proptest::prop_assert_eq!(is_preview_fetcher(&text), expected, "{:?}", text);
        }
    }

    #[test]
    fn only_a_get_with_a_browser_user_agent_is_a_person() {
        let browser = "Mozilla/5.0 (Linux; Android 14) Chrome/120 Mobile Safari/537.36";
        assert!(is_person(false, Some(browser)));
        assert!(!is_person(true, Some(browser)));
        assert!(!is_person(false, None));
        assert!(!is_person(false, Some("  ")));
        assert!(!is_person(false, Some("WhatsApp/2.23.20.0 A")));
    }

    #[test]
    fn a_user_agent_is_kept_to_its_first_512_characters() {
        let browser = "Mozilla/5.0 (Linux; Android 14) Chrome/120 Mobile Safari/537.36";
        assert_eq!(first_512_chars(browser), browser);
        assert_eq!(first_512_chars(&"a".repeat(600)), "a".repeat(512));
        // 300 two-byte characters: more than 512 bytes, fewer than 512 characters.
        assert_eq!(first_512_chars(&"é".repeat(300)), "é".repeat(300));
        assert_eq!(first_512_chars(&"é".repeat(600)), "é".repeat(512));
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            escape_html(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
