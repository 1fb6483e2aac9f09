//! The Graph API client: builds the exact message JSON of SPEC §5, posts it
//! with ureq (on the sender's blocking threads only), and classifies the
//! answer into what the sender should do next.

use crate::domain::Bsuid;
use crate::outbox::row::Recipient;
use serde::Serialize;
use std::time::Duration;

/// Graph error codes that mean "try again later" whatever the HTTP status.
pub const TRANSIENT_CODES: [i64; 8] = [2, 4, 80007, 130429, 131000, 131016, 131056, 131057];
/// Pair rate limit: too many messages to one recipient.
pub const PAIR_RATE_LIMIT: i64 = 131056;
/// Re-engagement: free-form text outside the 24-hour window.
pub const OUTSIDE_WINDOW: i64 = 131047;
/// Meta will not deliver this message, now or later (SPEC §5): 131026
/// undeliverable, 131049 Meta's choice (e.g. its marketing limit), 130472
/// the user's number is in an experiment. Ended at once whatever the HTTP
/// status, never retried.
pub const ENDING_CODES: [i64; 3] = [131026, 131049, 130472];
/// The recipient cannot be reached by its BSUID for this message: sent
/// again to the phone number when one is known.
pub const BSUID_REFUSED: i64 = 131062;
/// Faults of our configuration, not of the message: retrying every queued
/// message against them would only burn the queue into the dead letters.
pub const CONFIG_FAULT_CODES: [i64; 3] = [190, 132001, 131031];

#[derive(Debug, Serialize, Clone, PartialEq)]
pub struct Message {
    messaging_product: &'static str,
    recipient_type: &'static str,
    #[serde(flatten)]
    to: Address,
    #[serde(flatten)]
    content: Content,
    #[serde(skip_serializing_if = "Option::is_none")]
    biz_opaque_callback_data: Option<String>,
}

/// Meta's send API takes a phone number as `to` and a business-scoped user
/// id as `recipient` (its "Business-scoped user IDs" page: set one or the
/// other; with both, `to` wins). Exactly one of them is sent.
#[derive(Debug, Serialize, Clone, PartialEq)]
enum Address {
    #[serde(rename = "to")]
    Phone(String),
    #[serde(rename = "recipient")]
    User(#[serde(serialize_with = "exact_bsuid")] Bsuid),
}

/// Only the request to Meta carries the BSUID whole.
fn exact_bsuid<S: serde::Serializer>(id: &Bsuid, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(id.as_str())
}

impl Address {
    fn of(recipient: &Recipient) -> Address {
        match recipient {
            Recipient::Phone(digits) => Address::Phone(digits.clone()),
            Recipient::User(id) => Address::User(id.clone()),
        }
    }
}

#[derive(Debug, Serialize, Clone, PartialEq)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Content {
    Template { template: Template },
    Text { text: Text },
}

#[derive(Debug, Serialize, Clone, PartialEq)]
struct Template {
    name: String,
    language: Language,
    components: Vec<Component>,
}

#[derive(Debug, Serialize, Clone, PartialEq)]
struct Language {
    code: String,
}

#[derive(Debug, Serialize, Clone, PartialEq)]
struct Component {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<&'static str>,
    parameters: Vec<Parameter>,
}

#[derive(Debug, Serialize, Clone, PartialEq)]
struct Parameter {
    #[serde(rename = "type")]
    kind: &'static str,
    text: String,
}

#[derive(Debug, Serialize, Clone, PartialEq)]
struct Text {
    preview_url: bool,
    body: String,
}

impl Message {
    /// A template message with one body component of text parameters.
    pub fn template(to: &Recipient, name: &str, language: &str, params: &[String]) -> Message {
        Message {
            messaging_product: "whatsapp",
            recipient_type: "individual",
            to: Address::of(to),
            content: Content::Template {
                template: Template {
                    name: name.to_owned(),
                    language: Language {
                        code: language.to_owned(),
                    },
                    components: vec![Component {
                        kind: "body",
                        sub_type: None,
                        index: None,
                        parameters: params
                            .iter()
                            .map(|p| Parameter {
                                kind: "text",
                                text: p.clone(),
                            })
                            .collect(),
                    }],
                },
            },
            biz_opaque_callback_data: None,
        }
    }

