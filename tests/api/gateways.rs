//! SPEC §11: the Razorpay, Stripe and Cashfree routes, black-box — signed as
//! each gateway signs, mapped onto §4's path (one confirmation per order at
//! the fake Graph API, whatever the order, duplication or concurrency of the
//! deliveries), plus the secret rules (rotation lists, 24–64 bytes, one
//! payment source in live mode).
//!
//! Sample payloads are the gateways' published ones, with the merchant's
//! order id, phone and amount put where each gateway carries them:
//! - Razorpay: https://razorpay.com/docs/webhooks/payloads/payments/ and
//!   .../payloads/orders/ (`payment.captured`, `order.paid`, `notes: []`).
//! - Stripe: the `checkout.session.completed` event of
//!   https://docs.stripe.com/api/checkout/sessions/object and
//!   https://docs.stripe.com/checkout/fulfillment (async payment methods).
//! - Cashfree: "Payment success webhook", version 2025-01-01, of
//!   https://www.cashfree.com/docs/api-reference/payments/latest/payments/webhooks
//!   (`order_amount: 2`, `payment_amount: 1`, `customer_phone: "9908734801"`).

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::app::into_resp;
use crate::support::child::run_cli;
use crate::support::signing::{self, now_secs};
use crate::support::*;

const RAZORPAY_SECRETS: &str = "rzp_old_secret_4f1 rzp_current_secret_9c2";
const STRIPE_SECRETS: &str = "whsec_stripe_current_8b1 whsec_stripe_next_77a";
const CASHFREE_SECRET: &str = "cfsk_ma_test_5e0b2c";
const ADMIN: &str = "adm-gateways-3a9f-bearer-token";

fn gateway_app(graph: &FakeGraph) -> TestApp {
    TestApp::builder(graph)
        .env("RAZORPAY_WEBHOOK_SECRET", RAZORPAY_SECRETS)
        .env("STRIPE_WEBHOOK_SECRET", STRIPE_SECRETS)
        .env("CASHFREE_CLIENT_SECRET", CASHFREE_SECRET)
        .env("ADMIN_TOKEN", ADMIN)
        .spawn()
}

fn post(app: &TestApp, path: &str, body: &str, headers: &[(&str, &str)]) -> Resp {
    let mut req = ureq::post(&app.url(path))
        .timeout(Duration::from_secs(15))
        .set("Content-Type", "application/json");
    for (k, v) in headers {
        req = req.set(k, v);
    }
    into_resp(req.send_string(body))
}

fn razorpay(app: &TestApp, body: &str, event_id: Option<&str>) -> Resp {
    let secret = RAZORPAY_SECRETS.split(' ').nth(1).unwrap();
    razorpay_with(app, body, event_id, &signing::razorpay(secret, body))
}

fn razorpay_with(app: &TestApp, body: &str, event_id: Option<&str>, sig: &str) -> Resp {
    let mut headers = vec![("X-Razorpay-Signature", sig)];
    if let Some(id) = event_id {
        headers.push(("x-razorpay-event-id", id));
    }
    post(app, "/webhooks/razorpay", body, &headers)
}

fn stripe(app: &TestApp, body: &str) -> Resp {
    let secret = STRIPE_SECRETS.split(' ').next().unwrap();
    let header = signing::stripe(secret, now_secs(), body);
    post(
        app,
        "/webhooks/stripe",
        body,
        &[("Stripe-Signature", &header)],
    )
}

fn cashfree(app: &TestApp, body: &str) -> Resp {
    let ts = (now_secs() * 1000).to_string();
    let sig = signing::cashfree(CASHFREE_SECRET, &ts, body);
    post(
        app,
        "/webhooks/cashfree",
        body,
        &[("x-webhook-timestamp", &ts), ("x-webhook-signature", &sig)],
    )
}

