//! SPEC §5: what reaches the Graph API, in what order, and how failures are retried.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::*;

const ORDER: &str = "ORD-1042";
const PHONE: &str = "919876543210";

fn expected_template(order_id: &str, amount: &str, note: &str) -> Value {
    json!({
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": PHONE,
        "type": "template",
        "template": {
            "name": "order_confirmed",
            "language": {"code": "en"},
            "components": [{
                "type": "body",
                "parameters": [
                    {"type": "text", "text": order_id},
                    {"type": "text", "text": amount},
                    {"type": "text", "text": note}
                ]
            }]
        },
        "biz_opaque_callback_data": order_id
    })
}

fn expected_link_text(order_id: &str, link: &str) -> Value {
    json!({
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": PHONE,
        "type": "text",
        "text": {
            "preview_url": true,
            "body": format!("Please forward this link to your elder for direct chat: {link}")
        },
        "biz_opaque_callback_data": order_id
    })
}

fn assert_graph_request_envelope(r: &RecordedRequest) {
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/v21.0/106540352242922/messages");
    assert_eq!(r.header("authorization"), Some("Bearer test-graph-token"));
    let content_type = r.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("application/json"),
        "content-type {content_type:?}"
    );
}

/// The note parameter of the confirmation template sent for `order_id`.
fn note_param(graph: &FakeGraph, order_id: &str) -> Value {
    graph
        .requests_of_type("template")
        .into_iter()
        .find(|r| r.order_id() == Some(order_id))
        .unwrap_or_else(|| panic!("no template for {order_id}"))
        .body
        .pointer("/template/components/0/parameters/2/text")
        .cloned()
        .unwrap_or(Value::Null)
}

#[test]
fn confirmation_template_is_the_exact_graph_json_on_the_right_path_with_bearer_token() {
    // Arrange
    let graph = FakeGraph::start();
    let app = TestApp::spawn(&graph);

    // Act
    pay(&app, &payment_event(ORDER));

    // Assert
    let templates = graph.wait_for_accepted("template", 1, PATIENCE);
    assert_graph_request_envelope(&templates[0]);
    assert_eq!(
        templates[0].body,
        expected_template(ORDER, "INR 499.00", "Arrives by Friday")
    );
}

#[test]
fn link_text_is_the_exact_graph_json_and_follows_the_accepted_confirmation() {
    let graph = FakeGraph::start();
    let app = TestApp::spawn(&graph);

    let processed = pay(&app, &payment_event(ORDER));

    let texts = graph.wait_for_accepted("text", 1, PATIENCE);
    let templates = graph.accepted_of_type("template");
    assert_eq!(templates.len(), 1);
    assert_graph_request_envelope(&texts[0]);
    let link = format!(
        "https://wa.me/919999900000?text=Hi%2C%20I%E2%80%99m%20contacting%20on%20behalf%20of%20order%20ORD-1042.%20Token%3A%20{}",
        processed.token
    );
    assert_eq!(processed.whatsapp_link, link);
    assert_eq!(texts[0].body, expected_link_text(ORDER, &link));
    assert!(
        texts[0].arrived > templates[0].arrived,
        "the link went out before the confirmation"
    );
    app.assert_sends_settled(&graph, 2);
}

