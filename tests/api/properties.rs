//! Property tests through the running binary: any valid order id yields the
//! exact wa.me link, any invalid one is refused; any note is cleaned for Meta.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::json;

use crate::support::*;

const ORDER_ID_CHARS: &str = "[A-Za-z0-9_.:/-]";

#[test]
fn any_valid_order_id_yields_the_exact_encoded_wa_me_link() {
    let graph = FakeGraph::start();
    let app = TestApp::spawn(&graph);
    let mut runner = TestRunner::new(Config {
        cases: 32,
        // Fixed seed: reproducible in CI.
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x0_0D3E_71AC),
        ..Config::default()
    });
    let ids = format!("{ORDER_ID_CHARS}{{1,64}}");

    runner
        .run(&ids.as_str(), |order_id| {
            let resp = app.post_webhook(&payment_event(&order_id).to_string());
            prop_assert_eq!(resp.status, 200, "{}: {}", order_id, resp.body);
            let json = resp.json();
            if json["status"] == "processed" {
                let token = token_of(json["invite_url"].as_str().unwrap());
                let expected = wa_me_link(&order_id, &token);
                prop_assert_eq!(json["whatsapp_link"].as_str(), Some(expected.as_str()));
            } else {
                // The generator may repeat an id: then it is already confirmed.
                prop_assert_eq!(
                    json["status"].as_str(),
                    Some("already_confirmed"),
                    "{}",
                    json
                );
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn any_order_id_with_a_character_outside_the_alphabet_is_refused() {
    let graph = FakeGraph::start();
    let app = TestApp::spawn(&graph);
    let mut runner = TestRunner::new(Config {
        cases: 32,
        // Fixed seed: reproducible in CI.
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x0_0D3E_71AC),
        ..Config::default()
    });
    let bad = (
        "[A-Za-z0-9]{0,20}",
        prop::sample::select(vec![
            ' ', '#', '?', '%', '&', '+', '\'', '"', '\\', '<', 'é', '’', '\n', '\u{0}',
        ]),
        "[A-Za-z0-9]{0,20}",
    )
        .prop_map(|(a, c, b)| format!("{a}{c}{b}"));

    runner
        .run(&bad, |order_id| {
            let resp = app.post_webhook(&payment_event(&order_id).to_string());
            prop_assert!(
                resp.status == 400 || resp.status == 422,
                "{:?}: {} {}",
                order_id,
                resp.status,
                resp.body
            );
            Ok(())
        })
        .unwrap();
    assert_nothing_written(&app);
}

#[test]
fn any_note_reaches_meta_without_newlines_tabs_or_runs_of_spaces() {
    let graph = FakeGraph::start();
    let app = TestApp::spawn(&graph);
    let mut runner = TestRunner::new(Config {
        cases: 24,
        // Fixed seed: reproducible in CI.
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x0_0D3E_71AC),
        ..Config::default()
    });
    let n = std::sync::atomic::AtomicUsize::new(0);

    runner
        .run(&"[a-zA-Z0-9 \t\r\n!,.]{0,80}", |note| {
            let n = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let order_id = format!("ORD-NOTE-{n}");
            pay(
                &app,
                &payment_event_with(&order_id, json!({ "note": note })),
            );
            let all = graph.wait_for(&format!("template for {order_id}"), PATIENCE, |all| {
                all.iter().any(|r| {
                    r.order_id() == Some(order_id.as_str()) && r.message_type() == Some("template")
                })
            });
            let template = all
                .iter()
                .find(|r| {
                    r.order_id() == Some(order_id.as_str()) && r.message_type() == Some("template")
                })
                .unwrap();
            let sent = template
                .body
                .pointer("/template/components/0/parameters/2/text")
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string();
            let words: Vec<&str> = note.split_whitespace().collect();
            let expected = if words.is_empty() {
                "Thank you for shopping with us!".to_string()
            } else {
                words.join(" ")
            };
            prop_assert_eq!(sent, expected, "note {:?}", note);
            Ok(())
        })
        .unwrap();
}

/// The confirmation's note parameter exactly as Meta received it.
fn note_sent_to_meta(graph: &FakeGraph, order_id: &str) -> String {
    let is_it = |r: &RecordedRequest| {
        r.order_id() == Some(order_id) && r.message_type() == Some("template")
    };
    let all = graph.wait_for(&format!("template for {order_id}"), PATIENCE, |all| {
        all.iter().any(is_it)
    });
    let template = all.iter().find(|r| is_it(r)).unwrap();
    template
        .body
        .pointer("/template/components/0/parameters/2/text")
        .and_then(|v| v.as_str())
        .unwrap_or_else(|| panic!("no note parameter in {}", template.body))
        .to_string()
}

/// SPEC §5, issue 8 §3: control characters never reach Meta, and a note
/// nobody could see is replaced by CONFIRMATION_NOTE.
#[test]
fn control_characters_are_removed_and_an_invisible_note_gives_the_default() {
    // Arrange
    let graph = FakeGraph::start();
    let app = TestApp::builder(&graph)
        .env("CONFIRMATION_NOTE", "Thanks from the corner shop")
        .spawn();
    let cases = [
        ("Arrives\u{0} by\u{7} Friday\u{1b}", "Arrives by Friday"),
        ("\u{1b}[31mRed\u{1b}[0m", "[31mRed[0m"),
        ("\u{200B}", "Thanks from the corner shop"),
        (
            " \u{200B}\u{200C}\u{200D} \u{2060}\u{FEFF} ",
            "Thanks from the corner shop",
        ),
        ("\u{0}\u{7}\u{1b}", "Thanks from the corner shop"),
    ];

    for (n, (note, expected)) in cases.iter().enumerate() {
        // Act
        let order_id = format!("ORD-NOTE-CC-{n}");
        pay(
            &app,
            &payment_event_with(&order_id, json!({ "note": note })),
        );

        // Assert
        let sent = note_sent_to_meta(&graph, &order_id);
        assert_eq!(&sent, expected, "note {note:?}");
        assert!(!sent.chars().any(char::is_control), "{sent:?}");
    }
}

/// SPEC §4, issue 8 §3: a body that repeats a key, at any depth, is 422 with
/// the JSON error body, writes nothing and leaves its key usable.
#[test]
fn a_repeated_key_at_any_depth_is_422_writes_nothing_and_leaves_the_key_usable() {
    // Arrange
    let graph = FakeGraph::start();
    let app = TestApp::spawn(&graph);
    let good = payment_event("ORD-DUP").to_string();
    let bodies = [
        // Inside `data` (the last value used to win).
        good.replace("\"amount\":49900", "\"amount\":1,\"amount\":49900"),
        good.replace(
            "\"customer_phone\":\"+91 98765 43210\"",
            "\"customer_phone\":\"+91 98765 43210\",\"customer_phone\":\"+44 7700 900123\"",
        ),
        // Deeper, in an object orderlink does not even read.
        good.replace(
            "\"user_id\":\"user_77\"",
            "\"user_id\":\"user_77\",\"meta\":{\"tags\":[{\"k\":1,\"k\":2}]}",
        ),
        // At the top level, a field orderlink ignores.
        good.replace(
            "\"created_at\":\"2026-11-26T10:00:00Z\"",
            "\"created_at\":\"2026-11-26T10:00:00Z\",\"created_at\":\"x\"",
        ),
    ];

    for (n, body) in bodies.iter().enumerate() {
        assert_ne!(body, &good, "case {n} changed nothing");
        // Act
        let resp = app.post_webhook_with_id("msg_dup_fixed_later", body);

        // Assert
        assert_eq!(resp.status, 422, "case {n}: {}", resp.body);
        resp.error_code();
        assert_nothing_written(&app);
    }
    app.assert_sends_settled(&graph, 0);
    let retry = app.post_webhook_with_id("msg_dup_fixed_later", &good);
    assert_eq!(retry.status, 200, "{}", retry.body);
    assert_eq!(retry.json()["status"], "processed", "{}", retry.body);
}
