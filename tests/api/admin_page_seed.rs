//! Data for the merchant's page tests (SPEC §12), shared by the HTTP tests
//! and the browser tests: a funnel with known numbers per window, written
//! straight into the database (the windows need times in the past), and a
//! signed-in HTTP client that carries the session cookie by hand.
#![allow(dead_code)]

use std::time::Duration;

use orderlink::clock::now_ms;
use orderlink::db::sql::params;
use orderlink::db::Conn;

use crate::support::app::{into_resp, Resp};
use crate::support::TestApp;

pub const ADMIN_TOKEN: &str = "adm-page-7f3e1c-merchant-secret";
const DAY: i64 = 86_400_000;

/// How far one seeded order got.
struct Seeded {
    days_ago: i64,
    confirmation_delivered: bool,
    link_delivered: bool,
    opened: bool,
    linked: bool,
}

/// The funnel the seed produces, per window: paid, confirmation delivered,
/// link delivered, link opened by a person, elder linked.
pub const TODAY: [i64; 5] = [6, 5, 4, 3, 2];
pub const WEEK: [i64; 5] = [8, 6, 5, 4, 2];
pub const MONTH: [i64; 5] = [11, 9, 7, 5, 3];
/// Paid `utility` messages (the delivered confirmations, priced `regular`)
/// per window; the delivered links are free (`free_customer_service`).
pub const UTILITY: [i64; 3] = [5, 6, 9];

fn plan() -> Vec<Seeded> {
    let s = |days_ago, c, l, o, k| Seeded {
        days_ago,
        confirmation_delivered: c,
        link_delivered: l,
        opened: o,
        linked: k,
    };
    vec![
        // Today: 6 paid, 5 / 4 / 3 / 2.
        s(0, true, true, true, true),
        s(0, true, true, true, true),
        s(0, true, true, true, false),
        s(0, true, true, false, false),
        s(0, true, false, false, false),
        s(0, false, false, false, false),
        // Three days ago: 2 paid, 1 / 1 / 1 / 0.
        s(3, true, true, true, false),
        s(3, false, false, false, false),
        // Twelve days ago: 3 paid, 3 / 2 / 1 / 1.
        s(12, true, true, true, true),
        s(12, true, true, false, false),
        s(12, true, false, false, false),
        // Forty days ago: outside every window.
        s(40, true, true, true, true),
    ]
}

/// Seeds the orders of [`plan`] as `SEED-001`…, each with a phone ending in
/// `5000 + n`. Returns the order ids.
pub fn seed_funnel(app: &TestApp) -> Vec<String> {
    let db = app.db_rw();
    let now = now_ms();
    let midnight = now - now.rem_euclid(DAY);
    let mut ids = Vec::new();
    for (n, o) in plan().iter().enumerate() {
        let n = n + 1;
        // Today's rows sit between midnight and now, whatever the hour.
        let at = if o.days_ago == 0 {
            midnight + (now - midnight) / 2
        } else {
            now - o.days_ago * DAY
        };
        let id = format!("SEED-{n:03}");
        let phone = format!("9190000{:05}", 5000 + n);
        insert_order(&db, &id, &phone, at, o);
        ids.push(id);
    }
    ids
}

