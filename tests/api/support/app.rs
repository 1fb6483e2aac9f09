//! Runs the real `orderlink` binary as a child process on a fresh temp
//! directory and database, and talks to it over HTTP like the outside world.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use orderlink::db::Conn;
use rusqlite::{Connection, OpenFlags};
use serde_json::Value;
use tempfile::TempDir;

use super::ports::free_port;

use super::fake_graph::FakeGraph;
use super::signing::{now_secs, sign};
use super::store::{self, Scratch};

pub const GRAPH_TOKEN: &str = "test-graph-token";
pub const PHONE_NUMBER_ID: &str = "106540352242922";
pub const BUSINESS_NUMBER: &str = "919999900000";
pub const APP_SECRET: &str = "test-meta-app-secret-5f2c";
pub const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// An HTTP answer, whatever its status.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?} (status {})",
                self.body, self.status
            )
        })
    }

    /// Asserts a `{"error":{"code":…,"message":…}}` body and returns the code.
    pub fn error_code(&self) -> String {
        let json = self.json();
        let code = json
            .pointer("/error/code")
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no error.code in {json}"));
        let message = json
            .pointer("/error/message")
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no error.message in {json}"));
        assert!(!message.is_empty(), "empty error.message in {json}");
        code.to_string()
    }
}

pub fn into_resp(result: Result<ureq::Response, ureq::Error>) -> Resp {
    let response = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("HTTP transport error: {e}"),
    };
    let status = response.status();
    let headers = response
        .headers_names()
        .into_iter()
        .flat_map(|name| {
            response
                .all(&name)
                .into_iter()
                .map(|v| (name.to_ascii_lowercase(), v.to_string()))
                .collect::<Vec<_>>()
        })
        .collect();
    let body = response.into_string().unwrap_or_default();
    Resp {
        status,
        headers,
        body,
    }
}

/// Polls `condition` until it holds; panics with `what` at the deadline.
pub fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// Environment for one app, live mode by default.
pub struct TestAppBuilder {
    env: BTreeMap<String, Option<String>>,
    sqlite: bool,
}

impl TestAppBuilder {
    /// On SQLite whatever the run's store: for tests about SQLite itself
    /// (copy-to's source, say).
    pub fn on_sqlite(mut self) -> Self {
        self.sqlite = true;
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.insert(key.to_string(), Some(value.to_string()));
        self
    }

    pub fn without(mut self, key: &str) -> Self {
        self.env.insert(key.to_string(), None);
        self
    }

    /// Runs the binary (e.g. with a broken configuration) and waits for it to exit;
    /// returns `None` if it is still running at the deadline (then it is killed), and the log.
    pub fn run_until_exit(self, timeout: Duration) -> (Option<ExitStatus>, String) {
        let dir = tempfile::tempdir().expect("temp dir");
        let log_path = dir.path().join("orderlink.log");
        let log = File::create(&log_path).expect("log file");
        let pg = store::on_postgres().then(|| Scratch::create(&store::admin_url()));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_orderlink"));
        cmd.arg("serve")
            .env_clear()
            .current_dir(dir.path())
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_PATH", dir.path().join("orderlink.db"))
            .env("ROCKET_PORT", free_port().to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log);
        if let Some(pg) = &pg {
            cmd.env("DATABASE_URL", &pg.url);
        }
        for (k, v) in &self.env {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        let mut child = cmd.spawn().expect("orderlink binary starts");
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = child.try_wait().expect("child status") {
                break Some(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            thread::sleep(Duration::from_millis(10));
        };
        drop(pg);
        let logs =
            String::from_utf8_lossy(&std::fs::read(&log_path).unwrap_or_default()).into_owned();
        (status, logs)
    }

    pub fn spawn(self) -> TestApp {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut app = TestApp {
            db_path: dir.path().join("orderlink.db"),
            log_path: dir.path().join("orderlink.log"),
            pg: (store::on_postgres() && !self.sqlite)
                .then(|| Scratch::create(&store::admin_url())),
            dir,
            env: self.env,
            port: 0,
            child: None,
            agent: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(15))
                .build(),
            no_redirect: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(15))
                .redirects(0)
                .build(),
        };
        app.start();
        app
    }
}

