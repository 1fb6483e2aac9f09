//! The merchant's page at `/admin` (SPEC §12): sign-in, overview, orders,
//! one order's timeline, dead letters with a retry button, elder chats.
//! Reads go through `admin_view`, the JSON API's own query layer; the retry
//! button runs `outbox::requeue`, the JSON retry's path. Without
//! `ADMIN_TOKEN` every page is 404, like the API.

use super::admin_page_session::{self as session, Session, Throttle, COOKIE, SESSION_TTL};
use super::admin_page_views as views;
use crate::admin_view::chats::latest_chats;
use crate::admin_view::messages::messages_with_status;
use crate::admin_view::order::{order_timeline, order_view};
use crate::admin_view::orders::{orders_list, OrdersQuery, ORDERS_DEFAULT_LIMIT};
use crate::admin_view::overview::{paid_per_day, queue_depth, Overview};
use crate::clock::now_ms;
use crate::db::MayRunTwice;
use crate::error::AppError;
use crate::state::AppState;
use maud::Markup;
use rocket::form::{Form, FromForm};
use rocket::http::uri::{fmt::Path, Segments};
use rocket::http::{ContentType, Cookie, CookieJar, SameSite, Status};
use rocket::request::{FromRequest, Outcome, Request};
use rocket::response::{self, Redirect, Responder, Response};
use rocket::{get, post, routes, State};
use std::io::Cursor;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn routes() -> Vec<rocket::Route> {
    routes![
        overview,
        sign_in_form,
        sign_in,
        sign_out,
        orders,
        order,
        dead_letters,
        retry,
        chats,
        asset
    ]
}

/// What the page needs beyond `AppState`.
#[derive(Default)]
pub struct PageState {
    pub throttle: Throttle,
    pub overview: Arc<OverviewCache>,
}

/// How long the overview's funnel and costs are shown without a recount.
const OVERVIEW_FRESH: Duration = Duration::from_secs(10);

/// The overview's funnel and costs, counted at most every
/// [`OVERVIEW_FRESH`]. Each count is an index range scan, but a month of a
/// busy shop is a hundred thousand index entries per step: tens of
/// milliseconds. So a view older than that is shown once more while a
/// background read recounts (stale-while-revalidate): only the first view
/// after start waits for the count. The queue is always read live.
#[derive(Default)]
pub struct OverviewCache {
    state: Mutex<CacheState>,
}

#[derive(Default)]
struct CacheState {
    snapshot: Option<Arc<Snapshot>>,
    refreshing: bool,
}

pub struct Snapshot {
    pub counted_at: i64,
    taken: Instant,
    pub overview: Overview,
    /// Paid messages per day of the last 30 in the merchant's zone:
    /// (day start, count), oldest first.
    pub paid_by_day: Vec<(i64, i64)>,
}

impl OverviewCache {
    fn store(&self, snapshot: Snapshot) {
        let mut state = self.state.lock().expect("overview cache lock");
        state.snapshot = Some(Arc::new(snapshot));
        state.refreshing = false;
    }

    fn failed(&self) {
        self.state.lock().expect("overview cache lock").refreshing = false;
    }
}

fn count_overview(
    c: &crate::db::Conn,
    zone: &crate::domain::AdminZone,
) -> Result<Snapshot, crate::db::DbError> {
    let now = now_ms();
    let day = 86_400_000;
    let days = zone.day_starts(now, 30);
    // "Today" begins at midnight where the merchant is (ADMIN_TIME_ZONE).
    let midnight = days.last().copied().unwrap_or(now - now.rem_euclid(day));
    let windows = [
        (views::PERIODS[0].1, midnight),
        (views::PERIODS[1].1, now - 7 * day),
        (views::PERIODS[2].1, now - 30 * day),
    ];
    let paid = paid_per_day(c, &days)?;
    Ok(Snapshot {
        counted_at: now,
        taken: Instant::now(),
        overview: crate::admin_view::overview::overview(c, &windows)?,
        paid_by_day: days.into_iter().zip(paid).collect(),
    })
}

