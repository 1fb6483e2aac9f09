//! SPEC §12 in a real browser: Debian's chromium, driven over WebDriver
//! (chromedriver) by fantoccini, against the real binary with seeded data.
//! Each test saves screenshots at 390×844 (a phone) and 1280×800 under
//! `target/browser-screenshots/<test>/`.
//!
//! Without chromedriver the tests skip, loudly; with `CI=true` a missing
//! browser fails them instead. `ORDERLINK_CHROMEDRIVER` and `ORDERLINK_CHROME`
//! name the binaries (default: `chromedriver` on the PATH or
//! /usr/bin/chromedriver, and /usr/bin/chromium).

#[path = "api/support/mod.rs"]
#[allow(unused_imports)]
mod support;

#[path = "api/admin_page_seed.rs"]
mod admin_page_seed;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use admin_page_seed::*;
use support::meta::*;
use support::ports::free_port;
use support::*;

/// One browser at a time: two cores, and chromium is heavy.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn find_binary(var: &str, names: &[&str]) -> Option<PathBuf> {
    if let Ok(path) = std::env::var(var) {
        let path = PathBuf::from(path);
        return path.is_file().then_some(path);
    }
    let path_dirs = std::env::var("PATH").unwrap_or_default();
    for name in names {
        let name = Path::new(name);
        if name.is_absolute() {
            if name.is_file() {
                return Some(name.to_path_buf());
            }
            continue;
        }
        for dir in path_dirs.split(':') {
            let candidate = Path::new(dir).join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

/// A headless chromium session through its own chromedriver, driven
/// synchronously so the blocking test harness can be used beside it.
struct Browser {
    rt: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Child,
    _profile: tempfile::TempDir,
    shots: PathBuf,
    base: String,
}

impl Browser {
    /// `None` (after saying so) when no chromedriver is installed here;
    /// panics instead under CI.
    fn start(test: &str, app: &TestApp) -> Option<Browser> {
        let driver = find_binary(
            "ORDERLINK_CHROMEDRIVER",
            &["chromedriver", "/usr/bin/chromedriver"],
        );
        let chrome = find_binary("ORDERLINK_CHROME", &["/usr/bin/chromium", "chromium"]);
        let (Some(driver), Some(chrome)) = (driver, chrome) else {
            let why = "chromedriver or chromium not found (apt-get install chromium chromium-driver, or set ORDERLINK_CHROMEDRIVER and ORDERLINK_CHROME)";
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{test}: CI=true and {why}");
            }
            // Straight to stderr: the test harness captures eprintln! of a
            // passing test, and a skip must be seen.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "\n!!!!!!!! SKIPPED browser test {test}: {why} !!!!!!!!\n"
            );
            return None;
        };
        let port = free_port();
        let driver = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let profile = tempfile::tempdir().expect("a profile folder");
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chrome,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                    "--force-device-scale-factor=1",
                    format!("--user-data-dir={}", profile.path().display()),
                    "--window-size=1280,800"
                ]
            }
        });
        let caps = caps.as_object().cloned().expect("an object");
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            let connected = rt.block_on(
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                    .capabilities(caps.clone())
                    .connect(&url),
            );
            match connected {
                Ok(c) => break c,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("{test}: no WebDriver session on {url}: {e}"),
            }
        };
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
        let shots = target.join("browser-screenshots").join(test);
        let _ = std::fs::remove_dir_all(&shots);
        std::fs::create_dir_all(&shots).expect("screenshot folder");
        Some(Browser {
            rt,
            client: Some(client),
            driver,
            _profile: profile,
            shots,
            base: app.base_url(),
        })
    }

    fn c(&self) -> &Client {
        self.client.as_ref().expect("an open session")
    }

    fn goto(&self, path: &str) {
        self.rt
            .block_on(self.c().goto(&format!("{}{path}", self.base)))
            .unwrap_or_else(|e| panic!("goto {path}: {e}"));
    }

    fn path(&self) -> String {
        let url = self
            .rt
            .block_on(self.c().current_url())
            .expect("current url");
        let mut path = url.path().to_string();
        if let Some(q) = url.query() {
            path.push('?');
            path.push_str(q);
        }
        path
    }

    fn source(&self) -> String {
        self.rt.block_on(self.c().source()).expect("page source")
    }

    fn text(&self, css: &str) -> String {
        self.rt
            .block_on(async { self.c().find(Locator::Css(css)).await?.text().await })
            .unwrap_or_else(|e| panic!("text of {css}: {e}\n{}", self.source()))
    }

    fn texts(&self, css: &str) -> Vec<String> {
        self.rt
            .block_on(async {
                let mut out = Vec::new();
                for e in self.c().find_all(Locator::Css(css)).await? {
                    out.push(e.text().await?);
                }
                Ok::<_, fantoccini::error::CmdError>(out)
            })
            .unwrap_or_else(|e| panic!("texts of {css}: {e}"))
    }

    fn attrs(&self, css: &str, attr: &str) -> Vec<String> {
        self.rt
            .block_on(async {
                let mut out = Vec::new();
                for e in self.c().find_all(Locator::Css(css)).await? {
                    out.push(e.attr(attr).await?.unwrap_or_default());
                }
                Ok::<_, fantoccini::error::CmdError>(out)
            })
            .unwrap_or_else(|e| panic!("{attr} of {css}: {e}"))
    }

    fn type_into(&self, css: &str, text: &str) {
        self.rt
            .block_on(async {
                let field = self.c().find(Locator::Css(css)).await?;
                field.clear().await?;
                field.send_keys(text).await
            })
            .unwrap_or_else(|e| panic!("type into {css}: {e}"));
    }

    /// Clicks and waits for the page it leads to.
    fn click(&self, css: &str) {
        self.rt
            .block_on(async {
                let old = self.c().find(Locator::Css("html")).await?;
                self.c().find(Locator::Css(css)).await?.click().await?;
                // The old document goes stale once the new one is loaded.
                let deadline = Instant::now() + Duration::from_secs(15);
                while old.tag_name().await.is_ok() && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                self.c().wait().for_element(Locator::Css("body")).await?;
                Ok::<_, fantoccini::error::CmdError>(())
            })
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    /// Runs `js` (a function body that returns a value) and gives its value.
    fn eval(&self, js: &str) -> serde_json::Value {
        self.rt
            .block_on(self.c().execute(js, vec![]))
            .unwrap_or_else(|e| panic!("script {js}: {e}"))
    }

    /// Sizes the window so the page itself gets `w` × `h` CSS pixels.
    fn viewport(&self, w: u32, h: u32) {
        self.rt
            .block_on(async {
                self.c().set_window_size(w, h).await?;
                let inner = self
                    .c()
                    .execute("return [window.innerWidth, window.innerHeight]", vec![])
                    .await?;
                let (iw, ih) = (
                    inner[0].as_u64().unwrap_or(w as u64) as u32,
                    inner[1].as_u64().unwrap_or(h as u64) as u32,
                );
                self.c()
                    .set_window_size(2 * w - iw.min(w), 2 * h - ih.min(h))
                    .await
            })
            .unwrap_or_else(|e| panic!("window size {w}x{h}: {e}"));
        let inner = self.eval("return [window.innerWidth, window.innerHeight]");
        assert_eq!(inner, json!([w, h]), "the page's viewport");
    }

    /// The document's scroll width and the window's width: equal when
    /// nothing on the page is wider than the screen.
    fn widths(&self) -> (u64, u64) {
        let v = self.eval("return [document.documentElement.scrollWidth, window.innerWidth]");
        (v[0].as_u64().unwrap(), v[1].as_u64().unwrap())
    }

    /// The bottom edge of the element `css`, in CSS pixels from the top of
    /// the page as first shown.
    fn bottom(&self, css: &str) -> f64 {
        self.eval(&format!(
            "window.scrollTo(0, 0); return document.querySelector({css:?}).getBoundingClientRect().bottom"
        ))
        .as_f64()
        .unwrap_or_else(|| panic!("no {css}"))
    }

    fn script(&self, js: &str) {
        self.rt
            .block_on(self.c().execute(js, vec![]))
            .unwrap_or_else(|e| panic!("script {js}: {e}"));
    }

    /// Saves the page as `name-390x844.png` and `name-1280x800.png`.
    fn screenshot(&self, name: &str) -> Vec<PathBuf> {
        let mut saved = Vec::new();
        for (w, h) in [(390, 844), (1280, 800)] {
            let png = self
                .rt
                .block_on(async {
                    // The window includes what headless chromium counts as
                    // its frame: size it so the page itself gets w × h.
                    self.c().set_window_size(w, h).await?;
                    let inner = self
                        .c()
                        .execute("return [window.innerWidth, window.innerHeight]", vec![])
                        .await?;
                    let (iw, ih) = (
                        inner[0].as_u64().unwrap_or(w as u64) as u32,
                        inner[1].as_u64().unwrap_or(h as u64) as u32,
                    );
                    self.c()
                        .set_window_size(2 * w - iw.min(w), 2 * h - ih.min(h))
                        .await?;
                    self.c().screenshot().await
                })
                .unwrap_or_else(|e| panic!("screenshot {name}: {e}"));
            assert!(png.starts_with(b"\x89PNG"), "not a PNG");
            let size = (
                u32::from_be_bytes(png[16..20].try_into().unwrap()),
                u32::from_be_bytes(png[20..24].try_into().unwrap()),
            );
            assert_eq!(size, (w, h), "{name}: the screenshot's size");
            let path = self.shots.join(format!("{name}-{w}x{h}.png"));
            std::fs::write(&path, png).expect("write screenshot");
            eprintln!("screenshot: {}", path.display());
            saved.push(path);
        }
        saved
    }

    fn sign_in(&self, token: &str) {
        self.goto("/admin");
        assert_eq!(self.path(), "/admin/sign-in");
        self.type_into("input[name=token]", token);
        self.click("form[action='/admin/sign-in'] button");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let _ = self.rt.block_on(client.close());
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn page_app(graph: &FakeGraph) -> TestApp {
    TestApp::builder(graph)
        .env("ADMIN_TOKEN", ADMIN_TOKEN)
        .env("ELDER_REPLY_TEXT", REPLY_TEXT)
        .spawn()
}

#[test]
fn a_wrong_token_is_refused_and_the_right_one_signs_in() {
    let _one = one_at_a_time();
    let graph = FakeGraph::start();
    let app = page_app(&graph);
    let Some(b) = Browser::start("sign_in", &app) else {
        return;
    };

    b.sign_in("not-the-token");
    assert_eq!(b.path(), "/admin/sign-in");
    assert!(b.text("[role=alert]").contains("not the admin token"));
    b.screenshot("refused");

    b.type_into("input[name=token]", ADMIN_TOKEN);
    b.click("form[action='/admin/sign-in'] button");
    assert_eq!(b.path(), "/admin");
    assert_eq!(b.text("h1"), "Overview");
}

#[test]
fn the_overview_shows_the_seeded_funnel() {
    let _one = one_at_a_time();
    let graph = FakeGraph::start();
    let app = page_app(&graph);
    seed_funnel(&app);
    let Some(b) = Browser::start("overview", &app) else {
        return;
    };

    b.sign_in(ADMIN_TOKEN);

    assert_eq!(b.path(), "/admin");
    for (period, window, numbers, paid) in [
        ("today", "Today", TODAY, UTILITY[0]),
        ("7d", "7 days", WEEK, UTILITY[1]),
        ("30d", "30 days", MONTH, UTILITY[2]),
    ] {
        b.goto(&format!("/admin?period={period}"));
        assert_eq!(
            b.attrs(".funnel", "data-window"),
            vec![window],
            "one funnel"
        );
        for (step, n) in numbers.iter().enumerate() {
            let cell = b.text(&format!("[data-cell='{window}:{step}']"));
            assert_eq!(cell, n.to_string(), "{window} step {step}");
        }
        assert_eq!(
            b.text(&format!("[data-cell='cost:utility:{window}']")),
            paid.to_string()
        );
    }
    // The switch leads from one period to another.
    b.click("nav.period a[href='/admin?period=7d']");
    assert_eq!(b.path(), "/admin?period=7d");
    assert_eq!(b.text("nav.period a.on"), "7 days");
    b.goto("/admin");
    assert_eq!(b.text("#sending"), "running");
    // At a glance on a phone: the funnel, the queue and what messages cost
    // all end within the first screen.
    b.viewport(390, 844);
    for part in ["#funnel", "#queue", "#cost"] {
        let bottom = b.bottom(part);
        assert!(
            bottom <= 844.0,
            "{part} ends at {bottom} px, below the first screen"
        );
    }
    b.screenshot("overview");
}

#[test]
fn search_finds_an_order_by_id_and_by_the_last_four_digits_of_its_phone() {
    let _one = one_at_a_time();
    let graph = FakeGraph::start();
    let app = page_app(&graph);
    seed_funnel(&app);
    let Some(b) = Browser::start("search", &app) else {
        return;
    };
    b.sign_in(ADMIN_TOKEN);

    b.goto("/admin/ui/orders");
    assert_eq!(b.attrs("#orders a.row", "data-order").len(), 12);
    b.screenshot("orders");

    b.type_into("input[name=q]", "SEED-009");
    b.click("form.search button");
    assert_eq!(b.attrs("#orders a.row", "data-order"), vec!["SEED-009"]);

    b.type_into("input[name=q]", "5004");
    b.click("form.search button");
    assert_eq!(b.attrs("#orders a.row", "data-order"), vec!["SEED-004"]);
    assert_eq!(b.text("#orders .stage"), "Link delivered · not opened yet");
    b.screenshot("search-by-phone");
}

#[test]
fn the_order_timeline_lists_its_messages_clicks_and_elder() {
    let _one = one_at_a_time();
    let graph = FakeGraph::start();
    let app = page_app(&graph);
    let order = "ORD-1042";
    let processed = pay_and_send(&app, order);
    let invite = format!("/w/invite/{}", processed.token);
    for ua in [
        "Mozilla/5.0 (Linux; Android 14) AppleWebKit/537.36 Chrome/126.0 Mobile Safari/537.36",
        "WhatsApp/2.24.12.78 A",
    ] {
        assert_eq!(
            app.get_no_redirect_with(&invite, &[("User-Agent", ua)])
                .status,
            302
        );
    }
    wait_until("two clicks", PATIENCE, || {
        app.count("SELECT COUNT(*) FROM invite_clicks") == 2
    });
    let confirmation = app
        .outbox_row(order, "confirmation")
        .graph_message_id
        .unwrap();
    let link = app.outbox_row(order, "link").graph_message_id.unwrap();
    app.deliver(&statuses_payload(vec![
        status(&confirmation, "delivered", "919876543210"),
        status(&link, "read", "919876543210"),
    ]));
    app.deliver(&text_payload(
        ELDER_A,
        "Asha Devi",
        &fresh_wamid(),
        &prefilled_text(&processed.whatsapp_link),
    ));
    app.deliver(&text_payload(
        ELDER_A,
        "Asha Devi",
        &fresh_wamid(),
        "When will the saree arrive? <b>Thank you</b>",
    ));
    wait_for_replies(&graph, ELDER_A, 1);
    let Some(b) = Browser::start("order_timeline", &app) else {
        return;
    };
    b.sign_in(ADMIN_TOKEN);

    b.goto("/admin/ui/orders?q=ORD-1042");
    b.click("#orders a.row");

    assert_eq!(b.path(), "/admin/ui/orders/ORD-1042");
    let events = b.texts("#timeline li .t");
    for expected in [
        "Payment webhook received: payment_succeeded",
        "Confirmation queued",
        "Confirmation accepted by WhatsApp",
        "Confirmation delivered",
        "Link message accepted by WhatsApp",
        "Link message delivered and read",
        "Link opened by a person",
        "Link preview fetched (not a person)",
        "Elder linked: Asha Devi",
        "Asha Devi wrote",
        "Reply to the elder accepted by WhatsApp",
    ] {
        assert!(
            events.iter().any(|e| e == expected),
            "no {expected:?} in {events:?}"
        );
    }
    let said = b.texts("#timeline li.elder .quote");
    assert!(
        said.iter()
            .any(|t| t == "When will the saree arrive? <b>Thank you</b>"),
        "{said:?}"
    );
    assert!(
        !b.source().to_lowercase().contains(&processed.token),
        "whole token shown"
    );
    assert_eq!(b.text("#clicks"), "1 by people, 1 previews");
    assert_eq!(b.text(".stage"), "Done: elder linked");
    // The statuses' pricing has no type and says billable: paid (SPEC §9).
    assert_eq!(b.text("#confirmation"), "delivered · paid message");
    assert_eq!(b.text("#link"), "delivered, read · paid message");
    assert!(
        events.iter().any(|e| e == "Confirmation: paid message"),
        "{events:?}"
    );
    b.screenshot("order-timeline");
}

#[test]
fn a_dead_letter_is_sent_again_from_its_button_and_reaches_whatsapp_once() {
    let _one = one_at_a_time();
    let graph = FakeGraph::start();
    let app = page_app(&graph);
    graph.script([Reply::meta_error(400, 100)]);
    pay(&app, &payment_event("ORD-2001"));
    app.wait_for_outbox_status("ORD-2001", "confirmation", "dead", PATIENCE);
    let Some(b) = Browser::start("dead_letter_retry", &app) else {
        return;
    };
    b.sign_in(ADMIN_TOKEN);

    b.goto("/admin/ui/dead");
    assert_eq!(b.attrs(".dead", "data-message").len(), 1);
    b.screenshot("dead-letters");
    b.click(".dead form button");

    assert!(b.path().starts_with("/admin/ui/dead?done="), "{}", b.path());
    assert!(b.text("[role=status]").contains("queued again"));
    app.wait_for_outbox_status("ORD-2001", "confirmation", "sent", PATIENCE);
    graph.wait_for_accepted("template", 1, PATIENCE);
    graph.wait_for_accepted("text", 1, PATIENCE);
    // The refused first try, the retried confirmation once, then its link.
    app.assert_sends_settled(&graph, 3);
    assert_eq!(graph.requests_of_type("template").len(), 2);
    b.screenshot("retried");
}

#[test]
fn signing_out_ends_the_session() {
    let _one = one_at_a_time();
    let graph = FakeGraph::start();
    let app = page_app(&graph);
    let Some(b) = Browser::start("sign_out", &app) else {
        return;
    };
    b.sign_in(ADMIN_TOKEN);
    assert_eq!(b.path(), "/admin");

    b.click("form[action='/admin/sign-out'] button");

    assert_eq!(b.path(), "/admin/sign-in");
    b.goto("/admin/ui/orders");
    assert_eq!(b.path(), "/admin/sign-in", "still signed in after sign-out");
    assert_eq!(app.count("SELECT COUNT(*) FROM admin_sessions"), 0);
    b.screenshot("signed-out");
}

#[test]
fn a_forged_post_without_the_csrf_token_is_refused() {
    let _one = one_at_a_time();
    let graph = FakeGraph::start();
    let app = page_app(&graph);
    graph.script([Reply::meta_error(400, 100)]);
    pay(&app, &payment_event("ORD-3001"));
    app.wait_for_outbox_status("ORD-3001", "confirmation", "dead", PATIENCE);
    let Some(b) = Browser::start("forged_post", &app) else {
        return;
    };
    b.sign_in(ADMIN_TOKEN);
    b.goto("/admin/ui/dead");

    // The retry form, stripped of its token: what a forged form would send.
    b.script("document.querySelector('.dead input[name=csrf]').remove()");
    b.click(".dead form button");

    assert!(b.source().contains("Refused"), "{}", b.source());
    assert_eq!(b.text("h1"), "Refused");
    b.screenshot("forged");
    app.assert_sends_settled(&graph, 1);
    assert_eq!(app.outbox_row("ORD-3001", "confirmation").status, "dead");
}

#[test]
fn no_page_is_wider_than_a_phone_whatever_is_in_a_field() {
    let _one = one_at_a_time();
    let graph = FakeGraph::start();
    let app = page_app(&graph);
    seed_funnel(&app);
    // Arrange: the longest ids SPEC §9 and §4 allow, and unbroken texts.
    let order = format!("ORD-{}", "7".repeat(60));
    assert_eq!(order.len(), 64);
    let bsuid = format!("IN.{}", "A1b2".repeat(32));
    assert_eq!(bsuid.len() - "IN.".len(), 128);
    let unbroken = "W".repeat(400);
    let processed = pay(
        &app,
        &payment_event_with(&order, json!({"note": "N".repeat(200)})),
    );
    app.wait_for_outbox_status(&order, "link", "sent", PATIENCE);
    // The link message fails at WhatsApp: the stage must say so.
    let link = app.outbox_row(&order, "link").graph_message_id.unwrap();
    app.deliver(&statuses_payload(vec![failed_status(
        &link,
        "919876543210",
        131026,
        "Message undeliverable",
    )]));
    app.deliver(&username_text_payload(
        &bsuid,
        &"Asha".repeat(40),
        &fresh_wamid(),
        &format!("{} {unbroken}", prefilled_text(&processed.whatsapp_link)),
    ));
    let stranger = format!("IN.{}", "Z9y8".repeat(32));
    app.deliver(&username_text_payload(
        &stranger,
        "Mallory",
        &fresh_wamid(),
        &unbroken,
    ));
    wait_until("two inbound messages", PATIENCE, || {
        app.count("SELECT COUNT(*) FROM inbound_messages") == 2
    });
    let Some(b) = Browser::start("phone_width", &app) else {
        return;
    };
    b.sign_in(ADMIN_TOKEN);
    b.viewport(390, 844);

    // Act / Assert: each page's scroll width is the window's.
    let order_page = format!("/admin/ui/orders/{order}");
    for (path, shot) in [
        ("/admin", "overview"),
        ("/admin/ui/orders", "orders"),
        (order_page.as_str(), "order"),
        ("/admin/ui/chats", "chats"),
    ] {
        b.goto(path);
        let source = b.source();
        assert!(
            source.contains(&order) || path == "/admin",
            "{path} does not show the long order id"
        );
        let (scroll, window) = b.widths();
        b.screenshot(&format!("long-fields-{shot}"));
        b.viewport(390, 844);
        assert_eq!(
            scroll, window,
            "{path} is {scroll} px wide on a {window} px screen"
        );
    }
    b.goto("/admin/ui/chats");
    assert!(b.source().contains(&bsuid), "the BSUID is shown");
    // The failed link is no step done, and the stage says where it stopped.
    b.goto(&order_page);
    assert_eq!(
        b.text(".stage"),
        "Stopped: WhatsApp could not deliver the link message (later: elder linked)"
    );
    assert_eq!(
        b.attrs("#stages li.failed", "data-step"),
        vec!["link_delivered"]
    );
    b.goto(&format!("/admin/ui/orders?q={}", &order[..20]));
    assert_eq!(
        b.attrs("#orders .stage", "data-stopped"),
        vec!["link_delivered"]
    );
    // The search box shows its whole placeholder.
    let fits = b.eval(
        "const i = document.querySelector('input[name=q]'); i.value = '';
         const s = getComputedStyle(i);
         const c = document.createElement('canvas').getContext('2d');
         c.font = s.font;
         const room = i.clientWidth - parseFloat(s.paddingLeft) - parseFloat(s.paddingRight);
         return [c.measureText(i.placeholder).width, room];",
    );
    let (text, room) = (fits[0].as_f64().unwrap(), fits[1].as_f64().unwrap());
    assert!(
        text <= room,
        "the placeholder needs {text} px, the box has {room}"
    );
}

#[test]
fn in_sandbox_mode_messages_read_recorded_not_sent_and_the_funnel_says_why() {
    let _one = one_at_a_time();
    let graph = FakeGraph::start();
    let app = TestApp::builder(&graph)
        .without("WHATSAPP_TOKEN")
        .without("WHATSAPP_PHONE_NUMBER_ID")
        .env("ADMIN_TOKEN", ADMIN_TOKEN)
        .spawn();
    let order = "ORD-SANDBOX-1";
    pay(&app, &payment_event(order));
    app.wait_for_outbox_status(order, "link", "sent", PATIENCE);
    let Some(b) = Browser::start("sandbox", &app) else {
        return;
    };
    b.sign_in(ADMIN_TOKEN);

    b.viewport(390, 844);
    assert!(b.text("#sandbox-funnel").contains("recorded, not sent"));
    for part in ["#funnel", "#queue", "#cost"] {
        let bottom = b.bottom(part);
        assert!(
            bottom <= 844.0,
            "{part} ends at {bottom} px, below the first screen"
        );
    }
    b.screenshot("sandbox-overview");
    b.goto(&format!("/admin/ui/orders/{order}"));
    assert_eq!(b.text("#confirmation"), "recorded (sandbox, not sent)");
    assert_eq!(b.text("#link"), "recorded (sandbox, not sent)");
    let events = b.texts("#timeline li .t");
    assert!(
        events
            .iter()
            .any(|e| e == "Confirmation recorded (sandbox, not sent)"),
        "{events:?}"
    );
    assert!(
        !events.iter().any(|e| e.contains("accepted by WhatsApp")),
        "{events:?}"
    );
    b.screenshot("sandbox-order");
}