pub struct TestApp {
    dir: TempDir,
    /// SQLite's file; on PostgreSQL runs, set but not used by the app.
    pub db_path: PathBuf,
    /// The app's own PostgreSQL database, under `ORDERLINK_TEST_STORE=postgres`.
    pub pg: Option<Scratch>,
    pub log_path: PathBuf,
    env: BTreeMap<String, Option<String>>,
    pub port: u16,
    child: Option<Child>,
    agent: ureq::Agent,
    no_redirect: ureq::Agent,
}

impl TestApp {
    /// Live-mode defaults pointing at `graph`.
    pub fn builder(graph: &FakeGraph) -> TestAppBuilder {
        let mut env = BTreeMap::new();
        for (k, v) in [
            ("RUST_LOG", "info"),
            ("ROCKET_ADDRESS", "127.0.0.1"),
            ("WHATSAPP_TOKEN", GRAPH_TOKEN),
            ("WHATSAPP_PHONE_NUMBER_ID", PHONE_NUMBER_ID),
            ("WHATSAPP_BUSINESS_NUMBER_E164", BUSINESS_NUMBER),
            ("PAYMENT_WEBHOOK_SECRET", WEBHOOK_SECRET),
            // §9: required in live mode (the inbound webhook's signing key).
            ("WHATSAPP_APP_SECRET", APP_SECRET),
            ("WHATSAPP_API_BASE", graph.base_url()),
            ("WHATSAPP_RETRY_BASE_MS", "5"),
            ("WHATSAPP_TIMEOUT_MS", "2000"),
            // SPEC §5: a send whose answer was lost waits this long for a
            // status before it goes again (60 s in production).
            ("WHATSAPP_UNSURE_WAIT_MS", "1000"),
            ("WHATSAPP_MAX_ATTEMPTS", "4"),
        ] {
            env.insert(k.to_string(), Some(v.to_string()));
        }
        // No ROCKET_CONFIG and no Rocket.toml in the working directory: the binary
        // must keep its promises (the 64 KiB body limit among them) on its own.
        TestAppBuilder { env, sqlite: false }
    }

    pub fn spawn(graph: &FakeGraph) -> TestApp {
        TestApp::builder(graph).spawn()
    }

    fn start(&mut self) {
        // A port found free can be taken by another test's server (a fake
        // Graph API that answers 200, or hangs) before this app binds it:
        // then /healthz is answered by the impostor and the app dies on its
        // bind. So healthy means our own process says it listens on the
        // port, and a lost bind is tried again on another port.
        for _ in 0..5 {
            if self.try_start() {
                return;
            }
        }
        panic!(
            "orderlink could not bind a free port in 5 tries; log:\n{}",
            self.logs()
        );
    }

