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
