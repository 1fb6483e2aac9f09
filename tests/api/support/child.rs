//! Helpers for the reliability tests: webhooks posted from many threads
//! without panicking when the app dies under them, the binary's CLI commands,
//! a server started under a chosen umask, the process's peak memory, and
//! tallies of what reached the fake Graph API.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use orderlink::db::Conn;
use rusqlite::{Connection, OpenFlags};

use super::app::{Resp, APP_SECRET, BUSINESS_NUMBER, GRAPH_TOKEN, PHONE_NUMBER_ID, WEBHOOK_SECRET};
use super::fake_graph::RecordedRequest;
use super::ports::free_port;
use super::signing::{now_secs, sign};

/// Posts signed payment webhooks to one app over its own keep-alive
/// connection; a transport failure (the app was killed) is an `Err`, not a
/// panic, so a thread can record what happened and stop.
pub struct Poster {
    base_url: String,
    agent: ureq::Agent,
}

impl Poster {
    pub fn new(base_url: &str) -> Poster {
        Poster {
            base_url: base_url.to_string(),
            agent: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(30))
                .build(),
        }
    }

    /// Signed with the test secret, now, under `webhook_id`.
    pub fn post(&self, webhook_id: &str, body: &str) -> Result<Resp, String> {
        let ts = now_secs();
        let signature = sign(WEBHOOK_SECRET, webhook_id, ts, body);
        let result = self
            .agent
            .post(&format!("{}/webhooks/payment", self.base_url))
            .set("Content-Type", "application/json")
            .set("webhook-id", webhook_id)
            .set("webhook-timestamp", &ts.to_string())
            .set("webhook-signature", &signature)
            .send_string(body);
        to_resp(result)
    }

    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Result<Resp, String> {
        let mut req = self.agent.get(&format!("{}{path}", self.base_url));
        for (k, v) in headers {
            req = req.set(k, v);
        }
        to_resp(req.call())
    }
}

fn to_resp(result: Result<ureq::Response, ureq::Error>) -> Result<Resp, String> {
    let response = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => return Err(e.to_string()),
    };
    let status = response.status();
    let headers = response
        .headers_names()
        .into_iter()
        .filter_map(|name| {
            response
                .header(&name)
                .map(|v| (name.to_ascii_lowercase(), v.to_string()))
        })
        .collect();
    let body = response.into_string().map_err(|e| e.to_string())?;
    Ok(Resp {
        status,
        headers,
        body,
    })
}