async fn overview_snapshot(
    cache: &Arc<OverviewCache>,
    reads: &crate::db::ReadPool,
    zone: &crate::domain::AdminZone,
) -> Result<Arc<Snapshot>, PageError> {
    let (snapshot, refresh) = {
        let mut state = cache.state.lock().expect("overview cache lock");
        match state.snapshot.clone() {
            Some(s) if s.taken.elapsed() < OVERVIEW_FRESH => (Some(s), false),
            Some(s) => {
                let refresh = !std::mem::replace(&mut state.refreshing, true);
                (Some(s), refresh)
            }
            None => (None, false),
        }
    };
    if refresh {
        let cache = cache.clone();
        let reads = reads.clone();
        let zone = zone.clone();
        rocket::tokio::spawn(async move {
            match reads.read(move |c| count_overview(c, &zone)).await {
                Ok(s) => cache.store(s),
                Err(e) => {
                    log::error!("admin page: cannot count the overview: {e}");
                    cache.failed();
                }
            }
        });
    }
    match snapshot {
        Some(s) => Ok(s),
        None => {
            let zone = zone.clone();
            let s = reads.read(move |c| count_overview(c, &zone)).await?;
            cache.store(s);
            Ok(cache
                .state
                .lock()
                .expect("overview cache lock")
                .snapshot
                .clone()
                .expect("just stored"))
        }
    }
}

/// No script runs on these pages, none may be injected, and they are never
/// framed or cached.
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// An HTML page with the page's security headers.
pub struct Html(Status, Markup);

impl<'r> Responder<'r, 'static> for Html {
    fn respond_to(self, _: &'r Request<'_>) -> response::Result<'static> {
        let body = self.1.into_string();
        Response::build()
            .status(self.0)
            .header(ContentType::HTML)
            .raw_header("Content-Security-Policy", CSP)
            .raw_header("Cache-Control", "no-store")
            .raw_header("X-Content-Type-Options", "nosniff")
            .raw_header("Referrer-Policy", "no-referrer")
            .raw_header("X-Frame-Options", "DENY")
            .sized_body(body.len(), Cursor::new(body))
            .ok()
    }
}

fn ok(markup: Markup) -> Html {
    Html(Status::Ok, markup)
}

/// Why a page is not shown.
pub enum PageError {
    /// Not signed in: to the sign-in form.
    SignIn,
    /// A wrong token on the sign-in form.
    SignInRefused,
    /// A state-changing form without this session's CSRF token.
    Forbidden,
    NotFound(String),
    /// The request conflicts with the state (e.g. a message that is no
    /// longer dead): 409 with the reason.
    Refused(String),
    App(AppError),
}

impl From<AppError> for PageError {
    /// What the merchant can act on is a page; the rest (the database is
    /// unavailable) keeps the API's JSON error.
    fn from(e: AppError) -> Self {
        match e {
            AppError::NotFound(m) => PageError::NotFound(m),
            AppError::Conflict(m) | AppError::InvalidPayload(m) => PageError::Refused(m),
            other => PageError::App(other),
        }
    }
}

impl From<crate::db::DbError> for PageError {
    fn from(e: crate::db::DbError) -> Self {
        PageError::App(e.into())
    }
}

impl<'r> Responder<'r, 'static> for PageError {
    fn respond_to(self, req: &'r Request<'_>) -> response::Result<'static> {
        match self {
            PageError::SignIn => Redirect::to("/admin/sign-in").respond_to(req),
            PageError::SignInRefused => Html(
                Status::Unauthorized,
                views::sign_in(Some("That is not the admin token.")),
            )
            .respond_to(req),
            PageError::Forbidden => {
                log::warn!(
                    "{} {}: 403 without a valid CSRF token",
                    req.method(),
                    req.uri().path()
                );
                Html(
                    Status::Forbidden,
                    views::message(
                        "Refused",
                        "This form was not sent from this page (its CSRF token is missing or wrong). Reload the page and try again.",
                    ),
                )
                .respond_to(req)
            }
            PageError::NotFound(what) => {
                Html(Status::NotFound, views::message("Not found", &what)).respond_to(req)
            }
            PageError::Refused(why) => {
                Html(Status::Conflict, views::message("Not done", &why)).respond_to(req)
            }
            PageError::App(e) => e.respond_to(req),
        }
    }
}

/// Admin pages exist (an `ADMIN_TOKEN` is configured), and maybe a signed-in
/// session. Fails with 404 when no token is configured.
pub struct PageAuth {
    token: String,
    session: Option<Session>,
}

