//! SPEC §6: GET /w/invite/{token} — redirect, click log, 404 and 410 pages.

use std::time::Duration;

use crate::support::*;

const ORDER: &str = "ORD-1042";
const BROWSER_UA: &str =
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36";

fn assert_html(resp: &Resp) {
    let content_type = resp.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("text/html"),
        "content-type {content_type:?}"
    );
}

#[test]
fn known_invite_token_redirects_to_the_wa_me_link_without_caching() {
    // Arrange
    let graph = FakeGraph::start();
    let app = TestApp::spawn(&graph);
    let processed = pay(&app, &payment_event(ORDER));

    // Act
    let resp = app.get_no_redirect(&format!("/w/invite/{}", processed.token));

    // Assert
    assert_eq!(resp.status, 302, "{}", resp.body);
    assert_eq!(
        resp.header("location"),
        Some(processed.whatsapp_link.as_str())
    );
    assert_eq!(
        resp.header("location"),
        Some(wa_me_link(ORDER, &processed.token).as_str())
    );
    assert_eq!(resp.header("cache-control"), Some("no-store"));
}

#[test]
fn invite_url_from_the_webhook_answer_is_the_redirecting_route() {
    let graph = FakeGraph::start();
    let app = TestApp::spawn(&graph);
    let processed = pay(&app, &payment_event(ORDER));
    let path = processed
        .invite_url
        .strip_prefix(&app.base_url())
        .expect("invite_url on APP_BASE_URL")
        .to_string();

    let resp = app.get_no_redirect(&path);

    assert_eq!(resp.status, 302);
    assert!(resp
        .header("location")
        .unwrap_or_default()
        .starts_with("https://wa.me/919999900000?text="));
}

