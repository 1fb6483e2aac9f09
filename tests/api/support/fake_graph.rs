//! A local imitation of the WhatsApp Cloud API `POST /{phone_number_id}/messages`,
//! so tests see exactly what the app sends and script what "Meta" answers.
//!
//! Statuses, as Meta sends them. Meta accepts most messages (200 and a
//! `wamid`) and says what became of them later, in signed status webhooks.
//! After the app is spawned, a test turns that on:
//!
//! ```ignore
//! graph.report_statuses_to(&app.base_url(), APP_SECRET);
//! ```
//!
//! From then on, for every message the fake accepts, a background thread
//! posts `sent` then `delivered` to `{app}/webhooks/whatsapp`, signed with
//! `X-Hub-Signature-256` like Meta, carrying the `wamid`, the recipient
//! (`recipient_id` = the request's `to`, or `recipient_user_id` = its BSUID
//! `recipient`), the request's `biz_opaque_callback_data` and `pricing`
//! (`category`, `type`: a template is `utility`/`regular`, a text
//! `service`/`free_customer_service`). The send's answer never waits for it.
//!
//! - `graph.close_window(wa_id)`: that customer's 24-hour window is closed.
//!   A free-form text to them is still accepted (200 + `wamid`), and then a
//!   `failed` status with 131047 is posted instead of `sent`; templates go
//!   through as usual.
//! - `graph.fail_later(recipient, code)`: every later accepted message to
//!   that recipient (number or BSUID) gets a `failed` status with `code`
//!   (131026, 131049, 130472, 131062, …) instead of `sent`.
//! - `graph.report_twice(true)`: every status is posted twice (Meta
//!   redelivers).
//! - `graph.report_before_answer(true)`: the statuses are posted, and
//!   answered by the app, before the send's own answer is written, so they
//!   arrive before the app recorded the send.
//! - `graph.statuses_posted()` / `wait_for_statuses(what, n, timeout)`:
//!   what was posted, and the app's answer to each.

use std::collections::{HashMap, HashSet, VecDeque};
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
    /// Accept (a fresh `wamid`, recorded as accepted, its statuses posted)
    /// but answer 200 with this body, which names no message id: a 2xx
    /// whose body a proxy mangled or cut short.
    AcceptedUnreadable(String),
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
    reporting: Reporting,
}

/// Where and how accepted messages' statuses are posted.
#[derive(Default, Clone)]
struct Reporting {
    /// `(webhook URL, app secret)`; nothing is posted while unset.
    to: Option<(String, String)>,
    closed_windows: HashSet<String>,
    fail_later: HashMap<String, i64>,
    twice: bool,
    before_answer: bool,
    /// Like Meta, post a status again until the app answers 200, each time
    /// to the app's address as it is then (a restarted app listens on a new
    /// port): see `redeliver_statuses`.
    redeliver: bool,
    current: Arc<Mutex<Option<(String, String)>>>,
}

/// One status the fake posted to the app.
#[derive(Debug, Clone)]
pub struct PostedStatus {
    pub wamid: String,
    /// `sent`, `delivered` or `failed`.
    pub status: String,
    /// The error code of a `failed` status.
    pub code: Option<i64>,
    /// The app's HTTP answer (0: no answer, e.g. the app was down).
    pub answered: u16,
    pub body: Value,
}

/// Meta's titles for the failures the fake reports (Cloud API error codes page,
/// developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/).
fn error_title(code: i64) -> &'static str {
    match code {
        131047 => "Re-engagement message",
        131026 => "Message undeliverable",
        131049 => "This message was not delivered to maintain healthy ecosystem engagement.",
        130472 => "User's number is part of an experiment",
        131062 => "Business-scoped user ID recipient not supported",
        _ => "Fake failure",
    }
}

