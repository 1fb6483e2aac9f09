//! A local imitation of the WhatsApp Cloud API `POST /{phone_number_id}/messages`,
//! so tests see exactly what the app sends and script what "Meta" answers.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tiny_http::{Header, Response, Server};

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// Header names are lowercased.
    pub headers: Vec<(String, String)>,
    /// The body parsed as JSON (`Value::Null` when it is not JSON).
    pub body: Value,
    pub raw_body: String,
    pub arrived: Instant,
    /// What the fake answered (decided on arrival).
    pub outcome: Outcome,
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// `"template"` or `"text"`.
    pub fn message_type(&self) -> Option<&str> {
        self.body.get("type").and_then(Value::as_str)
    }

    pub fn template_name(&self) -> Option<&str> {
        self.body.pointer("/template/name").and_then(Value::as_str)
    }

    pub fn order_id(&self) -> Option<&str> {
        self.body
            .get("biz_opaque_callback_data")
            .and_then(Value::as_str)
    }

    pub fn was_accepted(&self) -> bool {
        matches!(self.outcome, Outcome::Accepted { .. })
    }
}

/// What the fake did with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 200 with this message id.
    Accepted { wamid: String },
    /// Answered at once with this non-2xx (or scripted 2xx raw) status.
    Answered { status: u16 },
    /// Held past the client's timeout, then answered 504 (never accepted).
    Hung,
}

/// A scripted answer.
#[derive(Debug, Clone)]
pub enum Reply {
    /// 200 with Graph's usual success body and a fresh `wamid`.
    Ok,
    /// Any status with a raw body (`application/json`).
    Raw { status: u16, body: String },
    /// `status` with a `Retry-After: secs` header and a Graph throttling body.
    RetryAfter { status: u16, retry_after_secs: u64 },
    /// Hold the connection this long, then answer 504.
    Hang(Duration),
    /// Accept (200 with a fresh `wamid`, recorded as accepted on arrival),
    /// but answer only after this long: a send Meta took that its sender
    /// may never hear about.
    Slow(Duration),
}

impl Reply {
    /// 429 with `Retry-After: secs`.
    pub fn too_many_requests(retry_after_secs: u64) -> Reply {
        Reply::RetryAfter {
            status: 429,
            retry_after_secs,
        }
    }

    pub fn status(status: u16) -> Reply {
        Reply::Raw {
            status,
            body:
                json!({"error": {"message": format!("fake status {status}"), "type": "FakeError"}})
                    .to_string(),
        }
    }

    /// A Graph error body with `code`, answered with `http_status`.
    pub fn meta_error(http_status: u16, code: i64) -> Reply {
        Reply::Raw {
            status: http_status,
            body: json!({
                "error": {
                    "message": format!("(#{code}) fake Meta error {code}"),
                    "type": "OAuthException",
                    "code": code,
                    "error_subcode": 2494010,
                    "fbtrace_id": "x"
                }
            })
            .to_string(),
        }
    }
}

type Responder = Box<dyn Fn(&RecordedRequest) -> Option<Reply> + Send + Sync>;

#[derive(Default)]
struct State {
    requests: Vec<RecordedRequest>,
    script: VecDeque<Reply>,
    responder: Option<Responder>,
}

pub struct FakeGraph {
    server: Arc<Server>,
    base_url: String,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    accept_thread: Option<thread::JoinHandle<()>>,
}

static WAMID_COUNTER: AtomicU64 = AtomicU64::new(1);

impl FakeGraph {
    pub fn start() -> FakeGraph {
        let server = Arc::new(Server::http("127.0.0.1:0").expect("fake graph binds"));
        let port = server
            .server_addr()
            .to_ip()
            .expect("fake graph has an ip address")
            .port();
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let accept_thread = {
            let server = Arc::clone(&server);
            let state = Arc::clone(&state);
            let stop = Arc::clone(&stop);
            thread::spawn(move || accept_loop(&server, &state, &stop))
        };
        FakeGraph {
            server,
            base_url: format!("http://127.0.0.1:{port}/v21.0"),
            state,
            stop,
            accept_thread: Some(accept_thread),
        }
    }