#[test]
fn invite_clicks_are_logged_with_user_agent_and_preview_flag() {
    let graph = FakeGraph::start();
    let app = TestApp::spawn(&graph);
    let processed = pay(&app, &payment_event(ORDER));
    let path = format!("/w/invite/{}", processed.token);
    let agents = [
        ("WhatsApp/2.23.20.0", 1),
        ("facebookexternalhit/1.1", 1),
        (BROWSER_UA, 0),
    ];

    for (ua, _) in agents {
        let resp = app.get_no_redirect_with(&path, &[("User-Agent", ua)]);
        assert_eq!(resp.status, 302, "{ua}");
    }

    wait_until("three click rows", PATIENCE, || {
        app.count("SELECT COUNT(*) FROM invite_clicks") == 3
    });
    let db = app.db();
    for (ua, preview) in agents {
        let (order_id, is_preview, clicked_at): (String, i64, i64) = db
            .query_row(
                "SELECT order_id, is_preview, clicked_at FROM invite_clicks WHERE user_agent = $1",
                [ua],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap_or_else(|e| panic!("no click row for {ua}: {e}"));
        assert_eq!(order_id, ORDER);
        assert_eq!(is_preview, preview, "is_preview for {ua}");
        let now_ms = orderlink::clock::now_ms();
        assert!(
            (now_ms - clicked_at).abs() < 60_000,
            "clicked_at {clicked_at} is not Unix ms now"
        );
    }
    let token_id: String = db
        .query_row(
            "SELECT id FROM whatsapp_tokens WHERE token = $1",
            [&processed.token],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        app.count(&format!(
            "SELECT COUNT(*) FROM invite_clicks WHERE token_id = '{token_id}'"
        )),
        3
    );
}

/// A redirect does not wait for its click to be written, so the clicks of
/// the last moment before a clean shutdown are still queued for the writer
/// when the signal comes: every one must reach the database, each with the
/// time it was answered.
#[test]
fn clicks_answered_just_before_a_clean_shutdown_are_all_stored() {
    let graph = FakeGraph::start();
    let mut app = TestApp::spawn(&graph);
    let processed = pay(&app, &payment_event(ORDER));
    let path = format!("/w/invite/{}", processed.token);
    const CLICKS: usize = 40;
    for i in 0..CLICKS {
        let ua = format!("{BROWSER_UA} click-{i:02}");
        let resp = app.get_no_redirect_with(&path, &[("User-Agent", &ua)]);
        assert_eq!(resp.status, 302, "click {i}");
    }

    let status = app.terminate(Duration::from_secs(30));
    assert!(status.is_some_and(|s| s.success()), "exit: {status:?}");

    let db = app.db();
    let mut rows = db
        .prepare("SELECT user_agent, clicked_at FROM invite_clicks ORDER BY user_agent")
        .unwrap();
    let clicks: Vec<(String, i64)> = rows
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(clicks.len(), CLICKS, "clicks stored: {clicks:?}");
    for (i, pair) in clicks.windows(2).enumerate() {
        assert!(
            pair[0].1 <= pair[1].1,
            "click {} stored with an earlier time than click {i}",
            i + 1
        );
    }
}

#[test]
fn unknown_or_malformed_invite_tokens_are_404_html_and_log_no_click() {
    let graph = FakeGraph::start();
    let app = TestApp::spawn(&graph);
    pay(&app, &payment_event(ORDER));
    let unknown = uuid::Uuid::new_v4().to_string();

    for token in [
        unknown.as_str(),
        "not-a-uuid",
        "..%2Fetc",
        "%2E%2E%2Fetc%2Fpasswd",
        "1",
    ] {
        let resp = app.get_no_redirect(&format!("/w/invite/{token}"));
        assert_eq!(resp.status, 404, "{token}: {}", resp.body);
        assert_html(&resp);
        assert!(resp.header("location").is_none(), "{token}");
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM invite_clicks"), 0);
}

#[test]
fn expired_invite_token_is_410_html_with_a_plain_chat_link() {
    // Arrange: a token whose lifetime is over the moment it is made. (Not
    // by rewriting its row: a token never changes once made, and the
    // server keeps the ones it made in memory.)
    let graph = FakeGraph::start();
    let app = TestApp::builder(&graph).env("TOKEN_TTL_DAYS", "0").spawn();
    let processed = pay(&app, &payment_event(ORDER));
    let now = orderlink::clock::now_ms();
    let expires_at = app.count(&format!(
        "SELECT expires_at FROM whatsapp_tokens WHERE token = '{}'",
        processed.token
    ));
    assert!(expires_at <= now, "the token is not expired");

    // Act
    let resp = app.get_no_redirect(&format!("/w/invite/{}", processed.token));

    // Assert
    assert_eq!(resp.status, 410, "{}", resp.body);
    assert_html(&resp);
    assert!(resp.header("location").is_none());
    assert!(
        resp.body.contains("https://wa.me/919999900000"),
        "no plain chat link in: {}",
        resp.body
    );
    assert!(
        !resp.body.contains(&processed.token),
        "the expired page repeats the token"
    );
}

#[test]
fn every_one_of_many_concurrent_clicks_is_logged() {
    let graph = FakeGraph::start();
    let app = TestApp::spawn(&graph);
    let processed = pay(&app, &payment_event(ORDER));
    let path = format!("/w/invite/{}", processed.token);

    std::thread::scope(|s| {
        for i in 0..30 {
            let (app, path) = (&app, &path);
            s.spawn(move || {
                let ua = format!("{BROWSER_UA} n{i}");
                assert_eq!(
                    app.get_no_redirect_with(path, &[("User-Agent", &ua)])
                        .status,
                    302
                );
            });
        }
    });

    wait_until("30 click rows", PATIENCE, || {
        app.count("SELECT COUNT(*) FROM invite_clicks") == 30
    });
    assert_eq!(
        app.count("SELECT COUNT(DISTINCT user_agent) FROM invite_clicks WHERE is_preview = FALSE"),
        30
    );
}

/// A request written by hand, so that it can leave out the `User-Agent`
/// every HTTP client adds: the status line and the headers of the answer.
fn raw_request(app: &TestApp, method: &str, path: &str, user_agent: Option<&str>) -> Resp {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", app.port)).expect("connect");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let ua = user_agent
        .map(|ua| format!("User-Agent: {ua}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{ua}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("answer");
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Resp {
        status,
        headers,
        body: body.to_string(),
    }
}

/// SPEC §6: HEAD and a request without a User-Agent get the same answer as a
/// GET, and are recorded as clicks that are not a person's.
#[test]
fn head_and_requests_without_user_agent_are_answered_but_never_a_person() {
    // Arrange
    let graph = FakeGraph::start();
    let app = TestApp::builder(&graph)
        .env("ADMIN_TOKEN", "admin-token-for-clicks-0001")
        .spawn();
    let processed = pay(&app, &payment_event(ORDER));
    let path = format!("/w/invite/{}", processed.token);
    let link = wa_me_link(ORDER, &processed.token);

    // Act
    let head = raw_request(&app, "HEAD", &path, Some(BROWSER_UA));
    let no_agent = raw_request(&app, "GET", &path, None);
    let head_no_agent = raw_request(&app, "HEAD", &path, None);

    // Assert: answered as a GET is.
    for (what, resp) in [
        ("HEAD", &head),
        ("GET without User-Agent", &no_agent),
        ("HEAD without User-Agent", &head_no_agent),
    ] {
        assert_eq!(resp.status, 302, "{what}: {resp:?}");
        assert_eq!(resp.header("location"), Some(link.as_str()), "{what}");
        assert_eq!(resp.header("cache-control"), Some("no-store"), "{what}");
    }
    // Recorded, none as a person.
    wait_until("three click rows", PATIENCE, || {
        app.count("SELECT COUNT(*) FROM invite_clicks") == 3
    });
    assert_eq!(
        app.count("SELECT COUNT(*) FROM invite_clicks WHERE is_preview = FALSE"),
        0,
        "a HEAD or a request without User-Agent counted as a person"
    );
    let view = crate::support::app::into_resp(
        ureq::get(&app.url(&format!("/admin/orders/{ORDER}")))
            .set("Authorization", "Bearer admin-token-for-clicks-0001")
            .call(),
    )
    .json();
    assert_eq!(view["funnel"]["link_opened"], false, "{view}");
    assert_eq!(view["invite_clicks"]["human"], 0, "{view}");
    assert_eq!(
        view["invite_clicks"]["last_human_click_at"],
        serde_json::Value::Null
    );

    // A person's GET afterwards still counts.
    let person = app.get_no_redirect_with(&path, &[("User-Agent", BROWSER_UA)]);
    assert_eq!(person.status, 302);
    wait_until("the person's click", PATIENCE, || {
        app.count("SELECT COUNT(*) FROM invite_clicks WHERE is_preview = FALSE") == 1
    });
}