pub struct FakeGraph {
    server: Arc<Server>,
    base_url: String,
    state: Arc<Mutex<State>>,
    posted: Arc<Mutex<Vec<PostedStatus>>>,
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
        let posted = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let accept_thread = {
            let server = Arc::clone(&server);
            let state = Arc::clone(&state);
            let posted = Arc::clone(&posted);
            let stop = Arc::clone(&stop);
            thread::spawn(move || accept_loop(&server, &state, &posted, &stop))
        };
        FakeGraph {
            server,
            base_url: format!("http://127.0.0.1:{port}/v21.0"),
            state,
            posted,
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

    /// From now on, post each accepted message's statuses to the app at
    /// `app_base_url` (`…/webhooks/whatsapp`), signed with `app_secret`.
    pub fn report_statuses_to(&self, app_base_url: &str, app_secret: &str) {
        let target = (
            format!("{}/webhooks/whatsapp", app_base_url.trim_end_matches('/')),
            app_secret.to_string(),
        );
        let mut st = self.state.lock().unwrap();
        *st.reporting.current.lock().unwrap() = Some(target.clone());
        st.reporting.to = Some(target);
    }

    /// Meta retries a status webhook that was not answered 200 (for days,
    /// with a growing delay; here every 50 ms for two minutes). With this
    /// on, each status is posted until the app answers 200, to the address
    /// last given to `report_statuses_to` (call it again after a restart):
    /// a status for a send the killed process made reaches the new one.
    pub fn redeliver_statuses(&self, on: bool) {
        self.state.lock().unwrap().reporting.redeliver = on;
    }

    /// The customer `recipient` has not written for 24 hours: a text to
    /// them is accepted, then fails with 131047.
    pub fn close_window(&self, recipient: &str) {
        let mut st = self.state.lock().unwrap();
        st.reporting.closed_windows.insert(recipient.to_string());
    }

    /// Every later accepted message to `recipient` fails with `code`.
    pub fn fail_later(&self, recipient: &str, code: i64) {
        let mut st = self.state.lock().unwrap();
        st.reporting.fail_later.insert(recipient.to_string(), code);
    }

    /// Post every status twice, as Meta sometimes does.
    pub fn report_twice(&self, twice: bool) {
        self.state.lock().unwrap().reporting.twice = twice;
    }

    /// Post the statuses (and wait for the app's answer) before answering
    /// the send itself.
    pub fn report_before_answer(&self, before: bool) {
        self.state.lock().unwrap().reporting.before_answer = before;
    }

    /// The statuses posted so far, in order.
    pub fn statuses_posted(&self) -> Vec<PostedStatus> {
        self.posted.lock().unwrap().clone()
    }

    /// Waits until `n` posted statuses match `what` (`"failed"`, `"sent"`,
    /// `"delivered"`) and the app answered each; panics at the deadline.
    pub fn wait_for_statuses(&self, what: &str, n: usize, timeout: Duration) -> Vec<PostedStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let matching: Vec<PostedStatus> = self
                .statuses_posted()
                .into_iter()
                .filter(|s| s.status == what && s.answered != 0)
                .collect();
            if matching.len() >= n {
                return matching;
            }
            assert!(
                Instant::now() < deadline,
                "fake graph: waited {timeout:?} for {n} posted {what} status(es); posted: {:#?}",
                self.statuses_posted()
            );
            thread::sleep(Duration::from_millis(10));
        }
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

fn accept_loop(
    server: &Server,
    state: &Mutex<State>,
    posted: &Arc<Mutex<Vec<PostedStatus>>>,
    stop: &AtomicBool,
) {
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
                Reply::Slow(_) | Reply::AcceptedUnreadable(_) => Outcome::Accepted {
                    wamid: format!(
                        "wamid.FAKE{}{:08x}",
                        WAMID_COUNTER.fetch_add(1, Ordering::SeqCst),
                        rand::random::<u32>()
                    ),
                },
            };
            st.requests.push(recorded.clone());
            (reply, st.reporting.clone())
        };
        let (reply, reporting) = reply;
        let statuses = match (&recorded.outcome, &reporting.to) {
            (Outcome::Accepted { wamid }, Some(_)) => statuses_for(&recorded, wamid, &reporting),
            _ => Vec::new(),
        };
        let posted = Arc::clone(posted);
        // Each answer on its own thread: a hung request never blocks the others.
        thread::spawn(move || {
            let report = || {
                if let Some((url, secret)) = &reporting.to {
                    for status in &statuses {
                        let copies = if reporting.twice { 2 } else { 1 };
                        for _ in 0..copies {
                            if reporting.redeliver {
                                redeliver_status(&reporting.current, status, &posted);
                            } else {
                                post_status(url, secret, status, &posted);
                            }
                        }
                    }
                }
            };
            if reporting.before_answer {
                report();
            }
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
                (Reply::AcceptedUnreadable(body), _) => {
                    Response::from_string(body).with_header(json_type)
                }
                (Reply::Ok | Reply::Slow(_), _) => {
                    unreachable!("an Ok or Slow reply is always recorded as accepted")
                }
            };
            let _ = request.respond(response);
            if !reporting.before_answer {
                report();
            }
        });
    }
}

