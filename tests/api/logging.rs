//! SPEC §8: no whole token, phone number or secret in the logs.

use crate::support::*;

#[test]
fn logs_hold_no_whole_token_phone_number_or_secret_after_the_whole_flow() {
    // Arrange
    let graph = FakeGraph::start();
    let app = TestApp::spawn(&graph);

    // Act: pay, deliver, click the invite, and a skipped phone.
    let processed = pay(&app, &payment_event("ORD-1042"));
    graph.wait_for_accepted("text", 1, PATIENCE);
    let resp = app.get_no_redirect(&format!("/w/invite/{}", processed.token));
    assert_eq!(resp.status, 302);
    wait_until("the click row", PATIENCE, || {
        app.count("SELECT COUNT(*) FROM invite_clicks") == 1
    });
    let unknown = uuid::Uuid::new_v4().to_string();
    assert_eq!(
        app.get_no_redirect(&format!("/w/invite/{unknown}")).status,
        404
    );
    let bad_signature = app.post_webhook_with_headers(
        &payment_event("ORD-1044").to_string(),
        &[
            ("webhook-id", "msg_bad"),
            ("webhook-timestamp", "1"),
            (
                "webhook-signature",
                "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
            ),
        ],
    );
    assert_eq!(bad_signature.status, 401);
    let skipped = payment_event_with(
        "ORD-1043",
        serde_json::json!({"customer_phone": "09876543210"}),
    );
    assert_eq!(app.post_webhook(&skipped.to_string()).status, 200);

    // Assert
    let logs = app.logs();
    assert!(!logs.is_empty(), "the app logged nothing at RUST_LOG=info");
    for secret in [
        processed.token.as_str(),
        unknown.as_str(),
        processed.token.replace('-', "").as_str(),
        "919876543210",
        "9876543210",
        "+91 98765 43210",
        "09876543210",
        "test-graph-token",
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "test-meta-app-secret-5f2c",
    ] {
        let line = logs.lines().find(|l| l.contains(secret));
        assert!(
            line.is_none(),
            "the log leaks {secret:?}: {}",
            line.unwrap_or_default()
        );
    }
}

/// issue 8 §3: the two requests found logging a whole token and a whole
/// number, on the real binary's log.
#[test]
fn request_log_masks_a_token_without_hyphens_and_a_percent_encoded_number() {
    // Arrange
    let graph = FakeGraph::start();
    let app = TestApp::spawn(&graph);
    let processed = pay(&app, &payment_event("ORD-1042"));
    let simple = processed.token.replace('-', "");
    let upper = processed.token.to_uppercase();

    // Act
    for path in [
        format!("/w/invite/{simple}"),
        format!("/w/invite/{}", simple.to_uppercase()),
        format!("/w/invite/{upper}?utm=x"),
        format!("/w/invite/x{simple}x"),
        "/admin/contacts/%2B919811100001".to_string(),
        "/admin/contacts/IN.1648738043044942".to_string(),
        "/admin/contacts/abc919811100002xyz".to_string(),
    ] {
        let status = app.get_no_redirect(&path).status;
        assert!(status >= 300, "{path}: {status}");
    }

    // Assert: each request was logged, and none whole.
    wait_until("the request lines", PATIENCE, || {
        app.logs()
            .lines()
            .filter(|l| l.contains("orderlink::http") && l.contains("/admin/contacts/"))
            .count()
            == 3
    });
    let logs = app.logs();
    assert!(
        logs.lines()
            .any(|l| l.contains("/admin/contacts/%2B***0001") && l.contains("404")),
        "no masked request line for the number:\n{logs}"
    );
    assert!(
        logs.lines()
            .any(|l| l.contains("/admin/contacts/IN.***4942")),
        "no masked request line for the BSUID:\n{logs}"
    );
    let lowered = logs.to_lowercase();
    for whole in [
        simple.as_str(),
        &processed.token[9..],
        "919811100001",
        "919811100002",
        "1648738043044942",
    ] {
        let line = lowered.lines().find(|l| l.contains(whole));
        assert!(
            line.is_none(),
            "the log leaks {whole:?}: {}",
            line.unwrap_or_default()
        );
    }
}