    /// What the app gets as `WHATSAPP_API_BASE`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Queue replies, consumed one per request in arrival order, before the responder.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.lock().unwrap().script.extend(replies);
    }

    /// Answer every request for which `f` returns `Some` (after the script is used up).
    pub fn respond_with(
        &self,
        f: impl Fn(&RecordedRequest) -> Option<Reply> + Send + Sync + 'static,
    ) {
        self.state.lock().unwrap().responder = Some(Box::new(f));
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn requests_of_type(&self, message_type: &str) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.message_type() == Some(message_type))
            .collect()
    }

    /// Requests of this type that the fake accepted (answered 200 with a wamid).
    pub fn accepted_of_type(&self, message_type: &str) -> Vec<RecordedRequest> {
        self.requests_of_type(message_type)
            .into_iter()
            .filter(RecordedRequest::was_accepted)
            .collect()
    }

    /// Waits until at least `n` requests arrived; panics at the deadline.
    pub fn wait_for_requests(&self, n: usize, timeout: Duration) -> Vec<RecordedRequest> {
        self.wait_for(&format!("{n} requests"), timeout, |all| all.len() >= n)
    }

    /// Waits until `done(all requests so far)` holds; panics at the deadline.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&[RecordedRequest]) -> bool,
    ) -> Vec<RecordedRequest> {
        let deadline = Instant::now() + timeout;
        loop {
            let all = self.requests();
            if done(&all) {
                return all;
            }
            if Instant::now() >= deadline {
                panic!(
                    "fake graph: waited {timeout:?} for {what}; got {} request(s): {:#?}",
                    all.len(),
                    all.iter()
                        .map(|r| (&r.body, &r.outcome))
                        .collect::<Vec<_>>()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until `n` accepted messages of this type arrived.
    pub fn wait_for_accepted(
        &self,
        message_type: &str,
        n: usize,
        timeout: Duration,
    ) -> Vec<RecordedRequest> {
        let what = format!("{n} accepted {message_type} message(s)");
        self.wait_for(&what, timeout, |all| {
            all.iter()
                .filter(|r| r.message_type() == Some(message_type) && r.was_accepted())
                .count()
                >= n
        });
        self.accepted_of_type(message_type)
    }

    /// Waits (to `timeout`) until no TCP connection to this fake is open on
    /// its side: every connection a client opened has been read to its end
    /// and answered or dropped. A request is recorded before it is
    /// answered, and its connection stays open until then, so once a client
    /// process has exited (e.g. after `kill9`), this means every request it
    /// wrote is in `requests()`: a condition where a quiet period could
    /// miss a late one. Reads the kernel's socket table (/proc/net/tcp):
    /// an accepted or still-queued connection is ESTABLISHED, one whose
    /// peer has gone but the fake still holds is CLOSE_WAIT.
    pub fn wait_connections_closed(&self, timeout: Duration) {
        let port = self
            .server
            .server_addr()
            .to_ip()
            .expect("fake graph has an ip address")
            .port();
        super::wait_until(
            "every connection to the fake Graph API read to its end",
            timeout,
            || open_connections_to(port) == 0,
        );
    }

    /// Asserts that nothing beyond `expected` requests arrives within `grace`.
    /// (A quiet period can only be observed by waiting it out.)
    pub fn assert_no_more_requests(&self, expected: usize, grace: Duration) {
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            let all = self.requests();
            assert!(
                all.len() <= expected,
                "fake graph: expected {expected} request(s), got {}: {:#?}",
                all.len(),
                all.iter()
                    .map(|r| (&r.body, &r.outcome))
                    .collect::<Vec<_>>()
            );
            thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(self.requests().len(), expected, "fake graph request count");
    }
}

impl Drop for FakeGraph {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.server.unblock();
        if let Some(t) = self.accept_thread.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(server: &Server, state: &Mutex<State>, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        let mut request = match server.recv_timeout(Duration::from_millis(50)) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(_) => break,
        };
        let arrived = Instant::now();
        let mut raw_body = String::new();
        let _ = request.as_reader().read_to_string(&mut raw_body);
        let headers = request
            .headers()
            .iter()
            .map(|h| {
                (
                    h.field.as_str().as_str().to_ascii_lowercase(),
                    h.value.as_str().to_string(),
                )
            })
            .collect();
        let mut recorded = RecordedRequest {
            method: request.method().to_string(),
            path: request.url().to_string(),
            headers,
            body: serde_json::from_str(&raw_body).unwrap_or(Value::Null),
            raw_body,
            arrived,
            outcome: Outcome::Hung,
        };
        // Decide and record under one lock so scripted replies follow arrival order.
        let reply = {
            let mut st = state.lock().unwrap();
            let reply = st
                .script
                .pop_front()
                .or_else(|| st.responder.as_ref().and_then(|f| f(&recorded)))
                .unwrap_or(Reply::Ok);
            recorded.outcome = match &reply {
                Reply::Ok => Outcome::Accepted {
                    wamid: format!(
                        "wamid.FAKE{}{:08x}",
                        WAMID_COUNTER.fetch_add(1, Ordering::SeqCst),
                        rand::random::<u32>()
                    ),
                },
                Reply::Raw { status, .. } => Outcome::Answered { status: *status },
                Reply::RetryAfter { status, .. } => Outcome::Answered { status: *status },
                Reply::Hang(_) => Outcome::Hung,
                Reply::Slow(_) => Outcome::Accepted {
                    wamid: format!(
                        "wamid.FAKE{}{:08x}",
                        WAMID_COUNTER.fetch_add(1, Ordering::SeqCst),
                        rand::random::<u32>()
                    ),
                },
            };
            st.requests.push(recorded.clone());
            reply
        };
        // Each answer on its own thread: a hung request never blocks the others.
        thread::spawn(move || {
            let json_type =
                Header::from_bytes(&b"Content-Type"[..], &b"application/json"[..]).unwrap();
            if let Reply::Slow(d) = reply {
                thread::sleep(d);
            }
            let response = match (reply, &recorded.outcome) {
                (Reply::Ok | Reply::Slow(_), Outcome::Accepted { wamid }) => {
                    let to = recorded.body.get("to").cloned().unwrap_or(Value::Null);
                    let body = json!({
                        "messaging_product": "whatsapp",
                        "contacts": [{"input": to, "wa_id": to}],
                        "messages": [{"id": wamid}]
                    });
                    Response::from_string(body.to_string()).with_header(json_type)
                }
                (Reply::Raw { status, body }, _) => Response::from_string(body)
                    .with_status_code(status)
                    .with_header(json_type),
                (
                    Reply::RetryAfter {
                        status,
                        retry_after_secs,
                    },
                    _,
                ) => {
                    let retry_after = Header::from_bytes(
                        &b"Retry-After"[..],
                        retry_after_secs.to_string().as_bytes(),
                    )
                    .unwrap();
                    let body = json!({"error": {"message": "(#130429) Rate limit hit", "type": "OAuthException", "code": 130429, "fbtrace_id": "x"}});
                    Response::from_string(body.to_string())
                        .with_status_code(status)
                        .with_header(json_type)
                        .with_header(retry_after)
                }
                (Reply::Hang(d), _) => {
                    thread::sleep(d);
                    Response::from_string(r#"{"error":{"message":"fake gateway timeout"}}"#)
                        .with_status_code(504)
                        .with_header(json_type)
                }
                (Reply::Ok | Reply::Slow(_), _) => {
                    unreachable!("an Ok or Slow reply is always recorded as accepted")
                }
            };
            let _ = request.respond(response);
        });
    }
}

/// Sockets on local port `port` in a state where a process still holds
/// them open to a peer: SYN_RECV (03), ESTABLISHED (01) or CLOSE_WAIT (08).
fn open_connections_to(port: u16) -> usize {
    let local = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .flat_map(|table| {
            table
                .lines()
                .skip(1)
                .filter(|line| {
                    let mut fields = line.split_whitespace();
                    let local_address = fields.nth(1).unwrap_or("");
                    let state = fields.nth(1).unwrap_or("");
                    local_address.ends_with(&local) && matches!(state, "01" | "03" | "08")
                })
                .map(|_| ())
                .collect::<Vec<_>>()
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(graph: &FakeGraph, body: &Value, timeout: Duration) -> Result<(u16, String), String> {
        let url = format!("{}/106540352242922/messages", graph.base_url());
        match ureq::post(&url)
            .timeout(timeout)
            .set("Authorization", "Bearer t")
            .set("Content-Type", "application/json")
            .send_string(&body.to_string())
        {
            Ok(r) => Ok((r.status(), r.into_string().unwrap())),
            Err(ureq::Error::Status(s, r)) => Ok((s, r.into_string().unwrap())),
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn fake_graph_answers_like_graph_and_records_the_request() {
        let graph = FakeGraph::start();

        let (status, body) = post(
            &graph,
            &json!({"type": "text", "to": "91"}),
            Duration::from_secs(5),
        )
        .unwrap();

        assert_eq!(status, 200);
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["contacts"][0]["wa_id"], "91");
        let wamid = body["messages"][0]["id"].as_str().unwrap();
        let seen = graph.requests_of_type("text");
        assert_eq!(seen.len(), 1);
        assert_eq!(
            seen[0].outcome,
            Outcome::Accepted {
                wamid: wamid.to_string()
            }
        );
        assert_eq!(seen[0].path, "/v21.0/106540352242922/messages");
        assert_eq!(seen[0].header("Authorization"), Some("Bearer t"));
    }

    #[test]
    fn fake_graph_uses_the_script_then_the_responder_and_a_hang_blocks_nobody() {
        let graph = FakeGraph::start();
        graph.script([
            Reply::Hang(Duration::from_secs(2)),
            Reply::meta_error(400, 131047),
        ]);
        graph.respond_with(|r| (r.message_type() == Some("text")).then(|| Reply::status(503)));

        let hung = post(
            &graph,
            &json!({"type": "template"}),
            Duration::from_millis(200),
        );
        let started = Instant::now();
        let (s1, b1) = post(&graph, &json!({"type": "template"}), Duration::from_secs(5)).unwrap();
        let (s2, _) = post(&graph, &json!({"type": "text"}), Duration::from_secs(5)).unwrap();
        let (s3, _) = post(&graph, &json!({"type": "template"}), Duration::from_secs(5)).unwrap();

        assert!(hung.is_err(), "{hung:?}");
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!((s1, s2, s3), (400, 503, 200));
        assert_eq!(
            serde_json::from_str::<Value>(&b1).unwrap()["error"]["code"],
            131047
        );
        assert_eq!(graph.wait_for_requests(4, Duration::from_secs(1)).len(), 4);
        graph.assert_no_more_requests(4, Duration::from_millis(50));
    }
}