/// The `statuses[]` entries Meta would post for an accepted request, in order.
fn statuses_for(request: &RecordedRequest, wamid: &str, reporting: &Reporting) -> Vec<Value> {
    let body = &request.body;
    let (recipient_key, recipient) = match body.get("to").and_then(Value::as_str) {
        Some(to) => ("recipient_id", to.to_string()),
        None => (
            "recipient_user_id",
            body.get("recipient")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        ),
    };
    let is_text = request.message_type() == Some("text");
    let failure =
        reporting.fail_later.get(&recipient).copied().or_else(|| {
            (is_text && reporting.closed_windows.contains(&recipient)).then_some(131047)
        });
    let base = |status: &str| {
        let mut s = json!({
            "id": wamid,
            "status": status,
            "timestamp": super::signing::now_secs().to_string(),
        });
        s[recipient_key] = json!(recipient);
        if let Some(data) = body.get("biz_opaque_callback_data") {
            s["biz_opaque_callback_data"] = data.clone();
        }
        s
    };
    if let Some(code) = failure {
        // Shape of Meta's failed status (WhatsApp Cloud API webhook
        // reference, "Status messages"): `errors[]` with code, title,
        // message, error_data.details; no pricing.
        let mut failed = base("failed");
        failed["errors"] = json!([{
            "code": code,
            "title": error_title(code),
            "message": error_title(code),
            "error_data": {"details": "Message failed to send."},
            "href": "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/"
        }]);
        return vec![failed];
    }
    let pricing = if is_text {
        json!({"billable": false, "pricing_model": "PMP", "category": "service", "type": "free_customer_service"})
    } else {
        json!({"billable": true, "pricing_model": "PMP", "category": "utility", "type": "regular"})
    };
    ["sent", "delivered"]
        .into_iter()
        .map(|state| {
            let mut s = base(state);
            s["pricing"] = pricing.clone();
            s
        })
        .collect()
}

/// Posts one status, signed as Meta signs it, and records the app's answer.
fn post_status(url: &str, secret: &str, status: &Value, posted: &Mutex<Vec<PostedStatus>>) {
    let payload = super::meta::statuses_payload(vec![status.clone()]).to_string();
    let signature = super::meta::meta_signature(secret, &payload);
    let answered = match ureq::post(url)
        .timeout(Duration::from_secs(15))
        .set("Content-Type", "application/json")
        .set("X-Hub-Signature-256", &signature)
        .send_string(&payload)
    {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(s, _)) => s,
        Err(_) => 0,
    };
    posted.lock().unwrap().push(PostedStatus {
        wamid: status["id"].as_str().unwrap_or_default().to_string(),
        status: status["status"].as_str().unwrap_or_default().to_string(),
        code: status.pointer("/errors/0/code").and_then(Value::as_i64),
        answered,
        body: status.clone(),
    });
}