    /// A free-form text with link previews on.
    pub fn text(to: &Recipient, body: &str) -> Message {
        Message {
            messaging_product: "whatsapp",
            recipient_type: "individual",
            to: Address::of(to),
            content: Content::Text {
                text: Text {
                    preview_url: true,
                    body: body.to_owned(),
                },
            },
            biz_opaque_callback_data: None,
        }
    }

    /// A template with its first URL button's suffix (`WHATSAPP_LINK_IN=button`):
    /// `{"type":"button","sub_type":"url","index":"0","parameters":[{"type":"text","text":suffix}]}`
    /// after the body component. A text is left as it is.
    pub fn with_url_button(mut self, suffix: &str) -> Message {
        if let Content::Template { template } = &mut self.content {
            template.components.push(Component {
                kind: "button",
                sub_type: Some("url"),
                index: Some("0"),
                parameters: vec![Parameter {
                    kind: "text",
                    text: suffix.to_owned(),
                }],
            });
        }
        self
    }

    /// Carries the order id so Meta's status webhooks can be traced to it.
    pub fn with_callback(mut self, data: &str) -> Message {
        self.biz_opaque_callback_data = Some(data.to_owned());
        self
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("messages always serialise")
    }

    /// Whom the message is addressed to; its Display is masked.
    pub fn recipient(&self) -> Recipient {
        match &self.to {
            Address::Phone(digits) => Recipient::Phone(digits.clone()),
            Address::User(id) => Recipient::User(id.clone()),
        }
    }

    pub fn is_template(&self) -> bool {
        matches!(self.content, Content::Template { .. })
    }

    /// The template's name and language, for a template message.
    pub fn template_name(&self) -> Option<(&str, &str)> {
        match &self.content {
            Content::Template { template } => {
                Some((template.name.as_str(), template.language.code.as_str()))
            }
            Content::Text { .. } => None,
        }
    }

    /// A one-line description for logs: what, to whom (masked), with which
    /// parameters or text (tokens are masked by the logger).
    pub fn describe(&self) -> String {
        match &self.content {
            Content::Template { template } => {
                let params = |c: &Component| {
                    c.parameters
                        .iter()
                        .map(|p| p.text.as_str())
                        .collect::<Vec<_>>()
                        .join(" | ")
                };
                let mut line = format!(
                    "template {} ({}) [{}]",
                    template.name,
                    template.language.code,
                    params(&template.components[0])
                );
                for button in &template.components[1..] {
                    line.push_str(&format!(" url button suffix [{}]", params(button)));
                }
                line
            }
            Content::Text { text } => format!("text \"{}\"", text.body),
        }
    }
}

/// What one send attempt came to.
#[derive(Debug, Clone, PartialEq)]
pub enum SendOutcome {
    Accepted {
        message_id: String,
    },
    /// Worth another attempt; `retry_after` from the header, when sent.
    Transient {
        reason: String,
        retry_after: Option<Duration>,
        code: Option<i64>,
    },
    /// This message will never be accepted as it is.
    Rejected {
        code: Option<i64>,
        reason: String,
    },
    /// Our credentials or templates are wrong; no message can succeed.
    ConfigFault {
        code: i64,
        reason: String,
    },
    /// The request was written but its answer was lost (a timeout, a
    /// connection broken before the answer, a 2xx naming no message id):
    /// Meta may have accepted it (SPEC §5, unsure messages).
    Unsure {
        reason: String,
    },
}

/// Something that delivers messages: Meta's Graph API, or the sandbox.
pub trait Transport: Send + Sync {
    fn send(&self, message: &Message) -> SendOutcome;
}

/// Sandbox mode: nothing leaves the machine; each message is logged (phone
/// and token masked) and recorded as sent with a `sandbox-` id.
pub struct Sandbox;

impl Transport for Sandbox {
    fn send(&self, message: &Message) -> SendOutcome {
        let id = format!("sandbox-{}", uuid::Uuid::new_v4().simple());
        let text = crate::logging::mask_uuids(&message.describe());
        log::info!(
            "sandbox: {} to {} recorded as sent ({id}): {text}",
            if message.is_template() {
                "template"
            } else {
                "text"
            },
            message.recipient()
        );
        SendOutcome::Accepted { message_id: id }
    }
}

