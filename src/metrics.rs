//! The numbers an operator watches (SPEC §14), kept by the `prometheus`
//! crate and written in its classic text format.
//!
//! Counters and histograms live in memory and are bumped where things
//! happen; the gauges that describe the database are read at scrape time:
//! outbox depth through the `outbox_due` index, billable and paid messages
//! from counts kept as statuses arrive (`outbox::delivery`'s `count_billable`,
//! `count_paid`). Each app `app::build` makes has its own `Metrics`, managed
//! as Rocket state for the routes and handed to its sender, so two apps in
//! one process (the tests) never count into each other's numbers.
//! Label values are bounded sets (sources, outcomes, kinds, Graph error
//! codes): never an order id, a phone number or a token.

use crate::db::Conn;
use crate::whatsapp::SendOutcome;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use std::sync::Mutex;
use std::time::Duration;

/// The `Content-Type` of the classic text format (what `TextEncoder` writes).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// Outbox states a scrape reports. `sent` and `cancelled` only grow with
/// history; counting them would scan the table, and the messages counter
/// already tells how many were sent.
/// `sending`: claimed by a sender and in flight (its lease not run out).
const DEPTH_STATES: [&str; 4] = ["waiting", "queued", "sending", "dead"];

pub struct Metrics {
    registry: Registry,
    scrape: Mutex<()>,
    webhooks: IntCounterVec,
    webhook_seconds: HistogramVec,
    messages: IntCounterVec,
    graph_errors: IntCounterVec,
    send_seconds: HistogramVec,
    invite_clicks: IntCounterVec,
    elders_linked: IntCounter,
    outbox: IntGaugeVec,
    paused: IntGauge,
    billable: IntGaugeVec,
    template_held: IntGaugeVec,
    template_events: IntCounterVec,
    whatsapp_errors: IntCounterVec,
    paid: IntGaugeVec,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

fn histogram(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    // From a fast local commit (a millisecond) to Graph's worst (the HTTP
    // timeout, tens of seconds).
    let buckets = vec![
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ];
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
        .expect("valid metric");
    registry
        .register(Box::new(h.clone()))
        .expect("unique metric");
    h
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// Every family registered, those with known label values at zero.
    pub fn new() -> Metrics {
        let r = Registry::new();
        let paused = IntGauge::new(
            "orderlink_sending_paused",
            "1 while a configuration fault (token, template, account) holds all sending, else 0.",
        )
        .expect("valid metric");
        r.register(Box::new(paused.clone())).expect("unique metric");
        let elders_linked = IntCounter::new(
            "orderlink_elders_linked_total",
            "Senders newly linked to an order by a token in their WhatsApp message.",
        )
        .expect("valid metric");
        r.register(Box::new(elders_linked.clone()))
            .expect("unique metric");
        let m = Metrics {
            webhooks: counter(
                &r,
                "orderlink_webhooks_total",
                "Webhooks received, by source and outcome (an error code when refused).",
                &["source", "outcome"],
            ),
            webhook_seconds: histogram(
                &r,
                "orderlink_webhook_duration_seconds",
                "Time to answer a webhook, from its first byte to the response.",
                &["source"],
            ),
            messages: counter(
                &r,
                "orderlink_messages_total",
                "Send attempts by message kind and outcome (sent, retry, paused, dead).",
                &["kind", "outcome"],
            ),
            graph_errors: counter(
                &r,
                "orderlink_graph_errors_total",
                "Errors the Graph API answered with an error code, by that code.",
                &["code"],
            ),
            send_seconds: histogram(
                &r,
                "orderlink_send_duration_seconds",
                "Duration of one Graph API send call, by message kind.",
                &["kind"],
            ),
            invite_clicks: counter(
                &r,
                "orderlink_invite_clicks_total",
                "Invite links opened, by a person or by a link-preview fetcher.",
                &["visitor"],
            ),
            outbox: gauge(
                &r,
                "orderlink_outbox_messages",
                "Messages in the outbox that are not sent, by state.",
                &["state"],
            ),
            billable: gauge(
                &r,
                "orderlink_billable_messages",
                "Messages Meta reported as billable, by pricing category.",
                &["category"],
            ),
            template_held: gauge(
                &r,
                "orderlink_template_held",
                "1 while Meta's template webhooks hold the confirmation or invite template (paused, disabled or rejected), else 0.",
                &["template"],
            ),
            template_events: counter(
                &r,
                "orderlink_template_events_total",
                "Template status events Meta reported (APPROVED, PAUSED, DISABLED, REJECTED, other).",
                &["event"],
            ),
            whatsapp_errors: counter(
                &r,
                "orderlink_whatsapp_account_errors_total",
                "Errors Meta reported outside any message status (system or account problems), by code.",
                &["code"],
            ),
            paid: gauge(
                &r,
                "orderlink_paid_messages",
                "Messages Meta charges for (pricing type regular; without a type, billable), by pricing category.",
                &["category"],
            ),
            elders_linked,
            paused,
            registry: r,
            scrape: Mutex::new(()),
        };
        // Families with known label values start at zero, so a rate over
        // a counter that has not moved yet is 0, not absent.
        for state in DEPTH_STATES {
            m.outbox.with_label_values(&[state]).set(0);
        }
        for visitor in ["person", "preview"] {
            m.invite_clicks.with_label_values(&[visitor]);
        }
        for template in ["confirmation", "invite"] {
            m.template_held.with_label_values(&[template]).set(0);
        }
        m
    }

    /// One webhook answered: `outcome` is the response's status
    /// (`processed`, `duplicate`…) or the error code it was refused with.
    pub fn webhook(&self, source: &str, outcome: &str) {
        self.webhooks.with_label_values(&[source, outcome]).inc();
    }

    pub fn webhook_latency(&self, source: &str, took: Duration) {
        self.webhook_seconds
            .with_label_values(&[source])
            .observe(took.as_secs_f64());
    }

    /// One send attempt's outcome, as the sender records it.
    pub fn message(&self, kind: &str, outcome: &str) {
        self.messages.with_label_values(&[kind, outcome]).inc();
    }

    /// One Graph API call's result: its latency, and its error code when
    /// Graph answered with one (transport failures and bare HTTP errors
    /// carry none; they show in the messages' `retry`/`dead` outcomes).
    pub fn send_result(&self, kind: &str, outcome: &SendOutcome, took: Duration) {
        self.send_seconds
            .with_label_values(&[kind])
            .observe(took.as_secs_f64());
        let code = match outcome {
            SendOutcome::Accepted { .. } | SendOutcome::Unsure { .. } => None,
            SendOutcome::Transient { code, .. } | SendOutcome::Rejected { code, .. } => *code,
            SendOutcome::ConfigFault { code, .. } => Some(*code),
        };
        if let Some(code) = code {
            self.graph_errors
                .with_label_values(&[&code.to_string()])
                .inc();
        }
    }

    pub fn invite_click(&self, preview: bool) {
        let visitor = if preview { "preview" } else { "person" };
        self.invite_clicks.with_label_values(&[visitor]).inc();
    }

    /// One template status event from Meta; the label is a bounded set.
    pub fn template_event(&self, event: &str) {
        let event = match event {
            "APPROVED" | "PAUSED" | "DISABLED" | "REJECTED" | "FLAGGED" | "REINSTATED" => event,
            _ => "other",
        };
        self.template_events.with_label_values(&[event]).inc();
    }

    /// One value-level error from Meta (Graph codes are a bounded set).
    pub fn whatsapp_error(&self, code: Option<i64>) {
        let code = code.map_or("none".into(), |c| c.to_string());
        self.whatsapp_errors.with_label_values(&[&code]).inc();
    }

    /// Whether each configured template is held (read at scrape time).
    pub fn templates_held(&self, held: &[&str]) {
        for template in ["confirmation", "invite"] {
            self.template_held
                .with_label_values(&[template])
                .set(i64::from(held.contains(&template)));
        }
    }

    pub fn elder_linked(&self) {
        self.elders_linked.inc();
    }

    /// Reads the gauges from the database and writes every family in the
    /// text format (the inner error: encoding failed). `conn` is a read
    /// connection; both queries use indexes (`outbox_due`, `billable_counts`' key).
    pub fn render(
        &self,
        conn: &Conn,
        paused: bool,
    ) -> Result<Result<String, String>, crate::db::DbError> {
        // Two scrapes at once must not interleave rebuilding the gauges.
        let _one_at_a_time = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
        self.paused.set(i64::from(paused));
        let mut stmt = conn.prepare_cached(
            "SELECT status, COUNT(*) FROM outbox WHERE status IN ($1, $2, $3, $4) GROUP BY status",
        )?;
        let rows = stmt.query_map(DEPTH_STATES, |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })?;
        let mut depth = [0i64; DEPTH_STATES.len()];
        for row in rows {
            let (state, n) = row?;
            if let Some(i) = DEPTH_STATES.iter().position(|s| *s == state) {
                depth[i] = n;
            }
        }
        for (state, n) in DEPTH_STATES.iter().zip(depth) {
            self.outbox.with_label_values(&[state]).set(n);
        }
        // Kept by `outbox::delivery` as statuses arrive: a few rows at any
        // size, a category's count the sum of its slots (V17).
        let mut stmt = conn.prepare_cached(
            "SELECT category, CAST(SUM(messages) AS BIGINT) FROM billable_counts
             GROUP BY category HAVING SUM(messages) > 0",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        let rows = rows.collect::<Result<Vec<_>, _>>()?;
        // Rebuilt at each scrape from what the database holds now.
        self.billable.reset();
        for (category, n) in rows {
            self.billable
                .with_label_values(&[&bounded_category(&category)])
                .add(n);
        }
        // Kept by `count_paid` the same way.
        let mut stmt = conn.prepare_cached(
            "SELECT category, CAST(SUM(messages) AS BIGINT) FROM paid_counts
             GROUP BY category HAVING SUM(messages) > 0",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        let rows = rows.collect::<Result<Vec<_>, _>>()?;
        self.paid.reset();
        for (category, n) in rows {
            self.paid
                .with_label_values(&[&bounded_category(&category)])
                .add(n);
        }
        let mut out = Vec::new();
        Ok(TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .map_err(|e| e.to_string())
            .and_then(|()| String::from_utf8(out).map_err(|e| e.to_string())))
    }
}

/// Meta's pricing categories are a short list of lowercase words; anything
/// else (a value this build has not seen) is folded into `other` so a
/// payload cannot mint unbounded series.
fn bounded_category(category: &str) -> String {
    if category.is_empty() {
        return "unknown".to_owned();
    }
    let ok = category.len() <= 32
        && category
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'_');
    if ok {
        category.to_owned()
    } else {
        "other".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_are_bounded() {
        assert_eq!(bounded_category("utility"), "utility");
        assert_eq!(
            bounded_category("authentication_international"),
            "authentication_international"
        );
        assert_eq!(bounded_category("ORD-1042"), "other");
        assert_eq!(bounded_category("919876543210"), "other");
        assert_eq!(bounded_category(""), "unknown");
    }
}
