//! SPEC §5 "The 24-hour rule", "One paid message per order" and the error
//! codes of 2026, with the fake Graph API behaving as Meta does: it accepts
//! a text sent outside the customer's window (200 and a `wamid`) and posts
//! a signed `failed` status with 131047 afterwards (Meta's webhook
//! reference, "Status messages"; error codes from Meta's "Cloud API error
//! codes" page, developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/).
//! Every message it accepts gets `sent` and `delivered` statuses.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::app::APP_SECRET;
use crate::support::meta::*;
use crate::support::signing::now_secs;
use crate::support::store::{self, Scratch};
use crate::support::*;

const ORDER: &str = "ORD-1042";
/// The number of `payment_event`'s customer.
const CUSTOMER: &str = "919876543210";
/// The customer's BSUID, once Meta has shown it with the number.
const CUSTOMER_BSUID: &str = "IN.5550001112223334";
const INVITE: &str = "order_invite";
const ADMIN_TOKEN_FOR_TESTS: &str = "adm-window-7c2e-secret-bearer";

/// A live app with the invite template set, whose statuses the fake posts.
fn app_with_invite(graph: &FakeGraph) -> TestApp {
    reporting(
        graph,
        TestApp::builder(graph).env("WHATSAPP_INVITE_TEMPLATE", INVITE),
    )
}

fn reporting(graph: &FakeGraph, builder: TestAppBuilder) -> TestApp {
    let app = builder.spawn();
    graph.report_statuses_to(&app.base_url(), APP_SECRET);
    app
}

/// The customer wrote to the business; the message's own `timestamp` is
/// `ago` in the past.
fn customer_wrote(app: &TestApp, ago: Duration) {
    let mut payload = text_payload(
        CUSTOMER,
        "Asha",
        &fresh_wamid(),
        "Hello, is my order on its way?",
    );
    set_timestamp(&mut payload, ago);
    app.deliver(&payload);
}

fn set_timestamp(payload: &mut Value, ago: Duration) {
    let at = now_secs() - ago.as_secs() as i64;
    payload["entry"][0]["changes"][0]["value"]["messages"][0]["timestamp"] = json!(at.to_string());
}

/// Requests to the customer for `order_id`, as (type, template name).
fn sends(graph: &FakeGraph, order_id: &str) -> Vec<(String, Option<String>)> {
    graph
        .requests()
        .into_iter()
        .filter(|r| r.order_id() == Some(order_id))
        .map(|r| {
            (
                r.message_type().unwrap_or_default().to_string(),
                r.template_name().map(str::to_string),
            )
        })
        .collect()
}

fn invite_templates(graph: &FakeGraph, order_id: &str) -> usize {
    sends(graph, order_id)
        .iter()
        .filter(|(_, name)| name.as_deref() == Some(INVITE))
        .count()
}

/// `outbox.link_via` of the order's `kind` row.
fn link_via(app: &TestApp, order_id: &str, kind: &str) -> Option<String> {
    app.db()
        .query_row(
            "SELECT link_via FROM outbox WHERE order_id = $1 AND kind = $2",
            [order_id, kind],
            |r| r.get(0),
        )
        .unwrap_or_else(|e| panic!("no {kind} row for {order_id}: {e}"))
}

fn wait_delivered(app: &TestApp, order_id: &str, kind: &str) {
    wait_until(
        &format!("the {kind} of {order_id} delivered"),
        PATIENCE,
        || {
            app.db()
                .query_row(
                    "SELECT delivery_status FROM outbox WHERE order_id = $1 AND kind = $2",
                    [order_id, kind],
                    |r| r.get::<_, Option<String>>(0),
                )
                .ok()
                .flatten()
                .as_deref()
                == Some("delivered")
        },
    );
}

// ------------------------------------------------ 131047 in a later status

#[derive(Clone, Copy, PartialEq)]
enum Timing {
    AfterTheAnswer,
    BeforeTheAnswer,
    Twice,
    BeforeAndTwice,
}

