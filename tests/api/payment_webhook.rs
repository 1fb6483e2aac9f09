//! SPEC §4: POST /webhooks/payment — signature, validation, idempotency.

use std::sync::Barrier;
use std::thread;

use serde_json::{json, Value};

use crate::support::signing::{now_secs, sign};
use crate::support::*;

const ORDER: &str = "ORD-1042";

#[test]
fn new_payment_is_processed_with_invite_url_and_whatsapp_link() {
    // Arrange
    let graph = FakeGraph::start();
    let app = TestApp::spawn(&graph);

    // Act
    let resp = app.post_webhook(&payment_event(ORDER).to_string());

    // Assert
    assert_eq!(resp.status, 200, "{}", resp.body);
    let json = resp.json();
    assert_eq!(json["status"], "processed");
    assert_eq!(json["order_id"], ORDER);
    let invite_url = json["invite_url"].as_str().expect("invite_url");
    let prefix = format!("{}/w/invite/", app.base_url());
    assert!(
        invite_url.starts_with(&prefix),
        "{invite_url} should start with {prefix}"
    );
    let token = token_of(invite_url);
    assert_eq!(
        json["whatsapp_link"].as_str().expect("whatsapp_link"),
        format!(
            "https://wa.me/919999900000?text=Hi%2C%20I%E2%80%99m%20contacting%20on%20behalf%20of%20order%20ORD-1042.%20Token%3A%20{token}"
        )
    );
}