fn status_of(resp: &Resp) -> String {
    assert_eq!(resp.status, 200, "answer: {}", resp.body);
    resp.json()["status"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Razorpay's documented `payment.captured` event (payments payload page),
/// for payment `pay_id` of Razorpay order `rzp_order`, with `notes`.
fn razorpay_payment_captured(pay_id: &str, rzp_order: &str, notes: Value) -> String {
    json!({
        "entity": "event",
        "account_id": "acc_BFQ7uQEaa7j2z7",
        "event": "payment.captured",
        "contains": ["payment"],
        "payload": {"payment": {"entity": {
            "id": pay_id, "entity": "payment", "amount": 49900, "currency": "INR",
            "status": "captured", "order_id": rzp_order, "invoice_id": null,
            "international": false, "method": "upi", "amount_refunded": 0,
            "refund_status": null, "captured": true, "description": "Purchase",
            "card_id": null, "bank": null, "wallet": null, "vpa": "gaurav.kumar@exampleupi",
            "email": "gaurav.kumar@example.com", "contact": "+919876543210",
            "notes": notes, "fee": 1180, "tax": 180, "error_code": null,
            "error_description": null, "error_source": null, "error_step": null,
            "error_reason": null, "acquirer_data": {"rrn": "033814379298"},
            "created_at": 1567674599
        }}},
        "created_at": 1567674606
    })
    .to_string()
}

/// Razorpay's documented `order.paid` event: the same payment plus its order.
fn razorpay_order_paid(
    pay_id: &str,
    rzp_order: &str,
    payment_notes: Value,
    order: Value,
) -> String {
    let mut event: Value =
        serde_json::from_str(&razorpay_payment_captured(pay_id, rzp_order, payment_notes)).unwrap();
    event["event"] = json!("order.paid");
    event["contains"] = json!(["payment", "order"]);
    let mut entity = json!({
        "id": rzp_order, "entity": "order", "amount": 49900, "amount_paid": 49900,
        "amount_due": 0, "currency": "INR", "receipt": null, "offer_id": null,
        "status": "paid", "attempts": 1, "notes": [], "created_at": 1567674581
    });
    for (k, v) in order.as_object().unwrap() {
        entity[k] = v.clone();
    }
    event["payload"]["order"] = json!({"entity": entity});
    event.to_string()
}

fn templates_for(graph: &FakeGraph, order: &str) -> Vec<RecordedRequest> {
    graph
        .requests_of_type("template")
        .into_iter()
        .filter(|r| r.order_id() == Some(order))
        .collect()
}

fn amount_param(r: &RecordedRequest) -> String {
    r.body
        .pointer("/template/components/0/parameters/1/text")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn admin_order(app: &TestApp, order: &str) -> Value {
    let resp = into_resp(
        ureq::get(&app.url(&format!("/admin/orders/{order}")))
            .set("Authorization", &format!("Bearer {ADMIN}"))
            .call(),
    );
    assert_eq!(resp.status, 200, "{}", resp.body);
    resp.json()
}

#[test]
fn razorpay_sample_payment_captured_confirms_once_and_says_where_the_order_id_came_from() {
    let graph = FakeGraph::start();
    let app = gateway_app(&graph);
    let body = razorpay_payment_captured(
        "pay_DESlfW9H8K9uqM",
        "order_DESlLckIVRkHWj",
        json!({"order_id": "RZ-1001", "note": "Packed with care"}),
    );
    let first = razorpay(&app, &body, Some("evt_rzp_1"));
    assert_eq!(status_of(&first), "processed");
    let json = first.json();
    assert_eq!(json["order_id"], "RZ-1001");
    token_of(json["invite_url"].as_str().unwrap());

    graph.wait_for_accepted("template", 1, PATIENCE);
    graph.wait_for_accepted("text", 1, PATIENCE);
    let template = &templates_for(&graph, "RZ-1001")[0];
    assert_eq!(template.body["to"], "919876543210");
    assert_eq!(amount_param(template), "INR 499.00");
    assert_eq!(
        template
            .body
            .pointer("/template/components/0/parameters/2/text"),
        Some(&json!("Packed with care"))
    );

    // The same delivery again (Razorpay retries until it sees a 2xx).
    let again = razorpay(&app, &body, Some("evt_rzp_1"));
    assert_eq!(status_of(&again), "duplicate");
    assert_eq!(again.json()["invite_url"], json["invite_url"]);
    // Without the event-id header the key is the payment id and the event.
    assert_eq!(status_of(&razorpay(&app, &body, None)), "already_confirmed");
    assert_eq!(status_of(&razorpay(&app, &body, None)), "duplicate");
    app.assert_sends_settled(&graph, 2);

    let keys: Vec<String> = app
        .db()
        .prepare("SELECT idempotency_key FROM webhook_events ORDER BY idempotency_key")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        keys,
        [
            "razorpay:evt_rzp_1",
            "razorpay:pay_DESlfW9H8K9uqM:payment.captured"
        ]
    );
    let order = admin_order(&app, "RZ-1001");
    assert_eq!(
        order["order"]["order_id_source"]
            .as_str()
            .or(order["order_id_source"].as_str()),
        Some("razorpay payment.notes.order_id"),
        "{order}"
    );
}

#[test]
fn razorpay_tampered_unsigned_or_foreign_signatures_are_refused_and_write_nothing() {
    let graph = FakeGraph::start();
    let app = gateway_app(&graph);
    let body = razorpay_payment_captured("pay_T1", "order_T1", json!([]));
    let good = signing::razorpay("rzp_current_secret_9c2", &body);
    let tampered = body.replace("49900", "100");
    for (what, body, sig) in [
        ("tampered body", tampered.as_str(), good.as_str()),
        ("no signature", body.as_str(), ""),
        (
            "wrong secret",
            body.as_str(),
            &signing::razorpay("other", &body),
        ),
        ("truncated", body.as_str(), &good[..40]),
        ("Meta's prefix", body.as_str(), &format!("sha256={good}")),
    ] {
        let resp = razorpay_with(&app, body, Some("evt_bad"), sig);
        assert_eq!(resp.status, 401, "{what}: {}", resp.body);
        assert_eq!(resp.error_code(), "invalid_signature", "{what}");
    }
    assert_nothing_written(&app);
    // Validly signed but ambiguous: a key repeated inside notes is 422 (§4), nothing written.
    let ambiguous = body.replace(
        "\"notes\":[]",
        "\"notes\":{\"order_id\":\"A-1\",\"order_id\":\"B-1\"}",
    );
    assert_ne!(ambiguous, body);
    let resp = razorpay(&app, &ambiguous, Some("evt_dup_keys"));
    assert_eq!(resp.status, 422, "{}", resp.body);
    assert_nothing_written(&app);
    // Either secret of the rotation list signs. (Only Razorpay's own order
    // id: recorded, waiting for its order.paid, §11.)
    let old = signing::razorpay("rzp_old_secret_4f1", &body);
    assert_eq!(
        status_of(&razorpay_with(&app, &body, Some("evt_ok"), &old)),
        "waiting"
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM held_payments WHERE order_id = 'order_T1'"),
        1
    );
}

/// issue 17: with the merchant's id only in the order's receipt, 5 of 5
/// concurrent pairs were confirmed under Razorpay's `order_…` id. Now every
/// order is the merchant's, whichever event of the pair lands first.
#[test]
fn razorpay_order_paid_and_payment_captured_concurrently_give_one_confirmation_per_order() {
    let graph = FakeGraph::start();
    let app = Arc::new(gateway_app(&graph));
    const ORDERS: usize = 10;
    let mut handles = Vec::new();
    let barrier = Arc::new(Barrier::new(ORDERS * 2));
    for i in 0..ORDERS {
        let order = format!("RZ-C{i}");
        let pay = format!("pay_C{i}");
        let rzp = format!("order_C{i}");
        // Half of the orders carry the merchant id in the payment's notes;
        // the others only in the order's receipt, which payment.captured
        // does not carry: both events must still land on one order.
        let (captured, paid) = if i % 2 == 0 {
            let notes = json!({"order_id": order});
            (
                razorpay_payment_captured(&pay, &rzp, notes.clone()),
                razorpay_order_paid(&pay, &rzp, notes, json!({})),
            )
        } else {
            (
                razorpay_payment_captured(&pay, &rzp, json!([])),
                razorpay_order_paid(&pay, &rzp, json!([]), json!({"receipt": order})),
            )
        };
        for (n, body) in [captured, paid].into_iter().enumerate() {
            let app = app.clone();
            let barrier = barrier.clone();
            let id = format!("evt_C{i}_{n}");
            handles.push(thread::spawn(move || {
                barrier.wait();
                let resp = razorpay(&app, &body, Some(&id));
                status_of(&resp)
            }));
        }
    }
    let mut statuses: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    statuses.sort();
    assert_eq!(
        statuses.iter().filter(|s| *s == "processed").count(),
        ORDERS,
        "{statuses:?}"
    );
    // The second of a pair is already confirmed, or (a receipt-only
    // payment.captured that came first) waited for its order.paid.
    assert_eq!(
        statuses
            .iter()
            .filter(|s| *s == "already_confirmed" || *s == "waiting")
            .count(),
        ORDERS,
        "{statuses:?}"
    );
    graph.wait_for_accepted("template", ORDERS, PATIENCE);
    graph.wait_for_accepted("text", ORDERS, PATIENCE);
    app.assert_sends_settled(&graph, ORDERS * 2);
    for r in graph.requests_of_type("template") {
        let order = r.order_id().unwrap();
        assert_eq!(templates_for(&graph, order).len(), 1, "{order}");
        assert!(order.starts_with("RZ-C"), "confirmed under {order}");
        assert_eq!(
            r.body.pointer("/template/components/0/parameters/0/text"),
            Some(&json!(order))
        );
    }
    let mut orders: Vec<String> = app
        .db()
        .prepare("SELECT id FROM orders ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    orders.sort();
    let expected: Vec<String> = (0..ORDERS).map(|i| format!("RZ-C{i}")).collect();
    assert_eq!(orders, expected);
    assert_eq!(app.count("SELECT COUNT(*) FROM held_payments"), 0);
    admin_order(&app, "RZ-C1");
}

/// §11 in order: the receipt-only `payment.captured` first (as Razorpay
/// sends them), then its `order.paid`. issue 17: the confirmation showed
/// Razorpay's id and the admin lookup by the merchant's id was 404.
#[test]
fn razorpay_payment_captured_first_waits_for_order_paid_and_confirms_the_merchants_order() {
    let graph = FakeGraph::start();
    let app = gateway_app(&graph);
    let captured = razorpay_payment_captured("pay_W1", "order_W1", json!([]));
    let paid = razorpay_order_paid("pay_W1", "order_W1", json!([]), json!({"receipt": "RZ-W1"}));

    let first = razorpay(&app, &captured, Some("evt_W1a"));
    assert_eq!(status_of(&first), "waiting", "{}", first.body);
    assert_eq!(app.count("SELECT COUNT(*) FROM outbox"), 0);
    assert_eq!(app.count("SELECT COUNT(*) FROM orders"), 0);
    let second = razorpay(&app, &paid, Some("evt_W1b")).json();
    assert_eq!(second["status"], "processed");
    assert_eq!(second["order_id"], "RZ-W1");

    graph.wait_for_accepted("text", 1, PATIENCE);
    app.assert_sends_settled(&graph, 2);
    let template = &templates_for(&graph, "RZ-W1")[0];
    assert_eq!(
        template
            .body
            .pointer("/template/components/0/parameters/0/text"),
        Some(&json!("RZ-W1"))
    );
    assert!(admin_order(&app, "RZ-W1")
        .to_string()
        .contains("razorpay order.receipt"));
    let by_gateway_id = into_resp(
        ureq::get(&app.url("/admin/orders/order_W1"))
            .set("Authorization", &format!("Bearer {ADMIN}"))
            .call(),
    );
    assert_eq!(by_gateway_id.status, 404);
    assert_eq!(app.count("SELECT COUNT(*) FROM held_payments"), 0);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM webhook_events WHERE order_id = 'RZ-W1'"),
        2
    );
    // Razorpay retries the first delivery: a replay, nothing more.
    assert_eq!(
        status_of(&razorpay(&app, &captured, Some("evt_W1a"))),
        "duplicate"
    );
    app.assert_sends_settled(&graph, 2);
}

/// §11: no `order.paid` within `RAZORPAY_ORDER_WAIT_MS`: Razorpay's id names
/// the order. The wait is stored, so a restart in the middle of it (here
/// a kill -9 right after the 200) still confirms it once; an `order.paid`
/// that comes later finds the order confirmed.
#[test]
fn razorpay_payment_captured_alone_is_confirmed_under_razorpays_id_after_the_wait_across_a_restart()
{
    let graph = FakeGraph::start();
    let mut app = TestApp::builder(&graph)
        .env("RAZORPAY_WEBHOOK_SECRET", RAZORPAY_SECRETS)
        .env("ADMIN_TOKEN", ADMIN)
        .env("RAZORPAY_ORDER_WAIT_MS", "1500")
        .spawn();
    let captured = razorpay_payment_captured("pay_A1", "order_A1", json!([]));
    assert_eq!(
        status_of(&razorpay(&app, &captured, Some("evt_A1a"))),
        "waiting"
    );

    app.restart();

    let template = graph.wait_for("order_A1", PATIENCE, |all| {
        all.iter().any(|r| r.order_id() == Some("order_A1"))
    });
    assert!(!template.is_empty());
    graph.wait_for_accepted("text", 1, PATIENCE);
    let late = razorpay_order_paid("pay_A1", "order_A1", json!([]), json!({"receipt": "RZ-A1"}));
    let resp = razorpay(&app, &late, Some("evt_A1b")).json();
    assert_eq!(resp["status"], "already_confirmed");
    assert_eq!(resp["order_id"], "order_A1");
    app.assert_sends_settled(&graph, 2);
    assert_eq!(templates_for(&graph, "order_A1").len(), 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM orders"), 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM held_payments"), 0);
    assert!(admin_order(&app, "order_A1")
        .to_string()
        .contains("razorpay payment.order_id"));
}

#[test]
fn razorpay_reordered_order_paid_first_then_payment_captured_is_already_confirmed() {
    let graph = FakeGraph::start();
    let app = gateway_app(&graph);
    let paid = razorpay_order_paid(
        "pay_R1",
        "order_R1",
        json!([]),
        json!({"notes": {"order_id": "RZ-R1"}, "receipt": "rcpt-9"}),
    );
    let json: Value = razorpay(&app, &paid, Some("evt_R1a")).json();
    assert_eq!(json["status"], "processed");
    assert_eq!(json["order_id"], "RZ-R1");
    let captured = razorpay_payment_captured("pay_R1", "order_R1", json!([]));
    let second = razorpay(&app, &captured, Some("evt_R1b")).json();
    assert_eq!(second["status"], "already_confirmed");
    assert_eq!(second["order_id"], "RZ-R1");
    graph.wait_for_accepted("text", 1, PATIENCE);
    app.assert_sends_settled(&graph, 2);
    let order = admin_order(&app, "RZ-R1");
    assert!(
        order.to_string().contains("razorpay order.notes.order_id"),
        "{order}"
    );
}

#[test]
fn every_gateway_ignores_other_event_types() {
    let graph = FakeGraph::start();
    let app = gateway_app(&graph);
    let failed = razorpay_payment_captured("pay_F1", "order_F1", json!([]))
        .replace("payment.captured", "payment.failed");
    assert_eq!(
        status_of(&razorpay(&app, &failed, Some("evt_F1"))),
        "ignored"
    );
    let refund = json!({"id": "evt_1Refund", "object": "event", "type": "charge.refunded",
        "data": {"object": {"id": "ch_1", "object": "charge"}}})
    .to_string();
    assert_eq!(status_of(&stripe(&app, &refund)), "ignored");
    let dropped = cashfree_success("CF-D1", "1.00", "9908734801", 77001)
        .replace("PAYMENT_SUCCESS_WEBHOOK", "PAYMENT_USER_DROPPED_WEBHOOK")
        .replace("\"SUCCESS\"", "\"USER_DROPPED\"");
    assert_eq!(status_of(&cashfree(&app, &dropped)), "ignored");
    // A later success of the same Cashfree payment id is not taken for a duplicate.
    let paid = cashfree_success("CF-D1", "1.00", "9908734801", 77001);
    assert_eq!(status_of(&cashfree(&app, &paid)), "processed");
    assert_eq!(app.count("SELECT COUNT(*) FROM orders"), 1);
}

/// Stripe's `checkout.session.completed` event as documented (trimmed of
/// fields orderlink does not read, which Stripe adds freely).
fn stripe_session_event(evt: &str, kind: &str, session: Value) -> String {
    let mut object = json!({
        "id": "cs_test_a1b2c3d4e5f6g7h8i9j0k1l2m3n4o5p6q7r8s9t0u1v2w3x4y5z6A7B8C9D0",
        "object": "checkout.session",
        "amount_subtotal": 49900, "amount_total": 49900, "currency": "inr",
        "client_reference_id": null, "customer": "cus_PbZ6Xj0v1pQx1a",
        "customer_details": {"address": null, "email": "jenny.rosen@example.com",
            "name": "Jenny Rosen", "phone": "+919876543210", "tax_exempt": "none", "tax_ids": []},
        "livemode": false, "metadata": {}, "mode": "payment",
        "payment_intent": "pi_3MtwBwLkdIwHu7ix28a3tqPa",
        "payment_method_types": ["card"], "payment_status": "paid",
        "phone_number_collection": {"enabled": true}, "status": "complete",
        "success_url": "https://example.com/success"
    });
    for (k, v) in session.as_object().unwrap() {
        object[k] = v.clone();
    }
    json!({"id": evt, "object": "event", "api_version": "2024-06-20", "created": 1700000000,
        "data": {"object": object}, "livemode": false, "pending_webhooks": 1,
        "request": {"id": null, "idempotency_key": null}, "type": kind})
    .to_string()
}

#[test]
fn stripe_sample_session_pays_with_signature_rules_of_stripe() {
    let graph = FakeGraph::start();
    let app = gateway_app(&graph);
    let body = stripe_session_event(
        "evt_1S1",
        "checkout.session.completed",
        json!({"client_reference_id": "ST-1", "metadata": {"note": "Gift wrap"}}),
    );
    let now = now_secs();
    let current = signing::stripe_v1("whsec_stripe_current_8b1", now, &body);
    let next = signing::stripe_v1("whsec_stripe_next_77a", now, &body);
    let junk = "0".repeat(64);
    let refused = [
        format!("t={},v1={current}", now - 400),
        format!("t={},v1={current}", now + 400),
        format!("t={now},v0={current}"),
        format!("t={now},v1={junk}"),
        format!("v1={current}"),
        format!(
            "t={now},v1={}",
            signing::stripe_v1("whsec_other", now, &body)
        ),
    ];
    for header in &refused {
        let resp = post(
            &app,
            "/webhooks/stripe",
            &body,
            &[("Stripe-Signature", header)],
        );
        assert_eq!(resp.status, 401, "{header}: {}", resp.body);
    }
    let tampered = body.replace("49900", "100");
    let resp = post(
        &app,
        "/webhooks/stripe",
        &tampered,
        &[("Stripe-Signature", &format!("t={now},v1={current}"))],
    );
    assert_eq!(resp.status, 401);
    assert_nothing_written(&app);

    // During a secret roll Stripe sends one v1 per secret; v0 is ignored.
    let header = format!("t={now},v1={junk},v0={junk},v1={next}");
    let resp = post(
        &app,
        "/webhooks/stripe",
        &body,
        &[("Stripe-Signature", &header)],
    );
    assert_eq!(status_of(&resp), "processed");
    assert_eq!(resp.json()["order_id"], "ST-1");
    let template = &graph.wait_for_accepted("template", 1, PATIENCE)[0];
    assert_eq!(amount_param(template), "INR 499.00");
    assert_eq!(template.body["to"], "919876543210");
    // Redelivered by Stripe: same evt id.
    assert_eq!(status_of(&stripe(&app, &body)), "duplicate");
    let order = admin_order(&app, "ST-1");
    assert!(
        order.to_string().contains("stripe client_reference_id"),
        "{order}"
    );
}

#[test]
fn stripe_unpaid_session_is_ignored_until_the_async_payment_succeeds() {
    let graph = FakeGraph::start();
    let app = gateway_app(&graph);
    let unpaid = stripe_session_event(
        "evt_1U1",
        "checkout.session.completed",
        json!({"payment_status": "unpaid", "metadata": {"order_id": "ST-U1"}}),
    );
    assert_eq!(status_of(&stripe(&app, &unpaid)), "ignored");
    assert_eq!(app.count("SELECT COUNT(*) FROM orders"), 0);
    app.assert_sends_settled(&graph, 0);
    let succeeded = stripe_session_event(
        "evt_1U2",
        "checkout.session.async_payment_succeeded",
        json!({"payment_status": "paid", "metadata": {"order_id": "ST-U1"}}),
    );
    let resp = stripe(&app, &succeeded);
    assert_eq!(status_of(&resp), "processed");
    assert_eq!(resp.json()["order_id"], "ST-U1");
    graph.wait_for_accepted("text", 1, PATIENCE);
    // Zero-decimal (JPY) and special-case (ISK) currencies follow Stripe's rules.
    for (evt, order, amount, currency, shown) in [
        ("evt_1J", "ST-JPY", 500, "jpy", "JPY 500"),
        ("evt_1I", "ST-ISK", 50000, "isk", "ISK 500"),
    ] {
        let body = stripe_session_event(
            evt,
            "checkout.session.completed",
            json!({"client_reference_id": order, "amount_total": amount, "currency": currency,
                "payment_intent": format!("pi_{order}")}),
        );
        assert_eq!(status_of(&stripe(&app, &body)), "processed");
        graph.wait_for(order, PATIENCE, |all| {
            all.iter().any(|r| r.order_id() == Some(order))
        });
        assert_eq!(amount_param(&templates_for(&graph, order)[0]), shown);
    }
    // A fraction of a króna does not exist: 422, nothing written for it.
    let bad = stripe_session_event(
        "evt_1I2",
        "checkout.session.completed",
        json!({"client_reference_id": "ST-ISK2", "amount_total": 50050, "currency": "isk"}),
    );
    assert_eq!(stripe(&app, &bad).status, 422);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM orders WHERE id = 'ST-ISK2'"),
        0
    );
}

