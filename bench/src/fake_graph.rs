//! A local stand-in for Meta's Graph API: a raw std::net HTTP/1.1 keep-alive
//! server, a thread per connection, answering `POST /{id}/messages` as Meta
//! does, after an optional per-request latency. It counts messages and
//! duplicates (a second message of the same `type` carrying the same
//! `biz_opaque_callback_data`). Started with [`FakeGraph::start_timed`], it
//! also keeps when the first request for each `biz_opaque_callback_data`
//! (an order) arrived, and lets the bench wait for one.

use crate::http::Reader;
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Counts {
    seen: HashSet<(String, String)>,
    /// The first few duplicates: (type, biz_opaque_callback_data).
    duplicate_examples: Vec<(String, String)>,
    first: Option<Instant>,
    last: Option<Instant>,
    /// With `timed`: when the first request for each
    /// `biz_opaque_callback_data` was read off its connection.
    first_by_data: HashMap<String, Instant>,
}

pub struct FakeGraph {
    pub addr: SocketAddr,
    latency: Duration,
    messages: AtomicU64,
    duplicates: AtomicU64,
    /// Requests that were not a well-formed message POST.
    rejected: AtomicU64,
    wamid: AtomicU64,
    counts: Mutex<Counts>,
    /// Signalled on each message when `timed`.
    arrived: Condvar,
    timed: bool,
    stop: AtomicBool,
    /// Connections whose handler has not yet read to their end.
    open: AtomicU64,
}

impl FakeGraph {
    pub fn start(latency: Duration) -> Arc<FakeGraph> {
        FakeGraph::start_with(latency, false)
    }

    /// `start`, also keeping each order's first arrival for
    /// [`FakeGraph::wait_for`]. Not for the throughput runs:
    /// one more map insert under the lock per message.
    pub fn start_timed(latency: Duration) -> Arc<FakeGraph> {
        FakeGraph::start_with(latency, true)
    }

    fn start_with(latency: Duration, timed: bool) -> Arc<FakeGraph> {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fake Graph API");
        let fake = Arc::new(FakeGraph {
            addr: listener.local_addr().expect("fake address"),
            latency,
            messages: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            wamid: AtomicU64::new(0),
            counts: Mutex::new(Counts::default()),
            arrived: Condvar::new(),
            timed,
            stop: AtomicBool::new(false),
            open: AtomicU64::new(0),
        });
        let f = fake.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if f.stop.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let f = f.clone();
                // Counted before the handler starts, so a connection accepted
                // is never missed by `wait_connections_closed`.
                f.open.fetch_add(1, Ordering::SeqCst);
                std::thread::spawn(move || {
                    f.serve(conn);
                    f.open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        fake
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn messages(&self) -> u64 {
        self.messages.load(Ordering::Relaxed)
    }

    /// Distinct messages: (type, biz_opaque_callback_data) pairs seen.
    pub fn unique(&self) -> u64 {
        self.counts.lock().expect("fake counts").seen.len() as u64
    }

    pub fn duplicates(&self) -> u64 {
        self.duplicates.load(Ordering::Relaxed)
    }

    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// Time between the first and the last message received.
    pub fn first_to_last(&self) -> Option<Duration> {
        let c = self.counts.lock().expect("fake counts");
        Some(c.last? - c.first?)
    }

    pub fn duplicate_examples(&self) -> Vec<(String, String)> {
        self.counts
            .lock()
            .expect("fake counts")
            .duplicate_examples
            .clone()
    }

    pub fn first_at(&self) -> Option<Instant> {
        self.counts.lock().expect("fake counts").first
    }

    /// Waits (to `deadline`) for the first request carrying `data` and
    /// returns when it arrived; `None` when the deadline passed first.
    pub fn wait_for(&self, data: &str, deadline: Duration) -> Option<Instant> {
        assert!(self.timed, "wait_for needs a fake started with start_timed");
        let until = Instant::now() + deadline;
        let mut c = self.counts.lock().expect("fake counts");
        loop {
            if let Some(at) = c.first_by_data.get(data) {
                return Some(*at);
            }
            let left = until.checked_duration_since(Instant::now())?;
            c = self.arrived.wait_timeout(c, left).expect("fake counts").0;
        }
    }

    /// Waits (to `deadline`) until every accepted connection has been read to
    /// its end. Once the client process has exited, every request it wrote
    /// on those has been counted: a condition, where a quiet period could
    /// miss a late duplicate. (The client keeps its connections alive, so a
    /// connection opened in its last moment and not yet accepted is the one
    /// case left out.) `false` when the deadline passed first.
    pub fn wait_connections_closed(&self, deadline: Duration) -> bool {
        let start = Instant::now();
        while self.open.load(Ordering::SeqCst) > 0 {
            if start.elapsed() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }

    /// Stops accepting; open connections end when their peer goes away.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
    }

    fn serve(&self, mut conn: TcpStream) {
        let _ = conn.set_nodelay(true);
        let mut reader = Reader::default();
        while let Ok(Some(request)) = reader.read(&mut conn) {
            let read_at = Instant::now();
            if self.stop.load(Ordering::Relaxed) {
                return;
            }
            let (status, body) = self.answer(&request.target, &request.body, read_at);
            if !self.latency.is_zero() {
                std::thread::sleep(self.latency);
            }
            let reply = format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            if conn.write_all(reply.as_bytes()).is_err() || request.close {
                return;
            }
        }
    }

    fn answer(&self, target: &str, body: &[u8], read_at: Instant) -> (&'static str, String) {
        let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
        let fields = parsed.as_ref().and_then(|v| {
            Some((
                v.get("to")?.as_str()?.to_owned(),
                v.get("type")?.as_str()?.to_owned(),
                v.get("biz_opaque_callback_data")
                    .and_then(|d| d.as_str())
                    .unwrap_or("")
                    .to_owned(),
            ))
        });
        let Some((to, kind, data)) = fields.filter(|_| target.ends_with("/messages")) else {
            self.rejected.fetch_add(1, Ordering::Relaxed);
            return (
                "400 Bad Request",
                r#"{"error":{"message":"(#100) Invalid parameter","type":"OAuthException","code":100}}"#
                    .to_owned(),
            );
        };
        {
            let mut c = self.counts.lock().expect("fake counts");
            let now = Instant::now();
            c.first.get_or_insert(now);
            c.last = Some(now);
            if self.timed {
                c.first_by_data.entry(data.clone()).or_insert(read_at);
                self.arrived.notify_all();
            }
            if !c.seen.insert((kind.clone(), data.clone())) {
                self.duplicates.fetch_add(1, Ordering::Relaxed);
                if c.duplicate_examples.len() < 5 {
                    c.duplicate_examples.push((kind, data));
                }
            }
            // Counted under the lock so `messages` never runs ahead of `last`.
            self.messages.fetch_add(1, Ordering::Relaxed);
        }
        let id = self.wamid.fetch_add(1, Ordering::Relaxed);
        (
            "200 OK",
            format!(
                r#"{{"messaging_product":"whatsapp","contacts":[{{"input":"{to}","wa_id":"{to}"}}],"messages":[{{"id":"wamid.{id}"}}]}}"#
            ),
        )
    }
}