/// The customer wrote 23 h 50 min ago: orderlink judges the window open and
/// sends the text; Meta (whose window has closed meanwhile, or counts
/// differently) accepts it and then refuses it in a `failed` status.
fn refused_in_a_later_status(timing: Timing) {
    let graph = FakeGraph::start();
    let app = app_with_invite(&graph);
    graph.close_window(CUSTOMER);
    graph.report_before_answer(matches!(
        timing,
        Timing::BeforeTheAnswer | Timing::BeforeAndTwice
    ));
    graph.report_twice(matches!(timing, Timing::Twice | Timing::BeforeAndTwice));
    customer_wrote(&app, Duration::from_secs(23 * 3600 + 50 * 60));

    let processed = pay(&app, &payment_event(ORDER));

    graph.wait_for_statuses("failed", 1, PATIENCE);
    app.wait_for_outbox_status(ORDER, "link", "sent", PATIENCE);
    wait_until("the invite template accepted", PATIENCE, || {
        graph
            .accepted_of_type("template")
            .iter()
            .any(|r| r.template_name() == Some(INVITE))
    });
    wait_delivered(&app, ORDER, "link");
    app.assert_sends_settled(&graph, 3);
    assert_eq!(
        sends(&graph, ORDER),
        [
            ("template".to_string(), Some("order_confirmed".to_string())),
            ("text".to_string(), None),
            ("template".to_string(), Some(INVITE.to_string())),
        ]
    );
    let invite = graph
        .requests()
        .into_iter()
        .find(|r| r.template_name() == Some(INVITE))
        .unwrap();
    assert_eq!(
        invite.body.pointer("/template/components"),
        Some(
            &json!([{"type": "body", "parameters": [{"type": "text", "text": processed.whatsapp_link}]}])
        )
    );
    let link = app.outbox_row(ORDER, "link");
    assert_eq!(link.variant, "template");
    assert_eq!(link.graph_message_id.as_deref(), invite_wamid(&invite));
    assert_eq!(
        link_via(&app, ORDER, "link").as_deref(),
        Some("template_after_131047")
    );
    if matches!(timing, Timing::Twice | Timing::BeforeAndTwice) {
        assert_eq!(graph.wait_for_statuses("failed", 2, PATIENCE).len(), 2);
        app.assert_sends_settled(&graph, 3);
    }
}

fn invite_wamid(r: &RecordedRequest) -> Option<&str> {
    match &r.outcome {
        Outcome::Accepted { wamid } => Some(wamid),
        _ => None,
    }
}

#[test]
fn a_131047_status_after_the_answer_sends_the_invite_template_once() {
    refused_in_a_later_status(Timing::AfterTheAnswer);
}

#[test]
fn a_131047_status_before_the_send_was_recorded_sends_the_invite_template_once() {
    refused_in_a_later_status(Timing::BeforeTheAnswer);
}

#[test]
fn a_131047_status_delivered_twice_sends_the_invite_template_once() {
    refused_in_a_later_status(Timing::Twice);
}

#[test]
fn a_131047_status_delivered_twice_before_the_send_was_recorded_sends_one_template() {
    refused_in_a_later_status(Timing::BeforeAndTwice);
}

#[test]
fn a_131047_in_the_answer_sends_the_invite_template_once() {
    let graph = FakeGraph::start();
    graph.respond_with(|r| {
        (r.message_type() == Some("text")).then(|| Reply::meta_error(400, 131047))
    });
    let app = app_with_invite(&graph);
    customer_wrote(&app, Duration::from_secs(3600));

    pay(&app, &payment_event(ORDER));

    app.wait_for_outbox_status(ORDER, "link", "sent", PATIENCE);
    app.assert_sends_settled(&graph, 3);
    assert_eq!(invite_templates(&graph, ORDER), 1);
    assert_eq!(
        link_via(&app, ORDER, "link").as_deref(),
        Some("template_after_131047")
    );
}