/// §11: a session whose discounts cover everything completes with
/// `payment_status` `no_payment_required` and `amount_total` 0 (one of the
/// three `payment_status` values of Stripe's Checkout Session object,
/// https://docs.stripe.com/api/checkout/sessions/object). issue 17: it was
/// ignored and the customer got no confirmation.
#[test]
fn stripe_no_payment_required_session_is_a_paid_order_of_amount_zero() {
    let graph = FakeGraph::start();
    let app = gateway_app(&graph);
    let body = stripe_session_event(
        "evt_1F1",
        "checkout.session.completed",
        json!({"client_reference_id": "ST-FREE", "payment_status": "no_payment_required",
            "amount_subtotal": 49900, "amount_total": 0, "payment_intent": null,
            "total_details": {"amount_discount": 49900, "amount_shipping": 0, "amount_tax": 0}}),
    );
    let resp = stripe(&app, &body);
    assert_eq!(status_of(&resp), "processed", "{}", resp.body);
    assert_eq!(resp.json()["order_id"], "ST-FREE");
    graph.wait_for_accepted("text", 1, PATIENCE);
    app.assert_sends_settled(&graph, 2);
    assert_eq!(
        amount_param(&templates_for(&graph, "ST-FREE")[0]),
        "INR 0.00"
    );
    assert_eq!(
        app.count("SELECT total_amount FROM orders WHERE id = 'ST-FREE'"),
        0
    );
}

