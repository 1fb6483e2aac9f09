//! SPEC §3 sandbox mode, as far as the payment webhook goes (§4's key fallback).

use crate::support::*;

/// No WhatsApp token, no secrets: a newcomer's first run.
fn sandbox(graph: &FakeGraph) -> TestAppBuilder {
    TestApp::builder(graph)
        .without("WHATSAPP_TOKEN")
        .without("PAYMENT_WEBHOOK_SECRET")
        .without("WHATSAPP_APP_SECRET")
        .without("WHATSAPP_PHONE_NUMBER_ID")
}

#[test]
fn sandbox_mode_accepts_unsigned_webhooks_and_records_messages_without_calling_graph() {
    // Arrange
    let graph = FakeGraph::start();
    let app = sandbox(&graph).spawn();
    let event = payment_event("ORD-1042");

    // Act
    let resp = app.post_webhook_unsigned(&event.to_string());

    // Assert
    assert_eq!(resp.status, 200, "{}", resp.body);
    let json = resp.json();
    assert_eq!(json["status"], "processed", "{json}");
    let token = token_of(json["invite_url"].as_str().expect("invite_url"));
    assert_eq!(
        json["whatsapp_link"],
        wa_me_link("ORD-1042", &token).as_str()
    );
    for kind in ["confirmation", "link"] {
        let row = app.wait_for_outbox_status("ORD-1042", kind, "sent", PATIENCE);
        let id = row.graph_message_id.unwrap_or_default();
        assert!(id.starts_with("sandbox-"), "{kind} message id {id:?}");
    }
    app.assert_sends_settled(&graph, 0);
    // The messages are printed to the log, masked (SPEC §3, §8).
    let logs = app.logs();
    for secret in [token.as_str(), "919876543210", "9876543210"] {
        let line = logs.lines().find(|l| l.contains(secret));
        assert!(
            line.is_none(),
            "the sandbox log leaks {secret:?}: {}",
            line.unwrap_or_default()
        );
    }
}

#[test]
fn sandbox_mode_without_webhook_id_uses_the_body_id_as_idempotency_key() {
    let graph = FakeGraph::start();
    let app = sandbox(&graph).spawn();
    let body = payment_event("ORD-1042").to_string();
    let first = app.post_webhook_unsigned(&body);
    assert_eq!(first.json()["status"], "processed", "{}", first.body);

    let again = app.post_webhook_unsigned(&body);

    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.json()["status"], "duplicate", "{}", again.body);
}

#[test]
fn sandbox_mode_without_business_number_uses_the_placeholder() {
    let graph = FakeGraph::start();
    let app = sandbox(&graph)
        .without("WHATSAPP_BUSINESS_NUMBER_E164")
        .spawn();

    let resp = app.post_webhook_unsigned(&payment_event("ORD-1042").to_string());

    let link = resp.json()["whatsapp_link"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        link.starts_with("https://wa.me/15550100000?text="),
        "{link}"
    );
    let logs = app.logs();
    let says_so = logs
        .lines()
        .any(|l| l.contains("WHATSAPP_BUSINESS_NUMBER_E164") && l.contains("placeholder"));
    assert!(
        says_so,
        "the placeholder is not announced in the log:\n{logs}"
    );
}