#[test]
fn a_131047_status_without_the_invite_template_ends_the_link_naming_the_variable() {
    let graph = FakeGraph::start();
    let app = reporting(&graph, TestApp::builder(&graph));
    graph.close_window(CUSTOMER);

    pay(&app, &payment_event(ORDER));

    let link = app.wait_for_outbox_status(ORDER, "link", "dead", PATIENCE);
    let error = link.last_error.unwrap_or_default();
    assert!(error.contains("WHATSAPP_INVITE_TEMPLATE"), "{error}");
    assert!(error.contains("131047"), "{error}");
    app.assert_sends_settled(&graph, 2);
    assert_eq!(
        sends(&graph, ORDER),
        [
            ("template".to_string(), Some("order_confirmed".to_string())),
            ("text".to_string(), None),
        ]
    );
    assert_eq!(
        link_via(&app, ORDER, "link").as_deref(),
        Some("text_no_template")
    );
}

// ------------------------------------------------------- the window known

#[test]
fn a_customer_who_never_wrote_gets_the_invite_template_and_no_doomed_text() {
    let graph = FakeGraph::start();
    let app = app_with_invite(&graph);
    graph.close_window(CUSTOMER);

    pay(&app, &payment_event(ORDER));

    app.wait_for_outbox_status(ORDER, "link", "sent", PATIENCE);
    wait_delivered(&app, ORDER, "link");
    app.assert_sends_settled(&graph, 2);
    assert_eq!(graph.requests_of_type("text").len(), 0);
    assert_eq!(invite_templates(&graph, ORDER), 1);
    assert_eq!(
        link_via(&app, ORDER, "link").as_deref(),
        Some("template_window_closed")
    );
    assert!(graph.statuses_posted().iter().all(|s| s.status != "failed"));
}

#[test]
fn a_customer_who_wrote_over_23_hours_55_minutes_ago_gets_the_invite_template() {
    let graph = FakeGraph::start();
    let app = app_with_invite(&graph);
    customer_wrote(&app, Duration::from_secs(23 * 3600 + 56 * 60));

    pay(&app, &payment_event(ORDER));

    app.wait_for_outbox_status(ORDER, "link", "sent", PATIENCE);
    app.assert_sends_settled(&graph, 2);
    assert_eq!(graph.requests_of_type("text").len(), 0);
    assert_eq!(
        link_via(&app, ORDER, "link").as_deref(),
        Some("template_window_closed")
    );
}

#[test]
fn a_customer_who_wrote_recently_gets_the_free_text() {
    let graph = FakeGraph::start();
    let app = app_with_invite(&graph);
    customer_wrote(&app, Duration::from_secs(60));

    let processed = pay(&app, &payment_event(ORDER));

    app.wait_for_outbox_status(ORDER, "link", "sent", PATIENCE);
    wait_delivered(&app, ORDER, "link");
    app.assert_sends_settled(&graph, 2);
    let text = graph.requests_of_type("text");
    assert_eq!(text.len(), 1);
    assert!(text[0].body["text"]["body"]
        .as_str()
        .unwrap()
        .ends_with(&processed.whatsapp_link));
    assert_eq!(invite_templates(&graph, ORDER), 0);
    assert_eq!(
        link_via(&app, ORDER, "link").as_deref(),
        Some("text_window_open")
    );
}

#[test]
fn a_recent_message_from_the_customers_bsuid_opens_the_window() {
    let graph = FakeGraph::start();
    let app = app_with_invite(&graph);
    // Meta showed number and BSUID together once, two days ago; today the
    // customer writes under the username only.
    let mut both = both_ids_text_payload(CUSTOMER, CUSTOMER_BSUID, "Asha", &fresh_wamid(), "hi");
    set_timestamp(&mut both, Duration::from_secs(2 * 86_400));
    app.deliver(&both);
    app.deliver(&username_text_payload(
        CUSTOMER_BSUID,
        "Asha",
        &fresh_wamid(),
        "Ordering now",
    ));

    pay(&app, &payment_event(ORDER));

    app.wait_for_outbox_status(ORDER, "link", "sent", PATIENCE);
    app.assert_sends_settled(&graph, 2);
    assert_eq!(graph.requests_of_type("text").len(), 1);
    assert_eq!(
        link_via(&app, ORDER, "link").as_deref(),
        Some("text_window_open")
    );
}