#[test]
fn new_payment_marks_the_order_paid_with_one_token_and_two_messages() {
    let graph = FakeGraph::start();
    let app = TestApp::spawn(&graph);

    let processed = pay(&app, &payment_event(ORDER));

    let db = app.db();
    let (status, payment_id, user_id, amount, currency): (String, String, String, i64, String) = db
        .query_row(
            "SELECT status, payment_id, user_id, total_amount, currency FROM orders WHERE id = $1",
            [ORDER],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .expect("order row");
    assert_eq!(
        (
            status.as_str(),
            payment_id.as_str(),
            user_id.as_str(),
            amount,
            currency.as_str()
        ),
        ("PAID", "pay_9XyZ31", "user_77", 49900, "INR")
    );
    let tokens: Vec<String> = db
        .prepare("SELECT token FROM whatsapp_tokens WHERE order_id = $1")
        .unwrap()
        .query_map([ORDER], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(tokens, vec![processed.token]);
    assert_eq!(app.count("SELECT COUNT(*) FROM webhook_events"), 1);
    let now_ms = orderlink::clock::now_ms();
    for sql in [
        "SELECT created_at FROM orders",
        "SELECT created_at FROM whatsapp_tokens",
        "SELECT processed_at FROM webhook_events",
    ] {
        let at = app.count(sql);
        assert!(
            (now_ms - at).abs() < 60_000,
            "{sql}: {at} is not Unix milliseconds of now"
        );
    }
    let kinds: Vec<String> = app.outbox(ORDER).into_iter().map(|r| r.kind).collect();
    assert_eq!(kinds, vec!["confirmation", "link"]);
}

#[test]
fn replayed_webhook_id_is_a_duplicate_and_sends_nothing_new() {
    // Arrange: one processed event, both messages delivered.
    let graph = FakeGraph::start();
    let app = TestApp::spawn(&graph);
    let body = payment_event(ORDER).to_string();
    let first = app.post_webhook_with_id("msg_replayed", &body);
    assert_eq!(first.json()["status"], "processed");
    graph.wait_for_accepted("text", 1, PATIENCE);

    // Act: the gateway replays it, a few times.
    let replies: Vec<Value> = (0..3)
        .map(|_| app.post_webhook_with_id("msg_replayed", &body))
        .map(|r| {
            assert_eq!(r.status, 200, "{}", r.body);
            r.json()
        })
        .collect();

    // Assert
    for json in replies {
        assert_eq!(json["status"], "duplicate", "{json}");
        assert_eq!(json["order_id"], ORDER, "{json}");
    }
    app.assert_sends_settled(&graph, 2);
    assert_eq!(app.count("SELECT COUNT(*) FROM whatsapp_tokens"), 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM outbox"), 2);
}

#[test]
fn new_webhook_id_for_a_confirmed_order_is_already_confirmed_and_sends_nothing_new() {
    let graph = FakeGraph::start();
    let app = TestApp::spawn(&graph);
    let first = pay(&app, &payment_event(ORDER));
    graph.wait_for_accepted("text", 1, PATIENCE);

    let second = payment_event_with(ORDER, json!({"payment_id": "pay_second", "amount": 59900}));
    let resp = app.post_webhook(&second.to_string());

    assert_eq!(resp.status, 200, "{}", resp.body);
    let json = resp.json();
    assert_eq!(json["status"], "already_confirmed", "{json}");
    assert_eq!(json["order_id"], ORDER, "{json}");
    app.assert_sends_settled(&graph, 2);
    let token: String = app
        .db()
        .query_row("SELECT token FROM whatsapp_tokens", [], |r| r.get(0))
        .expect("exactly one token");
    assert_eq!(token, first.token);
    assert_eq!(app.count("SELECT COUNT(*) FROM whatsapp_tokens"), 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM outbox"), 2);
    let (payment_id, amount): (String, i64) = app
        .db()
        .query_row(
            "SELECT payment_id, total_amount FROM orders WHERE id = $1",
            [ORDER],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        (payment_id.as_str(), amount),
        ("pay_second", 59900),
        "payment data updated"
    );
}

#[test]
fn new_webhook_id_while_messages_are_still_queued_is_already_confirmed() {
    // Arrange: Graph is down, so both messages stay queued.
    let graph = FakeGraph::start();
    graph.respond_with(|_| Some(Reply::status(503)));
    let app = TestApp::builder(&graph)
        .env("WHATSAPP_RETRY_BASE_MS", "200")
        .env("WHATSAPP_MAX_ATTEMPTS", "100")
        .spawn();
    pay(&app, &payment_event(ORDER));

    let resp = app.post_webhook(&payment_event(ORDER).to_string());

    assert_eq!(resp.json()["status"], "already_confirmed", "{}", resp.body);
    assert_eq!(app.count("SELECT COUNT(*) FROM whatsapp_tokens"), 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM outbox"), 2);
}

#[test]
fn other_event_type_is_ignored_and_only_recorded() {
    let graph = FakeGraph::start();
    let app = TestApp::spawn(&graph);
    let mut event = payment_event(ORDER);
    event["type"] = json!("payment_failed");

    let resp = app.post_webhook(&event.to_string());

    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(resp.json()["status"], "ignored", "{}", resp.body);
    assert_eq!(app.count("SELECT COUNT(*) FROM webhook_events"), 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM orders"), 0);
    assert_eq!(app.count("SELECT COUNT(*) FROM whatsapp_tokens"), 0);
    assert_eq!(app.count("SELECT COUNT(*) FROM outbox"), 0);
    app.assert_sends_settled(&graph, 0);
}

fn assert_skipped_invalid_phone(app: &TestApp, order_id: &str, resp: &Resp) {
    assert_eq!(resp.status, 200, "{order_id}: {}", resp.body);
    let json = resp.json();
    assert_eq!(json["status"], "processed", "{order_id}: {json}");
    assert_eq!(
        json["whatsapp"], "skipped_invalid_phone",
        "{order_id}: {json}"
    );
    assert_eq!(json["order_id"], order_id, "{json}");
    let status: String = app
        .db()
        .query_row("SELECT status FROM orders WHERE id = $1", [order_id], |r| {
            r.get(0)
        })
        .unwrap_or_else(|e| panic!("{order_id}: no order row: {e}"));
    assert_eq!(status, "PAID", "{order_id}");
    assert_eq!(
        app.db()
            .query_row(
                "SELECT COUNT(*) FROM whatsapp_tokens WHERE order_id = $1",
                [order_id],
                |r| r.get::<_, i64>(0)
            )
            .unwrap(),
        0,
        "{order_id}: token"
    );
    assert!(app.outbox(order_id).is_empty(), "{order_id}: outbox rows");
}

#[test]
fn missing_phone_is_processed_as_skipped_and_sends_nothing() {
    let graph = FakeGraph::start();
    let app = TestApp::spawn(&graph);
    let event = payment_event_with(ORDER, json!({"customer_phone": null}));

    let resp = app.post_webhook(&event.to_string());

    assert_skipped_invalid_phone(&app, ORDER, &resp);
    app.assert_sends_settled(&graph, 0);
}

#[test]
fn invalid_phones_are_processed_as_skipped_and_send_nothing() {
    let graph = FakeGraph::start();
    let app = TestApp::spawn(&graph);
    let phones = [
        "",
        "12345",
        "call me maybe",
        "09876543210",
        "+91 98765",
        "+0 123 456 7890",
    ];

    for (i, phone) in phones.iter().enumerate() {
        let order_id = format!("ORD-PHONE-{i}");
        let event = payment_event_with(&order_id, json!({"customer_phone": phone}));
        let resp = app.post_webhook(&event.to_string());
        assert_skipped_invalid_phone(&app, &order_id, &resp);
    }
    app.assert_sends_settled(&graph, 0);
}

#[test]
fn malformed_json_is_400_writes_nothing_and_leaves_the_key_usable() {
    let graph = FakeGraph::start();
    let app = TestApp::spawn(&graph);
    let good = payment_event(ORDER).to_string();
    let broken = &good[..good.len() - 1];

    let resp = app.post_webhook_with_id("msg_fixed_later", broken);

    assert_eq!(resp.status, 400, "{}", resp.body);
    assert_eq!(resp.error_code(), "malformed_json");
    assert_nothing_written(&app);
    let retry = app.post_webhook_with_id("msg_fixed_later", &good);
    assert_eq!(retry.status, 200, "{}", retry.body);
    assert_eq!(retry.json()["status"], "processed", "{}", retry.body);
}

#[test]
fn invalid_fields_are_rejected_and_write_nothing() {
    let graph = FakeGraph::start();
    let app = TestApp::spawn(&graph);
    let long_id = "A".repeat(65);
    let cases: Vec<(&str, Value)> = vec![
        (
            "order_id with a space",
            payment_event_with("ORD 1042", json!({})),
        ),
        ("order_id with #", payment_event_with("ORD#1042", json!({}))),
        (
            "order_id with é",
            payment_event_with("ORDÉ-1042", json!({})),
        ),
        ("empty order_id", payment_event_with("", json!({}))),
        ("65-char order_id", payment_event_with(&long_id, json!({}))),
        (
            "missing order_id",
            payment_event_with(ORDER, json!({"order_id": null})),
        ),
        (
            "numeric order_id",
            payment_event_with(ORDER, json!({"order_id": 1042})),
        ),
        (
            "negative amount",
            payment_event_with(ORDER, json!({"amount": -49900})),
        ),
        (
            "float amount",
            payment_event_with(ORDER, json!({"amount": 499.5})),
        ),
        (
            "string amount",
            payment_event_with(ORDER, json!({"amount": "49900"})),
        ),
        (
            "missing amount",
            payment_event_with(ORDER, json!({"amount": null})),
        ),
        (
            "unknown currency",
            payment_event_with(ORDER, json!({"currency": "XYZ"})),
        ),
        (
            "missing currency",
            payment_event_with(ORDER, json!({"currency": null})),
        ),
        ("no data", {
            let mut e = payment_event(ORDER);
            e.as_object_mut().unwrap().remove("data");
            e
        }),
        ("JSON array", json!([1, 2, 3])),
    ];

    for (i, (what, event)) in cases.iter().enumerate() {
        let resp = app.post_webhook_with_id(&format!("msg_bad_{i}"), &event.to_string());
        assert!(
            resp.status == 400 || resp.status == 422,
            "{what}: expected 400 or 422, got {} {}",
            resp.status,
            resp.body
        );
        let code = resp.error_code();
        assert!(!code.is_empty(), "{what}: empty error code");
    }

    assert_nothing_written(&app);
    app.assert_sends_settled(&graph, 0);
    // A rejected key is not consumed: the corrected event under the same id works.
    let negative = cases
        .iter()
        .position(|(what, _)| *what == "negative amount")
        .unwrap();
    let retry = app.post_webhook_with_id(
        &format!("msg_bad_{negative}"),
        &payment_event(ORDER).to_string(),
    );
    assert_eq!(retry.json()["status"], "processed", "{}", retry.body);
}

#[test]
fn order_ids_of_every_allowed_character_up_to_64_are_accepted() {
    let graph = FakeGraph::start();
    let app = TestApp::spawn(&graph);
    let ids = [
        "A".repeat(64),
        "a".to_string(),
        "Shop-2026_11.26:batch/7".to_string(),
        "0123456789".to_string(),
    ];

    for id in &ids {
        let p = pay(&app, &payment_event(id));
        assert_eq!(&p.order_id, id);
        assert_eq!(p.whatsapp_link, wa_me_link(id, &p.token));
    }
}

fn signed_headers(webhook_id: &str, ts: i64, signature: &str) -> Vec<(String, String)> {
    vec![
        ("webhook-id".into(), webhook_id.into()),
        ("webhook-timestamp".into(), ts.to_string()),
        ("webhook-signature".into(), signature.into()),
    ]
}

fn post_raw(app: &TestApp, body: &str, headers: &[(String, String)]) -> Resp {
    let refs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    app.post_webhook_with_headers(body, &refs)
}

fn assert_unauthorized(what: &str, resp: &Resp) {
    assert_eq!(resp.status, 401, "{what}: {}", resp.body);
    assert_eq!(resp.error_code(), "invalid_signature", "{what}");
}

#[test]
fn wrong_or_tampered_signatures_are_401_and_write_nothing() {
    let graph = FakeGraph::start();
    let app = TestApp::spawn(&graph);
    let body = payment_event(ORDER).to_string();
    let ts = now_secs();
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let other_secret = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

    let mut cases: Vec<(&str, String, String, String)> = Vec::new(); // (what, id, body, signature)
    let id = fresh_webhook_id();
    let valid = sign(secret, &id, ts, &body);
    let mut last_changed = valid.clone();
    let last = last_changed.pop().unwrap();
    last_changed.push(if last == 'A' { 'B' } else { 'A' });
    cases.push((
        "other secret",
        id.clone(),
        body.clone(),
        sign(other_secret, &id, ts, &body),
    ));
    cases.push((
        "last character changed",
        id.clone(),
        body.clone(),
        last_changed,
    ));
    cases.push(("bare v1,", id.clone(), body.clone(), "v1,".into()));
    cases.push((
        "truncated",
        id.clone(),
        body.clone(),
        valid[..20].to_string(),
    ));
    cases.push((
        "v2 entry only",
        id.clone(),
        body.clone(),
        valid.replacen("v1,", "v2,", 1),
    ));
    cases.push((
        "no version",
        id.clone(),
        body.clone(),
        valid[3..].to_string(),
    ));
    cases.push(("empty", id.clone(), body.clone(), String::new()));
    cases.push((
        "tampered body",
        id.clone(),
        body.replace("49900", "4990"),
        valid.clone(),
    ));
    cases.push((
        "signed for another id",
        fresh_webhook_id(),
        body.clone(),
        valid.clone(),
    ));

    for (what, id, body, signature) in &cases {
        let resp = post_raw(&app, body, &signed_headers(id, ts, signature));
        assert_unauthorized(what, &resp);
    }

    assert_nothing_written(&app);
    app.assert_sends_settled(&graph, 0);
}

#[test]
fn timestamps_more_than_five_minutes_away_are_401() {
    let graph = FakeGraph::start();
    let app = TestApp::spawn(&graph);
    let body = payment_event(ORDER).to_string();

    for (what, offset) in [
        ("6 minutes old", -360),
        ("an hour old", -3600),
        ("6 minutes ahead", 360),
    ] {
        let id = fresh_webhook_id();
        let ts = now_secs() + offset;
        let resp = post_raw(
            &app,
            &body,
            &signed_headers(
                &id,
                ts,
                &sign(crate::support::app::WEBHOOK_SECRET, &id, ts, &body),
            ),
        );
        assert_unauthorized(what, &resp);
    }
    assert_nothing_written(&app);

    // Within the window (4 minutes old) the same event is accepted.
    let id = fresh_webhook_id();
    let ts = now_secs() - 240;
    let resp = post_raw(
        &app,
        &body,
        &signed_headers(
            &id,
            ts,
            &sign(crate::support::app::WEBHOOK_SECRET, &id, ts, &body),
        ),
    );
    assert_eq!(resp.json()["status"], "processed", "{}", resp.body);
}

#[test]
fn missing_signature_headers_are_401_and_write_nothing() {
    let graph = FakeGraph::start();
    let app = TestApp::spawn(&graph);
    let body = payment_event(ORDER).to_string();
    let id = fresh_webhook_id();
    let ts = now_secs();
    let all = signed_headers(
        &id,
        ts,
        &sign(crate::support::app::WEBHOOK_SECRET, &id, ts, &body),
    );

    for missing in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        let headers: Vec<_> = all.iter().filter(|(k, _)| k != missing).cloned().collect();
        assert_unauthorized(
            &format!("without {missing}"),
            &post_raw(&app, &body, &headers),
        );
    }
    assert_unauthorized("unsigned", &app.post_webhook_unsigned(&body));
    let mut bad_ts = all.clone();
    bad_ts[1].1 = "yesterday".into();
    assert_unauthorized("non-numeric timestamp", &post_raw(&app, &body, &bad_ts));

    assert_nothing_written(&app);
    app.assert_sends_settled(&graph, 0);
}

#[test]
fn a_signature_list_with_one_valid_v1_entry_is_accepted() {
    let graph = FakeGraph::start();
    let app = TestApp::spawn(&graph);
    let body = payment_event(ORDER).to_string();
    let id = fresh_webhook_id();
    let ts = now_secs();
    let valid = sign(crate::support::app::WEBHOOK_SECRET, &id, ts, &body);
    let list = format!(
        "v1,Zm9vYmFyYmF6Zm9vYmFyYmF6Zm9vYmFyYmF6Zm9vYmE= v2,{} {valid}",
        &valid[3..]
    );

    let resp = post_raw(&app, &body, &signed_headers(&id, ts, &list));

    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(resp.json()["status"], "processed", "{}", resp.body);
}

/// The example event padded with JSON whitespace to exactly `len` bytes.
fn padded_event(len: usize) -> String {
    let body = payment_event(ORDER).to_string();
    let inner = &body[..body.len() - 1];
    assert!(len > body.len());
    format!("{inner}{}}}", " ".repeat(len - body.len()))
}

#[test]
fn body_over_64_kib_is_413_and_writes_nothing() {
    let graph = FakeGraph::start();
    let app = TestApp::spawn(&graph);
    let body = padded_event(64 * 1024 + 1);
    assert_eq!(body.len(), 65537);

    let resp = app.post_webhook(&body);

    assert_eq!(resp.status, 413, "{}", resp.body);
    assert_eq!(resp.error_code(), "payload_too_large");
    assert_nothing_written(&app);
}

#[test]
fn body_of_exactly_64_kib_is_accepted() {
    let graph = FakeGraph::start();
    let app = TestApp::spawn(&graph);
    let body = padded_event(64 * 1024);
    assert_eq!(body.len(), 65536);

    let resp = app.post_webhook(&body);

    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(resp.json()["status"], "processed", "{}", resp.body);
}

#[test]
fn fifty_concurrent_deliveries_of_one_webhook_id_send_one_confirmation_and_one_link() {
    let graph = FakeGraph::start();
    let app = TestApp::spawn(&graph);
    let body = payment_event(ORDER).to_string();
    let barrier = Barrier::new(50);

    let statuses: Vec<String> = thread::scope(|s| {
        let handles: Vec<_> = (0..50)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    let resp = app.post_webhook_with_id("msg_storm", &body);
                    assert_eq!(resp.status, 200, "{}", resp.body);
                    resp.json()["status"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    assert_eq!(
        statuses.iter().filter(|s| *s == "processed").count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| *s == "duplicate").count(),
        49,
        "{statuses:?}"
    );
    graph.wait_for_accepted("text", 1, PATIENCE);
    app.assert_sends_settled(&graph, 2);
    assert_eq!(graph.requests_of_type("template").len(), 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM whatsapp_tokens"), 1);
}

#[test]
fn ten_webhook_ids_for_one_order_send_one_confirmation_and_one_link() {
    let graph = FakeGraph::start();
    let app = TestApp::spawn(&graph);
    let barrier = Barrier::new(10);

    let statuses: Vec<String> = thread::scope(|s| {
        let handles: Vec<_> = (0..10)
            .map(|_| {
                s.spawn(|| {
                    let body = payment_event(ORDER).to_string();
                    barrier.wait();
                    let resp = app.post_webhook(&body);
                    assert_eq!(resp.status, 200, "{}", resp.body);
                    resp.json()["status"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    assert_eq!(
        statuses.iter().filter(|s| *s == "processed").count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses
            .iter()
            .filter(|s| *s == "already_confirmed")
            .count(),
        9,
        "{statuses:?}"
    );
    graph.wait_for_accepted("text", 1, PATIENCE);
    app.assert_sends_settled(&graph, 2);
    assert_eq!(graph.requests_of_type("template").len(), 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM whatsapp_tokens"), 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM webhook_events"), 10);
}

#[test]
fn same_webhook_id_with_a_different_body_is_still_a_duplicate() {
    let graph = FakeGraph::start();
    let app = TestApp::spawn(&graph);
    let first = app.post_webhook_with_id("msg_same", &payment_event(ORDER).to_string());
    assert_eq!(first.json()["status"], "processed", "{}", first.body);

    let other = app.post_webhook_with_id("msg_same", &payment_event("ORD-OTHER").to_string());

    assert_eq!(other.status, 200, "{}", other.body);
    assert_eq!(other.json()["status"], "duplicate", "{}", other.body);
    assert_eq!(app.count("SELECT COUNT(*) FROM orders"), 1);
    graph.wait_for_accepted("text", 1, PATIENCE);
    app.assert_sends_settled(&graph, 2);
}

fn token_lifetime_ms(app: &TestApp) -> i64 {
    app.db()
        .query_row(
            "SELECT expires_at - created_at FROM whatsapp_tokens",
            [],
            |r| r.get(0),
        )
        .expect("one token")
}

#[test]
fn invite_token_lives_ninety_days_by_default() {
    let graph = FakeGraph::start();
    let app = TestApp::spawn(&graph);

    pay(&app, &payment_event(ORDER));

    let lifetime = token_lifetime_ms(&app);
    assert!(
        (lifetime - 90 * 86_400_000).abs() < 5_000,
        "token lifetime {lifetime} ms"
    );
}

#[test]
fn invite_token_lifetime_follows_token_ttl_days() {
    let graph = FakeGraph::start();
    let app = TestApp::builder(&graph).env("TOKEN_TTL_DAYS", "7").spawn();

    pay(&app, &payment_event(ORDER));

    let lifetime = token_lifetime_ms(&app);
    assert!(
        (lifetime - 7 * 86_400_000).abs() < 5_000,
        "token lifetime {lifetime} ms"
    );
}

#[test]
fn signed_webhook_without_content_type_is_processed() {
    let graph = FakeGraph::start();
    let app = TestApp::spawn(&graph);
    let body = payment_event(ORDER).to_string();
    let id = fresh_webhook_id();
    let ts = now_secs();
    let signature = sign(crate::support::app::WEBHOOK_SECRET, &id, ts, &body);

    let resp = into_resp_without_content_type(&app, &body, &signed_headers(&id, ts, &signature));

    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(resp.json()["status"], "processed", "{}", resp.body);
}

fn into_resp_without_content_type(app: &TestApp, body: &str, headers: &[(String, String)]) -> Resp {
    let mut req = ureq::post(&app.url("/webhooks/payment"));
    for (k, v) in headers {
        req = req.set(k, v);
    }
    match req.send_bytes(body.as_bytes()) {
        Ok(r) | Err(ureq::Error::Status(_, r)) => {
            let status = r.status();
            Resp {
                status,
                headers: vec![],
                body: r.into_string().unwrap_or_default(),
            }
        }
        Err(e) => panic!("{e}"),
    }
}
