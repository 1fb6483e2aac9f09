//! SPEC §10: the admin API — Bearer `ADMIN_TOKEN`, 404 for all of it when no
//! token is configured, the order and contact views (tokens masked, secrets
//! never shown), the dead letters and their retry.

use serde_json::Value;
use std::time::Duration;

use crate::support::app::{APP_SECRET, GRAPH_TOKEN, WEBHOOK_SECRET};
use crate::support::meta::*;
use crate::support::*;

const ORDER: &str = "ORD-1042";
const CUSTOMER: &str = "919876543210";
const ADMIN_TOKEN: &str = "adm-4c1d9e77-secret-bearer";
const BROWSER_UA: &str =
    "Mozilla/5.0 (Linux; Android 14) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Mobile Safari/537.36";

fn bearer() -> String {
    format!("Bearer {ADMIN_TOKEN}")
}

fn admin_app(graph: &FakeGraph) -> TestApp {
    TestApp::builder(graph)
        .env("ADMIN_TOKEN", ADMIN_TOKEN)
        .env("ELDER_REPLY_TEXT", REPLY_TEXT)
        .spawn()
}

/// `GET path` with the right bearer, asserting a 200 JSON answer.
fn admin_json(app: &TestApp, path: &str) -> (Value, String) {
    let resp = app.admin("GET", path, Some(&bearer()));
    assert_eq!(resp.status, 200, "GET {path}: {}", resp.body);
    assert_json_content_type(&resp, path);
    (resp.json(), resp.body)
}

fn assert_json_content_type(resp: &Resp, what: &str) {
    let content_type = resp.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("application/json"),
        "{what}: content-type {content_type:?}"
    );
}

/// No secret of the harness and no full token (in any case) appears in `body`.
fn assert_no_secrets(body: &str, tokens: &[&str]) {
    let lower = body.to_lowercase();
    for token in tokens {
        assert!(
            !lower.contains(&token.to_lowercase()),
            "a full token appears in: {body}"
        );
    }
    for secret in [ADMIN_TOKEN, APP_SECRET, GRAPH_TOKEN, WEBHOOK_SECRET] {
        assert!(
            !body.contains(secret),
            "secret {secret:?} appears in: {body}"
        );
    }
}

/// The outbound messages of an order view of this kind.
fn messages_of_kind<'a>(view: &'a Value, kind: &str) -> Vec<&'a Value> {
    view["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("no messages[] in {view}"))
        .iter()
        .filter(|m| m["kind"] == kind)
        .collect()
}

fn one_message<'a>(view: &'a Value, kind: &str) -> &'a Value {
    let found = messages_of_kind(view, kind);
    assert_eq!(found.len(), 1, "{kind} messages in {view}");
    found[0]
}

/// The masked token an order view shows.
fn shown_token(view: &Value) -> String {
    let token = &view["token"];
    token
        .as_str()
        .or_else(|| token["token"].as_str())
        .unwrap_or_else(|| panic!("no token shown in {view}"))
        .to_string()
}

/// Masked "to its first or last few characters" (SPEC §10).
fn assert_masked(shown: &str, token: &str) {
    assert_ne!(shown, token);
    let visible: String = shown
        .chars()
        .filter(|c| c.is_ascii_hexdigit() || *c == '-')
        .collect();
    assert!(
        (4..=12).contains(&visible.len()),
        "masked token {shown:?} shows {} characters of the token",
        visible.len()
    );
    assert!(
        token.starts_with(&visible) || token.ends_with(&visible),
        "masked token {shown:?} is not the start or end of the token"
    );
}

fn routes_with_ids(message_id: &str) -> Vec<(&'static str, String)> {
    vec![
        ("GET", format!("/admin/orders/{ORDER}")),
        ("GET", "/admin/orders/does-not-exist".to_string()),
        ("GET", format!("/admin/contacts/{ELDER_A}")),
        ("GET", "/admin/messages?status=dead".to_string()),
        ("GET", "/admin/messages".to_string()),
        ("POST", format!("/admin/messages/{message_id}/retry")),
    ]
}