#[test]
fn without_the_invite_template_the_text_is_sent_as_the_seed_does() {
    let graph = FakeGraph::start();
    let app = reporting(&graph, TestApp::builder(&graph));

    pay(&app, &payment_event(ORDER));

    app.wait_for_outbox_status(ORDER, "link", "sent", PATIENCE);
    app.assert_sends_settled(&graph, 2);
    assert_eq!(graph.requests_of_type("text").len(), 1);
    assert_eq!(
        link_via(&app, ORDER, "link").as_deref(),
        Some("text_no_template")
    );
}

#[test]
fn the_admin_order_view_says_which_way_the_link_went() {
    let graph = FakeGraph::start();
    let app = reporting(
        &graph,
        TestApp::builder(&graph)
            .env("WHATSAPP_INVITE_TEMPLATE", INVITE)
            .env("ADMIN_TOKEN", ADMIN_TOKEN_FOR_TESTS),
    );

    pay(&app, &payment_event(ORDER));
    app.wait_for_outbox_status(ORDER, "link", "sent", PATIENCE);

    let resp = app.admin(
        "GET",
        &format!("/admin/orders/{ORDER}"),
        Some(&format!("Bearer {ADMIN_TOKEN_FOR_TESTS}")),
    );
    assert_eq!(resp.status, 200, "{}", resp.body);
    let view = resp.json();
    assert_eq!(view["link_via"]["code"], "template_window_closed", "{view}");
    assert!(view["link_via"]["line"]
        .as_str()
        .unwrap()
        .contains("window was closed"));
}

// ------------------------------------------- one paid message per order

fn pay_with_link_in(choice: &str) -> (FakeGraph, TestApp, Processed) {
    let graph = FakeGraph::start();
    let app = reporting(
        &graph,
        TestApp::builder(&graph)
            .env("WHATSAPP_LINK_IN", choice)
            .env("WHATSAPP_INVITE_TEMPLATE", INVITE),
    );
    let processed = pay(&app, &payment_event(ORDER));
    app.wait_for_outbox_status(ORDER, "confirmation", "sent", PATIENCE);
    wait_delivered(&app, ORDER, "confirmation");
    app.assert_sends_settled(&graph, 1);
    (graph, app, processed)
}

/// The invite URL works and counts a person's click.
fn assert_invite_url_counts(app: &TestApp, processed: &Processed) {
    let path = processed
        .invite_url
        .strip_prefix(&app.base_url())
        .unwrap_or_else(|| {
            panic!(
                "invite URL {} is not under APP_BASE_URL",
                processed.invite_url
            )
        });
    let resp = app.get_no_redirect_with(path, &[("User-Agent", "Mozilla/5.0 (Linux; Android 14)")]);
    assert_eq!(resp.status, 302);
    assert_eq!(
        resp.header("location"),
        Some(processed.whatsapp_link.as_str())
    );
    wait_until("the click counted", PATIENCE, || {
        app.count("SELECT COUNT(*) FROM invite_clicks WHERE is_preview = FALSE") == 1
    });
}

#[test]
fn link_in_confirmation_sends_one_message_with_the_invite_url_as_fourth_parameter() {
    let (graph, app, processed) = pay_with_link_in("confirmation");

    let sent = graph.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].template_name(), Some("order_confirmed"));
    assert_eq!(
        sent[0].body.pointer("/template/components"),
        Some(&json!([{"type": "body", "parameters": [
            {"type": "text", "text": ORDER},
            {"type": "text", "text": "INR 499.00"},
            {"type": "text", "text": "Arrives by Friday"},
            {"type": "text", "text": processed.invite_url},
        ]}]))
    );
    assert_eq!(
        app.count(&format!(
            "SELECT COUNT(*) FROM outbox WHERE order_id = '{ORDER}' AND kind = 'link'"
        )),
        0
    );
    assert_eq!(
        link_via(&app, ORDER, "confirmation").as_deref(),
        Some("in_confirmation")
    );
    assert_invite_url_counts(&app, &processed);
}