#[test]
fn delivered_messages_are_recorded_sent_with_their_graph_message_ids() {
    let graph = FakeGraph::start();
    let app = TestApp::spawn(&graph);

    pay(&app, &payment_event(ORDER));

    graph.wait_for_accepted("text", 1, PATIENCE);
    let confirmation = app.wait_for_outbox_status(ORDER, "confirmation", "sent", PATIENCE);
    let link = app.wait_for_outbox_status(ORDER, "link", "sent", PATIENCE);
    let wamid = |t: &str| match &graph.accepted_of_type(t)[0].outcome {
        Outcome::Accepted { wamid } => wamid.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(confirmation.graph_message_id, Some(wamid("template")));
    assert_eq!(link.graph_message_id, Some(wamid("text")));
    let confirmed_at: Option<i64> = app
        .db()
        .query_row(
            "SELECT last_confirmation_sent_at FROM orders WHERE id = $1",
            [ORDER],
            |r| r.get(0),
        )
        .unwrap();
    assert!(confirmed_at.is_some(), "last_confirmation_sent_at not set");
}

#[test]
fn amounts_are_formatted_with_the_currency_minor_digits() {
    let graph = FakeGraph::start();
    let app = TestApp::spawn(&graph);
    let cases = [
        ("ORD-INR", 49900, "INR", "INR 499.00"),
        ("ORD-JPY", 500, "JPY", "JPY 500"),
        ("ORD-KWD", 1250, "KWD", "KWD 1.250"),
        ("ORD-USD", 5, "USD", "USD 0.05"),
        ("ORD-EUR", 100000, "EUR", "EUR 1000.00"),
    ];

    for (order_id, amount, currency, _) in cases {
        pay(
            &app,
            &payment_event_with(order_id, json!({"amount": amount, "currency": currency})),
        );
    }

    graph.wait_for_accepted("template", cases.len(), PATIENCE);
    for (order_id, _, _, expected) in cases {
        let template = graph
            .requests_of_type("template")
            .into_iter()
            .find(|r| r.order_id() == Some(order_id))
            .unwrap();
        assert_eq!(
            template
                .body
                .pointer("/template/components/0/parameters/1/text"),
            Some(&json!(expected)),
            "{order_id}"
        );
    }
}

#[test]
fn note_whitespace_is_cleaned_for_the_template_parameter() {
    let graph = FakeGraph::start();
    let app = TestApp::spawn(&graph);
    let cases = [
        ("ORD-N1", "Arrives\nby\tFriday", "Arrives by Friday"),
        ("ORD-N2", "Arrives   by     Friday", "Arrives by Friday"),
        ("ORD-N3", "  Arrives by Friday \r\n", "Arrives by Friday"),
        ("ORD-N4", "Line one\n\n\tLine two", "Line one Line two"),
    ];

    for (order_id, note, _) in cases {
        pay(&app, &payment_event_with(order_id, json!({ "note": note })));
    }

    graph.wait_for_accepted("template", cases.len(), PATIENCE);
    for (order_id, note, expected) in cases {
        assert_eq!(
            note_param(&graph, order_id),
            json!(expected),
            "note {note:?}"
        );
    }
}

#[test]
fn empty_or_absent_note_falls_back_to_the_default_note() {
    let graph = FakeGraph::start();
    let app = TestApp::spawn(&graph);
    let mut explicit_null = payment_event("ORD-D4");
    explicit_null["data"]["note"] = Value::Null;
    let events = [
        payment_event_with("ORD-D1", json!({"note": null})),
        payment_event_with("ORD-D2", json!({"note": ""})),
        payment_event_with("ORD-D3", json!({"note": " \n\t  "})),
        explicit_null,
    ];

    for event in &events {
        pay(&app, event);
    }

    graph.wait_for_accepted("template", events.len(), PATIENCE);
    for order_id in ["ORD-D1", "ORD-D2", "ORD-D3", "ORD-D4"] {
        assert_eq!(
            note_param(&graph, order_id),
            json!("Thank you for shopping with us!"),
            "{order_id}"
        );
    }
}

#[test]
fn confirmation_note_variable_replaces_the_default_note() {
    let graph = FakeGraph::start();
    let app = TestApp::builder(&graph)
        .env("CONFIRMATION_NOTE", "Namaste from Shop!")
        .spawn();

    pay(&app, &payment_event_with(ORDER, json!({"note": null})));

    graph.wait_for_accepted("template", 1, PATIENCE);
    assert_eq!(note_param(&graph, ORDER), json!("Namaste from Shop!"));
}

#[test]
fn phone_separators_and_optional_plus_normalise_to_one_e164_number() {
    let graph = FakeGraph::start();
    let app = TestApp::spawn(&graph);
    let phones = [
        "+91 98765 43210",
        "+919876543210",
        "919876543210",
        "+91-98765-43210",
        "91 98765 43210",
    ];

    for (i, phone) in phones.iter().enumerate() {
        pay(
            &app,
            &payment_event_with(&format!("ORD-P{i}"), json!({ "customer_phone": phone })),
        );
    }

    let templates = graph.wait_for_accepted("template", phones.len(), PATIENCE);
    for t in templates {
        assert_eq!(t.body["to"], PHONE, "{:?}", t.order_id());
    }
}

#[test]
fn national_number_is_read_with_phone_default_region() {
    let graph = FakeGraph::start();
    let app = TestApp::builder(&graph)
        .env("PHONE_DEFAULT_REGION", "IN")
        .spawn();

    pay(
        &app,
        &payment_event_with(ORDER, json!({"customer_phone": "09876543210"})),
    );

    let templates = graph.wait_for_accepted("template", 1, PATIENCE);
    assert_eq!(templates[0].body["to"], PHONE);
}

#[test]
fn permanent_confirmation_failure_sends_no_link() {
    let graph = FakeGraph::start();
    graph.script([Reply::meta_error(400, 100)]);
    let app = TestApp::spawn(&graph);

    pay(&app, &payment_event(ORDER));

    let confirmation = app.wait_for_outbox_status(ORDER, "confirmation", "dead", PATIENCE);
    app.assert_sends_settled(&graph, 1);
    assert_eq!(confirmation.attempts, 1);
    let error = confirmation.last_error.unwrap_or_default();
    assert!(
        error.contains("100"),
        "last_error should carry Graph's code: {error:?}"
    );
    assert_eq!(app.outbox_row(ORDER, "link").status, "cancelled");
}

#[test]
fn rate_limited_confirmation_honours_retry_after_then_is_delivered_once() {
    let graph = FakeGraph::start();
    graph.script([Reply::too_many_requests(1)]);
    let app = TestApp::spawn(&graph);

    pay(&app, &payment_event(ORDER));

    graph.wait_for_accepted("text", 1, PATIENCE);
    let templates = graph.requests_of_type("template");
    assert_eq!(templates.len(), 2);
    let waited = templates[1].arrived - templates[0].arrived;
    assert!(
        waited >= Duration::from_millis(950),
        "retried after {waited:?}, Retry-After was 1 s"
    );
    assert_eq!(graph.accepted_of_type("template").len(), 1);
    app.assert_sends_settled(&graph, 3);
}

#[test]
fn server_errors_are_retried_then_delivered_once() {
    let graph = FakeGraph::start();
    graph.script([Reply::status(500), Reply::status(503)]);
    let app = TestApp::spawn(&graph);

    pay(&app, &payment_event(ORDER));

    let texts = graph.wait_for_accepted("text", 1, PATIENCE);
    assert_eq!(graph.requests_of_type("template").len(), 3);
    assert!(
        texts[0].arrived > graph.accepted_of_type("template")[0].arrived,
        "the link went out before the confirmation was accepted"
    );
    assert_eq!(graph.accepted_of_type("template").len(), 1);
    app.assert_sends_settled(&graph, 4);
    assert_eq!(
        app.wait_for_outbox_status(ORDER, "confirmation", "sent", PATIENCE)
            .attempts,
        3
    );
}

#[test]
fn a_request_hanging_past_the_timeout_is_retried_then_delivered_once() {
    let graph = FakeGraph::start();
    graph.script([Reply::Hang(Duration::from_millis(1500))]);
    let app = TestApp::builder(&graph)
        .env("WHATSAPP_TIMEOUT_MS", "400")
        .spawn();

    pay(&app, &payment_event(ORDER));

    graph.wait_for_accepted("text", 1, PATIENCE);
    let templates = graph.requests_of_type("template");
    assert_eq!(templates.len(), 2);
    assert_eq!(templates[0].outcome, Outcome::Hung);
    // SPEC §5: "a timeout ... after [the request was written] is unsure ...
    // not sent again at once. It waits up to WHATSAPP_UNSURE_WAIT_MS (1 s
    // here) for a status ... Only when the wait passes without one is the
    // message retried": 400 ms timeout + the 1 s wait, not the 1.5 s hang.
    let gap = templates[1].arrived - templates[0].arrived;
    assert!(
        gap >= Duration::from_millis(1400),
        "the timed-out send went again after {gap:?}, before its unsure wait ended"
    );
    assert!(
        gap < Duration::from_millis(1400 + 1500),
        "the client waited out the hang ({gap:?}) instead of timing out at 400 ms"
    );
    app.assert_sends_settled(&graph, 3);
}

#[test]
fn transient_meta_codes_are_retried_whatever_the_http_status() {
    let graph = FakeGraph::start();
    let transient = [2, 4, 80007, 130429, 131000, 131016, 131056, 131057];
    graph.script(transient.iter().map(|&code| Reply::meta_error(400, code)));
    let app = TestApp::builder(&graph)
        .env("WHATSAPP_MAX_ATTEMPTS", "10")
        .env("WHATSAPP_RETRY_BASE_MS", "2")
        .spawn();

    pay(&app, &payment_event(ORDER));

    graph.wait_for_accepted("text", 1, Duration::from_secs(30));
    assert_eq!(
        graph.requests_of_type("template").len(),
        transient.len() + 1
    );
    assert_eq!(graph.accepted_of_type("template").len(), 1);
    app.assert_sends_settled(&graph, transient.len() + 2);
}

#[test]
fn confirmation_failing_transiently_max_attempts_times_is_dead_and_no_link_is_sent() {
    let graph = FakeGraph::start();
    graph.respond_with(|_| Some(Reply::status(503)));
    let app = TestApp::spawn(&graph);

    pay(&app, &payment_event(ORDER));

    let confirmation = app.wait_for_outbox_status(ORDER, "confirmation", "dead", PATIENCE);
    assert_eq!(confirmation.attempts, 4);
    assert!(
        confirmation
            .last_error
            .as_deref()
            .is_some_and(|e| !e.is_empty()),
        "dead without last_error: {confirmation:?}"
    );
    app.assert_sends_settled(&graph, 4);
    assert!(graph.requests_of_type("text").is_empty());
    assert_eq!(app.outbox_row(ORDER, "link").status, "cancelled");
}

#[test]
fn link_text_refused_with_131047_goes_out_as_the_invite_template_when_configured() {
    let graph = FakeGraph::start();
    graph.respond_with(|r| {
        (r.message_type() == Some("text")).then(|| Reply::meta_error(400, 131047))
    });
    let app = TestApp::builder(&graph)
        .env("WHATSAPP_INVITE_TEMPLATE", "order_invite")
        .spawn();

    let processed = pay(&app, &payment_event(ORDER));

    graph.wait_for("the order_invite template", PATIENCE, |all| {
        all.iter()
            .any(|r| r.template_name() == Some("order_invite") && r.was_accepted())
    });
    let invite = graph
        .accepted_of_type("template")
        .into_iter()
        .find(|r| r.template_name() == Some("order_invite"))
        .unwrap();
    assert_graph_request_envelope(&invite);
    assert_eq!(invite.body["to"], PHONE);
    assert_eq!(
        invite.body.pointer("/template/language/code"),
        Some(&json!("en"))
    );
    assert_eq!(
        invite.body.pointer("/template/components"),
        Some(
            &json!([{"type": "body", "parameters": [{"type": "text", "text": processed.whatsapp_link}]}])
        )
    );
    let texts = graph.requests_of_type("text").len();
    assert!(texts <= 1, "the refused text was sent {texts} times");
    app.wait_for_outbox_status(ORDER, "link", "sent", PATIENCE);
    app.assert_sends_settled(&graph, 2 + texts);
}

#[test]
fn link_text_refused_with_131047_is_dead_naming_the_variable_without_invite_template() {
    let graph = FakeGraph::start();
    graph.respond_with(|r| {
        (r.message_type() == Some("text")).then(|| Reply::meta_error(400, 131047))
    });
    let app = TestApp::spawn(&graph);

    pay(&app, &payment_event(ORDER));

    let link = app.wait_for_outbox_status(ORDER, "link", "dead", PATIENCE);
    let error = link.last_error.unwrap_or_default();
    assert!(
        error.contains("WHATSAPP_INVITE_TEMPLATE"),
        "last_error: {error:?}"
    );
    app.assert_sends_settled(&graph, 2);
    assert_eq!(app.outbox_row(ORDER, "confirmation").status, "sent");
}

#[test]
fn link_text_refused_permanently_is_dead_after_one_attempt() {
    let graph = FakeGraph::start();
    graph.respond_with(|r| (r.message_type() == Some("text")).then(|| Reply::meta_error(400, 100)));
    let app = TestApp::spawn(&graph);

    pay(&app, &payment_event(ORDER));

    let link = app.wait_for_outbox_status(ORDER, "link", "dead", PATIENCE);
    assert_eq!(link.attempts, 1);
    assert!(link.last_error.unwrap_or_default().contains("100"));
    app.assert_sends_settled(&graph, 2);
}

#[test]
fn messages_queued_when_the_app_is_killed_are_delivered_once_after_restart() {
    // Arrange: Graph is down; the app keeps retrying slowly.
    let graph = FakeGraph::start();
    let healthy = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&healthy);
    graph.respond_with(move |_| (!flag.load(Ordering::SeqCst)).then(|| Reply::status(503)));
    let mut app = TestApp::builder(&graph)
        .env("WHATSAPP_RETRY_BASE_MS", "200")
        .env("WHATSAPP_MAX_ATTEMPTS", "100")
        .spawn();
    pay(&app, &payment_event(ORDER));
    graph.wait_for_requests(1, PATIENCE);

    // Act: crash, Graph recovers, start again on the same database.
    app.kill9();
    healthy.store(true, Ordering::SeqCst);
    app.restart();

    // Assert
    graph.wait_for_accepted("text", 1, Duration::from_secs(20));
    assert_eq!(graph.accepted_of_type("template").len(), 1);
    let seen = graph.requests().len();
    app.assert_sends_settled(&graph, seen);
    assert_eq!(graph.accepted_of_type("template").len(), 1);
    assert_eq!(graph.accepted_of_type("text").len(), 1);
    app.wait_for_outbox_status(ORDER, "link", "sent", PATIENCE);
}

