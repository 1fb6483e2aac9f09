//! SPEC §9 pricing and §12's "what the messages cost": each status's
//! `pricing.type` and `category` are recorded with the message; a message
//! is paid when its type is `regular` (or, without a type, when billable).
//! The admin API, the page (overview, order, timeline) and `/metrics` all
//! say the same. Status shapes: Meta's "Status messages webhook reference",
//! https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/messages/status/
//! (`pricing`: `billable` (deprecated), `pricing_model` `PMP`, `category`, `type`).

use serde_json::{json, Value};

use crate::admin_page_seed::{PageClient, ADMIN_TOKEN};
use crate::support::app::into_resp;
use crate::support::meta::*;
use crate::support::*;

const METRICS_TOKEN: &str = "metrics-cost-9d2e-scrape-bearer";
const CUSTOMER: &str = "919876543210";

/// A `delivered` status priced as Meta prices per message since July 2025;
/// `pricing_type: None` is the shape from before (billable and category only).
fn priced(id: &str, category: &str, billable: bool, pricing_type: Option<&str>) -> Value {
    let mut s = status(id, "delivered", CUSTOMER);
    let mut pricing = json!({"billable": billable, "pricing_model": "PMP", "category": category});
    if let Some(t) = pricing_type {
        pricing["type"] = json!(t);
    }
    if pricing_type.is_none() {
        pricing["pricing_model"] = json!("CBP");
    }
    s["pricing"] = pricing;
    s
}

fn message<'v>(view: &'v Value, kind: &str) -> &'v Value {
    view["messages"]
        .as_array()
        .and_then(|all| all.iter().find(|m| m["kind"] == kind))
        .unwrap_or_else(|| panic!("no {kind} in {view}"))
}