/// Pays for `ORDER` with a confirmation Meta refuses for good; returns its outbox id.
fn order_with_dead_confirmation(app: &TestApp, graph: &FakeGraph) -> String {
    graph.script([Reply::meta_error(400, 100)]);
    pay(app, &payment_event(ORDER));
    app.wait_for_outbox_status(ORDER, "confirmation", "dead", PATIENCE);
    app.db()
        .query_row(
            "SELECT id FROM outbox WHERE order_id = $1 AND kind = 'confirmation'",
            [ORDER],
            |r| r.get(0),
        )
        .expect("confirmation id")
}

// ---------------------------------------------------------------- access

#[test]
fn every_admin_route_is_404_json_when_no_admin_token_is_configured() {
    for setup in ["ADMIN_TOKEN unset", "ADMIN_TOKEN empty"] {
        // Arrange: data behind every route, including a dead message.
        let graph = FakeGraph::start();
        let builder = TestApp::builder(&graph);
        let app = if setup.ends_with("unset") {
            builder.without("ADMIN_TOKEN").spawn()
        } else {
            builder.env("ADMIN_TOKEN", "").spawn()
        };
        let dead = order_with_dead_confirmation(&app, &graph);

        for (method, path) in routes_with_ids(&dead) {
            for auth in [None, Some("Bearer "), Some("Bearer anything")] {
                // Act
                let resp = app.admin(method, &path, auth);

                // Assert
                assert_eq!(
                    resp.status, 404,
                    "{setup}: {method} {path} with {auth:?}: {}",
                    resp.body
                );
                assert_json_content_type(&resp, &path);
                resp.error_code();
            }
        }
        app.assert_sends_settled(&graph, 1);
        assert_eq!(app.outbox_row(ORDER, "confirmation").status, "dead");
        let logs = app.logs();
        assert!(
            logs.lines()
                .any(|l| l.contains("ADMIN_TOKEN") && l.to_lowercase().contains("admin")),
            "{setup}: the start-up log does not say the admin API is off:\n{logs}"
        );
    }
}

#[test]
fn every_admin_route_is_401_json_for_a_missing_or_wrong_bearer() {
    // Arrange
    let graph = FakeGraph::start();
    let app = admin_app(&graph);
    let dead = order_with_dead_confirmation(&app, &graph);
    let longer = format!("Bearer {ADMIN_TOKEN}x");
    let shorter = format!("Bearer {}", &ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1]);
    let basic = format!("Basic {ADMIN_TOKEN}");
    let upper_case = format!("Bearer {}", ADMIN_TOKEN.to_uppercase());
    let bare = ADMIN_TOKEN.to_string();
    let wrong: Vec<Option<&str>> = vec![
        None,
        Some(""),
        Some("Bearer"),
        Some("Bearer "),
        Some("Bearer wrong-token"),
        Some(&longer),
        Some(&shorter),
        Some(&basic),
        Some(&upper_case),
        Some(&bare),
    ];

    for (method, path) in routes_with_ids(&dead) {
        for auth in &wrong {
            // Act
            let resp = app.admin(method, &path, *auth);

            // Assert
            assert_eq!(
                resp.status, 401,
                "{method} {path} with {auth:?}: {}",
                resp.body
            );
            assert_json_content_type(&resp, &path);
            assert!(!resp.error_code().is_empty());
            assert!(!resp.body.contains(ADMIN_TOKEN), "{}", resp.body);
        }
    }
    // The refused retry did nothing.
    app.assert_sends_settled(&graph, 1);
    assert_eq!(app.outbox_row(ORDER, "confirmation").status, "dead");
}

// ---------------------------------------------------------------- order view

