//! SPEC §14: `GET /metrics`, black-box — after a scripted flow the scraped
//! numbers are exactly what happened, the text passes Debian's `promtool
//! check metrics`, no order id, phone number or token appears in it, and
//! the endpoint is 404 without `METRICS_TOKEN` and 401 with a wrong bearer.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::json;

use crate::support::app::into_resp;
use crate::support::meta::*;
use crate::support::signing;
use crate::support::*;

const METRICS_TOKEN: &str = "metrics-7c41-scrape-bearer";
const RAZORPAY_SECRET: &str = "rzp_metrics_secret_0d2";
const CUSTOMER: &str = "919876543210";

fn scrape(app: &TestApp, authorization: Option<&str>) -> Resp {
    let mut req = ureq::get(&app.url("/metrics")).timeout(std::time::Duration::from_secs(15));
    if let Some(value) = authorization {
        req = req.set("Authorization", value);
    }
    into_resp(req.call())
}

/// Every sample of a scrape, keyed by its name and its labels in name order.
struct Samples(BTreeMap<String, f64>);

impl Samples {
    fn parse(text: &str) -> Samples {
        let mut out = BTreeMap::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("a sample line");
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let mut pairs: Vec<&str> = labels.split(',').filter(|p| !p.is_empty()).collect();
            pairs.sort();
            out.insert(
                format!("{name}{{{}}}", pairs.join(",")),
                value.parse().expect("a number"),
            );
        }
        Samples(out)
    }

    /// The sample's value; a series that is absent counts as 0 for counters
    /// the flow never moved, so the test asserts on what is present.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        pairs.sort();
        let key = format!("{name}{{{}}}", pairs.join(","));
        self.0.get(&key).copied().unwrap_or(0.0)
    }

    /// Every series of `name`, for exact comparisons of a whole family.
    fn family(&self, name: &str) -> BTreeMap<String, f64> {
        self.0
            .iter()
            .filter(|(k, _)| k.split('{').next() == Some(name))
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }
}

/// Razorpay's documented `payment.captured` event (https://razorpay.com/docs/webhooks/payloads/payments/),
/// with the merchant's order id in `notes`.
fn razorpay_payment_captured(pay_id: &str, order_id: &str) -> String {
    json!({
        "entity": "event",
        "account_id": "acc_BFQ7uQEaa7j2z7",
        "event": "payment.captured",
        "contains": ["payment"],
        "payload": {"payment": {"entity": {
            "id": pay_id, "entity": "payment", "amount": 49900, "currency": "INR",
            "status": "captured", "order_id": "order_DBJOWzybf0sJbb", "method": "upi",
            "captured": true, "description": "Purchase", "email": "gaurav.kumar@example.com",
            "contact": "+919876543210", "notes": {"order_id": order_id}, "fee": 1180, "tax": 180,
            "created_at": 1567674599
        }}},
        "created_at": 1567674606
    })
    .to_string()
}

/// Runs Debian's `promtool check metrics` on `text`: Some(output) on
/// failure, None when it passed. Without promtool the check is skipped,
/// except under CI=true, where .ci/run installs it.
fn promtool_problems(text: &str) -> Option<String> {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "promtool is required under CI=true (apt-get install prometheus): {e}"
            );
            eprintln!("SKIPPED promtool check metrics: promtool not found ({e})");
            return None;
        }
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // promtool exits non-zero on errors and prints lint problems (help
    // text, naming) either way: both count.
    if out.status.success() && said.trim().is_empty() {
        None
    } else {
        Some(said)
    }
}