#[test]
fn each_pricing_type_is_recorded_and_only_regular_or_untyped_billable_is_paid() {
    // Arrange: two orders, four messages Meta accepted.
    let graph = FakeGraph::start();
    let app = TestApp::builder(&graph)
        .env("ADMIN_TOKEN", ADMIN_TOKEN)
        .env("METRICS_TOKEN", METRICS_TOKEN)
        .spawn();
    pay_and_send(&app, "ORD-COST-1");
    pay_and_send(&app, "ORD-COST-2");
    let id = |order: &str, kind: &str| app.outbox_row(order, kind).graph_message_id.unwrap();

    // Act: Meta's statuses, one of each pricing type, and one without a type.
    app.deliver(&statuses_payload(vec![
        priced(
            &id("ORD-COST-1", "confirmation"),
            "utility",
            true,
            Some("regular"),
        ),
        priced(
            &id("ORD-COST-1", "link"),
            "service",
            false,
            Some("free_customer_service"),
        ),
        priced(
            &id("ORD-COST-2", "confirmation"),
            "utility",
            false,
            Some("free_entry_point"),
        ),
        priced(&id("ORD-COST-2", "link"), "service", true, None),
    ]));

    // Assert: the admin API has each message's pricing, and the order's paid count.
    let admin = |path: &str| {
        let resp = app.admin("GET", path, Some(&format!("Bearer {ADMIN_TOKEN}")));
        assert_eq!(resp.status, 200, "{path}: {}", resp.body);
        resp.json()
    };
    let one = admin("/admin/orders/ORD-COST-1");
    let two = admin("/admin/orders/ORD-COST-2");
    for (m, t, paid) in [
        (message(&one, "confirmation"), json!("regular"), true),
        (message(&one, "link"), json!("free_customer_service"), false),
        (
            message(&two, "confirmation"),
            json!("free_entry_point"),
            false,
        ),
        (message(&two, "link"), Value::Null, true),
    ] {
        assert_eq!(m["pricing"]["type"], t, "{m}");
        assert_eq!(m["pricing"]["paid"], paid, "{m}");
    }
    assert_eq!(
        message(&one, "confirmation")["pricing"]["category"],
        "utility"
    );
    assert_eq!(one["paid_messages"], 1, "{one}");
    assert_eq!(two["paid_messages"], 1, "{two}");

    // The page: the order says what it cost and its timeline which were paid.
    let mut page = PageClient::new(&app);
    assert_eq!(page.sign_in(ADMIN_TOKEN).status, 303);
    let order = page.get("/admin/ui/orders/ORD-COST-1").body;
    assert!(
        order.contains("id=\"order-cost\">1 paid message(s)<"),
        "{order}"
    );
    assert!(order.contains("Confirmation: paid message"), "{order}");
    assert!(
        order.contains("Link message: free (inside the customer&#39;s 24-hour window)")
            || order.contains("Link message: free (inside the customer's 24-hour window)"),
        "{order}"
    );
    let order = page.get("/admin/ui/orders/ORD-COST-2").body;
    assert!(order.contains("Confirmation: free (entry point"), "{order}");
    assert!(order.contains("Link message: paid message"), "{order}");
    // The overview: today's paid messages, by category, and per order.
    let overview = page.get("/admin?period=today").body;
    assert!(overview.contains("id=\"paid-messages\">2<"), "{overview}");
    assert!(
        overview.contains("data-cell=\"cost:utility:Today\">1<"),
        "{overview}"
    );
    assert!(
        overview.contains("data-cell=\"cost:service:Today\">1<"),
        "{overview}"
    );
    assert!(
        overview.contains("id=\"paid-per-order\">1.00<"),
        "{overview}"
    );

    // /metrics: paid by category beside the (deprecated) billable count.
    let scrape = into_resp(
        ureq::get(&app.url("/metrics"))
            .set("Authorization", &format!("Bearer {METRICS_TOKEN}"))
            .call(),
    );
    assert_eq!(scrape.status, 200, "{}", scrape.body);
    for line in [
        "orderlink_paid_messages{category=\"utility\"} 1",
        "orderlink_paid_messages{category=\"service\"} 1",
        "orderlink_billable_messages{category=\"utility\"} 1",
        "orderlink_billable_messages{category=\"service\"} 1",
    ] {
        assert!(
            scrape.body.lines().any(|l| l == line),
            "no {line:?} in:\n{}",
            scrape.body
        );
    }
}

#[test]
fn a_pricing_type_that_arrives_before_the_send_is_recorded_with_the_message() {
    // Arrange: Meta takes the confirmation at once but its answer is slow,
    // so the message's status comes first (SPEC §9: kept, applied when the
    // send is recorded).
    let graph = FakeGraph::start();
    let app = TestApp::builder(&graph)
        .env("ADMIN_TOKEN", ADMIN_TOKEN)
        .env("WHATSAPP_TIMEOUT_MS", "20000")
        .spawn();
    graph.script([Reply::Slow(std::time::Duration::from_secs(3))]);
    pay(&app, &payment_event("ORD-COST-3"));
    let taken = graph.wait_for_accepted("template", 1, PATIENCE);
    let Outcome::Accepted { wamid } = taken[0].outcome.clone() else {
        panic!("{:?}", taken[0].outcome)
    };

    // Act
    app.deliver(&statuses_payload(vec![priced(
        &wamid,
        "utility",
        false,
        Some("regular"),
    )]));
    assert_eq!(
        app.count("SELECT COUNT(*) FROM pending_statuses WHERE pricing_type = 'regular'"),
        1,
        "the status did not wait for its send"
    );
    app.wait_for_outbox_status("ORD-COST-3", "confirmation", "sent", PATIENCE);

    // Assert
    let resp = app.admin(
        "GET",
        "/admin/orders/ORD-COST-3",
        Some(&format!("Bearer {ADMIN_TOKEN}")),
    );
    let view = resp.json();
    let m = message(&view, "confirmation");
    assert_eq!(m["pricing"]["type"], "regular", "{m}");
    assert_eq!(m["pricing"]["paid"], true, "{m}");
}