#[test]
fn order_view_shows_order_masked_token_messages_clicks_contacts_and_funnel() {
    // Arrange: sent and delivered, the link opened by people and by preview
    // fetchers, one elder linked with the prefilled text and a follow-up, a second
    // elder linked with the token in upper case.
    let graph = FakeGraph::start();
    let app = admin_app(&graph);
    let processed = pay_and_send(&app, ORDER);
    let invite = format!("/w/invite/{}", processed.token);
    for ua in [
        BROWSER_UA,
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) Safari/604.1",
        "WhatsApp/2.24.12.78 A",
        "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
        "WhatsApp/2.23.20.0",
    ] {
        let resp = app.get_no_redirect_with(&invite, &[("User-Agent", ua)]);
        assert_eq!(resp.status, 302, "{ua}");
    }
    wait_until("five click rows", PATIENCE, || {
        app.count("SELECT COUNT(*) FROM invite_clicks") == 5
    });
    let prefilled = prefilled_text(&processed.whatsapp_link);
    app.deliver(&text_payload(
        ELDER_A,
        "Asha Devi",
        &fresh_wamid(),
        &prefilled,
    ));
    app.deliver(&text_payload(
        ELDER_A,
        "Asha Devi",
        &fresh_wamid(),
        "When will it arrive?",
    ));
    app.deliver(&text_payload(
        ELDER_B,
        "Bala",
        &fresh_wamid(),
        &format!("TOKEN {}", processed.token.to_uppercase()),
    ));
    wait_for_replies(&graph, ELDER_A, 1);
    wait_for_replies(&graph, ELDER_B, 1);
    wait_until("both replies recorded as sent", PATIENCE, || {
        elder_replies(&app, ORDER).iter().all(|(_, s)| s == "sent")
            && elder_replies(&app, ORDER).len() == 2
    });
    let confirmation_id = app
        .outbox_row(ORDER, "confirmation")
        .graph_message_id
        .unwrap();
    let link_id = app.outbox_row(ORDER, "link").graph_message_id.unwrap();
    app.deliver(&statuses_payload(vec![
        status(&confirmation_id, "delivered", CUSTOMER),
        status(&link_id, "read", CUSTOMER),
    ]));

    // Act
    let (view, body) = admin_json(&app, &format!("/admin/orders/{ORDER}"));

    // Assert: no token in full anywhere, nor any secret.
    assert_no_secrets(&body, &[&processed.token]);
    // The order and its masked token.
    assert_eq!(view["order"]["id"], ORDER, "{view}");
    assert_eq!(view["order"]["status"], "PAID", "{view}");
    assert_masked(&shown_token(&view), &processed.token);
    // Its messages with status, attempts and last error.
    let confirmation = one_message(&view, "confirmation");
    assert_eq!(confirmation["status"], "sent", "{confirmation}");
    assert_eq!(confirmation["attempts"], 1, "{confirmation}");
    assert!(confirmation["last_error"].is_null(), "{confirmation}");
    assert_eq!(
        confirmation["delivery_status"], "delivered",
        "{confirmation}"
    );
    let link = one_message(&view, "link");
    assert_eq!(link["status"], "sent", "{link}");
    assert_eq!(link["attempts"], 1, "{link}");
    assert!(link.get("last_error").is_some(), "{link}");
    assert_eq!(link["delivery_status"], "read", "{link}");
    let replies = messages_of_kind(&view, "elder_reply");
    assert_eq!(replies.len(), 2, "{view}");
    // Invite clicks, humans apart from preview fetchers.
    assert_eq!(view["invite_clicks"]["human"], 2, "{view}");
    assert_eq!(view["invite_clicks"]["preview"], 3, "{view}");
    // Linked contacts and their messages, tokens masked in the texts.
    let contacts = view["contacts"].as_array().expect("contacts[]");
    assert_eq!(contacts.len(), 2, "{view}");
    let contact_a = contacts
        .iter()
        .find(|c| c["wa_id"] == ELDER_A)
        .unwrap_or_else(|| panic!("elder A not in {view}"));
    assert_eq!(contact_a["profile_name"], "Asha Devi");
    let texts: Vec<&str> = contact_a["messages"]
        .as_array()
        .expect("contact messages[]")
        .iter()
        .map(|m| m["text"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(texts.len(), 2, "{contact_a}");
    assert!(
        texts[0].starts_with("Hi, I\u{2019}m contacting on behalf of order ORD-1042. Token: "),
        "{texts:?}"
    );
    assert!(texts[0].contains(&processed.token[..4]), "{texts:?}");
    assert_eq!(texts[1], "When will it arrive?");
    assert!(
        contacts.iter().any(|c| c["wa_id"] == ELDER_B),
        "elder B not in {view}"
    );
    // The funnel a merchant cares about.
    let funnel = &view["funnel"];
    for step in [
        "paid",
        "confirmation_delivered",
        "link_delivered",
        "link_opened",
        "elder_linked",
    ] {
        assert_eq!(funnel[step], true, "funnel step {step}: {funnel}");
    }
}

#[test]
fn order_view_funnel_stops_where_the_order_stands() {
    // Arrange: paid and sent, but nothing delivered, opened by a preview fetcher only.
    let graph = FakeGraph::start();
    let app = admin_app(&graph);
    let processed = pay_and_send(&app, ORDER);
    let resp = app.get_no_redirect_with(
        &format!("/w/invite/{}", processed.token),
        &[("User-Agent", "WhatsApp/2.23.20.0")],
    );
    assert_eq!(resp.status, 302);
    wait_until("one click row", PATIENCE, || {
        app.count("SELECT COUNT(*) FROM invite_clicks") == 1
    });

    // Act
    let (view, body) = admin_json(&app, &format!("/admin/orders/{ORDER}"));

    // Assert
    assert_no_secrets(&body, &[&processed.token]);
    let funnel = &view["funnel"];
    assert_eq!(funnel["paid"], true, "{funnel}");
    for step in [
        "confirmation_delivered",
        "link_delivered",
        "link_opened",
        "elder_linked",
    ] {
        assert_eq!(funnel[step], false, "funnel step {step}: {funnel}");
    }
    assert_eq!(view["invite_clicks"]["human"], 0, "{view}");
    assert_eq!(view["invite_clicks"]["preview"], 1, "{view}");
    assert_eq!(view["contacts"].as_array().map(Vec::len), Some(0), "{view}");
}

#[test]
fn order_view_finds_an_order_id_with_slash_and_colon_when_percent_encoded() {
    // Arrange
    let graph = FakeGraph::start();
    let app = admin_app(&graph);
    let order_id = "shop/2026:ORD-7";
    let processed = pay(&app, &payment_event(order_id));

    // Act
    let (view, body) = admin_json(&app, "/admin/orders/shop%2F2026%3AORD-7");

    // Assert
    assert_eq!(view["order"]["id"], order_id, "{view}");
    assert_no_secrets(&body, &[&processed.token]);
    let resp = app.admin("GET", "/admin/orders/shop%2F2026%3AORD-8", Some(&bearer()));
    assert_eq!(resp.status, 404, "{}", resp.body);
    resp.error_code();
}

#[test]
fn order_view_of_an_unknown_order_is_404_json() {
    let graph = FakeGraph::start();
    let app = admin_app(&graph);
    pay(&app, &payment_event(ORDER));

    let resp = app.admin("GET", "/admin/orders/ORD-9999", Some(&bearer()));

    assert_eq!(resp.status, 404, "{}", resp.body);
    assert_json_content_type(&resp, "unknown order");
    resp.error_code();
}

// ---------------------------------------------------------------- contact view

#[test]
fn contact_view_lists_the_orders_linked_to_a_sender_and_its_messages() {
    // Arrange: elder A linked to two orders, then a follow-up; elder B to one.
    let graph = FakeGraph::start();
    let app = admin_app(&graph);
    let first = pay_and_send(&app, "ORD-1");
    let second = pay_and_send(&app, "ORD-2");
    app.deliver(&prefilled_text_payload(
        ELDER_A,
        "Asha",
        &fresh_wamid(),
        &first,
    ));
    app.deliver(&prefilled_text_payload(
        ELDER_A,
        "Asha",
        &fresh_wamid(),
        &second,
    ));
    app.deliver(&text_payload(ELDER_A, "Asha", &fresh_wamid(), "thank you"));
    app.deliver(&prefilled_text_payload(
        ELDER_B,
        "Bala",
        &fresh_wamid(),
        &first,
    ));

    // Act
    let (view, body) = admin_json(&app, &format!("/admin/contacts/{ELDER_A}"));

    // Assert
    assert_no_secrets(&body, &[&first.token, &second.token]);
    let mut orders: Vec<&str> = view["orders"]
        .as_array()
        .unwrap_or_else(|| panic!("no orders[] in {view}"))
        .iter()
        .map(|o| o["order_id"].as_str().unwrap_or_default())
        .collect();
    orders.sort();
    assert_eq!(orders, vec!["ORD-1", "ORD-2"], "{view}");
    let messages = view["messages"].as_array().expect("messages[]");
    assert_eq!(messages.len(), 3, "{view}");
    assert!(messages.iter().all(|m| m["wa_id"] == ELDER_A), "{view}");
    assert!(messages.iter().any(|m| m["text"] == "thank you"), "{view}");
    assert!(
        !body.contains(ELDER_B),
        "elder B's data in A's view: {body}"
    );
}

#[test]
fn contact_view_of_an_unknown_sender_is_404_json() {
    let graph = FakeGraph::start();
    let app = admin_app(&graph);

    let resp = app.admin(
        "GET",
        &format!("/admin/contacts/{STRANGER}"),
        Some(&bearer()),
    );

    assert_eq!(resp.status, 404, "{}", resp.body);
    resp.error_code();
}

// ---------------------------------------------------------------- dead letters

#[test]
fn dead_lettered_message_is_listed_and_a_retry_delivers_it_once() {
    // Arrange: Meta refuses the confirmation for good (a permanent 400).
    let graph = FakeGraph::start();
    let app = admin_app(&graph);
    let dead_id = order_with_dead_confirmation(&app, &graph);

    // Act 1: list the dead letters.
    let (list, _) = admin_json(&app, "/admin/messages?status=dead");

    // Assert 1
    let dead: Vec<&Value> = list["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("no messages[] in {list}"))
        .iter()
        .collect();
    assert_eq!(dead.len(), 1, "{list}");
    assert_eq!(dead[0]["id"], dead_id.as_str(), "{list}");
    assert_eq!(dead[0]["order_id"], ORDER, "{list}");
    assert_eq!(dead[0]["kind"], "confirmation", "{list}");
    assert_eq!(dead[0]["status"], "dead", "{list}");
    let last_error = dead[0]["last_error"].as_str().unwrap_or_default();
    assert!(last_error.contains("100"), "last_error {last_error:?}");

    // Act 2: queue it again.
    let resp = app.admin(
        "POST",
        &format!("/admin/messages/{dead_id}/retry"),
        Some(&bearer()),
    );

    // Assert 2: delivered once, and the link follows it.
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_json_content_type(&resp, "retry");
    app.wait_for_outbox_status(ORDER, "confirmation", "sent", PATIENCE);
    app.wait_for_outbox_status(ORDER, "link", "sent", PATIENCE);
    app.assert_sends_settled(&graph, 3);
    assert_eq!(graph.accepted_of_type("template").len(), 1);
    let (list, _) = admin_json(&app, "/admin/messages?status=dead");
    assert_eq!(list["messages"].as_array().map(Vec::len), Some(0), "{list}");

    // Act 3: a second retry of what Meta has now accepted.
    let resp = app.admin(
        "POST",
        &format!("/admin/messages/{dead_id}/retry"),
        Some(&bearer()),
    );

    // Assert 3
    assert_eq!(resp.status, 409, "{}", resp.body);
    resp.error_code();
    app.assert_sends_settled(&graph, 3);
}

#[test]
fn retrying_a_sent_message_is_409_and_sends_nothing_and_an_unknown_id_is_404() {
    // Arrange
    let graph = FakeGraph::start();
    let app = admin_app(&graph);
    pay_and_send(&app, ORDER);
    let (view, _) = admin_json(&app, &format!("/admin/orders/{ORDER}"));
    let sent_ids: Vec<String> = ["confirmation", "link"]
        .iter()
        .map(|k| {
            one_message(&view, k)["id"]
                .as_str()
                .unwrap_or_else(|| panic!("no id on the {k} message in {view}"))
                .to_string()
        })
        .collect();

    for id in &sent_ids {
        // Act
        let resp = app.admin(
            "POST",
            &format!("/admin/messages/{id}/retry"),
            Some(&bearer()),
        );

        // Assert
        assert_eq!(resp.status, 409, "{}", resp.body);
        assert_json_content_type(&resp, "retry of a sent message");
        resp.error_code();
    }
    let unknown = uuid::Uuid::new_v4();
    let resp = app.admin(
        "POST",
        &format!("/admin/messages/{unknown}/retry"),
        Some(&bearer()),
    );
    assert_eq!(resp.status, 404, "{}", resp.body);
    resp.error_code();
    app.assert_sends_settled(&graph, 2);
    assert_eq!(app.outbox_row(ORDER, "confirmation").status, "sent");
    assert_eq!(app.outbox_row(ORDER, "link").status, "sent");
}

// ---------------------------------------------------------------- orders list

#[test]
fn orders_list_is_newest_first_and_pages_with_before() {
    // Arrange: five orders, paid one after another.
    let graph = FakeGraph::start();
    let app = admin_app(&graph);
    for n in 1..=5 {
        pay(&app, &payment_event(&format!("ORD-L{n}")));
    }
    let newest_first: Vec<String> = {
        let db = app.db();
        let mut stmt = db
            .prepare("SELECT id FROM orders ORDER BY created_at DESC, id DESC")
            .unwrap();

        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<Vec<String>, _>>()
            .unwrap()
    };

    // Act: pages of two, each from the previous page's `next_before`.
    let mut seen = Vec::new();
    let mut path = "/admin/orders?limit=2".to_string();
    loop {
        let (page, body) = admin_json(&app, &path);
        assert_no_secrets(&body, &[]);
        let orders = page["orders"].as_array().expect("orders[]");
        assert!(orders.len() <= 2, "{page}");
        assert_eq!(page["count"], orders.len(), "{page}");
        for o in orders {
            assert_eq!(o["status"], "PAID", "{o}");
            assert_eq!(o["amount"], "INR 499.00", "{o}");
            assert!(o["stage"].is_string(), "{o}");
            seen.push(o["id"].as_str().unwrap().to_string());
        }
        match page["next_before"].as_str() {
            Some(before) => path = format!("/admin/orders?limit=2&before={before}"),
            None => break,
        }
    }

    // Assert
    assert_eq!(seen, newest_first);
    let (all, _) = admin_json(&app, "/admin/orders");
    assert_eq!(all["orders"].as_array().unwrap().len(), 5, "{all}");
    assert!(all["next_before"].is_null(), "{all}");
}

#[test]
fn orders_list_refuses_a_bad_limit_or_cursor_and_needs_the_bearer() {
    let graph = FakeGraph::start();
    let app = admin_app(&graph);
    pay(&app, &payment_event(ORDER));
    for path in [
        "/admin/orders?limit=0",
        "/admin/orders?limit=201",
        "/admin/orders?limit=ten",
        "/admin/orders?before=NOPE-1",
    ] {
        let resp = app.admin("GET", path, Some(&bearer()));
        assert_eq!(resp.status, 422, "{path}: {}", resp.body);
        assert_eq!(resp.error_code(), "invalid_payload", "{path}");
    }
    let resp = app.admin("GET", "/admin/orders", Some("Bearer wrong"));
    assert_eq!(resp.status, 401, "{}", resp.body);
    let off = TestApp::builder(&graph).without("ADMIN_TOKEN").spawn();
    let resp = off.admin("GET", "/admin/orders", Some(&bearer()));
    assert_eq!(resp.status, 404, "{}", resp.body);
}

// ---------------------------------------------------------------- in flight

#[test]
fn a_message_in_flight_is_listed_under_status_sending_with_its_lease() {
    // Arrange: Meta holds the confirmation's request open past the client's
    // timeout, so the row stays claimed ('sending') while we look.
    let graph = FakeGraph::start();
    graph.script([Reply::Hang(Duration::from_secs(4))]);
    let app = admin_app(&graph);
    pay(&app, &payment_event(ORDER));
    graph.wait_for_requests(1, PATIENCE);

    // Act
    let (list, body) = admin_json(&app, "/admin/messages?status=sending");

    // Assert: the claimed confirmation, with the time its lease ends.
    assert_eq!(list["status"], "sending", "{list}");
    let sending = list["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("no messages[] in {list}"));
    assert_eq!(sending.len(), 1, "{list}");
    assert_eq!(sending[0]["order_id"], ORDER, "{list}");
    assert_eq!(sending[0]["kind"], "confirmation", "{list}");
    assert_eq!(sending[0]["status"], "sending", "{list}");
    assert!(sending[0]["lease_until"].is_string(), "{list}");
    assert_no_secrets(&body, &[]);

    // The timed-out attempt is unsure (SPEC §5): no status comes, so after
    // WHATSAPP_UNSURE_WAIT_MS it is retried and both messages go out;
    // nothing is in flight afterwards.
    app.wait_for_outbox_status(ORDER, "link", "sent", PATIENCE);
    app.assert_sends_settled(&graph, 3);
    let (list, _) = admin_json(&app, "/admin/messages?status=sending");
    assert_eq!(list["messages"].as_array().map(Vec::len), Some(0), "{list}");
}