/// Cashfree's documented payment success webhook (version 2025-01-01) for
/// `order`, with the amount spelled exactly as `amount`.
fn cashfree_success(order: &str, amount: &str, phone: &str, cf_payment_id: u64) -> String {
    format!(
        r#"{{"data":{{"order":{{"order_id":"{order}","order_amount":{amount},"order_currency":"INR","order_tags":null}},"payment":{{"cf_payment_id":"{cf_payment_id}","payment_status":"SUCCESS","payment_amount":{amount},"payment_currency":"INR","payment_message":"00::Transaction success","payment_time":"2025-05-05T12:20:29+05:30","bank_reference":"234928698581","auth_id":null,"payment_method":{{"upi":{{"channel":"collect","upi_id":"suhasg6@ybl"}}}},"payment_group":"upi","international_payment":{{"international":false}},"payment_surcharge":null}},"customer_details":{{"customer_name":null,"customer_id":"7112AAA812234","customer_email":"suhas@example.com","customer_phone":"{phone}"}},"payment_gateway_details":{{"gateway_name":"CASHFREE","gateway_order_id":"1634766330","gateway_payment_id":"1504280029","gateway_order_reference_id":"abc_124","gateway_settlement":"CASHFREE","gateway_status_code":null}},"payment_offers":null,"terminal_details":null}},"event_time":"2025-05-05T12:20:31+05:30","type":"PAYMENT_SUCCESS_WEBHOOK"}}"#
    )
}