/// Posts `status` until the app at the current address answers 200; only
/// the answered delivery is recorded.
fn redeliver_status(
    current: &Mutex<Option<(String, String)>>,
    status: &Value,
    posted: &Mutex<Vec<PostedStatus>>,
) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let scratch = Mutex::new(Vec::new());
    loop {
        let Some((url, secret)) = current.lock().unwrap().clone() else {
            return;
        };
        post_status(&url, &secret, status, &scratch);
        let last = scratch.lock().unwrap().pop().expect("one posted");
        if last.answered == 200 || Instant::now() >= deadline {
            posted.lock().unwrap().push(last);
            return;
        }
        thread::sleep(Duration::from_millis(50));
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

    /// A stand-in for the app's webhook: records each signed body it gets.
    /// `(X-Hub-Signature-256, raw body)` of each post the sink got.
    type Posts = Arc<Mutex<Vec<(String, String)>>>;

    fn webhook_sink() -> (String, Posts) {
        let server = Server::http("127.0.0.1:0").unwrap();
        let port = server.server_addr().to_ip().unwrap().port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&got);
        thread::spawn(move || {
            for mut request in server.incoming_requests() {
                let mut body = String::new();
                let _ = request.as_reader().read_to_string(&mut body);
                let signature = request
                    .headers()
                    .iter()
                    .find(|h| h.field.equiv("X-Hub-Signature-256"))
                    .map(|h| h.value.to_string())
                    .unwrap_or_default();
                sink.lock().unwrap().push((signature, body));
                let _ = request.respond(Response::from_string("ok"));
            }
        });
        (format!("http://127.0.0.1:{port}"), got)
    }

    #[test]
    fn fake_graph_reports_signed_statuses_as_meta_does() {
        let graph = FakeGraph::start();
        let (app, got) = webhook_sink();
        graph.report_statuses_to(&app, "s3cret");
        graph.close_window("91");

        let (_, template) = post(
            &graph,
            &json!({"type": "template", "to": "91", "biz_opaque_callback_data": "ORD-1"}),
            Duration::from_secs(5),
        )
        .unwrap();
        let (_, text) = post(
            &graph,
            &json!({"type": "text", "to": "91", "biz_opaque_callback_data": "ORD-1"}),
            Duration::from_secs(5),
        )
        .unwrap();
        graph.wait_for_statuses("failed", 1, Duration::from_secs(5));
        graph.wait_for_statuses("delivered", 1, Duration::from_secs(5));

        let id = |b: &str| serde_json::from_str::<Value>(b).unwrap()["messages"][0]["id"].clone();
        let got = got.lock().unwrap().clone();
        let statuses: Vec<Value> = got
            .iter()
            .map(|(signature, body)| {
                assert_eq!(
                    *signature,
                    crate::support::meta::meta_signature("s3cret", body)
                );
                let body: Value = serde_json::from_str(body).unwrap();
                body.pointer("/entry/0/changes/0/value/statuses/0")
                    .unwrap()
                    .clone()
            })
            .collect();
        let of = |wamid: &Value| -> Vec<&Value> {
            statuses.iter().filter(|s| s["id"] == *wamid).collect()
        };
        let template = of(&id(&template));
        assert_eq!(
            template
                .iter()
                .map(|s| s["status"].as_str().unwrap())
                .collect::<Vec<_>>(),
            ["sent", "delivered"]
        );
        assert_eq!(template[0]["recipient_id"], "91");
        assert_eq!(template[0]["biz_opaque_callback_data"], "ORD-1");
        assert_eq!(template[0]["pricing"]["type"], "regular");
        let text = of(&id(&text));
        assert_eq!(text.len(), 1);
        assert_eq!(text[0]["status"], "failed");
        assert_eq!(text[0]["errors"][0]["code"], 131047);
    }
}
