//! SPEC §13 with more than one instance: two real `orderlink` binaries on one
//! PostgreSQL database, sending through one fake Graph API. Webhooks are
//! idempotent across instances, the senders share one outbox (each message
//! once; a killed instance's rows taken over after their lease), and
//! `WHATSAPP_MAX_MPS` holds for both together. Also: a SQLite database with
//! messages still queued, moved with `orderlink copy-to`, is sent from
//! PostgreSQL once.
//!
//! Like `postgres.rs`, these need ORDERLINK_TEST_POSTGRES_URL (a user that
//! may create databases; `.ci/postgres` starts one): without it they skip,
//! loudly, and under CI=true they fail. Each test has a database of its own.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use ::postgres::Client;
use serde_json::Value;

use crate::postgres::postgres_url;
use crate::support::child::run_cli;
use crate::support::store::{self, Scratch};
use crate::support::{
    fresh_webhook_id, pay, payment_event, FakeGraph, RecordedRequest, Reply, TestApp, PATIENCE,
};

/// The test server's URL; `None` (the test skipped, loudly) without one, and
/// in the suite's PostgreSQL pass, which would only repeat these: they run
/// on PostgreSQL in every pass.
fn admin_url(test: &str) -> Option<String> {
    if store::skip_on_postgres(test, "runs on PostgreSQL in the SQLite pass already") {
        return None;
    }
    postgres_url(test)
}

/// An instance of the server on the scratch database.
fn instance(graph: &FakeGraph, db: &Scratch, extra: &[(&str, &str)]) -> TestApp {
    // Behind one load balancer: one public address for both.
    let mut builder = TestApp::builder(graph)
        .env("DATABASE_URL", &db.url)
        .env("APP_BASE_URL", "https://shop.example");
    for (k, v) in extra {
        builder = builder.env(k, v);
    }
    builder.spawn()
}