#[test]
fn cashfree_amounts_are_exact_and_national_phones_are_read_as_indian() {
    let graph = FakeGraph::start();
    let app = gateway_app(&graph);
    for (i, (amount, shown)) in [
        ("170.00", "INR 170.00"),
        ("1.5", "INR 1.50"),
        ("0.10", "INR 0.10"),
        ("2", "INR 2.00"),
    ]
    .into_iter()
    .enumerate()
    {
        let order = format!("CF-A{i}");
        let body = cashfree_success(&order, amount, "9908734801", 1453002795 + i as u64);
        let resp = cashfree(&app, &body);
        assert_eq!(status_of(&resp), "processed", "{amount}");
        graph.wait_for(&order, PATIENCE, |all| {
            all.iter().any(|r| r.order_id() == Some(order.as_str()))
        });
        let template = &templates_for(&graph, &order)[0];
        assert_eq!(amount_param(template), shown, "{amount}");
        assert_eq!(template.body["to"], "919908734801");
    }
    let minor: i64 = app
        .db()
        .query_row(
            "SELECT total_amount FROM orders WHERE id = 'CF-A0'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(minor, 17000);

    // More decimals than INR has: 422, and the key is not consumed.
    let bad = cashfree_success("CF-BAD", "1.005", "9908734801", 99);
    let resp = cashfree(&app, &bad);
    assert_eq!(resp.status, 422, "{}", resp.body);
    assert_eq!(resp.error_code(), "invalid_payload");
    assert_eq!(
        app.count("SELECT COUNT(*) FROM orders WHERE id = 'CF-BAD'"),
        0
    );
    let fixed = cashfree_success("CF-BAD", "1.01", "9908734801", 99);
    assert_eq!(status_of(&cashfree(&app, &fixed)), "processed");
    assert_eq!(status_of(&cashfree(&app, &fixed)), "duplicate");
    assert_eq!(
        app.count("SELECT COUNT(*) FROM webhook_events WHERE idempotency_key = 'cashfree:99'"),
        1
    );

    // Tampered after signing: the amount is exactly what is signed.
    let ts = (now_secs() * 1000).to_string();
    let body = cashfree_success("CF-T", "170.00", "9908734801", 5);
    let sig = signing::cashfree(CASHFREE_SECRET, &ts, &body);
    for (ts, body) in [
        (ts.as_str(), body.replace("170.00", "170")),
        ("1", body.clone()),
    ] {
        let resp = post(
            &app,
            "/webhooks/cashfree",
            &body,
            &[("x-webhook-timestamp", ts), ("x-webhook-signature", &sig)],
        );
        assert_eq!(resp.status, 401, "{}", resp.body);
    }
    assert_eq!(
        app.count("SELECT COUNT(*) FROM orders WHERE id = 'CF-T'"),
        0
    );
}

#[test]
fn gateway_bodies_over_64_kib_are_413() {
    let graph = FakeGraph::start();
    let app = gateway_app(&graph);
    let big = format!(
        r#"{{"event":"payment.captured","pad":"{}"}}"#,
        "x".repeat(70_000)
    );
    let resp = razorpay(&app, &big, Some("evt_big"));
    assert_eq!(resp.status, 413, "{}", resp.body);
    assert_nothing_written(&app);
}

#[test]
fn live_mode_hides_routes_without_a_secret_and_sandbox_accepts_them_unsigned() {
    let graph = FakeGraph::start();
    // Live, only Razorpay configured: the others do not exist, and the
    // generic route neither (PAYMENT_WEBHOOK_SECRET unset is allowed now).
    let live = TestApp::builder(&graph)
        .without("PAYMENT_WEBHOOK_SECRET")
        .env("RAZORPAY_WEBHOOK_SECRET", "only-razorpay-secret")
        .spawn();
    for path in [
        "/webhooks/stripe",
        "/webhooks/cashfree",
        "/webhooks/payment",
    ] {
        let resp = post(&live, path, "{}", &[]);
        assert_eq!(resp.status, 404, "{path}: {}", resp.body);
    }
    let body = razorpay_payment_captured("pay_L1", "order_L1", json!({"order_id": "LIVE-1"}));
    let sig = signing::razorpay("only-razorpay-secret", &body);
    assert_eq!(
        status_of(&razorpay_with(&live, &body, None, &sig)),
        "processed"
    );

    let sandbox = TestApp::builder(&graph)
        .without("WHATSAPP_TOKEN")
        .without("PAYMENT_WEBHOOK_SECRET")
        .spawn();
    let rz = razorpay_payment_captured("pay_S1", "order_S1", json!({"order_id": "SB-R"}));
    assert_eq!(
        status_of(&post(&sandbox, "/webhooks/razorpay", &rz, &[])),
        "processed"
    );
    let st = stripe_session_event(
        "evt_SB",
        "checkout.session.completed",
        json!({"client_reference_id": "SB-S"}),
    );
    assert_eq!(
        status_of(&post(&sandbox, "/webhooks/stripe", &st, &[])),
        "processed"
    );
    let cf = cashfree_success("SB-C", "170.00", "9908734801", 1);
    assert_eq!(
        status_of(&post(&sandbox, "/webhooks/cashfree", &cf, &[])),
        "processed"
    );
}

#[test]
fn payment_webhook_secret_rotation_list_accepts_either_secret() {
    let graph = FakeGraph::start();
    let other = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    let app = TestApp::builder(&graph)
        .env(
            "PAYMENT_WEBHOOK_SECRET",
            &format!("{other} {}", crate::support::app::WEBHOOK_SECRET),
        )
        .spawn();
    // The harness signs with the second secret of the list.
    pay(&app, &payment_event("ROT-1"));
    let body = payment_event("ROT-2").to_string();
    let ts = now_secs();
    let id = fresh_webhook_id();
    let sig = signing::sign(other, &id, ts, &body);
    let resp = app.post_webhook_with_headers(
        &body,
        &[
            ("webhook-id", &id),
            ("webhook-timestamp", &ts.to_string()),
            ("webhook-signature", &sig),
        ],
    );
    assert_eq!(status_of(&resp), "processed");
    let wrong = signing::sign("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSx", &id, ts, &body);
    let resp = app.post_webhook_with_headers(
        &body,
        &[
            ("webhook-id", "msg_x"),
            ("webhook-timestamp", &ts.to_string()),
            ("webhook-signature", &wrong),
        ],
    );
    assert_eq!(resp.status, 401);
}

#[test]
fn a_short_payment_secret_is_refused_at_start_and_named_by_check() {
    let graph = FakeGraph::start();
    let (status, log) = TestApp::builder(&graph)
        .env("PAYMENT_WEBHOOK_SECRET", "whsec_bm9wZQ==")
        .run_until_exit(Duration::from_secs(20));
    let status = status.expect("orderlink refused to start");
    assert!(!status.success());
    assert!(
        log.contains("PAYMENT_WEBHOOK_SECRET") && log.contains("24 to 64 bytes"),
        "{log}"
    );
    assert!(
        !log.contains("bm9wZQ"),
        "the secret is never printed: {log}"
    );

    let dir = tempfile::tempdir().unwrap();
    let env: Vec<(String, String)> = [
        ("WHATSAPP_TOKEN", "EAAG-test"),
        ("WHATSAPP_PHONE_NUMBER_ID", "1065"),
        ("WHATSAPP_BUSINESS_NUMBER_E164", "919999900000"),
        ("WHATSAPP_APP_SECRET", "app-secret-for-check"),
        ("PAYMENT_WEBHOOK_SECRET", "whsec_bm9wZQ=="),
        ("STRIPE_WEBHOOK_SECRET", "sk_live_not_a_webhook_secret"),
        ("DATABASE_PATH", dir.path().join("o.db").to_str().unwrap()),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let run = run_cli(&["check"], &env, Duration::from_secs(20));
    assert!(!run.status.success());
    let out = format!("{}{}", run.stdout, run.stderr);
    let named = |var: &str| out.lines().filter(|l| l.contains(var)).count();
    assert_eq!(named("PAYMENT_WEBHOOK_SECRET"), 1, "{out}");
    assert_eq!(named("STRIPE_WEBHOOK_SECRET"), 1, "{out}");
    assert!(
        !out.contains("sk_live_not") && !out.contains("bm9wZQ"),
        "{out}"
    );

    // No payment source at all in live mode is named too.
    let none: Vec<(String, String)> = env
        .iter()
        .filter(|(k, _)| k != "PAYMENT_WEBHOOK_SECRET" && k != "STRIPE_WEBHOOK_SECRET")
        .cloned()
        .collect();
    let run = run_cli(&["check"], &none, Duration::from_secs(20));
    assert!(!run.status.success());
    let out = format!("{}{}", run.stdout, run.stderr);
    assert!(
        out.contains("PAYMENT_WEBHOOK_SECRET") && out.contains("RAZORPAY_WEBHOOK_SECRET"),
        "{out}"
    );
}