/// The live-mode variables the harness gives a served app, for running the
/// binary's other commands against the same configuration.
pub fn live_env(graph_base_url: &str, database: &Path) -> Vec<(String, String)> {
    [
        ("RUST_LOG", "info"),
        ("WHATSAPP_TOKEN", GRAPH_TOKEN),
        ("WHATSAPP_PHONE_NUMBER_ID", PHONE_NUMBER_ID),
        ("WHATSAPP_BUSINESS_NUMBER_E164", BUSINESS_NUMBER),
        ("PAYMENT_WEBHOOK_SECRET", WEBHOOK_SECRET),
        ("WHATSAPP_APP_SECRET", APP_SECRET),
        ("WHATSAPP_API_BASE", graph_base_url),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .chain([(
        "DATABASE_PATH".to_string(),
        database.to_string_lossy().into_owned(),
    )])
    .collect()
}

/// What a finished CLI command did.
#[derive(Debug)]
pub struct CliRun {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

impl CliRun {
    pub fn output(&self) -> String {
        format!(
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `orderlink ARGS` with exactly `env` (plus `PATH`) in a fresh working
/// directory (so no `.env` is read); panics if it has not exited by `timeout`.
pub fn run_cli(args: &[&str], env: &[(String, String)], timeout: Duration) -> CliRun {
    let workdir = tempfile::tempdir().expect("temp dir");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_orderlink"));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(workdir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let started = Instant::now();
    let mut child = cmd.spawn().expect("orderlink binary starts");
    let out = drain(child.stdout.take().expect("stdout pipe"));
    let err = drain(child.stderr.take().expect("stderr pipe"));
    let status = loop {
        if let Some(status) = child.try_wait().expect("child status") {
            break status;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`orderlink {}` still running after {timeout:?}; stdout:\n{}\nstderr:\n{}",
                args.join(" "),
                out.join().unwrap_or_default(),
                err.join().unwrap_or_default()
            );
        }
        thread::sleep(Duration::from_millis(10));
    };
    CliRun {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
        took: started.elapsed(),
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// `orderlink serve` started through `sh` under `umask`, so the test sees the
/// permissions the binary chooses rather than those the umask allows.
pub struct UmaskServer {
    child: Child,
    pub base_url: String,
    log_path: PathBuf,
    _workdir: tempfile::TempDir,
}

impl UmaskServer {
    pub fn start(umask: &str, env: &[(String, String)]) -> UmaskServer {
        let workdir = tempfile::tempdir().expect("temp dir");
        let log_path = workdir.path().join("orderlink.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let port = free_port();
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!("umask {umask} && exec \"$0\" serve"))
            .arg(env!("CARGO_BIN_EXE_orderlink"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("ROCKET_ADDRESS", "127.0.0.1")
            .env("ROCKET_PORT", port.to_string())
            .current_dir(workdir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut server = UmaskServer {
            child: cmd.spawn().expect("sh starts"),
            base_url: format!("http://127.0.0.1:{port}"),
            log_path,
            _workdir: workdir,
        };
        let poster = Poster::new(&server.base_url);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = server.child.try_wait().expect("child status") {
                panic!("orderlink exited early with {status}:\n{}", server.logs());
            }
            if poster.get("/healthz", &[]).is_ok_and(|r| r.status == 200) {
                return server;
            }
            assert!(
                Instant::now() < deadline,
                "no /healthz 200 within 20 s:\n{}",
                server.logs()
            );
            thread::sleep(Duration::from_millis(25));
        }
    }

    pub fn logs(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log_path).unwrap_or_default()).into_owned()
    }
}

impl Drop for UmaskServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The peak resident set size (`VmHWM`) of a running process, in KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in /proc/{pid}/status:\n{status}"))
}

/// Accepted requests per `(order id, message type)`.
pub fn accepted_per_message(requests: &[RecordedRequest]) -> BTreeMap<(String, String), usize> {
    let mut tally = BTreeMap::new();
    for r in requests.iter().filter(|r| r.was_accepted()) {
        let key = (
            r.order_id().unwrap_or("<none>").to_string(),
            r.message_type().unwrap_or("<none>").to_string(),
        );
        *tally.entry(key).or_insert(0) += 1;
    }
    tally
}

/// Requests per `(order id, message type)`, in arrival order.
pub fn requests_per_message(
    requests: &[RecordedRequest],
) -> HashMap<(String, String), Vec<RecordedRequest>> {
    let mut by: HashMap<(String, String), Vec<RecordedRequest>> = HashMap::new();
    for r in requests {
        let key = (
            r.order_id().unwrap_or("<none>").to_string(),
            r.message_type().unwrap_or("<none>").to_string(),
        );
        by.entry(key).or_default().push(r.clone());
    }
    for list in by.values_mut() {
        list.sort_by_key(|r| r.arrived);
    }
    by
}

/// A read-only connection to any SQLite database file (a backup copy, say).
pub fn open_read_only(path: &Path) -> Connection {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    conn.busy_timeout(Duration::from_secs(5))
        .expect("busy timeout");
    conn
}

/// The same, through the store-neutral connection the helpers below take.
pub fn open_read_only_conn(path: &Path) -> Conn {
    Conn::from(open_read_only(path))
}

/// The first column of every row of `sql`, as strings.
pub fn strings(conn: &Conn, sql: &str) -> Vec<String> {
    let mut stmt = conn.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    let rows = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .collect::<Result<Vec<_>, _>>()
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows
}

pub fn count(conn: &Conn, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0))
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}