#[test]
fn a_send_interrupted_by_a_kill_is_delivered_once_after_restart() {
    // Arrange: the first confirmation request hangs (never accepted).
    let graph = FakeGraph::start();
    graph.script([Reply::Hang(Duration::from_secs(5))]);
    let mut app = TestApp::spawn(&graph);
    pay(&app, &payment_event(ORDER));
    graph.wait_for_requests(1, PATIENCE);

    // Act: crash mid-send (within the 2 s client timeout), start again.
    app.kill9();
    app.restart();

    // Assert
    graph.wait_for_accepted("text", 1, Duration::from_secs(30));
    let seen = graph.requests().len();
    app.assert_sends_settled(&graph, seen);
    assert_eq!(graph.accepted_of_type("template").len(), 1);
    assert_eq!(graph.accepted_of_type("text").len(), 1);
}

#[test]
fn template_name_and_language_come_from_the_environment() {
    let graph = FakeGraph::start();
    graph.respond_with(|r| {
        (r.message_type() == Some("text")).then(|| Reply::meta_error(400, 131047))
    });
    let app = TestApp::builder(&graph)
        .env("WHATSAPP_TEMPLATE_NAME", "shop_paid")
        .env("WHATSAPP_TEMPLATE_LANG", "en_US")
        .env("WHATSAPP_INVITE_TEMPLATE", "order_invite")
        .spawn();

    pay(&app, &payment_event(ORDER));

    let all = graph.wait_for("the order_invite template", PATIENCE, |all| {
        all.iter()
            .any(|r| r.template_name() == Some("order_invite") && r.was_accepted())
    });
    let confirmation = all
        .iter()
        .find(|r| r.template_name() == Some("shop_paid"))
        .expect("confirmation under WHATSAPP_TEMPLATE_NAME");
    assert_eq!(
        confirmation.body.pointer("/template/language/code"),
        Some(&json!("en_US"))
    );
    let invite = all
        .iter()
        .find(|r| r.template_name() == Some("order_invite"))
        .unwrap();
    assert_eq!(
        invite.body.pointer("/template/language/code"),
        Some(&json!("en_US"))
    );
}

