//! SPEC §3 start-up validation and §10's SIGTERM promise, seen from outside.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::*;

#[test]
fn live_mode_refuses_to_start_naming_the_missing_or_malformed_variable() {
    let graph = FakeGraph::start();
    let cases: Vec<(&str, TestAppBuilder)> = vec![
        (
            "WHATSAPP_PHONE_NUMBER_ID",
            TestApp::builder(&graph).without("WHATSAPP_PHONE_NUMBER_ID"),
        ),
        (
            "WHATSAPP_BUSINESS_NUMBER_E164",
            TestApp::builder(&graph).without("WHATSAPP_BUSINESS_NUMBER_E164"),
        ),
        (
            "WHATSAPP_BUSINESS_NUMBER_E164",
            TestApp::builder(&graph).env("WHATSAPP_BUSINESS_NUMBER_E164", "+91 99999 00000"),
        ),
        (
            "PAYMENT_WEBHOOK_SECRET",
            TestApp::builder(&graph).without("PAYMENT_WEBHOOK_SECRET"),
        ),
        (
            "PAYMENT_WEBHOOK_SECRET",
            TestApp::builder(&graph).env("PAYMENT_WEBHOOK_SECRET", "not-a-whsec-secret"),
        ),
    ];

    for (variable, builder) in cases {
        let (status, logs) = builder.run_until_exit(Duration::from_secs(10));
        let status =
            status.unwrap_or_else(|| panic!("started without valid {variable}; log:\n{logs}"));
        assert!(!status.success(), "exit {status} without valid {variable}");
        assert!(
            logs.contains(variable),
            "the refusal does not name {variable}:\n{logs}"
        );
    }
}

#[test]
fn sigterm_exits_zero_and_the_next_start_sends_what_was_queued() {
    // Arrange: Graph is down, messages wait in the queue.
    let graph = FakeGraph::start();
    let healthy = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&healthy);
    graph.respond_with(move |_| (!flag.load(Ordering::SeqCst)).then(|| Reply::status(503)));
    let mut app = TestApp::builder(&graph)
        .env("WHATSAPP_RETRY_BASE_MS", "200")
        .env("WHATSAPP_MAX_ATTEMPTS", "100")
        .spawn();
    pay(&app, &payment_event("ORD-1042"));
    graph.wait_for_requests(1, PATIENCE);

    // Act
    let status = app.terminate(Duration::from_secs(15));

    // Assert
    let status = status.expect("still running 15 s after SIGTERM");
    assert!(status.success(), "exit status {status} after SIGTERM");
    healthy.store(true, Ordering::SeqCst);
    app.restart();
    graph.wait_for_accepted("text", 1, Duration::from_secs(20));
    assert_eq!(graph.accepted_of_type("template").len(), 1);
}

/// issue 13: the files a new user reads first stand alone; they cite no
/// document the repository does not hold (they used to cite spec sections).
#[test]
fn rocket_toml_and_env_example_cite_no_missing_document() {
    for (name, text) in [
        ("Rocket.toml", include_str!("../../Rocket.toml")),
        (".env.example", include_str!("../../.env.example")),
    ] {
        for cited in ["SPEC", "§"] {
            let line = text.lines().find(|l| l.contains(cited));
            assert!(
                line.is_none(),
                "{name} cites {cited:?}: {}",
                line.unwrap_or_default()
            );
        }
    }
}

/// A server with nothing to send sleeps: its senders look at the outbox
/// when woken or when the next row falls due, not because another worker
/// finished a step. Each worker's step used to wake all the others, each of
/// which then claimed (a write) and woke the rest again: an idle server
/// took a whole core, the merchant's only one.
#[test]
fn an_idle_server_uses_almost_no_cpu_after_sending() {
    // Arrange: one order sent, so every worker has stepped and gone idle.
    let graph = FakeGraph::start();
    let app = TestApp::builder(&graph).env("SEND_WORKERS", "4").spawn();
    pay(&app, &payment_event("ORD-IDLE-1"));
    graph.wait_for_accepted("text", 1, PATIENCE);
    wait_until("both messages recorded as sent", PATIENCE, || {
        app.count("SELECT COUNT(*) FROM outbox WHERE status = 'sent'") == 2
    });
    let pid = app.pid().expect("running");

    // Act: the server's own CPU time (every thread, user and system) over
    // two seconds in which nothing arrives.
    let window = Duration::from_secs(2);
    let before = cpu_seconds(pid);
    std::thread::sleep(window);
    let used = cpu_seconds(pid) - before;

    // Assert: a worker wakes about twice a second to look for due rows;
    // the bug kept one core busy (2 s of CPU in this window).
    assert!(
        used < 0.25,
        "an idle server used {used:.2} s of CPU in {} s",
        window.as_secs()
    );
}

/// User and system CPU of a process, every thread, from `/proc`.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("process stat");
    // Fields after the command name, which ends at the last `)`.
    let fields: Vec<&str> = stat[stat.rfind(')').expect("stat format") + 2..]
        .split(' ')
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // USER_HZ is 100 on every Linux this runs on (x86_64, arm64).
    ticks as f64 / 100.0
}