pub struct GraphClient {
    agent: ureq::Agent,
    url: String,
    auth: String,
}

impl GraphClient {
    pub fn new(
        api_base: &str,
        phone_number_id: &str,
        token: &str,
        timeout: Duration,
        pool: usize,
    ) -> GraphClient {
        let agent = ureq::AgentBuilder::new()
            .timeout(timeout)
            .max_idle_connections(pool.max(1) * 2)
            .max_idle_connections_per_host(pool.max(1))
            .build();
        GraphClient {
            agent,
            url: format!(
                "{}/{}/messages",
                api_base.trim_end_matches('/'),
                phone_number_id
            ),
            auth: format!("Bearer {token}"),
        }
    }

    /// The helper the merchant's team asked for: a template with text
    /// parameters, tagged with the order id.
    pub fn send_template(
        &self,
        to: &Recipient,
        template_name: &str,
        language: &str,
        params: &[String],
        order_id: &str,
    ) -> SendOutcome {
        self.send(&Message::template(to, template_name, language, params).with_callback(order_id))
    }

    /// The helper the merchant's team asked for: a free-form text.
    pub fn send_text(&self, to: &Recipient, text: &str, order_id: &str) -> SendOutcome {
        self.send(&Message::text(to, text).with_callback(order_id))
    }
}

impl Transport for GraphClient {
    fn send(&self, message: &Message) -> SendOutcome {
        let result = self
            .agent
            .post(&self.url)
            .set("Authorization", &self.auth)
            .set("Content-Type", "application/json")
            .send_string(&message.to_json());
        match result {
            Ok(response) => {
                let status = response.status();
                let body = read_body(response);
                classify(status, None, &body)
            }
            Err(ureq::Error::Status(status, response)) => {
                let retry_after = response
                    .header("Retry-After")
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                let body = read_body(response);
                classify(status, retry_after, &body)
            }
            Err(ureq::Error::Transport(t)) => transport_failure(&t),
        }
    }
}

/// Whether a transport failure came before the request could be written
/// (retried as usual) or after (unsure: Meta may have it). ureq 2 fails
/// the connect step with `Dns` or `ConnectionFailed`; everything after it
/// (writing, then reading the answer) is `Io`, or `BadStatus`/`BadHeader`
/// for an answer that came and could not be read. A TLS handshake fails in
/// the first write as `Io` with `InvalidData`: nothing of the request has
/// left the machine then either.
fn transport_failure(t: &ureq::Transport) -> SendOutcome {
    use std::io::ErrorKind as Io;
    use ureq::ErrorKind as K;
    let io = std::error::Error::source(t).and_then(|e| e.downcast_ref::<std::io::Error>());
    let not_written = |reason: String| SendOutcome::Transient {
        reason,
        retry_after: None,
        code: None,
    };
    match t.kind() {
        K::Dns => not_written(format!("DNS lookup failed: {}", detail(t))),
        K::ConnectionFailed | K::ProxyConnect => {
            not_written(format!("could not connect: {}", detail(t)))
        }
        K::Io if io.is_some_and(|e| e.kind() == Io::InvalidData) => not_written(format!(
            "TLS failed before the request was written: {}",
            detail(t)
        )),
        K::Io if io.is_some_and(|e| matches!(e.kind(), Io::TimedOut | Io::WouldBlock)) => {
            SendOutcome::Unsure {
                reason: "timeout: no answer within WHATSAPP_TIMEOUT_MS after the request was sent"
                    .into(),
            }
        }
        K::Io | K::BadStatus | K::BadHeader => SendOutcome::Unsure {
            reason: format!("connection broken before the answer: {}", detail(t)),
        },
        _ => not_written(format!("request not sent: {}", detail(t))),
    }
}

/// The cause of a transport failure, without ureq's generic
/// "Network Error" label.
fn detail(t: &ureq::Transport) -> String {
    match std::error::Error::source(t) {
        Some(cause) => cause.to_string(),
        None => t.message().unwrap_or("unknown").to_owned(),
    }
}