#[test]
fn many_concurrent_orders_each_get_one_confirmation_then_one_link() {
    let graph = FakeGraph::start();
    let app = TestApp::spawn(&graph);
    let orders: Vec<String> = (0..20).map(|i| format!("ORD-M{i:02}")).collect();

    std::thread::scope(|s| {
        for order_id in &orders {
            let app = &app;
            s.spawn(move || pay(app, &payment_event(order_id)));
        }
    });

    graph.wait_for_accepted("text", orders.len(), Duration::from_secs(20));
    app.assert_sends_settled(&graph, 2 * orders.len());
    for order_id in &orders {
        let of_order: Vec<RecordedRequest> = graph
            .requests()
            .into_iter()
            .filter(|r| r.order_id() == Some(order_id))
            .collect();
        assert_eq!(of_order.len(), 2, "{order_id}");
        assert_eq!(of_order[0].message_type(), Some("template"), "{order_id}");
        assert_eq!(of_order[1].message_type(), Some("text"), "{order_id}");
    }
}

#[test]
fn thirty_two_workers_racing_through_a_backlog_never_send_a_message_twice() {
    // Arrange: a backlog queued while nothing can be sent, then many workers
    // draining it at full speed (refills race with recorded outcomes).
    let graph = FakeGraph::start();
    let app = TestApp::builder(&graph)
        .env("SEND_WORKERS", "32")
        .env("WHATSAPP_MAX_MPS", "100000")
        // A timeout after the fake accepted would be a legitimate resend
        // (Meta may have the message); keep it out of this race.
        .env("WHATSAPP_TIMEOUT_MS", "10000")
        .spawn();
    let orders: Vec<String> = (0..300).map(|i| format!("ORD-R{i:03}")).collect();
    std::thread::scope(|s| {
        for chunk in orders.chunks(30) {
            let app = &app;
            s.spawn(move || {
                for order_id in chunk {
                    pay(app, &payment_event(order_id));
                }
            });
        }
    });

    // Act: wait until every link went out.
    graph.wait_for_accepted("text", orders.len(), Duration::from_secs(60));

    // Assert: exactly one of each, per order.
    app.assert_sends_settled(&graph, 2 * orders.len());
    let mut seen = std::collections::HashSet::new();
    for r in graph.requests() {
        let key = (
            r.order_id().map(str::to_owned),
            r.message_type().map(str::to_owned),
        );
        assert!(seen.insert(key.clone()), "sent twice: {key:?}");
    }
}