impl PageAuth {
    fn require(self) -> Result<Session, PageError> {
        self.session.ok_or(PageError::SignIn)
    }
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for PageAuth {
    type Error = ();

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, Self::Error> {
        let Some(state) = req.rocket().state::<AppState>() else {
            return Outcome::Error((Status::InternalServerError, ()));
        };
        let Some(token) = state.config.admin_token.clone() else {
            return Outcome::Error((Status::NotFound, ()));
        };
        let Some(cookie) = req.cookies().get(COOKIE).map(|c| c.value().to_owned()) else {
            return Outcome::Success(PageAuth {
                token,
                session: None,
            });
        };
        let expected = token.clone();
        let now = now_ms();
        match state
            .db
            .reads
            .read(move |c| session::find(c, &cookie, &expected, now))
            .await
        {
            Ok(session) => Outcome::Success(PageAuth { token, session }),
            Err(e) => {
                log::error!("admin page: cannot read sessions: {e}");
                Outcome::Error((Status::ServiceUnavailable, ()))
            }
        }
    }
}

#[derive(FromForm)]
pub struct CsrfForm {
    csrf: Option<String>,
}

/// The session, if the form carries its CSRF token; compared in constant
/// time.
fn checked(auth: PageAuth, form: Option<Form<CsrfForm>>) -> Result<Session, PageError> {
    let session = auth.require()?;
    let given = form.and_then(|f| f.into_inner().csrf).unwrap_or_default();
    if crate::signature::constant_time_eq(&session.csrf, &given) {
        Ok(session)
    } else {
        Err(PageError::Forbidden)
    }
}

/// What every page view needs besides its data.
fn ctx<'a>(session: &'a Session, state: &'a AppState) -> views::Ctx<'a> {
    views::Ctx {
        csrf: &session.csrf,
        zone: &state.config.admin_time_zone,
        sandbox: state.config.is_sandbox(),
    }
}

#[get("/admin?<period>")]
async fn overview(
    auth: PageAuth,
    period: Option<&str>,
    state: &State<AppState>,
    page: &State<PageState>,
) -> Result<Html, PageError> {
    let session = auth.require()?;
    // An unknown period shows today's: the switch's own links are the only
    // way to ask for one.
    let period = views::PERIODS
        .iter()
        .position(|(code, _)| Some(*code) == period)
        .unwrap_or(0);
    let zone = &state.config.admin_time_zone;
    let snapshot = overview_snapshot(&page.overview, &state.db.reads, zone).await?;
    let queue = state.db.reads.read(queue_depth).await?;
    let config = state.config.clone();
    let templates = state
        .db
        .reads
        .read(move |c| crate::template_health::health(c, &config))
        .await?;
    let mut view = snapshot.overview.clone();
    view.queue = queue;
    Ok(ok(views::overview(
        &views::OverviewPage {
            overview: &view,
            period,
            paid_by_day: &snapshot.paid_by_day,
            counted_at: snapshot.counted_at,
            paused: state.sender.is_paused(),
            templates: &templates,
        },
        &ctx(&session, state),
    )))
}

#[get("/admin/sign-in")]
async fn sign_in_form(auth: PageAuth) -> Result<Html, Redirect> {
    match auth.session {
        Some(_) => Err(Redirect::to("/admin")),
        None => Ok(ok(views::sign_in(None))),
    }
}

#[derive(FromForm)]
pub struct SignInForm {
    token: Option<String>,
}

#[post("/admin/sign-in", data = "<form>")]
async fn sign_in(
    auth: PageAuth,
    form: Option<Form<SignInForm>>,
    jar: &CookieJar<'_>,
    state: &State<AppState>,
    page: &State<PageState>,
) -> Result<Redirect, PageError> {
    let given = form.and_then(|f| f.into_inner().token).unwrap_or_default();
    if !page.throttle.check(&auth.token, given.trim()).await {
        return Err(PageError::SignInRefused);
    }
    let token = auth.token.clone();
    let now = now_ms();
    let (cookie, _session) = state
        .db
        .writer
        .run(MayRunTwice::new(move |c| session::open(c, &token, now)))
        .await?;
    let secure = state.config.app_base_url.starts_with("https://");
    jar.add(
        Cookie::build((COOKIE, cookie))
            .path("/admin")
            .http_only(true)
            .same_site(SameSite::Strict)
            .secure(secure)
            .max_age(rocket::time::Duration::seconds(SESSION_TTL.as_secs() as i64)),
    );
    log::info!("admin page: signed in");
    Ok(Redirect::to("/admin"))
}

#[post("/admin/sign-out", data = "<form>")]
async fn sign_out(
    auth: PageAuth,
    form: Option<Form<CsrfForm>>,
    jar: &CookieJar<'_>,
    state: &State<AppState>,
) -> Result<Redirect, PageError> {
    let session = checked(auth, form)?;
    state
        .db
        .writer
        .run(MayRunTwice::new(move |c| {
            session::close(c, &session.id_hash)
        }))
        .await?;
    jar.remove(Cookie::build(COOKIE).path("/admin"));
    log::info!("admin page: signed out");
    Ok(Redirect::to("/admin/sign-in"))
}

#[get("/admin/ui/orders?<q>&<before>")]
async fn orders(
    auth: PageAuth,
    q: Option<&str>,
    before: Option<&str>,
    state: &State<AppState>,
) -> Result<Html, PageError> {
    let session = auth.require()?;
    let q = q
        .map(str::trim)
        .filter(|q| !q.is_empty())
        .map(str::to_owned);
    let query = OrdersQuery {
        limit: ORDERS_DEFAULT_LIMIT,
        before: before.filter(|b| !b.is_empty()).map(str::to_owned),
        search: q.clone(),
    };
    let paged = query.before.is_some();
    let page = state
        .db
        .reads
        .read(move |c| orders_list(c, &query))
        .await??;
    Ok(ok(views::orders(
        &page.rows,
        q.as_deref(),
        page.next_before.as_deref(),
        paged,
        &ctx(&session, state),
    )))
}

#[get("/admin/ui/orders/<id..>")]
async fn order(
    auth: PageAuth,
    id: Segments<'_, Path>,
    state: &State<AppState>,
) -> Result<Html, PageError> {
    let session = auth.require()?;
    let order_id = id.collect::<Vec<_>>().join("/");
    let wanted = order_id.clone();
    let found = state
        .db
        .reads
        .read(move |c| {
            Ok(match order_view(c, &wanted)? {
                Some(view) => Some((view, order_timeline(c, &wanted)?)),
                None => None,
            })
        })
        .await?;
    let (view, timeline) =
        found.ok_or_else(|| PageError::NotFound(format!("There is no order {order_id}.")))?;
    Ok(ok(views::order(&view, &timeline, &ctx(&session, state))))
}

#[get("/admin/ui/dead?<done>")]
async fn dead_letters(
    auth: PageAuth,
    done: Option<&str>,
    state: &State<AppState>,
) -> Result<Html, PageError> {
    let session = auth.require()?;
    let list = state
        .db
        .reads
        .read(|c| messages_with_status(c, crate::outbox::Status::Dead))
        .await?;
    Ok(ok(views::dead_letters(&list, done, &ctx(&session, state))))
}

#[post("/admin/ui/messages/<id>/retry", data = "<form>")]
async fn retry(
    auth: PageAuth,
    id: &str,
    form: Option<Form<CsrfForm>>,
    state: &State<AppState>,
) -> Result<Redirect, PageError> {
    checked(auth, form)?;
    let id = id.to_owned();
    let shown = id.clone();
    let now = now_ms();
    let outcome = state
        .db
        .writer
        .run(MayRunTwice::new(move |c| {
            crate::outbox::requeue(c, &id, now)
        }))
        .await?;
    let next = super::admin::requeued(&shown, outcome)?;
    state.sender.wake();
    state.db.writer.announce();
    log::info!("admin page: message {shown} queued again ({next})");
    Ok(Redirect::to(format!(
        "/admin/ui/dead?done={}",
        crate::links::encode_uri_component(&shown)
    )))
}

#[get("/admin/ui/chats")]
async fn chats(auth: PageAuth, state: &State<AppState>) -> Result<Html, PageError> {
    let session = auth.require()?;
    let (latest, unattributed) = state
        .db
        .reads
        .read(|c| Ok((latest_chats(c, false, 50)?, latest_chats(c, true, 50)?)))
        .await?;
    Ok(ok(views::chats(
        &latest,
        &unattributed,
        &ctx(&session, state),
    )))
}

/// CSS and icons, compiled into the binary.
#[get("/admin/static/<name>")]
fn asset(_auth: PageAuth, name: &str) -> Option<(ContentType, &'static str)> {
    let svg = ContentType::new("image", "svg+xml");
    Some(match name {
        "admin.css" => (
            ContentType::CSS,
            include_str!("../../static/admin/admin.css"),
        ),
        "logo.svg" => (svg, include_str!("../../static/admin/logo.svg")),
        "alert.svg" => (svg, include_str!("../../static/admin/alert.svg")),
        "chat.svg" => (svg, include_str!("../../static/admin/chat.svg")),
        _ => return None,
    })
}