/// `(order_id, kind, status)` of every outbox row.
fn outbox(pg: &mut Client) -> Vec<(String, String, String)> {
    pg.query(
        "SELECT order_id, kind, status FROM outbox ORDER BY order_id, kind",
        &[],
    )
    .expect("read the outbox")
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

/// Messages this instance's log says it sent (one INFO line each).
fn sent_by(app: &TestApp) -> usize {
    app.logs()
        .lines()
        .filter(|l| l.contains("sent confirmation for order") || l.contains("sent link for order"))
        .count()
}

/// The instances' retries, warnings and errors, for a failure message.
fn trouble(apps: &[&TestApp]) -> String {
    apps.iter()
        .enumerate()
        .flat_map(|(i, app)| {
            app.logs()
                .lines()
                .filter(|l| l.contains("retrying") || l.contains("WARN") || l.contains("ERROR"))
                .take(15)
                .map(|l| format!("instance {i}: {l}"))
                .collect::<Vec<_>>()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Waits (to a deadline) until no outbox row can still be sent: nothing
/// queued, claimed or waiting. A request reaches the fake before its outcome
/// is written, so after this every request the database will cause is in.
fn wait_settled(pg: &mut Client, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let open: i64 = pg
            .query_one(
                "SELECT COUNT(*) FROM outbox WHERE status IN ('queued', 'sending', 'waiting')",
                &[],
            )
            .expect("count open rows")
            .get(0);
        if open == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{open} message(s) still to send after {timeout:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// `(order id, message type)` → how many requests the fake got for it.
fn copies(requests: &[RecordedRequest]) -> BTreeMap<(String, String), usize> {
    let mut seen = BTreeMap::new();
    for r in requests {
        let key = (
            r.order_id().unwrap_or_default().to_owned(),
            r.message_type().unwrap_or_default().to_owned(),
        );
        *seen.entry(key).or_insert(0) += 1;
    }
    seen
}

/// The most requests that arrived within any window of `window`.
fn busiest(requests: &[RecordedRequest], window: Duration) -> usize {
    let mut arrivals: Vec<Instant> = requests.iter().map(|r| r.arrived).collect();
    arrivals.sort();
    (0..arrivals.len())
        .map(|i| {
            arrivals[i..]
                .iter()
                .take_while(|t| **t - arrivals[i] < window)
                .count()
        })
        .max()
        .unwrap_or(0)
}

#[test]
#[cfg_attr(not(orderlink_pg), ignore = "needs PostgreSQL: source .ci/postgres")]
fn two_instances_sending_from_one_outbox_send_each_of_4000_messages_exactly_once() {
    let Some(admin) =
        admin_url("two_instances_sending_from_one_outbox_send_each_of_4000_messages_exactly_once")
    else {
        return;
    };
    const ORDERS: usize = 2_000;
    let db = Scratch::create(&admin);
    let graph = FakeGraph::start();
    // Uncapped, and a timeout no loaded CI machine reaches: a send that
    // times out is retried by design (Meta may have taken it), which would
    // be a second request here without any instance claiming a row twice.
    let uncapped = [
        ("WHATSAPP_MAX_MPS", "100000"),
        ("WHATSAPP_TIMEOUT_MS", "10000"),
    ];
    let apps = [
        instance(&graph, &db, &uncapped),
        instance(&graph, &db, &uncapped),
    ];

    // Act: 2,000 orders, posted alternately to the two instances by eight
    // clients, while both send.
    let started = Instant::now();
    thread::scope(|s| {
        for client in 0..8 {
            let apps = &apps;
            s.spawn(move || {
                for i in (client..ORDERS).step_by(8) {
                    pay(&apps[i % 2], &payment_event(&format!("ORD-M{i:05}")));
                }
            });
        }
    });
    let posted = started.elapsed();
    let mut pg = db.client();
    wait_settled(&mut pg, Duration::from_secs(120));
    let delivered = started.elapsed();

    // Assert: each order's two messages exactly once, all accepted, and
    // both instances did part of the sending.
    let requests = graph.requests();
    eprintln!(
        "multi: {ORDERS} orders posted to two instances in {posted:.1?}, {} messages delivered after {delivered:.1?}",
        requests.len()
    );
    assert_eq!(
        requests.len(),
        2 * ORDERS,
        "requests at the fake; the instances' log:\n{}",
        trouble(&[&apps[0], &apps[1]])
    );
    let seen = copies(&requests);
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(twice.is_empty(), "sent more than once: {twice:?}");
    assert_eq!(seen.len(), 2 * ORDERS, "distinct (order, message) pairs");
    assert!(requests.iter().all(RecordedRequest::was_accepted));
    assert!(
        outbox(&mut pg).iter().all(|r| r.2 == "sent"),
        "every row sent"
    );
    let each = [sent_by(&apps[0]), sent_by(&apps[1])];
    assert_eq!(each[0] + each[1], 2 * ORDERS, "sent, by the logs: {each:?}");
    assert!(each.iter().all(|n| *n > 0), "both instances sent: {each:?}");
}

#[test]
#[cfg_attr(not(orderlink_pg), ignore = "needs PostgreSQL: source .ci/postgres")]
fn the_same_webhook_posted_to_both_instances_at_once_makes_one_order_and_one_confirmation() {
    let Some(admin) = admin_url(
        "the_same_webhook_posted_to_both_instances_at_once_makes_one_order_and_one_confirmation",
    ) else {
        return;
    };
    const RACES: usize = 20;
    let db = Scratch::create(&admin);
    let graph = FakeGraph::start();
    let apps = [instance(&graph, &db, &[]), instance(&graph, &db, &[])];

    for race in 0..RACES {
        // Arrange: one event under one webhook id.
        let order = format!("ORD-RACE{race:02}");
        let body = payment_event(&order).to_string();
        let id = fresh_webhook_id();
        let start = Barrier::new(2);

        // Act: both instances get it at the same moment.
        let answers: Vec<(u16, Value)> = thread::scope(|s| {
            let handles: Vec<_> = apps
                .iter()
                .map(|app| {
                    let (start, body, id) = (&start, &body, &id);
                    s.spawn(move || {
                        start.wait();
                        let resp = app.post_webhook_with_id(id, body);
                        (resp.status, resp.json())
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });

        // Assert: one `processed`, one `duplicate`, both naming the same
        // order and the same links (SPEC §4: a repeat changes nothing).
        let mut statuses: Vec<&str> = answers
            .iter()
            .map(|(status, json)| {
                assert_eq!(*status, 200, "{json}");
                json["status"].as_str().unwrap_or_default()
            })
            .collect();
        statuses.sort();
        assert_eq!(statuses, ["duplicate", "processed"], "{answers:?}");
        for key in ["order_id", "invite_url", "whatsapp_link"] {
            assert_eq!(answers[0].1[key], answers[1].1[key], "{key}: {answers:?}");
        }
        assert_eq!(answers[0].1["order_id"], order.as_str());
    }
    let mut pg = db.client();
    wait_settled(&mut pg, PATIENCE * 2);
    let orders: i64 = pg
        .query_one("SELECT COUNT(*) FROM orders", &[])
        .unwrap()
        .get(0);
    let tokens: i64 = pg
        .query_one("SELECT COUNT(*) FROM whatsapp_tokens", &[])
        .unwrap()
        .get(0);
    assert_eq!((orders, tokens), (RACES as i64, RACES as i64));
    let requests = graph.requests();
    assert_eq!(
        requests.len(),
        2 * RACES,
        "one confirmation and one link each"
    );
    assert!(copies(&requests).values().all(|n| *n == 1));
    assert_eq!(graph.requests_of_type("template").len(), RACES);
}

#[test]
#[cfg_attr(not(orderlink_pg), ignore = "needs PostgreSQL: source .ci/postgres")]
fn a_killed_instances_rows_are_sent_by_the_other_after_their_lease_at_most_the_in_flight_twice() {
    let Some(admin) = admin_url("a_killed_instances_rows_are_sent_by_the_other_after_their_lease_at_most_the_in_flight_twice",
    ) else {
        return;
    };
    const ORDERS: usize = 12;
    const WORKERS: usize = 4;
    let db = Scratch::create(&admin);
    let graph = FakeGraph::start();
    // Meta takes each message but answers after a second: the first
    // instance dies with sends in flight that Meta accepted.
    graph.respond_with(|_| Some(Reply::Slow(Duration::from_secs(1))));
    let env = [
        ("SEND_WORKERS", "4"),
        ("WHATSAPP_TIMEOUT_MS", "3000"),
        ("WHATSAPP_MAX_MPS", "100000"),
    ];
    let mut first = instance(&graph, &db, &env);
    for i in 0..ORDERS {
        pay(&first, &payment_event(&format!("ORD-K{i:02}")));
    }
    graph.wait_for_requests(WORKERS, PATIENCE);
    let mut pg = db.client();
    let held: Vec<(String, i64)> = pg
        .query(
            "SELECT order_id, lease_until FROM outbox WHERE status = 'sending'",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();

    // Act: kill -9 while sends are in flight, then start the other.
    first.kill9();
    let killed = Instant::now();
    let killed_wall = orderlink::clock::now_ms();
    let sent_before_kill: BTreeSet<(String, String)> =
        copies(&graph.requests()).into_keys().collect();
    let _second = instance(&graph, &db, &env);
    wait_settled(&mut pg, Duration::from_secs(60));

    // Assert: every message went out; a second copy only of a message that
    // was in flight at the kill, and no more of those than the first
    // instance's workers; the rows it held were sent again only after
    // their lease ran out.
    assert!(!held.is_empty(), "the first instance held rows at the kill");
    let requests = graph.requests();
    let seen = copies(&requests);
    assert_eq!(
        seen.len(),
        2 * ORDERS,
        "every order's two messages: {seen:?}"
    );
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.iter().all(|(_, n)| **n == 2), "{twice:?}");
    assert!(
        twice.iter().all(|(key, _)| sent_before_kill.contains(*key)),
        "a second copy of a message that was not in flight: {twice:?}"
    );
    assert!(
        twice.len() <= WORKERS,
        "{} sent twice: {twice:?}",
        twice.len()
    );
    eprintln!(
        "multi: killed with {} row(s) claimed; {} of {} messages sent twice (in flight at the kill)",
        held.len(),
        twice.len(),
        2 * ORDERS
    );
    let lease_end = held.iter().map(|h| h.1).min().unwrap();
    let held_orders: BTreeSet<&String> = held.iter().map(|h| &h.0).collect();
    for r in requests.iter().filter(|r| r.arrived > killed) {
        let order = r.order_id().unwrap_or_default().to_owned();
        if held_orders.contains(&order) {
            let at = killed_wall + (r.arrived - killed).as_millis() as i64;
            assert!(
                at >= lease_end - 50,
                "{order} sent again {} ms before its lease ended",
                lease_end - at
            );
        }
    }
    assert!(outbox(&mut pg).iter().all(|r| r.2 == "sent"));
}

#[test]
#[cfg_attr(not(orderlink_pg), ignore = "needs PostgreSQL: source .ci/postgres")]
fn whatsapp_max_mps_holds_for_two_instances_together() {
    let Some(admin) = admin_url("whatsapp_max_mps_holds_for_two_instances_together") else {
        return;
    };
    const MPS: usize = 20;
    const ORDERS: usize = 40;
    let db = Scratch::create(&admin);
    let graph = FakeGraph::start();
    let env = [("WHATSAPP_MAX_MPS", "20")];
    let apps = [instance(&graph, &db, &env), instance(&graph, &db, &env)];

    for i in 0..ORDERS {
        pay(&apps[i % 2], &payment_event(&format!("ORD-C{i:02}")));
    }
    let mut pg = db.client();
    wait_settled(&mut pg, Duration::from_secs(60));

    // Assert: both sent, and no second (less the fake's 50 ms of arrival
    // jitter, as in the one-instance throttle test) held more than the cap.
    let requests = graph.requests();
    assert_eq!(requests.len(), 2 * ORDERS);
    let each = [sent_by(&apps[0]), sent_by(&apps[1])];
    assert!(each.iter().all(|n| *n > 0), "both instances sent: {each:?}");
    for app in &apps {
        assert!(
            app.logs()
                .contains("2 live instance(s); this one sends up to 10 of WHATSAPP_MAX_MPS=20"),
            "each instance paced at half the cap; log:\n{}",
            app.logs()
        );
    }
    let most = busiest(&requests, Duration::from_millis(950));
    assert!(
        most <= MPS,
        "{most} sends within one second from two instances (WHATSAPP_MAX_MPS={MPS})"
    );
}

#[test]
#[cfg_attr(not(orderlink_pg), ignore = "needs PostgreSQL: source .ci/postgres")]
fn messages_queued_in_sqlite_are_sent_once_from_postgresql_after_copy_to() {
    let Some(admin) =
        admin_url("messages_queued_in_sqlite_are_sent_once_from_postgresql_after_copy_to")
    else {
        return;
    };
    const ORDERS: usize = 5;
    // Arrange: on SQLite, Meta refuses the token (a configuration fault):
    // sending pauses and every message stays queued, none counted.
    let refusing = FakeGraph::start();
    refusing.respond_with(|_| Some(Reply::meta_error(401, 190)));
    let mut lite = TestApp::spawn(&refusing);
    for i in 0..ORDERS {
        pay(&lite, &payment_event(&format!("ORD-Q{i:02}")));
    }
    refusing.wait_for_requests(1, PATIENCE);
    assert!(lite.terminate(Duration::from_secs(20)).is_some(), "stops");
    let queued = lite.count("SELECT COUNT(*) FROM outbox WHERE status IN ('queued', 'waiting')");
    assert_eq!(queued, 2 * ORDERS as i64, "all still to send");
    let db = Scratch::create(&admin);

    // Act: copy, then serve from PostgreSQL against a Meta that accepts.
    let copied = run_cli(
        &["copy-to", &db.url],
        &[(
            "DATABASE_PATH".to_owned(),
            lite.db_path.to_string_lossy().into_owned(),
        )],
        Duration::from_secs(120),
    );
    assert!(copied.status.success(), "{}", copied.output());
    let graph = FakeGraph::start();
    let _pg_app = instance(&graph, &db, &[]);
    let mut pg = db.client();
    wait_settled(&mut pg, PATIENCE * 3);

    // Assert: each order's confirmation and link exactly once.
    let requests = graph.requests();
    let seen = copies(&requests);
    assert_eq!(requests.len(), 2 * ORDERS, "{seen:?}");
    assert_eq!(seen.len(), 2 * ORDERS);
    for i in 0..ORDERS {
        let order = format!("ORD-Q{i:02}");
        assert_eq!(seen.get(&(order.clone(), "template".into())), Some(&1));
        assert_eq!(seen.get(&(order, "text".into())), Some(&1));
    }
}