#[test]
fn retry_after_on_a_503_is_honoured_too() {
    let graph = FakeGraph::start();
    graph.script([Reply::RetryAfter {
        status: 503,
        retry_after_secs: 1,
    }]);
    let app = TestApp::spawn(&graph);

    pay(&app, &payment_event(ORDER));

    graph.wait_for_accepted("template", 1, PATIENCE);
    let templates = graph.requests_of_type("template");
    let waited = templates[1].arrived - templates[0].arrived;
    assert!(
        waited >= Duration::from_millis(950),
        "retried after {waited:?}, Retry-After was 1 s"
    );
}

#[test]
fn other_client_errors_fail_at_once_even_without_a_graph_error_body() {
    let graph = FakeGraph::start();
    graph.script([Reply::Raw {
        status: 404,
        body: "<html>Not Found</html>".into(),
    }]);
    let app = TestApp::spawn(&graph);

    pay(&app, &payment_event(ORDER));

    let confirmation = app.wait_for_outbox_status(ORDER, "confirmation", "dead", PATIENCE);
    assert_eq!(confirmation.attempts, 1);
    assert!(confirmation.last_error.unwrap_or_default().contains("404"));
    app.assert_sends_settled(&graph, 1);
}

#[test]
fn an_expired_graph_token_pauses_sending_instead_of_burning_the_queue() {
    // Arrange: the token is refused three times (a configuration fault, not
    // the message's), then the merchant fixes it.
    let graph = FakeGraph::start();
    graph.script([
        Reply::meta_error(401, 190),
        Reply::meta_error(401, 190),
        Reply::meta_error(401, 190),
    ]);
    let app = TestApp::spawn(&graph);

    // Act
    pay(&app, &payment_event(ORDER));

    // Assert: nothing dead-lettered, the attempts were not counted against
    // the message, and it went out exactly once when the fault cleared.
    let confirmation = app.wait_for_outbox_status(ORDER, "confirmation", "sent", PATIENCE);
    assert_eq!(confirmation.attempts, 1);
    app.wait_for_outbox_status(ORDER, "link", "sent", PATIENCE);
    app.assert_sends_settled(&graph, 5);
    let logs = app.logs();
    assert_eq!(logs.matches("SENDING PAUSED").count(), 1, "{logs}");
    assert!(logs.contains("sending resumed"), "{logs}");
}