fn read_body(response: ureq::Response) -> String {
    use std::io::Read;
    let mut body = String::new();
    let _ = response
        .into_reader()
        .take(64 * 1024)
        .read_to_string(&mut body);
    body
}

/// Maps an HTTP answer to an outcome, following SPEC §5's retry rules.
pub fn classify(status: u16, retry_after: Option<Duration>, body: &str) -> SendOutcome {
    let json: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let error = json.as_ref().and_then(|j| j.get("error"));
    let code = error.and_then(|e| e.get("code")).and_then(|c| c.as_i64());
    let message = error
        .and_then(|e| {
            let msg = e.get("message").and_then(|m| m.as_str());
            let detail = e
                .get("error_data")
                .and_then(|d| d.get("details"))
                .and_then(|m| m.as_str());
            msg.map(|m| match detail {
                Some(d) => format!("{m} ({d})"),
                None => m.to_owned(),
            })
        })
        .unwrap_or_else(|| format!("HTTP {status}"));
    let reason = match code {
        Some(c) => format!("HTTP {status}, Graph error {c}: {message}"),
        None => format!("HTTP {status}: {message}"),
    };

    if (200..300).contains(&status) {
        let id = json
            .as_ref()
            .and_then(|j| j.get("messages"))
            .and_then(|m| m.get(0))
            .and_then(|m| m.get("id"))
            .and_then(|i| i.as_str());
        // A 2xx means Meta took the message, but without its id we cannot
        // match its statuses: unsure, so it waits for a status naming the
        // order rather than being sent again (or stored under a made-up id).
        return match id.filter(|id| !id.trim().is_empty()) {
            Some(id) => SendOutcome::Accepted {
                message_id: id.to_owned(),
            },
            None => SendOutcome::Unsure {
                reason: format!("HTTP {status} without a message id in the answer"),
            },
        };
    }
    if let Some(c) = code {
        if TRANSIENT_CODES.contains(&c) {
            return SendOutcome::Transient {
                reason,
                retry_after,
                code,
            };
        }
        if CONFIG_FAULT_CODES.contains(&c) {
            return SendOutcome::ConfigFault { code: c, reason };
        }
        if ENDING_CODES.contains(&c) || c == BSUID_REFUSED {
            return SendOutcome::Rejected { code, reason };
        }
    }
    if status == 429 || status >= 500 {
        return SendOutcome::Transient {
            reason,
            retry_after,
            code,
        };
    }
    if status == 401 {
        return SendOutcome::ConfigFault {
            code: code.unwrap_or(190),
            reason,
        };
    }
    SendOutcome::Rejected { code, reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phone() -> Recipient {
        Recipient::Phone("919876543210".into())
    }

    #[test]
    fn a_username_only_elder_is_addressed_by_recipient_instead_of_to() {
        // Meta's "Business-scoped user IDs" page, "Sending messages": set
        // `recipient` to the BSUID and omit `to`.
        let id = crate::domain::Bsuid::parse("IN.1648738043044942").unwrap();
        let m = Message::text(&Recipient::User(id), "Thank you").with_callback("ORD-1042");
        assert_eq!(
            m.to_json(),
            r#"{"messaging_product":"whatsapp","recipient_type":"individual","recipient":"IN.1648738043044942","type":"text","text":{"preview_url":true,"body":"Thank you"},"biz_opaque_callback_data":"ORD-1042"}"#
        );
        assert_eq!(m.recipient().to_string(), "IN.***4942");
    }

    #[test]
    fn confirmation_json_is_exactly_the_spec_example() {
        let params = ["ORD-1042", "INR 499.00", "Arrives by Friday"].map(String::from);
        let m =
            Message::template(&phone(), "order_confirmed", "en", &params).with_callback("ORD-1042");
        assert_eq!(
            m.to_json(),
            r#"{"messaging_product":"whatsapp","recipient_type":"individual","to":"919876543210","type":"template","template":{"name":"order_confirmed","language":{"code":"en"},"components":[{"type":"body","parameters":[{"type":"text","text":"ORD-1042"},{"type":"text","text":"INR 499.00"},{"type":"text","text":"Arrives by Friday"}]}]},"biz_opaque_callback_data":"ORD-1042"}"#
        );
    }

    #[test]
    fn link_json_is_exactly_the_spec_example() {
        let m = Message::text(
            &phone(),
            "Please forward this link to your elder for direct chat: https://wa.me/1?text=x",
        )
        .with_callback("ORD-1042");
        assert_eq!(
            m.to_json(),
            r#"{"messaging_product":"whatsapp","recipient_type":"individual","to":"919876543210","type":"text","text":{"preview_url":true,"body":"Please forward this link to your elder for direct chat: https://wa.me/1?text=x"},"biz_opaque_callback_data":"ORD-1042"}"#
        );
    }

    fn meta_error(code: i64) -> String {
        format!(
            r#"{{"error":{{"message":"m","type":"OAuthException","code":{code},"fbtrace_id":"x"}}}}"#
        )
    }

    #[test]
    fn accepted_answers_carry_the_message_id() {
        let body = r#"{"messaging_product":"whatsapp","messages":[{"id":"wamid.ABC"}]}"#;
        assert_eq!(
            classify(200, None, body),
            SendOutcome::Accepted {
                message_id: "wamid.ABC".into()
            }
        );
    }

    #[test]
    fn a_2xx_naming_no_message_id_is_unsure_not_accepted_under_a_placeholder() {
        for body in ["", "{", r#"{"messages":[]}"#, r#"{"messages":[{"id":""}]}"#] {
            assert!(
                matches!(classify(200, None, body), SendOutcome::Unsure { .. }),
                "{body:?}"
            );
        }
    }

    /// Against a local socket: a refused connection is not written (retried
    /// as usual); an answer that never comes is a timeout, said so.
    #[test]
    fn refused_is_retried_and_a_silent_server_is_an_unsure_timeout() {
        let phone = phone();
        let message = Message::text(&phone, "hi").with_callback("ORD-1");
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let client = GraphClient::new(
            &format!("http://127.0.0.1:{port}"),
            "1",
            "t",
            Duration::from_millis(300),
            1,
        );
        let refused = client.send(&message);
        assert!(
            matches!(&refused, SendOutcome::Transient { reason, .. } if reason.starts_with("could not connect")),
            "{refused:?}"
        );
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = silent.local_addr().unwrap().port();
        let client = GraphClient::new(
            &format!("http://127.0.0.1:{port}"),
            "1",
            "t",
            Duration::from_millis(300),
            1,
        );
        let held = std::thread::spawn(move || silent.accept().map(|(s, _)| s));
        let timed_out = client.send(&message);
        drop(held.join());
        match timed_out {
            SendOutcome::Unsure { reason } => {
                assert!(reason.starts_with("timeout"), "{reason}");
                assert!(!reason.contains("Network Error"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn throttling_and_server_errors_are_transient() {
        for (status, body) in [
            (429, String::new()),
            (500, String::new()),
            (503, "oops".into()),
        ] {
            assert!(matches!(
                classify(status, None, &body),
                SendOutcome::Transient { .. }
            ));
        }
        for code in TRANSIENT_CODES {
            assert!(
                matches!(
                    classify(400, None, &meta_error(code)),
                    SendOutcome::Transient { .. }
                ),
                "{code}"
            );
        }
        let r = classify(429, Some(Duration::from_secs(3)), "");
        assert!(
            matches!(r, SendOutcome::Transient { retry_after: Some(d), .. } if d == Duration::from_secs(3))
        );
    }

    #[test]
    fn other_client_errors_fail_at_once_with_metas_code() {
        match classify(400, None, &meta_error(100)) {
            SendOutcome::Rejected { code, reason } => {
                assert_eq!(code, Some(100));
                assert!(reason.contains("100"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            classify(400, None, &meta_error(OUTSIDE_WINDOW)),
            SendOutcome::Rejected {
                code: Some(131047),
                ..
            }
        ));
    }

    #[test]
    fn credential_and_template_faults_are_configuration_faults() {
        assert!(matches!(
            classify(401, None, &meta_error(190)),
            SendOutcome::ConfigFault { code: 190, .. }
        ));
        assert!(matches!(
            classify(404, None, &meta_error(132001)),
            SendOutcome::ConfigFault { code: 132001, .. }
        ));
    }
}
