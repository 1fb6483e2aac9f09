//! The first hour with orderlink: what `orderlink check` warns about before a
//! mistake costs anything (a misspelled variable that silently keeps its
//! default, a token or secret too short to protect anything), invite links
//! that follow a changed ROCKET_PORT, and a PostgreSQL start whose log holds
//! no NOTICE from the migrations.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::postgres::postgres_url;
use crate::support::store::Scratch;
use crate::support::{payment_event, FakeGraph, TestApp};

/// `orderlink check` run in `dir` (so its `.env` is read) with exactly `env`
/// (plus PATH); its exit success and stdout.
fn check_in(dir: &Path, env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_orderlink"));
    cmd.arg("check")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_PATH", dir.join("orderlink.db"))
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("orderlink binary starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("child status") {
            break status;
        }
        assert!(Instant::now() < deadline, "check still running after 20 s");
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    (status.success(), out)
}

fn warnings(out: &str) -> Vec<&str> {
    out.lines().filter(|l| l.starts_with("warning: ")).collect()
}

#[test]
fn check_names_a_misspelled_variable_in_env_file_and_environment_with_the_intended_name() {
    // Arrange: the typo of the issue (sandbox mode instead of live, silently),
    // one in the environment, and a gateway-looking name far from any known one.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(".env"),
        "WHATSAPP_TOKN=EAAG-typo-value-123\nADMIN_TOKEN=a-long-enough-admin-token\n",
    )
    .unwrap();

    // Act
    let (ok, out) = check_in(
        dir.path(),
        &[
            ("RAZORPAY_SECRET", "rzp_secret_long_enough_1"),
            ("STRIPE_API_KEY", "x"),
        ],
    );

    // Assert: warnings, not problems; one line each, naming where it was.
    assert!(ok, "warnings alone must not fail check:\n{out}");
    let w = warnings(&out);
    let line = |name: &str| {
        let found: Vec<&&str> = w.iter().filter(|l| l.contains(name)).collect();
        assert_eq!(found.len(), 1, "{name}:\n{out}");
        found[0].to_string()
    };
    let typo = line("WHATSAPP_TOKN ");
    assert!(
        typo.contains("did you mean WHATSAPP_TOKEN?") && typo.ends_with("[in .env]"),
        "{typo}"
    );
    let env = line("RAZORPAY_SECRET ");
    assert!(
        env.contains("did you mean RAZORPAY_WEBHOOK_SECRET?")
            && env.ends_with("[in the environment]"),
        "{env}"
    );
    let far = line("STRIPE_API_KEY");
    assert!(far.contains("not a variable orderlink reads"), "{far}");
    assert!(
        !out.contains("EAAG-typo") && !out.contains("rzp_secret"),
        "{out}"
    );
    assert!(out.contains("ok: configuration (sandbox mode)"), "{out}");
}

#[test]
fn check_passes_known_variables_without_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = check_in(
        dir.path(),
        &[
            ("ADMIN_TOKEN", "a-long-enough-admin-token"),
            ("METRICS_TOKEN", "a-long-enough-metrics-token"),
            ("RAZORPAY_WEBHOOK_SECRET", "rzp_whsec_Q4n8Tz2Lx6Vb"),
            ("ROCKET_PORT", "9000"),
            ("ADMIN_TIME_ZONE", "Asia/Kolkata"),
            ("WHATSAPP_LINK_IN", "button"),
            ("HOME", "/nowhere"),
        ],
    );
    assert!(ok, "{out}");
    assert!(
        warnings(&out)
            .iter()
            .all(|l| l.contains("does not exist yet")),
        "{out}"
    );
}

#[test]
fn check_warns_about_short_admin_and_metrics_tokens_and_a_gateway_secret_too_short_to_be_real() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = check_in(
        dir.path(),
        &[
            ("ADMIN_TOKEN", "short"),
            ("METRICS_TOKEN", "m3tr1cs"),
            ("RAZORPAY_WEBHOOK_SECRET", "abc"),
        ],
    );
    assert!(ok, "{out}");
    let w = warnings(&out);
    for (name, n, bound) in [
        ("ADMIN_TOKEN", 5, "under 16"),
        ("METRICS_TOKEN", 7, "under 16"),
        ("RAZORPAY_WEBHOOK_SECRET", 3, "under 16"),
    ] {
        let found: Vec<&&str> = w
            .iter()
            .filter(|l| l.starts_with(&format!("warning: {name} is {n} characters")))
            .collect();
        assert_eq!(found.len(), 1, "{name}:\n{out}");
        assert!(found[0].contains(bound), "{}", found[0]);
    }
    assert!(!out.contains("m3tr1cs") && !out.contains("abc "), "{out}");
}

/// Without APP_BASE_URL, the invite link points at the port the server
/// listens on, so "Try it" works on ROCKET_PORT=9000 as on 8000.
#[test]
fn app_base_url_follows_rocket_port_when_unset() {
    let graph = FakeGraph::start();
    let app = TestApp::builder(&graph)
        .without("WHATSAPP_TOKEN")
        .without("PAYMENT_WEBHOOK_SECRET")
        .without("WHATSAPP_APP_SECRET")
        .without("APP_BASE_URL")
        .spawn();
    let answer = app.post_webhook_unsigned(&payment_event("ORD-PORT-1").to_string());
    assert_eq!(answer.status, 200, "{}", answer.body);
    let invite = answer.json()["invite_url"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        invite.starts_with(&format!("http://localhost:{}/w/invite/", app.port)),
        "{invite} (port {})",
        app.port
    );
}

/// Every start after the first finds refinery's history table; PostgreSQL's
/// NOTICE about it (`relation "refinery_schema_history" already exists,
/// skipping`) must not reach the log each time.
#[test]
#[cfg_attr(not(orderlink_pg), ignore = "needs PostgreSQL: source .ci/postgres")]
fn a_second_start_on_postgresql_logs_no_notice_from_the_migrations() {
    let Some(admin_url) =
        postgres_url("a_second_start_on_postgresql_logs_no_notice_from_the_migrations")
    else {
        return;
    };
    let scratch = Scratch::create(&admin_url);
    let graph = FakeGraph::start();
    let mut app = TestApp::builder(&graph)
        .env("DATABASE_URL", &scratch.url)
        .env("RUST_LOG", "info")
        .spawn();
    app.restart();
    let logs = app.logs();
    assert_eq!(
        logs.matches("database: PostgreSQL at").count(),
        2,
        "two starts:\n{logs}"
    );
    assert!(
        !logs.contains("NOTICE") && !logs.contains("already exists"),
        "{logs}"
    );
}