#[test]
fn a_missing_template_pauses_every_message_and_dead_letters_none() {
    // Arrange: Meta says the template does not exist, for a while.
    let graph = FakeGraph::start();
    graph.script([
        Reply::meta_error(404, 132001),
        Reply::meta_error(404, 132001),
    ]);
    let app = TestApp::spawn(&graph);

    // Act
    pay(&app, &payment_event("ORD-A"));
    pay(&app, &payment_event("ORD-B"));

    // Assert
    for order in ["ORD-A", "ORD-B"] {
        app.wait_for_outbox_status(order, "link", "sent", PATIENCE);
    }
    let dead: i64 = app
        .db()
        .query_row(
            "SELECT COUNT(*) FROM outbox WHERE status = 'dead'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(dead, 0);
    app.assert_sends_settled(&graph, 6);
}

#[test]
fn connection_failures_are_retried_then_dead_lettered() {
    // Arrange: nothing listens where Graph should be.
    let graph = FakeGraph::start();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let app = TestApp::builder(&graph)
        .env("WHATSAPP_API_BASE", &format!("http://{closed}/v21.0"))
        .spawn();

    // Act
    pay(&app, &payment_event(ORDER));

    // Assert
    let confirmation = app.wait_for_outbox_status(ORDER, "confirmation", "dead", PATIENCE);
    assert_eq!(confirmation.attempts, 4);
    assert!(confirmation.last_error.is_some_and(|e| !e.is_empty()));
    assert_eq!(app.outbox_row(ORDER, "link").status, "cancelled");
}

#[test]
fn webhooks_and_health_answer_at_once_while_graph_hangs() {
    // Arrange: every send hangs for 3 s (the client waits up to 10 s).
    let graph = FakeGraph::start();
    graph.respond_with(|_| Some(Reply::Hang(Duration::from_secs(3))));
    let app = TestApp::builder(&graph)
        .env("WHATSAPP_TIMEOUT_MS", "10000")
        .spawn();
    pay(&app, &payment_event("ORD-H0"));
    graph.wait_for_requests(1, PATIENCE);

    // Act + Assert: the senders are stuck on Graph, the HTTP side is not.
    for i in 1..=10 {
        let started = std::time::Instant::now();
        pay(&app, &payment_event(&format!("ORD-H{i}")));
        assert_eq!(app.get("/healthz").status, 200);
        let took = started.elapsed();
        assert!(
            took < Duration::from_millis(1000),
            "webhook + healthz took {took:?} while Graph hangs"
        );
    }
}