fn insert_order(db: &Conn, id: &str, phone: &str, at: i64, o: &Seeded) {
    db.execute(
        "INSERT INTO orders (id, user_id, payment_id, status, customer_phone_e164, total_amount,
                             currency, note, created_at, updated_at, last_confirmation_sent_at)
         VALUES ($1, 'user_1', $2, 'PAID', $3, 129900, 'INR', NULL, $4, $4, $4)",
        params![id, format!("pay_{id}"), phone, at],
    )
    .expect("seed order");
    let token_id = uuid::Uuid::new_v4().to_string();
    db.execute(
        "INSERT INTO whatsapp_tokens (id, order_id, token, expires_at, created_at)
         VALUES ($1, $2, $3, $4, $5)",
        params![
            token_id,
            id,
            uuid::Uuid::new_v4().to_string(),
            at + 90 * DAY,
            at
        ],
    )
    .expect("seed token");
    for (kind, delivered, billable, category, pricing_type) in [
        (
            "confirmation",
            o.confirmation_delivered,
            true,
            "utility",
            "regular",
        ),
        // Meta still calls a free message in the window billable now and then:
        // the type decides (SPEC §9).
        (
            "link",
            o.link_delivered,
            true,
            "service",
            "free_customer_service",
        ),
    ] {
        db.execute(
            "INSERT INTO outbox (id, order_id, kind, slot, recipient, status, variant, attempts,
                                 next_attempt_at, graph_message_id, created_at, updated_at, sent_at,
                                 delivery_status, delivery_updated_at, pricing_billable, pricing_category,
                                 pricing_type, pricing_paid)
             VALUES ($1, $2, $3, '', $4, 'sent', 'text', 1, $5, $6, $5, $5, $5, $7, $8, $9, $10, $11, $12)",
            params![
                uuid::Uuid::new_v4().to_string(),
                id,
                kind,
                phone,
                at,
                format!("wamid.seed.{id}.{kind}"),
                delivered.then_some("delivered"),
                delivered.then_some(at + 1000),
                delivered.then_some(billable),
                delivered.then_some(category),
                delivered.then_some(pricing_type),
                delivered.then_some(pricing_type == "regular"),
            ],
        )
        .expect("seed outbox");
    }
    // A preview fetch on every order: never counted as a person.
    let mut clicks = vec![(true, "WhatsApp/2.24.12.78 A")];
    if o.opened {
        clicks.push((false, "Mozilla/5.0 (Linux; Android 14) Chrome/126.0 Mobile"));
    }
    for (preview, ua) in clicks {
        db.execute(
            "INSERT INTO invite_clicks (id, token_id, order_id, clicked_at, user_agent, is_preview)
             VALUES ($1, $2, $3, $4, $5, $6)",
            params![
                uuid::Uuid::new_v4().to_string(),
                token_id,
                id,
                at + 2000,
                ua,
                preview
            ],
        )
        .expect("seed click");
    }
    if o.linked {
        let contact_id = uuid::Uuid::new_v4().simple().to_string();
        db.execute(
            "INSERT INTO contacts (id, wa_id, user_id, profile_name, created_at, updated_at)
             VALUES ($1, $2, NULL, 'Seeded Elder', $3, $3)",
            params![
                contact_id,
                format!("9188{}", &phone[phone.len() - 8..]),
                at + 3000
            ],
        )
        .expect("seed contact");
        db.execute(
            "INSERT INTO contact_links (id, order_id, contact_id, profile_name, token_id, linked_at)
             VALUES ($1, $2, $3, 'Seeded Elder', $4, $5)",
            params![
                uuid::Uuid::new_v4().to_string(),
                id,
                contact_id,
                token_id,
                at + 3000
            ],
        )
        .expect("seed contact link");
    }
}

/// An HTTP client signed in to the page: keeps the session cookie, follows
/// no redirect.
pub struct PageClient {
    pub base: String,
    agent: ureq::Agent,
    pub cookie: Option<String>,
}

impl PageClient {
    pub fn new(app: &TestApp) -> PageClient {
        PageClient {
            base: app.base_url(),
            agent: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(30))
                .redirects(0)
                .build(),
            cookie: None,
        }
    }

    fn with_cookie(&self, req: ureq::Request) -> ureq::Request {
        match &self.cookie {
            Some(c) => req.set("Cookie", c),
            None => req,
        }
    }

    pub fn get(&self, path: &str) -> Resp {
        into_resp(
            self.with_cookie(self.agent.get(&format!("{}{path}", self.base)))
                .call(),
        )
    }

    pub fn post_form(&self, path: &str, form: &[(&str, &str)]) -> Resp {
        into_resp(
            self.with_cookie(self.agent.post(&format!("{}{path}", self.base)))
                .send_form(form),
        )
    }

    /// Posts the sign-in form; on success keeps the session cookie.
    pub fn sign_in(&mut self, token: &str) -> Resp {
        let resp = self.post_form("/admin/sign-in", &[("token", token)]);
        if let Some(set) = resp.header("set-cookie") {
            self.cookie = set.split(';').next().map(str::to_owned);
        }
        resp
    }

    /// The CSRF token the forms of `path` carry.
    pub fn csrf(&self, path: &str) -> String {
        let page = self.get(path);
        assert_eq!(page.status, 200, "GET {path}: {}", page.body);
        let marker = "name=\"csrf\" value=\"";
        let at = page
            .body
            .find(marker)
            .unwrap_or_else(|| panic!("no csrf field on {path}"))
            + marker.len();
        page.body[at..at + 64].to_owned()
    }
}
