//! The gateway row (issue 9): Razorpay-signed webhooks against the generic
//! Standard Webhooks route, on one orderlink child at the same concurrency,
//! interleaved (generic, Razorpay, Razorpay, generic) so that neither gets
//! the emptier database or the quieter moment of a shared machine.

use crate::child::{Options, Orderlink};
use crate::fake_graph::FakeGraph;
use crate::http::{self, Load, LoadResult};
use crate::report::{Report, Row};
use crate::{events, load_detail, load_line, note_stopped, say, Plan};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// One kind of request, summed over its chunks.
#[derive(Default)]
struct Sum {
    completed: usize,
    seconds: f64,
    worst_p99_ms: f64,
    worst_p50_ms: f64,
    answers: BTreeMap<String, usize>,
    chunks: Vec<serde_json::Value>,
}

impl Sum {
    fn add(&mut self, r: &LoadResult, cpu: Duration) {
        self.completed += r.completed;
        self.seconds += r.elapsed.as_secs_f64();
        self.worst_p99_ms = self.worst_p99_ms.max(r.pct_ms(99.0));
        self.worst_p50_ms = self.worst_p50_ms.max(r.pct_ms(50.0));
        for (status, n) in &r.statuses {
            *self.answers.entry(format!("HTTP {status}")).or_default() += n;
        }
        for (_, body) in &r.bodies {
            let answer = serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v.get("status")?.as_str().map(str::to_owned))
                .unwrap_or_else(|| "(no status)".into());
            *self.answers.entry(answer).or_default() += 1;
        }
        self.chunks.push(load_detail(r, cpu));
    }

    fn rate(&self) -> f64 {
        self.completed as f64 / self.seconds.max(1e-9)
    }

    fn all_processed(&self, expected: usize) -> bool {
        self.answers.get("HTTP 200").copied() == Some(expected)
            && self.answers.get("processed").copied() == Some(expected)
    }

    fn answers_text(&self) -> String {
        self.answers
            .iter()
            .map(|(k, v)| format!("{k}×{v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

pub fn gateways(plan: &Plan, o: &Options, report: &mut Report, peak_rss: &mut Vec<(u64, String)>) {
    let fake = FakeGraph::start(Duration::ZERO);
    let dir = o.dir.with_file_name("gateways");
    let opts = Options {
        api_base: fake.base_url(),
        dir: &dir,
        ..*o
    };
    let server = Orderlink::start(&opts);
    let c = plan.concurrency;
    let chunk = (plan.webhooks / 4).max(1);
    let (mut generic, mut razorpay) = (Sum::default(), Sum::default());
    for (i, kind) in ["generic", "razorpay", "razorpay", "generic"]
        .iter()
        .enumerate()
    {
        let run = format!("g{i}");
        let requests = match *kind {
            "generic" => events::signed_webhooks(server.addr, &run, chunk),
            _ => events::razorpay_webhooks(server.addr, &run, chunk),
        };
        let cpu0 = server.cpu();
        let r = http::run(&Load {
            addr: server.addr,
            requests: Arc::new(requests),
            total: chunk,
            concurrency: c,
            deadline: plan.phase_deadline,
            keep_bodies: true,
        });
        let cpu = server.cpu().saturating_sub(cpu0);
        load_line(
            &format!("orderlink: {kind} webhooks (chunk {})", i + 1),
            &r,
            cpu,
        );
        match *kind {
            "generic" => generic.add(&r, cpu),
            _ => razorpay.add(&r, cpu),
        }
    }
    let ratio = razorpay.rate() / generic.rate().max(1e-9);
    say(format!(
        "orderlink: Razorpay {:.0}/s vs generic {:.0}/s on the same child = {:.1} %",
        razorpay.rate(),
        generic.rate(),
        100.0 * ratio
    ));
    report.row(
        Row::new(
            &format!("gateway phase: generic webhooks/s, c={c}"),
            generic.rate(),
            "req/s",
        )
        .note(&format!(
            "{} requests in 2 chunks; p50 ≤ {:.2} ms, p99 ≤ {:.2} ms; {}",
            generic.completed,
            generic.worst_p50_ms,
            generic.worst_p99_ms,
            generic.answers_text()
        ))
        .target("all 200 processed", generic.all_processed(2 * chunk)),
    );
    report.row(
        Row::new(
            &format!("Razorpay signed webhooks/s, c={c}"),
            razorpay.rate(),
            "req/s",
        )
        .ceiling(
            generic.rate(),
            "generic webhooks/s, same child, interleaved",
        )
        .note(&format!(
            "{} requests in 2 chunks; p50 ≤ {:.2} ms, p99 ≤ {:.2} ms; {}",
            razorpay.completed,
            razorpay.worst_p50_ms,
            razorpay.worst_p99_ms,
            razorpay.answers_text()
        ))
        .target(
            "≥ 90 % of generic, all 200 processed",
            ratio >= 0.9 && razorpay.all_processed(2 * chunk),
        ),
    );
    report.detail(
        "gateways",
        json!({"generic_chunks": generic.chunks, "razorpay_chunks": razorpay.chunks,
               "generic_per_second": generic.rate(), "razorpay_per_second": razorpay.rate(),
               "ratio": ratio}),
    );
    let dups = fake.duplicates();
    let examples = fake.duplicate_examples();
    let stopped = server.stop();
    fake.stop();
    note_stopped("gateways", &stopped, peak_rss, report);
    report.add_duplicates("gateways", dups, examples);
}