    /// Starts the binary on a fresh port; false when the port was taken
    /// before it could bind.
    fn try_start(&mut self) -> bool {
        self.port = free_port();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("log file");
        let offset = log.metadata().map(|m| m.len() as usize).unwrap_or(0);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_orderlink"));
        cmd.arg("serve")
            .env_clear()
            .current_dir(self.dir.path())
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_PATH", &self.db_path)
            .env("ROCKET_PORT", self.port.to_string())
            .env("APP_BASE_URL", self.base_url())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log);
        if let Some(pg) = &self.pg {
            cmd.env("DATABASE_URL", &pg.url);
        }
        for (k, v) in &self.env {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        self.child = Some(cmd.spawn().expect("orderlink binary starts"));
        let listening = format!("listening on http://127.0.0.1:{}", self.port);
        let since_spawn = |app: &TestApp| app.logs().get(offset..).unwrap_or("").to_owned();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .unwrap()
                .try_wait()
                .expect("child status")
            {
                let log = since_spawn(self);
                if log.contains("already in use") {
                    self.child = None;
                    return false;
                }
                panic!(
                    "orderlink exited early with {status}; log:\n{}",
                    self.logs()
                );
            }
            let healthy = since_spawn(self).contains(&listening)
                && self
                    .agent
                    .get(&self.url("/healthz"))
                    .timeout(Duration::from_millis(500))
                    .call()
                    .map(|r| r.status() == 200)
                    .unwrap_or(false);
            if healthy {
                return true;
            }
            assert!(
                Instant::now() < deadline,
                "orderlink did not answer /healthz 200 within 20 s; log:\n{}",
                self.logs()
            );
            thread::sleep(Duration::from_millis(25));
        }
    }

    /// SIGKILLs the current process (if running) and starts a new one on the same DB.
    pub fn restart(&mut self) {
        self.kill9();
        self.start();
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    pub fn get(&self, path: &str) -> Resp {
        into_resp(self.agent.get(&self.url(path)).call())
    }

    pub fn get_no_redirect(&self, path: &str) -> Resp {
        into_resp(self.no_redirect.get(&self.url(path)).call())
    }

    pub fn get_no_redirect_with(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        let mut req = self.no_redirect.get(&self.url(path));
        for (k, v) in headers {
            req = req.set(k, v);
        }
        into_resp(req.call())
    }

    /// Posts with exactly these headers (nothing signed for you).
    pub fn post_webhook_with_headers(&self, body: &str, headers: &[(&str, &str)]) -> Resp {
        let mut req = self
            .agent
            .post(&self.url("/webhooks/payment"))
            .set("Content-Type", "application/json");
        for (k, v) in headers {
            req = req.set(k, v);
        }
        into_resp(req.send_string(body))
    }

    /// Signed with the app's secret, now, under this `webhook-id`.
    pub fn post_webhook_with_id(&self, webhook_id: &str, body: &str) -> Resp {
        let ts = now_secs();
        let signature = sign(WEBHOOK_SECRET, webhook_id, ts, body);
        self.post_webhook_with_headers(
            body,
            &[
                ("webhook-id", webhook_id),
                ("webhook-timestamp", &ts.to_string()),
                ("webhook-signature", &signature),
            ],
        )
    }

    /// Signed, under a fresh `webhook-id`.
    pub fn post_webhook(&self, body: &str) -> Resp {
        self.post_webhook_with_id(&fresh_webhook_id(), body)
    }

    pub fn post_webhook_unsigned(&self, body: &str) -> Resp {
        self.post_webhook_with_headers(body, &[])
    }

    /// The app's PostgreSQL database, if it runs on one: a DATABASE_URL the
    /// test gave, or the run's scratch database.
    fn postgres(&self) -> Option<Conn> {
        let url = match self.env.get("DATABASE_URL") {
            Some(Some(url)) => url.clone(),
            _ => self.pg.as_ref()?.url.clone(),
        };
        let client = crate::support::store::connect(&url)
            .unwrap_or_else(|e| panic!("connect to the app's PostgreSQL: {e}"));
        Some(Conn::from(client))
    }

    /// A connection to the app's database, whichever the store (SPEC §13):
    /// the same SQL runs on both through `orderlink::db::Conn`. Read-only on
    /// SQLite.
    pub fn db(&self) -> Conn {
        if let Some(conn) = self.postgres() {
            return conn;
        }
        let conn = Connection::open_with_flags(&self.db_path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open db read-only");
        conn.busy_timeout(Duration::from_secs(5))
            .expect("busy timeout");
        Conn::from(conn)
    }

    /// A read-write connection, for tests that must reach past the API (e.g. expire a token).
    pub fn db_rw(&self) -> Conn {
        if let Some(conn) = self.postgres() {
            return conn;
        }
        let conn = Connection::open(&self.db_path).expect("open db read-write");
        conn.busy_timeout(Duration::from_secs(5))
            .expect("busy timeout");
        Conn::from(conn)
    }

    pub fn count(&self, sql: &str) -> i64 {
        self.db()
            .query_row(sql, [], |r| r.get(0))
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// `(kind, status, attempts, last_error, graph_message_id)` for one order.
    pub fn outbox(&self, order_id: &str) -> Vec<OutboxRow> {
        let db = self.db();
        let mut stmt = db
            .prepare(
                "SELECT kind, status, attempts, last_error, graph_message_id, variant \
                 FROM outbox WHERE order_id = $1 ORDER BY kind",
            )
            .expect("outbox query");

        stmt.query_map([order_id], |r| {
            Ok(OutboxRow {
                kind: r.get(0)?,
                status: r.get(1)?,
                attempts: r.get(2)?,
                last_error: r.get(3)?,
                graph_message_id: r.get(4)?,
                variant: r.get(5)?,
            })
        })
        .expect("outbox rows")
        .collect::<Result<Vec<_>, _>>()
        .expect("outbox row")
    }

    pub fn outbox_row(&self, order_id: &str, kind: &str) -> OutboxRow {
        self.outbox(order_id)
            .into_iter()
            .find(|r| r.kind == kind)
            .unwrap_or_else(|| panic!("no {kind} outbox row for {order_id}"))
    }

    /// Waits until the `kind` message of `order_id` has `status`.
    /// Asserts the fake Graph got exactly `expected` requests and that no
    /// more can follow. Waits (to a deadline) until no outbox row is queued,
    /// claimed or waiting: the sender sends only such rows, and a request
    /// reaches Graph before its outcome is written, so once none is left,
    /// every request this database will cause has arrived. Unlike a quiet
    /// period, a late duplicate cannot slip past it.
    pub fn assert_sends_settled(&self, graph: &FakeGraph, expected: usize) {
        self.wait_sends_settled(graph, Some(expected), super::PATIENCE);
        assert_eq!(graph.requests().len(), expected, "fake graph request count");
    }

    /// Waits until no outbox row can still be sent (see
    /// `assert_sends_settled`) and returns how many requests the fake got.
    pub fn wait_sends_settled(
        &self,
        graph: &FakeGraph,
        most: Option<usize>,
        timeout: Duration,
    ) -> usize {
        let expected = most.unwrap_or(usize::MAX);
        let deadline = Instant::now() + timeout;
        loop {
            let open: Vec<(String, String, String)> = {
                let conn = self.db();
                let mut stmt = conn
                    .prepare(
                        "SELECT order_id, kind, status FROM outbox
                         WHERE status IN ('queued', 'sending', 'waiting')",
                    )
                    .expect("prepare");

                stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .expect("query")
                    .collect::<Result<Vec<_>, _>>()
                    .expect("rows")
            };
            let got = graph.requests().len();
            assert!(
                got <= expected,
                "fake graph: expected {expected} request(s), got {got}"
            );
            if open.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "messages still to send after {timeout:?}: {} rows, e.g. {:?}",
                open.len(),
                open.first()
            );
            thread::sleep(Duration::from_millis(10));
        }
        graph.requests().len()
    }

    pub fn wait_for_outbox_status(
        &self,
        order_id: &str,
        kind: &str,
        status: &str,
        timeout: Duration,
    ) -> OutboxRow {
        let what = format!("{kind} of {order_id} to become {status}");
        let mut last = None;
        let deadline = Instant::now() + timeout;
        loop {
            let row = self.outbox(order_id).into_iter().find(|r| r.kind == kind);
            if let Some(row) = &row {
                if row.status == status {
                    return row.clone();
                }
            }
            last = row.or(last);
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}; last row: {last:?}; log tail:\n{}",
                tail(&self.logs(), 30)
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, and reap.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits up to `timeout` for the exit status (SIGKILL after that).
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.kill9();
    }
}

#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub kind: String,
    pub status: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub graph_message_id: Option<String>,
    pub variant: String,
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

pub fn fresh_webhook_id() -> String {
    format!("msg_{}", uuid::Uuid::new_v4().simple())
}
