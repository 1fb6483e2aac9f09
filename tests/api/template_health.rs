//! SPEC §9, template health (issue 17 item 5): Meta's template webhooks,
//! on the inbound route and signed like every other delivery. A paused
//! confirmation template holds its sending as a 132001 does, across a
//! restart, until Meta approves it again; the log, `/metrics` and the
//! merchant's page say so; a category change and Meta's value-level
//! `errors` are logged and shown.
//!
//! Payload shapes are Meta's webhook references:
//! - https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/message_template_status_update
//!   (`event`, `message_template_id`, `message_template_name`,
//!   `message_template_language`, `reason`, `message_template_category`)
//! - https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/template_category_update
//!   (`previous_category`, `new_category`; `correct_category` when announced)
//! - the messages webhook's value-level `errors` (`code`, `title`,
//!   `message`, `error_data.details`), outside any status.

use serde_json::{json, Value};

use crate::admin_page_seed::{PageClient, ADMIN_TOKEN};
use crate::support::meta::MetaApi;
use crate::support::*;

const METRICS_TOKEN: &str = "metrics-tmpl-9d2a-bearer";

fn template_change(field: &str, value: Value) -> Value {
    json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "102290129340398", "time": 1764990000,
            "changes": [{"field": field, "value": value}]}]
    })
}

fn template_status(event: &str, reason: &str) -> Value {
    template_change(
        "message_template_status_update",
        json!({"event": event, "message_template_id": 594425479261596_i64,
            "message_template_name": "order_confirmed", "message_template_language": "en",
            "reason": reason, "message_template_category": "UTILITY"}),
    )
}

fn held_gauge(app: &TestApp) -> String {
    let resp = ureq::get(&app.url("/metrics"))
        .set("Authorization", &format!("Bearer {METRICS_TOKEN}"))
        .call()
        .expect("scrape")
        .into_string()
        .unwrap();
    resp.lines()
        .find(|l| l.starts_with("orderlink_template_held{template=\"confirmation\"}"))
        .unwrap_or_else(|| panic!("no held gauge in:\n{resp}"))
        .to_owned()
}

fn overview(app: &TestApp) -> String {
    let mut page = PageClient::new(app);
    assert_eq!(page.sign_in(ADMIN_TOKEN).status, 303);
    let resp = page.get("/admin");
    assert_eq!(resp.status, 200);
    resp.body
}

#[test]
fn a_paused_confirmation_template_holds_its_sending_until_meta_approves_it_again() {
    // Arrange
    let graph = FakeGraph::start();
    // Pauses of 15 retry steps: 30 s, three times the patience below, so a
    // held message must be made due when Meta approves, not wait it out.
    let mut app = TestApp::builder(&graph)
        .env("ADMIN_TOKEN", ADMIN_TOKEN)
        .env("METRICS_TOKEN", METRICS_TOKEN)
        .env("WHATSAPP_RETRY_BASE_MS", "2000")
        .spawn();

    // Act: Meta pauses the confirmation template, then an order is paid.
    app.deliver(&template_status(
        "PAUSED",
        "Your template has been paused due to low quality.",
    ));
    pay(&app, &payment_event("ORD-T1"));

    // Assert: tried, held without a request, and said everywhere.
    wait_until("the held confirmation", PATIENCE, || {
        app.outbox_row("ORD-T1", "confirmation")
            .last_error
            .is_some_and(|e| e.contains("PAUSED"))
    });
    assert_eq!(graph.requests().len(), 0, "a held template went to Meta");
    let row = app.outbox_row("ORD-T1", "confirmation");
    assert_eq!((row.status.as_str(), row.attempts), ("queued", 0));
    let logs = app.logs();
    assert!(logs.contains("TEMPLATE PAUSED"), "{logs}");
    assert!(logs.contains("SENDING PAUSED"), "{logs}");
    assert_eq!(
        held_gauge(&app),
        "orderlink_template_held{template=\"confirmation\"} 1"
    );
    let page = overview(&app);
    assert!(
        page.contains("The confirmation template is paused"),
        "{page}"
    );

    // A restart keeps the hold: the next order's confirmation is tried and
    // held too, still unsent.
    app.restart();
    pay(&app, &payment_event("ORD-T2"));
    wait_until("the hold after the restart", PATIENCE, || {
        app.logs().matches("SENDING PAUSED").count() >= 2
    });
    assert_eq!(graph.requests().len(), 0, "sent after the restart");
    assert_eq!(
        held_gauge(&app),
        "orderlink_template_held{template=\"confirmation\"} 1"
    );

    // Meta approves it again: both confirmations and links go, once, now.
    app.deliver(&template_status("APPROVED", "NONE"));
    graph.wait_for_accepted("template", 2, PATIENCE);
    graph.wait_for_accepted("text", 2, PATIENCE);
    app.assert_sends_settled(&graph, 4);
    assert_eq!(
        held_gauge(&app),
        "orderlink_template_held{template=\"confirmation\"} 0"
    );
    assert!(!overview(&app).contains("template is paused"));
}

#[test]
fn a_category_change_and_metas_value_level_errors_are_logged_and_shown() {
    // Arrange
    let graph = FakeGraph::start();
    let app = TestApp::builder(&graph)
        .env("ADMIN_TOKEN", ADMIN_TOKEN)
        .spawn();

    // Act
    app.deliver(&template_change(
        "template_category_update",
        json!({"message_template_id": 594425479261596_i64,
            "message_template_name": "order_confirmed", "message_template_language": "en",
            "previous_category": "UTILITY", "new_category": "MARKETING"}),
    ));
    app.deliver(&template_change(
        "messages",
        json!({"messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550100000", "phone_number_id": "106540352242922"},
            "errors": [{"code": 131042, "title": "Business eligibility payment issue",
                "message": "Business eligibility payment issue",
                "error_data": {"details": "There was an error related to your payment method."}}]}),
    ));

    // Assert
    let logs = app.logs();
    assert!(
        logs.lines().any(|l| l.contains("WARN")
            && l.contains("confirmation template order_confirmed")
            && l.contains("from UTILITY to MARKETING")),
        "{logs}"
    );
    assert!(
        logs.lines()
            .any(|l| l.contains("ERROR") && l.contains("code 131042")),
        "{logs}"
    );
    assert!(!logs.contains("not understood"), "{logs}");
    let page = overview(&app);
    assert!(
        page.contains("Meta changed its category from UTILITY to MARKETING"),
        "{page}"
    );
    assert!(page.contains("WhatsApp error 131042"), "{page}");
    assert!(
        page.contains("Business eligibility payment issue"),
        "{page}"
    );
}