#[test]
fn link_in_button_sends_one_message_with_the_token_as_the_url_buttons_suffix() {
    let (graph, app, processed) = pay_with_link_in("button");

    let sent = graph.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].body.pointer("/template/components"),
        Some(&json!([
            {"type": "body", "parameters": [
                {"type": "text", "text": ORDER},
                {"type": "text", "text": "INR 499.00"},
                {"type": "text", "text": "Arrives by Friday"},
            ]},
            {"type": "button", "sub_type": "url", "index": "0",
             "parameters": [{"type": "text", "text": processed.token}]},
        ]))
    );
    assert_eq!(
        processed.invite_url,
        format!("{}/w/invite/{}", app.base_url(), processed.token)
    );
    assert_eq!(
        link_via(&app, ORDER, "confirmation").as_deref(),
        Some("in_button")
    );
    assert_invite_url_counts(&app, &processed);
}

#[test]
fn an_unknown_link_in_is_a_configuration_error_at_start() {
    let graph = FakeGraph::start();
    let (status, logs) = TestApp::builder(&graph)
        .env("WHATSAPP_LINK_IN", "footer")
        .run_until_exit(PATIENCE);
    let status = status.expect("orderlink exits");
    assert!(!status.success());
    assert!(
        logs.lines().any(|l| l.contains("WHATSAPP_LINK_IN")),
        "{logs}"
    );
}

#[test]
fn sandbox_mode_prints_what_each_link_in_choice_sends() {
    for (choice, says) in [
        ("message", "then the link as a text"),
        ("confirmation", "fourth body parameter"),
        ("button", "url button suffix"),
    ] {
        let graph = FakeGraph::start();
        let app = TestApp::builder(&graph)
            .without("WHATSAPP_TOKEN")
            .without("PAYMENT_WEBHOOK_SECRET")
            .without("WHATSAPP_APP_SECRET")
            .without("WHATSAPP_PHONE_NUMBER_ID")
            .env("WHATSAPP_LINK_IN", choice)
            .spawn();
        let resp = app.post_webhook_unsigned(&payment_event(ORDER).to_string());
        assert_eq!(resp.status, 200, "{}", resp.body);
        app.wait_for_outbox_status(ORDER, "confirmation", "sent", PATIENCE);
        wait_until(
            &format!("{choice}: the log says {says:?}"),
            PATIENCE,
            || app.logs().contains(says),
        );
        assert!(app.logs().contains(&format!("WHATSAPP_LINK_IN={choice}")));
        app.assert_sends_settled(&graph, 0);
    }
}

// ------------------------------------------------------ the 2026 codes

#[test]
fn codes_that_end_a_message_are_not_retried_whatever_the_http_status() {
    for (code, http) in [(131026, 400), (131049, 400), (130472, 400), (131049, 500)] {
        let graph = FakeGraph::start();
        graph.respond_with(move |_| Some(Reply::meta_error(http, code)));
        let app = TestApp::spawn(&graph);

        pay(&app, &payment_event(ORDER));

        let row = app.wait_for_outbox_status(ORDER, "confirmation", "dead", PATIENCE);
        assert_eq!(row.attempts, 1, "{code}");
        assert!(row
            .last_error
            .unwrap_or_default()
            .contains(&code.to_string()));
        app.assert_sends_settled(&graph, 1);
    }
}