#[test]
fn after_a_scripted_flow_the_scrape_counts_exactly_what_happened_and_passes_promtool() {
    // Arrange
    let graph = FakeGraph::start();
    let app = TestApp::builder(&graph)
        .env("METRICS_TOKEN", METRICS_TOKEN)
        .env("RAZORPAY_WEBHOOK_SECRET", RAZORPAY_SECRET)
        .spawn();
    let bearer = format!("Bearer {METRICS_TOKEN}");

    // Act
    // A: the confirmation is throttled once (429, Graph code 130429), then
    // both messages are accepted; the same delivery again is a duplicate.
    graph.script([Reply::too_many_requests(0), Reply::Ok, Reply::Ok]);
    let event_a = payment_event("ORD-M13-A").to_string();
    let id_a = fresh_webhook_id();
    let first = app.post_webhook_with_id(&id_a, &event_a);
    assert_eq!(first.json()["status"], "processed", "{}", first.body);
    let token_a = token_of(first.json()["invite_url"].as_str().unwrap());
    app.wait_for_outbox_status("ORD-M13-A", "link", "sent", PATIENCE);
    let again = app.post_webhook_with_id(&id_a, &event_a);
    assert_eq!(again.json()["status"], "duplicate", "{}", again.body);
    // B: Meta refuses the confirmation for good (131026): a dead letter;
    // its link message is never attempted.
    graph.script([Reply::meta_error(400, 131026)]);
    pay(&app, &payment_event("ORD-M13-B"));
    app.wait_for_outbox_status("ORD-M13-B", "confirmation", "dead", PATIENCE);
    // C: a gateway payment.
    let body = razorpay_payment_captured("pay_M13C000000001", "ORD-M13-C");
    let signature = signing::razorpay(RAZORPAY_SECRET, &body);
    let resp = into_resp(
        ureq::post(&app.url("/webhooks/razorpay"))
            .set("Content-Type", "application/json")
            .set("X-Razorpay-Signature", &signature)
            .set("x-razorpay-event-id", "evt_M13C000000001")
            .send_string(&body),
    );
    assert_eq!(resp.json()["status"], "processed", "{}", resp.body);
    app.wait_for_outbox_status("ORD-M13-C", "link", "sent", PATIENCE);
    // An unsigned delivery is refused; Stripe's route is off (no secret).
    let refused = app.post_webhook_with_headers(&payment_event("ORD-M13-D").to_string(), &[]);
    assert_eq!(refused.status, 401, "{}", refused.body);
    let off = into_resp(
        ureq::post(&app.url("/webhooks/stripe"))
            .set("Content-Type", "application/json")
            .send_string("{}"),
    );
    assert_eq!(off.status, 404, "{}", off.body);
    // A person opens A's invite, and WhatsApp fetches its preview.
    let path = format!("/w/invite/{token_a}");
    let person = app.get_no_redirect_with(
        &path,
        &[(
            "User-Agent",
            "Mozilla/5.0 (Linux; Android 14) AppleWebKit/537.36 Chrome/126.0 Mobile Safari/537.36",
        )],
    );
    assert_eq!(person.status, 302);
    let preview = app.get_no_redirect_with(&path, &[("User-Agent", "WhatsApp/2.23.20.0 A")]);
    assert_eq!(preview.status, 302);
    // The elder writes with A's token: linked. Then Meta reports A's
    // confirmation delivered and read, each with its (billable) pricing.
    app.deliver(&text_payload(
        ELDER_A,
        "Asha",
        &fresh_wamid(),
        &format!("Hi, I’m contacting on behalf of order ORD-M13-A. Token: {token_a}"),
    ));
    let confirmation = app
        .outbox_row("ORD-M13-A", "confirmation")
        .graph_message_id
        .expect("A's confirmation was accepted");
    for state in ["delivered", "read"] {
        app.deliver(&statuses_payload(vec![status(
            &confirmation,
            state,
            CUSTOMER,
        )]));
    }
    let resp = scrape(&app, Some(&bearer));

    // Assert
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(
        resp.header("content-type"),
        Some("text/plain; version=0.0.4")
    );
    let s = Samples::parse(&resp.body);
    let webhooks: BTreeMap<String, f64> = [
        ("payment", "processed", 2.0),
        ("payment", "duplicate", 1.0),
        ("payment", "invalid_signature", 1.0),
        ("razorpay", "processed", 1.0),
        ("stripe", "not_found", 1.0),
        ("whatsapp", "processed", 3.0),
    ]
    .into_iter()
    .map(|(source, outcome, n)| {
        (
            format!("orderlink_webhooks_total{{outcome=\"{outcome}\",source=\"{source}\"}}"),
            n,
        )
    })
    .collect();
    assert_eq!(s.family("orderlink_webhooks_total"), webhooks);
    let messages: BTreeMap<String, f64> = [
        ("confirmation", "retry", 1.0),
        ("confirmation", "sent", 2.0),
        ("confirmation", "dead", 1.0),
        ("link", "sent", 2.0),
    ]
    .into_iter()
    .map(|(kind, outcome, n)| {
        (
            format!("orderlink_messages_total{{kind=\"{kind}\",outcome=\"{outcome}\"}}"),
            n,
        )
    })
    .collect();
    assert_eq!(s.family("orderlink_messages_total"), messages);
    let graph_errors: BTreeMap<String, f64> = [
        (
            "orderlink_graph_errors_total{code=\"130429\"}".to_owned(),
            1.0,
        ),
        (
            "orderlink_graph_errors_total{code=\"131026\"}".to_owned(),
            1.0,
        ),
    ]
    .into();
    assert_eq!(s.family("orderlink_graph_errors_total"), graph_errors);
    let histogram = "orderlink_send_duration_seconds_count";
    assert_eq!(s.get(histogram, &[("kind", "confirmation")]), 4.0);
    assert_eq!(s.get(histogram, &[("kind", "link")]), 2.0);
    let histogram = "orderlink_webhook_duration_seconds_count";
    assert_eq!(s.get(histogram, &[("source", "payment")]), 4.0);
    assert_eq!(s.get(histogram, &[("source", "razorpay")]), 1.0);
    assert_eq!(s.get(histogram, &[("source", "stripe")]), 1.0);
    assert_eq!(s.get(histogram, &[("source", "whatsapp")]), 3.0);
    let clicks = "orderlink_invite_clicks_total";
    assert_eq!(s.get(clicks, &[("visitor", "person")]), 1.0);
    assert_eq!(s.get(clicks, &[("visitor", "preview")]), 1.0);
    assert_eq!(s.get("orderlink_elders_linked_total", &[]), 1.0);
    let depth = "orderlink_outbox_messages";
    assert_eq!(s.get(depth, &[("state", "dead")]), 1.0);
    assert_eq!(s.get(depth, &[("state", "queued")]), 0.0);
    assert_eq!(s.get(depth, &[("state", "waiting")]), 0.0);
    assert_eq!(s.get(depth, &[("state", "sending")]), 0.0);
    assert_eq!(
        s.family("orderlink_billable_messages"),
        [(
            "orderlink_billable_messages{category=\"utility\"}".to_owned(),
            1.0
        )]
        .into()
    );
    // The status had no `pricing.type` (Meta's shape before July 2025):
    // billable decides that it was paid.
    assert_eq!(
        s.family("orderlink_paid_messages"),
        [(
            "orderlink_paid_messages{category=\"utility\"}".to_owned(),
            1.0
        )]
        .into()
    );
    assert_eq!(s.get("orderlink_sending_paused", &[]), 0.0);
    for secret in [
        "ORD-M13",
        CUSTOMER,
        "98765",
        ELDER_A,
        token_a.as_str(),
        &token_a[..8],
        "pay_M13C",
        "evt_M13C",
        METRICS_TOKEN,
    ] {
        assert!(
            !resp.body.contains(secret),
            "the scrape names {secret:?}:\n{}",
            resp.body
        );
    }
    if let Some(problems) = promtool_problems(&resp.body) {
        panic!("promtool check metrics:\n{problems}\non:\n{}", resp.body);
    }
}