/// issue 13: Rocket's start and every 404 are not warnings; the start is one
/// INFO line naming where it listens. With RUST_LOG unset, as a new user runs it.
#[test]
fn the_start_and_404s_are_not_warnings() {
    // Arrange
    let graph = FakeGraph::start();
    let app = TestApp::builder(&graph).without("RUST_LOG").spawn();

    // Act: the 404s a new user and the internet produce.
    let paths = [
        "/nope".to_string(),
        format!("/w/invite/{}", uuid::Uuid::new_v4()),
        "/admin/orders/ORD-1".to_string(),
    ];
    for path in &paths {
        assert_eq!(app.get_no_redirect(path).status, 404, "{path}");
    }
    let head = ureq::head(&app.url("/nope")).call();
    assert!(matches!(head, Err(ureq::Error::Status(404, _))), "{head:?}");

    // Assert
    wait_until("the request lines", PATIENCE, || {
        app.logs()
            .lines()
            .filter(|l| l.contains("orderlink::http"))
            .count()
            >= 4
    });
    let logs = app.logs();
    let alarming: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .filter(|l| {
            [
                "launched",
                "404",
                "No matching routes",
                "Request guard",
                "catcher",
            ]
            .iter()
            .any(|w| l.contains(w))
        })
        .collect();
    assert!(
        alarming.is_empty(),
        "warnings for nothing wrong: {alarming:#?}"
    );
    let listening = format!("listening on http://127.0.0.1:{}", app.port);
    assert!(
        logs.lines()
            .any(|l| l.contains(" INFO ") && l.contains(&listening)),
        "no INFO line saying {listening:?}:\n{logs}"
    );
}

/// SPEC §8, issue 18 §7: at RUST_LOG=debug Rocket dumped whole session ids
/// (`cookie`, `set-cookie`), a wrong bearer one character off the admin
/// token, and a wrong `hub.verify_token`. Through sign-in (wrong and right),
/// a page read with the session cookie, sign-out, a wrong bearer and the
/// webhook verification (wrong and right), no credential's value, right or
/// wrong, is in any line, Rocket's own dumps included.
#[test]
fn credentials_are_masked_in_every_line_at_debug_level() {
    use crate::admin_page_seed::PageClient;
    const ADMIN: &str = "adminTOKEN_s3cr3t_value";
    const WRONG_BEARER: &str = "adminTOKEN_s3cr3t_valuX";
    const VERIFY: &str = "verifyTOKEN_7c1e_right";
    const WRONG_VERIFY: &str = "verifyTOKEN_7c1e_wronG";
    const WRONG_SIGN_IN: &str = "guessTOKEN_0b9d_wrong";

    // Arrange
    let graph = FakeGraph::start();
    let app = TestApp::builder(&graph)
        .env("RUST_LOG", "debug")
        .env("ADMIN_TOKEN", ADMIN)
        .env("WHATSAPP_VERIFY_TOKEN", VERIFY)
        .spawn();

    // Act
    let mut browser = PageClient::new(&app);
    assert_eq!(browser.sign_in(WRONG_SIGN_IN).status, 401);
    assert_eq!(browser.sign_in(ADMIN).status, 303);
    let cookie = browser.cookie.clone().expect("a session cookie");
    let session_id = cookie.split_once('=').expect("name=value").1.to_owned();
    assert_eq!(browser.get("/admin").status, 200);
    let csrf = browser.csrf("/admin");
    assert_eq!(
        browser
            .post_form("/admin/sign-out", &[("csrf", &csrf)])
            .status,
        303
    );
    // The ended session's cookie, sent again.
    assert_eq!(browser.get("/admin").status, 303);
    let wrong = app.get_no_redirect_with(
        "/admin/orders/ORD-1",
        &[("Authorization", &format!("Bearer {WRONG_BEARER}"))],
    );
    assert_eq!(wrong.status, 401);
    let right = app.get_no_redirect_with(
        "/admin/orders/ORD-1",
        &[("Authorization", &format!("Bearer {ADMIN}"))],
    );
    assert_eq!(right.status, 404);
    let verify = |token: &str| {
        app.get_no_redirect(&format!(
            "/webhooks/whatsapp?hub.mode=subscribe&hub.verify_token={token}&hub.challenge=1158201444"
        ))
        .status
    };
    assert_eq!(verify(WRONG_VERIFY), 403);
    assert_eq!(verify(VERIFY), 200);

    // Assert: the debug dumps were written, and hold no credential.
    wait_until("the last request's line", PATIENCE, || {
        app.logs()
            .lines()
            .filter(|l| l.contains("orderlink::http") && l.contains("/webhooks/whatsapp"))
            .count()
            == 2
    });
    let logs = app.logs();
    assert!(
        logs.to_lowercase().contains("cookie") && logs.to_lowercase().contains("authorization"),
        "RUST_LOG=debug wrote no header dump, so this test would prove nothing:\n{logs}"
    );
    let session_hash = orderlink::routes::admin_page_session::sha256_hex(&session_id);
    for value in [
        ADMIN,
        WRONG_BEARER,
        VERIFY,
        WRONG_VERIFY,
        WRONG_SIGN_IN,
        session_id.as_str(),
        &session_id[..16],
        session_hash.as_str(),
    ] {
        let line = logs.lines().find(|l| l.contains(value));
        assert!(
            line.is_none(),
            "the log leaks {value:?}: {}",
            line.unwrap_or_default()
        );
    }
}