#[test]
fn codes_in_a_later_failed_status_end_the_message_where_it_stands() {
    for code in [131026, 131049, 130472] {
        let graph = FakeGraph::start();
        let app = reporting(&graph, TestApp::builder(&graph));
        graph.fail_later(CUSTOMER, code);

        pay(&app, &payment_event(ORDER));

        graph.wait_for_statuses("failed", 2, PATIENCE);
        wait_until("both failures recorded", PATIENCE, || {
            app.count(&format!(
                "SELECT COUNT(*) FROM outbox WHERE order_id = '{ORDER}' AND delivery_status = 'failed'"
            )) == 2
        });
        app.assert_sends_settled(&graph, 2);
        let link = app.outbox_row(ORDER, "link");
        assert_eq!((link.status.as_str(), link.attempts), ("sent", 1), "{code}");
    }
}

/// An elder who adopted a username writes with the order's token: the
/// reply goes to the BSUID.
fn elder_writes_by_bsuid(
    graph: &FakeGraph,
    app: &TestApp,
    processed: &Processed,
) -> RecordedRequest {
    app.deliver(&username_prefilled_text_payload(
        ELDER_BSUID,
        "Asha Devi",
        &fresh_wamid(),
        processed,
    ));
    let reply = graph.wait_for("the reply to the BSUID", PATIENCE, |all| {
        all.iter().any(|r| r.body.get("recipient").is_some())
    });
    let reply = reply
        .into_iter()
        .find(|r| r.body.get("recipient").is_some())
        .unwrap();
    app.wait_for_outbox_status(&processed.order_id, "elder_reply", "sent", PATIENCE);
    reply
}

#[test]
fn a_131062_status_sends_the_reply_again_to_the_phone_number_once() {
    let graph = FakeGraph::start();
    let app = app_with_reply(&graph);
    let processed = pay_and_send(&app, ORDER);
    let reply = elder_writes_by_bsuid(&graph, &app, &processed);
    let wamid = invite_wamid(&reply).unwrap().to_string();
    app.deliver(&both_ids_text_payload(
        ELDER_A,
        ELDER_BSUID,
        "Asha Devi",
        &fresh_wamid(),
        "thank you",
    ));
    let failed = json!({
        "id": wamid,
        "status": "failed",
        "timestamp": now_secs().to_string(),
        "recipient_user_id": ELDER_BSUID,
        "biz_opaque_callback_data": ORDER,
        "errors": [{"code": 131062, "title": "Business-scoped user ID recipient not supported",
                    "message": "Business-scoped user ID recipient not supported",
                    "error_data": {"details": "Message failed to send."}}]
    });

    // Meta delivers it twice.
    app.deliver(&statuses_payload(vec![failed.clone()]));
    app.deliver(&statuses_payload(vec![failed]));

    let again = wait_for_replies(&graph, ELDER_A, 1);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].body["text"]["body"], reply.body["text"]["body"]);
    app.wait_for_outbox_status(ORDER, "elder_reply", "sent", PATIENCE);
    app.assert_sends_settled(&graph, 4);
}

#[test]
fn a_131062_answer_with_no_number_known_ends_the_reply() {
    let graph = FakeGraph::start();
    graph.respond_with(|r| {
        r.body
            .get("recipient")
            .is_some()
            .then(|| Reply::meta_error(400, 131062))
    });
    let app = app_with_reply(&graph);
    let processed = pay_and_send(&app, ORDER);
    app.deliver(&username_prefilled_text_payload(
        ELDER_BSUID,
        "Asha Devi",
        &fresh_wamid(),
        &processed,
    ));

    let row = app.wait_for_outbox_status(ORDER, "elder_reply", "dead", PATIENCE);
    assert!(row.last_error.unwrap_or_default().contains("131062"));
    app.assert_sends_settled(&graph, 3);
}

// ---------------------------------------------------- across instances