#[test]
fn sending_paused_is_one_while_a_configuration_fault_holds_sending() {
    // Arrange: Meta says the token expired (190) for every send.
    let graph = FakeGraph::start();
    graph.respond_with(|_| Some(Reply::meta_error(401, 190)));
    let app = TestApp::builder(&graph)
        .env("METRICS_TOKEN", METRICS_TOKEN)
        .spawn();
    let bearer = format!("Bearer {METRICS_TOKEN}");

    // Act
    pay(&app, &payment_event("ORD-M13-P"));
    graph.wait_for_requests(1, PATIENCE);
    let mut s = Samples::parse(&scrape(&app, Some(&bearer)).body);
    // The pause is set when Meta answers, the message queued again when
    // that outcome is committed just after: a scrape may fall between.
    wait_until(
        "the scrape reports sending paused, the message queued",
        PATIENCE,
        || {
            s = Samples::parse(&scrape(&app, Some(&bearer)).body);
            s.get("orderlink_sending_paused", &[]) == 1.0
                && s.get("orderlink_outbox_messages", &[("state", "queued")]) == 1.0
        },
    );

    // Assert: paused, the attempt counted as such, never as dead.
    assert!(
        s.get(
            "orderlink_messages_total",
            &[("kind", "confirmation"), ("outcome", "paused")]
        ) >= 1.0
    );
    assert_eq!(
        s.get(
            "orderlink_messages_total",
            &[("kind", "confirmation"), ("outcome", "dead")]
        ),
        0.0
    );
    assert!(s.get("orderlink_graph_errors_total", &[("code", "190")]) >= 1.0);
    assert_eq!(
        s.get("orderlink_outbox_messages", &[("state", "queued")]),
        1.0
    );
    assert_eq!(
        s.get("orderlink_outbox_messages", &[("state", "waiting")]),
        1.0
    );
}

#[test]
fn metrics_are_404_without_metrics_token_and_401_with_a_wrong_or_missing_bearer() {
    let graph = FakeGraph::start();
    let unset = TestApp::spawn(&graph);
    let resp = scrape(&unset, Some(&format!("Bearer {METRICS_TOKEN}")));
    assert_eq!(resp.status, 404, "{}", resp.body);

    let app = TestApp::builder(&graph)
        .env("METRICS_TOKEN", METRICS_TOKEN)
        .spawn();
    let near_miss = format!("Bearer {METRICS_TOKEN}x");
    let short = format!("Bearer {}", &METRICS_TOKEN[..METRICS_TOKEN.len() - 1]);
    let basic = format!("Basic {METRICS_TOKEN}");
    for authorization in [
        None,
        Some("Bearer wrong"),
        Some(near_miss.as_str()),
        Some(short.as_str()),
        Some(basic.as_str()),
    ] {
        let resp = scrape(&app, authorization);
        assert_eq!(resp.status, 401, "{authorization:?}: {}", resp.body);
        assert_eq!(resp.error_code(), "unauthorized", "{authorization:?}");
        assert!(!resp.body.contains("orderlink_"), "{authorization:?}");
    }
    let ok = scrape(&app, Some(&format!("Bearer {METRICS_TOKEN}")));
    assert_eq!(ok.status, 200);
}