/// Two instances on one PostgreSQL database; Meta's statuses all land on
/// the second, whichever sent the text. Each order's link goes as the
/// invite template exactly once.
#[test]
#[cfg_attr(not(orderlink_pg), ignore = "needs PostgreSQL: source .ci/postgres")]
fn across_instances_a_131047_status_sends_one_invite_template_per_order() {
    let test = "window::across_instances_a_131047_status_sends_one_invite_template_per_order";
    if store::skip_on_postgres(test, "runs on PostgreSQL in the SQLite pass already") {
        return;
    }
    let Some(url) = crate::postgres::postgres_url(test) else {
        return;
    };
    let db = Scratch::create(&url);
    let graph = FakeGraph::start();
    let instance = || {
        TestApp::builder(&graph)
            .env("DATABASE_URL", &db.url)
            .env("WHATSAPP_INVITE_TEMPLATE", INVITE)
            .spawn()
    };
    let a = instance();
    let b = instance();
    graph.report_statuses_to(&b.base_url(), APP_SECRET);
    graph.close_window(CUSTOMER);
    // Judged open by orderlink, closed at Meta.
    customer_wrote(&a, Duration::from_secs(23 * 3600 + 50 * 60));
    let orders: Vec<String> = (0..6).map(|i| format!("ORD-X{i}")).collect();

    for (i, order) in orders.iter().enumerate() {
        let app = if i % 2 == 0 { &a } else { &b };
        pay(app, &payment_event(order));
    }

    for order in &orders {
        a.wait_for_outbox_status(order, "link", "sent", Duration::from_secs(30));
        wait_until(
            &format!("{order}: the template's variant recorded"),
            PATIENCE,
            || a.outbox_row(order, "link").variant == "template",
        );
    }
    a.assert_sends_settled(&graph, orders.len() * 3);
    for order in &orders {
        assert_eq!(invite_templates(&graph, order), 1, "{order}");
        assert_eq!(
            link_via(&a, order, "link").as_deref(),
            Some("template_after_131047")
        );
    }
    // Each refusal requeued once: on the instance Meta posted to (b), or,
    // when the status came before the send was recorded, on the instance
    // that recorded it. At least one refused text was sent by a.
    let refused = |app: &TestApp| {
        app.logs()
            .matches("a later status refused the link text")
            .count()
    };
    assert_eq!(refused(&a) + refused(&b), orders.len());
    assert!(refused(&b) >= 1);
    let texts_from_a = a
        .logs()
        .lines()
        .filter(|l| l.contains("sent link for order") && l.contains("(attempt 1)"))
        .count();
    assert!(texts_from_a >= 1, "instance a sent no link text");
}

#[test]
fn a_131062_answer_sends_the_reply_again_to_the_number_meta_has_shown_since() {
    let graph = FakeGraph::start();
    let app = app_with_reply(&graph);
    // Meta shows the elder's number (a message with both ids) just before
    // it answers 131062 to the reply addressed to the BSUID: the number is
    // known when the answer is recorded, not when the reply was queued.
    let webhook = app.url("/webhooks/whatsapp");
    graph.respond_with(move |r| {
        r.body.get("recipient")?;
        let both = both_ids_text_payload(
            ELDER_A,
            ELDER_BSUID,
            "Asha Devi",
            &fresh_wamid(),
            "thank you",
        )
        .to_string();
        let status = ureq::post(&webhook)
            .set("Content-Type", "application/json")
            .set("X-Hub-Signature-256", &meta_signature(APP_SECRET, &both))
            .send_string(&both)
            .map(|r| r.status())
            .unwrap_or(0);
        assert_eq!(status, 200);
        Some(Reply::meta_error(400, 131062))
    });
    let processed = pay_and_send(&app, ORDER);
    app.deliver(&username_prefilled_text_payload(
        ELDER_BSUID,
        "Asha Devi",
        &fresh_wamid(),
        &processed,
    ));

    let again = wait_for_replies(&graph, ELDER_A, 1);
    assert_eq!(again.len(), 1);
    app.wait_for_outbox_status(ORDER, "elder_reply", "sent", PATIENCE);
    app.assert_sends_settled(&graph, 4);
    assert_eq!(requests_to_user(&graph, ELDER_BSUID).len(), 1);
}
