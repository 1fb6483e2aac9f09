//! PostgreSQL rows (SPEC §13, issue 12), with `--postgres URL` (or
//! ORDERLINK_TEST_POSTGRES_URL): a raw PostgreSQL ceiling of webhook-shaped
//! transactions, then the release binary on PostgreSQL taking webhooks as
//! one instance and as two sharing the database, two instances delivering
//! one outbox, and the wake latency across instances (a message queued on
//! A, first sent by B). Each phase gets a database of its own on that
//! server (the URL's user needs CREATEDB), dropped at the end.

use crate::child::{postgres_cpu, MachineCpu, Options, Orderlink, Stopped};
use crate::events;
use crate::fake_graph::FakeGraph;
use crate::http::{self, Load, LoadResult};
use crate::report::{Report, Row};
use orderlink::clock::now_ms;
use orderlink::db::Conn;
use orderlink::domain::PaymentEvent;
use orderlink::payments::{self, Context};
use serde_json::json;
use std::io::Write;
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

pub struct Plan {
    pub quick: bool,
    pub concurrency: usize,
    pub webhooks: usize,
    pub delivery_orders: usize,
    pub phase_deadline: Duration,
    pub delivery_deadline: Duration,
}

const TOKEN_TTL_MS: i64 = 90 * 24 * 3600 * 1000;

/// The server's URL from `--postgres URL` or ORDERLINK_TEST_POSTGRES_URL.
pub fn url_from(args: &[String]) -> Option<String> {
    let flag = args
        .iter()
        .position(|a| a == "--postgres")
        .and_then(|i| args.get(i + 1))
        .cloned();
    flag.or_else(|| std::env::var("ORDERLINK_TEST_POSTGRES_URL").ok())
        .filter(|u| !u.trim().is_empty())
}

/// A database of its own on the server, dropped when done.
struct Database {
    admin: String,
    name: String,
    url: String,
}

impl Database {
    fn create(admin: &str, phase: &str) -> Database {
        Database::create_from(admin, phase, None)
    }

    /// A copy of `history` (PostgreSQL copies a template database file by
    /// file, statistics included): seconds saved per phase.
    fn copy_of(admin: &str, phase: &str, history: &Database) -> Database {
        Database::create_from(admin, phase, Some(history))
    }

    fn create_from(admin: &str, phase: &str, template: Option<&Database>) -> Database {
        let name = format!("orderlink_bench_{phase}_{}", std::process::id());
        let mut client = orderlink::pg::connect(admin).expect("connect to PostgreSQL");
        // Two calls: a multi-statement string is one implicit transaction,
        // which neither statement may run in.
        client
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .expect("DROP DATABASE");
        let from = template.map_or(String::new(), |t| format!(" TEMPLATE {}", t.name));
        client
            .batch_execute(&format!("CREATE DATABASE {name}{from}"))
            .expect("CREATE DATABASE (the bench's PostgreSQL user needs CREATEDB)");
        let (base, query) = match admin.split_once('?') {
            Some((b, q)) => (b, format!("?{q}")),
            None => (admin, String::new()),
        };
        let host_end = base.find("://").map_or(0, |i| i + 3);
        let host = match base[host_end..].find('/') {
            Some(slash) => &base[..host_end + slash],
            None => base,
        };
        let url = format!("{host}/{name}{query}");
        if template.is_none() {
            let mut db = orderlink::pg::connect(&url).expect("connect to the bench database");
            orderlink::pg::migrate(&mut db).expect("migrate the bench database");
        }
        Database {
            admin: admin.to_owned(),
            name,
            url,
        }
    }
}

/// Orders a phase's database holds before its load: see [`Database::with_history`].
/// Written once per run, then copied for each phase.
const HISTORY_ORDERS: usize = 5_000;

impl Database {
    /// A database as a merchant's is once it has run a while: `orders` paid
    /// orders written through the product's unit of work, their messages
    /// sent, and the tables analyzed, as autovacuum does within a minute of
    /// such growth (and `orderlink copy-to` at its end).
    ///
    /// Without it each phase measured PostgreSQL's first plans. A prepared
    /// statement's generic plan is made after its fifth run, here on nearly
    /// empty tables, and kept until an ANALYZE; planned on an empty outbox,
    /// the webhook's "has this order a confirmation" look-up took the
    /// funnel index (`kind, created_at, …`) over the unique one, and read
    /// 844 to 6,208 pages per webhook as the phase filled the table
    /// (auto_explain and pg_stat_statements, 2026-12-07). Its phases last
    /// seconds, less than autovacuum's one-minute nap.
    fn with_history(admin: &str, phase: &str, orders: usize) -> Database {
        let db = Database::create(admin, phase);
        let conn = orderlink::db::pool::connect(&db.url).expect("connect");
        let mut done = 0;
        while done < orders {
            let chunk = (orders - done).min(1_000);
            conn.execute_batch("BEGIN").expect("begin");
            let ctx = Context {
                now_ms: now_ms(),
                token_ttl_ms: TOKEN_TTL_MS,
                link_message: true,
            };
            for j in done..done + chunk {
                let key = format!("history_{phase}_{j:07}");
                let body = events::payment_body(&key, &format!("HIST-{phase}-{j:07}"));
                let event = PaymentEvent::parse(body.as_bytes(), None).expect("event");
                payments::record(&conn, &key, &event, &ctx).expect("record");
            }
            // Sent long ago, as history is: nothing for the senders to do.
            conn.execute_batch(
                "UPDATE outbox SET status = 'sent', attempts = 1, sent_at = created_at,
                        graph_message_id = 'wamid.history.' || id, claimed_by = NULL
                 WHERE status <> 'sent'",
            )
            .expect("history sent");
            conn.execute_batch("COMMIT").expect("commit");
            // After the first chunk too, so this loop's own statements are
            // not planned on empty tables.
            conn.execute_batch("ANALYZE").expect("analyze");
            done += chunk;
        }
        db
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        if let Ok(mut c) = orderlink::pg::connect(&self.admin) {
            let _ = c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

fn say(line: impl AsRef<str>) {
    eprintln!("bench: {}", line.as_ref());
}

/// What the raw loop did.
struct Raw {
    transactions: usize,
    elapsed: Duration,
    latencies_us: Vec<u32>,
}

impl Raw {
    fn rate(&self) -> f64 {
        self.transactions as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
    fn p99_ms(&self) -> f64 {
        http::percentile_ms(&self.latencies_us, 99.0)
    }
}

/// `n` transactions from `threads` clients, each its own connection (the
/// server's session settings: `synchronous_commit` on), each transaction
/// exactly a paid order's unit of work (`payments::record`: webhook_events,
/// the order upsert, whatsapp_tokens, two outbox rows) and one commit.
fn raw(url: &str, phase: &str, threads: usize, n: usize, deadline: Duration) -> Raw {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start_line = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (url, phase, next, start_line) = (
                url.to_owned(),
                phase.to_owned(),
                next.clone(),
                start_line.clone(),
            );
            std::thread::spawn(move || {
                let conn: Conn = orderlink::db::pool::connect(&url).expect("connect");
                let mut latencies = Vec::new();
                start_line.wait();
                let start = Instant::now();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= n || start.elapsed() > deadline {
                        break;
                    }
                    let key = format!("raw_{phase}_{t}_{i}");
                    let body = events::payment_body(&key, &format!("RAW-{phase}-{i:07}"));
                    let event = PaymentEvent::parse(body.as_bytes(), None).expect("event");
                    let began = Instant::now();
                    conn.execute_batch("BEGIN").expect("begin");
                    let ctx = Context {
                        now_ms: now_ms(),
                        token_ttl_ms: TOKEN_TTL_MS,
                        link_message: true,
                    };
                    payments::record(&conn, &key, &event, &ctx).expect("record");
                    conn.execute_batch("COMMIT").expect("commit");
                    latencies.push(began.elapsed().as_micros().min(u32::MAX as u128) as u32);
                }
                latencies
            })
        })
        .collect();
    start_line.wait();
    let start = Instant::now();
    let mut latencies_us: Vec<u32> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("raw client"))
        .collect();
    let elapsed = start.elapsed();
    latencies_us.sort_unstable();
    Raw {
        transactions: latencies_us.len(),
        elapsed,
        latencies_us,
    }
}

/// Drives `instances` with `c` clients split between them, each request to
/// its own instance; one result over all.
fn webhooks(
    instances: &[&Orderlink],
    run: &str,
    total: usize,
    c: usize,
    deadline: Duration,
) -> LoadResult {
    let each = total / instances.len();
    let requests = instances
        .iter()
        .enumerate()
        .map(|(i, o)| events::signed_webhooks(o.addr, &format!("{run}{i}"), each))
        .collect();
    split_load(instances, requests, c, deadline)
}

/// Each instance takes its own requests, the `c` clients split between
/// them; one result over all.
fn split_load(
    instances: &[&Orderlink],
    requests: Vec<Vec<Vec<u8>>>,
    c: usize,
    deadline: Duration,
) -> LoadResult {
    let results: Vec<LoadResult> = std::thread::scope(|s| {
        let handles: Vec<_> = instances
            .iter()
            .zip(requests)
            .map(|(o, requests)| {
                let total = requests.len();
                let load = Load {
                    addr: o.addr,
                    requests: Arc::new(requests),
                    total,
                    concurrency: (c / instances.len()).max(1),
                    deadline,
                    keep_bodies: true,
                };
                s.spawn(move || http::run(&load))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("load"))
            .collect()
    });
    let mut all = LoadResult::default();
    for r in results {
        all.completed += r.completed;
        all.errors += r.errors;
        all.elapsed = all.elapsed.max(r.elapsed);
        all.latencies_us.extend(r.latencies_us);
        for (k, v) in r.statuses {
            *all.statuses.entry(k).or_default() += v;
        }
        all.bodies.extend(r.bodies);
        all.client_cpu += r.client_cpu;
        all.hit_deadline |= r.hit_deadline;
        all.first_error = all.first_error.or(r.first_error);
    }
    all.latencies_us.sort_unstable();
    all
}

fn processed(r: &LoadResult) -> usize {
    r.bodies
        .iter()
        .filter(|(_, b)| {
            serde_json::from_slice::<serde_json::Value>(b)
                .ok()
                .and_then(|v| v.get("status")?.as_str().map(|s| s == "processed"))
                .unwrap_or(false)
        })
        .count()
}

fn start(o: &Options, url: &str, dir: &str, api_base: &str, workers: usize) -> Orderlink {
    start_with(o, url, dir, api_base, workers, &[])
}

fn start_with(
    o: &Options,
    url: &str,
    dir: &str,
    api_base: &str,
    workers: usize,
    more: &[(&str, &str)],
) -> Orderlink {
    let dir = o.dir.join(dir);
    let mut env = vec![("DATABASE_URL", url)];
    env.extend_from_slice(more);
    Orderlink::start_with(
        &Options {
            dir: &dir,
            api_base: api_base.to_owned(),
            send_workers: workers,
            ..*o
        },
        &env,
    )
}

/// What a webhook phase left of the machine: PostgreSQL, the instances
/// and the bench share its cores here, so a second instance can only add
/// what the first left idle.
struct Shared {
    machine: MachineCpu,
    postgres: Duration,
}

impl Shared {
    fn start() -> Shared {
        Shared {
            machine: MachineCpu::now(),
            postgres: postgres_cpu(),
        }
    }

    /// The machine's busy share over the phase, and PostgreSQL's and the
    /// instances' CPU per webhook.
    fn note(&self, instances: Duration, webhooks: usize) -> String {
        let per = |d: Duration| d.as_secs_f64() * 1000.0 / webhooks.max(1) as f64;
        format!(
            "all {} cores {:.0} % busy; CPU per webhook: PostgreSQL {:.3} ms, orderlink {:.3} ms",
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            MachineCpu::now().busy_since(&self.machine) * 100.0,
            per(postgres_cpu().saturating_sub(self.postgres)),
            per(instances)
        )
    }
}

/// The PostgreSQL rows of the table; the peak RSS of each orderlink child.
pub fn measure(admin: &str, plan: &Plan, o: &Options, report: &mut Report) -> Vec<(u64, String)> {
    let c = plan.concurrency;
    say(format!(
        "PostgreSQL rows against {}",
        orderlink::pg::redact(admin)
    ));

    // 1. Raw ceilings: one client committing one webhook per transaction,
    // then c clients.
    let history = Database::with_history(admin, "history", HISTORY_ORDERS);
    let n1 = if plan.quick { 500 } else { 3_000 };
    let db = Database::copy_of(admin, "raw", &history);
    let one = raw(&db.url, "one", 1, n1, plan.phase_deadline);
    let many = raw(&db.url, "many", c, plan.webhooks, plan.phase_deadline);
    drop(db);
    let clients = format!("{c} clients");
    for (name, r) in [("1 client", &one), (clients.as_str(), &many)] {
        say(format!(
            "ceiling: raw PostgreSQL, {name}: {} tx in {:.2} s = {:.0} tx/s, p99 {:.2} ms",
            r.transactions,
            r.elapsed.as_secs_f64(),
            r.rate(),
            r.p99_ms()
        ));
        report.row(
            Row::new(
                &format!("ceiling: raw PostgreSQL, one webhook per tx, {name}"),
                r.rate(),
                "tx/s",
            )
            .note(&format!(
                "{} tx, p99 {:.2} ms, synchronous_commit=on",
                r.transactions,
                r.p99_ms()
            )),
        );
    }

    // 2. One instance taking webhooks.
    let fake = FakeGraph::start(Duration::ZERO);
    let db = Database::copy_of(admin, "one", &history);
    let server = start(o, &db.url, "pg-one", &fake.base_url(), 4);
    let cpu0 = server.cpu();
    let shared = Shared::start();
    let r1 = webhooks(&[&server], "pg1_", plan.webhooks, c, plan.phase_deadline);
    let cpu1 = server.cpu().saturating_sub(cpu0);
    let shared1 = shared.note(cpu1, r1.completed);
    let ok1 = processed(&r1);
    say(format!("one instance: {shared1}"));
    say(format!(
        "orderlink on PostgreSQL, one instance: {} webhooks in {:.2} s = {:.0}/s, p50 {:.2} ms, p99 {:.2} ms, {ok1} processed, server CPU {:.3} ms/req",
        r1.completed,
        r1.elapsed.as_secs_f64(),
        r1.rate(),
        r1.pct_ms(50.0),
        r1.pct_ms(99.0),
        cpu1.as_secs_f64() * 1000.0 / r1.completed.max(1) as f64
    ));
    report.row(
        Row::new(
            &format!("PostgreSQL: webhooks/s, one instance, c={c}"),
            r1.rate(),
            "req/s",
        )
        .latency(&r1)
        .ceiling(one.rate(), "raw PostgreSQL tx/s, 1 client")
        .note(&format!("{ok1}/{} processed; {shared1}", plan.webhooks))
        .target("≥ 1.5× ceiling", r1.rate() >= 1.5 * one.rate()),
    );
    report.row(
        Row::new(
            &format!("PostgreSQL: webhooks/s, one instance, c={c}"),
            r1.rate(),
            "req/s",
        )
        .ceiling(many.rate(), &format!("raw PostgreSQL tx/s, {c} clients")),
    );
    report.row(
        Row::new(
            "PostgreSQL: webhook p99, one instance",
            r1.pct_ms(99.0),
            "ms",
        )
        .target("≤ 20 ms", r1.pct_ms(99.0) <= 20.0),
    );
    let stopped1 = server.stop();
    drop(db);

    // 2b. The same without the sender's writes beside the webhooks' (sends
    // held to one a second): how much of the database the webhook path
    // alone gets.
    let db = Database::copy_of(admin, "quiet", &history);
    let server = start_with(
        o,
        &db.url,
        "pg-quiet",
        &fake.base_url(),
        4,
        &[("WHATSAPP_MAX_MPS", "1")],
    );
    let rq = webhooks(&[&server], "pgq_", plan.webhooks, c, plan.phase_deadline);
    let okq = processed(&rq);
    say(format!(
        "orderlink on PostgreSQL, one instance, sending held to 1/s: {} webhooks in {:.2} s = {:.0}/s, p50 {:.2} ms, p99 {:.2} ms, {okq} processed",
        rq.completed,
        rq.elapsed.as_secs_f64(),
        rq.rate(),
        rq.pct_ms(50.0),
        rq.pct_ms(99.0)
    ));
    report.row(
        Row::new(
            &format!("PostgreSQL: webhooks/s, one instance, c={c}, sending held to 1 msg/s"),
            rq.rate(),
            "req/s",
        )
        .latency(&rq)
        .ceiling(one.rate(), "raw PostgreSQL tx/s, 1 client")
        .note(&format!("{okq}/{} processed", plan.webhooks)),
    );
    let stoppedq = server.stop();
    drop(db);

    // 3. Two instances sharing one database, the clients split between them.
    let db = Database::copy_of(admin, "two", &history);
    let a = start(o, &db.url, "pg-two-a", &fake.base_url(), 4);
    let b = start(o, &db.url, "pg-two-b", &fake.base_url(), 4);
    let cpu0 = a.cpu() + b.cpu();
    let shared = Shared::start();
    let r2 = webhooks(&[&a, &b], "pg2_", plan.webhooks, c, plan.phase_deadline);
    let shared2 = shared.note((a.cpu() + b.cpu()).saturating_sub(cpu0), r2.completed);
    let ok2 = processed(&r2);
    say(format!("two instances: {shared2}"));
    say(format!(
        "orderlink on PostgreSQL, two instances: {} webhooks in {:.2} s = {:.0}/s, p50 {:.2} ms, p99 {:.2} ms, {ok2} processed",
        r2.completed,
        r2.elapsed.as_secs_f64(),
        r2.rate(),
        r2.pct_ms(50.0),
        r2.pct_ms(99.0)
    ));
    report.row(
        Row::new(
            &format!("PostgreSQL: webhooks/s, two instances, c={c} split"),
            r2.rate(),
            "req/s",
        )
        .latency(&r2)
        .ceiling(r1.rate(), "one instance req/s")
        .note(&format!("{ok2}/{} processed; {shared2}", plan.webhooks)),
    );
    let (sa, sb) = (a.stop(), b.stop());
    drop(db);
    fake.stop();

    // 4. Two instances delivering one outbox: orders written through the
    // unit of work before they start, both sending to a fake at 0 ms.
    let orders = plan.delivery_orders;
    let messages = 2 * orders as u64;
    let db = Database::create(admin, "deliver");
    let conn = orderlink::db::pool::connect(&db.url).expect("connect");
    let fill = Instant::now();
    for chunk in (0..orders).collect::<Vec<_>>().chunks(1_000) {
        conn.execute_batch("BEGIN").expect("begin");
        let ctx = Context {
            now_ms: now_ms(),
            token_ttl_ms: TOKEN_TTL_MS,
            link_message: true,
        };
        for j in chunk {
            let key = format!("pre_pg_{j:07}");
            let body = events::payment_body(&key, &format!("PRE-pg-{j:07}"));
            let event = PaymentEvent::parse(body.as_bytes(), None).expect("event");
            payments::record(&conn, &key, &event, &ctx).expect("record");
        }
        conn.execute_batch("COMMIT").expect("commit");
    }
    drop(conn);
    say(format!(
        "populated {orders} orders in PostgreSQL in {:.1} s",
        fill.elapsed().as_secs_f64()
    ));
    let fake = FakeGraph::start(Duration::ZERO);
    let a = start(o, &db.url, "pg-deliver-a", &fake.base_url(), 4);
    let b = start(o, &db.url, "pg-deliver-b", &fake.base_url(), 4);
    let since = a.spawned;
    let done = loop {
        if fake.unique() >= messages {
            break Ok(since.elapsed());
        }
        if since.elapsed() > plan.delivery_deadline {
            break Err(since.elapsed());
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let elapsed = done.unwrap_or_else(|e| e);
    let (unique, dups) = (fake.unique(), fake.duplicates());
    let rate = unique.min(messages) as f64 / elapsed.as_secs_f64().max(1e-9);
    say(format!(
        "PostgreSQL delivery, two instances × 4 workers, fake 0 ms: {unique} of {messages} in {:.2} s = {rate:.0} msg/s; duplicates {dups}{}",
        elapsed.as_secs_f64(),
        if done.is_err() { "; DEADLINE HIT" } else { "" }
    ));
    report.row(
        Row::new(
            "PostgreSQL: delivered msg/s, two instances × SEND_WORKERS=4, fake 0 ms",
            rate,
            "msg/s",
        )
        .note(&format!(
            "{unique}/{messages} distinct msgs in {:.2} s from the first spawn, {dups} duplicates{}",
            elapsed.as_secs_f64(),
            if done.is_err() { ", DEADLINE HIT" } else { "" }
        ))
        .target("0 duplicates", dups == 0 && done.is_ok()),
    );
    report.add_duplicates(
        "PostgreSQL delivery, two instances",
        dups,
        fake.duplicate_examples(),
    );

    // 4b. Meta's statuses for what was sent: one priced `delivered` per
    // message, split between the two instances (SPEC §9's status path:
    // the proof check, the pricing, its counts and the delivery state).
    let sent = sent_messages(&db.url);
    let halves: Vec<&[events::Sent]> = sent.chunks(sent.len().div_ceil(2).max(1)).collect();
    let requests = [&a, &b]
        .iter()
        .zip(&halves)
        .map(|(o, half)| events::signed_statuses(o.addr, half))
        .collect();
    let rs = split_load(&[&a, &b], requests, c, plan.phase_deadline);
    let applied = delivered_count(&db.url);
    say(format!(
        "PostgreSQL statuses, two instances: {} webhooks in {:.2} s = {:.0}/s, p50 {:.2} ms, p99 {:.2} ms, {applied} of {} messages delivered",
        rs.completed,
        rs.elapsed.as_secs_f64(),
        rs.rate(),
        rs.pct_ms(50.0),
        rs.pct_ms(99.0),
        sent.len()
    ));
    report.row(
        Row::new(
            &format!("PostgreSQL: status webhooks/s, two instances, c={c} split"),
            rs.rate(),
            "req/s",
        )
        .latency(&rs)
        .note(&format!(
            "one priced `delivered` per sent message; HTTP [{}]; {applied}/{} recorded delivered",
            rs.statuses_text(),
            sent.len()
        )),
    );
    let (da, dbb) = (a.stop(), b.stop());
    fake.stop();
    drop(db);

    // 5. Wake latency across instances.
    let (wa, wb, wake) = wake_latency(admin, plan, o, report);

    report.detail(
        "postgres",
        json!({
            "raw_one_client": {"transactions": one.transactions, "seconds": one.elapsed.as_secs_f64(), "per_second": one.rate(), "p99_ms": one.p99_ms()},
            "raw_clients": {"clients": c, "transactions": many.transactions, "seconds": many.elapsed.as_secs_f64(), "per_second": many.rate(), "p99_ms": many.p99_ms()},
            "one_instance": {"completed": r1.completed, "processed": ok1, "per_second": r1.rate(), "p50_ms": r1.pct_ms(50.0), "p99_ms": r1.pct_ms(99.0), "server_cpu_seconds": cpu1.as_secs_f64()},
            "one_instance_sending_held": {"completed": rq.completed, "processed": okq, "per_second": rq.rate(), "p50_ms": rq.pct_ms(50.0), "p99_ms": rq.pct_ms(99.0)},
            "two_instances": {"completed": r2.completed, "processed": ok2, "per_second": r2.rate(), "p50_ms": r2.pct_ms(50.0), "p99_ms": r2.pct_ms(99.0)},
            "statuses_two_instances": {"completed": rs.completed, "messages": sent.len(), "delivered": applied, "per_second": rs.rate(), "p50_ms": rs.pct_ms(50.0), "p99_ms": rs.pct_ms(99.0)},
            "delivery_two_instances": {"orders": orders, "messages": messages, "distinct": unique, "duplicates": dups, "seconds": elapsed.as_secs_f64(), "per_second": rate, "hit_deadline": done.is_err()},
            "wake_latency": wake,
            "children": [&stopped1.exit, &sa.exit, &sb.exit, &da.exit, &dbb.exit, &wa.exit, &wb.exit],
        }),
    );
    [
        (stopped1, "PostgreSQL webhooks, one instance"),
        (stoppedq, "PostgreSQL webhooks, one instance, sending held"),
        (sa, "PostgreSQL webhooks, two instances (a)"),
        (sb, "PostgreSQL webhooks, two instances (b)"),
        (da, "PostgreSQL delivery, two instances (a)"),
        (dbb, "PostgreSQL delivery, two instances (b)"),
        (wa, "PostgreSQL wake latency (a, takes the webhooks)"),
        (wb, "PostgreSQL wake latency (b, sends)"),
    ]
    .into_iter()
    .filter_map(|(s, name)| s.peak_rss_kib.map(|k| (k, name.to_owned())))
    .collect()
}

/// What the delivery phase sent, as Meta's statuses will name it.
fn sent_messages(url: &str) -> Vec<events::Sent> {
    let conn = orderlink::db::pool::connect(url).expect("connect");
    let mut stmt = conn
        .prepare(
            "SELECT graph_message_id, order_id, recipient FROM outbox
             WHERE graph_message_id IS NOT NULL ORDER BY id",
        )
        .expect("prepare");
    let rows = stmt
        .query_map([], |r| {
            Ok(events::Sent {
                message_id: r.get(0)?,
                order_id: r.get(1)?,
                recipient: r.get(2)?,
            })
        })
        .expect("sent messages");
    rows.collect::<Result<_, _>>().expect("sent messages")
}

fn delivered_count(url: &str) -> i64 {
    let conn = orderlink::db::pool::connect(url).expect("connect");
    conn.query_row(
        "SELECT COUNT(*) FROM outbox WHERE delivery_status = 'delivered'",
        [],
        |r| r.get(0),
    )
    .expect("count delivered")
}

/// A roster row (`sender_instances`) that no instance owns: its id sorts
/// before every instance's (32 hex digits) and its `seen_at` is a day ahead,
/// so every instance counts it live for the whole phase. It never claims.
const GHOST_INSTANCE: &str = "0";

/// Nearest-rank percentile of signed microseconds, in milliseconds.
fn pct_ms_signed(sorted_us: &[i64], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted_us.len() as f64).ceil() as usize;
    sorted_us[rank.clamp(1, sorted_us.len()) - 1] as f64 / 1000.0
}

/// Signed microseconds from `from` to `to`.
fn signed_us(from: Instant, to: Instant) -> i64 {
    match to.checked_duration_since(from) {
        Some(d) => d.as_micros() as i64,
        None => -(from.duration_since(to).as_micros() as i64),
    }
}

/// Wake latency (SPEC §13, issue 19): two instances on one database, each
/// with a fake Graph API of its own. A takes the webhooks and never sends;
/// B sends. Webhooks go to A one at a time, 50–100 ms apart (each awaited
/// at B's fake first, so B's senders are idle, asleep, when the next
/// arrives); per webhook, the time from A's 200 (and from sending it) to
/// the first request for that order at B's fake.
///
/// How A is kept from sending without changing it: `WHATSAPP_MAX_MPS=1`,
/// and a live roster row sorted before every instance ([`GHOST_INSTANCE`]).
/// With more live instances than its cap, an instance's share is one if
/// its id is among the first `cap` sorted and none otherwise
/// (`pacer::share`), and a sender with no share claims nothing. B keeps the
/// bench's cap (1,000,000: a share of a third of it). A's fake counts what A
/// sent anyway; it must stay at 0.
fn wake_latency(
    admin: &str,
    plan: &Plan,
    o: &Options,
    report: &mut Report,
) -> (Stopped, Stopped, serde_json::Value) {
    let (warm, n) = (5usize, if plan.quick { 50 } else { 200 });
    let phase_deadline = Duration::from_secs(60);
    let wait_each = Duration::from_secs(2);
    let db = Database::create(admin, "wake");
    let conn = orderlink::db::pool::connect(&db.url).expect("connect");
    conn.execute_batch(&format!(
        "INSERT INTO sender_instances (id, seen_at, started_at) VALUES ('{GHOST_INSTANCE}', {}, {})",
        now_ms() + 24 * 3600 * 1000,
        now_ms()
    ))
    .expect("the roster row no instance owns");
    drop(conn);
    let fake_a = FakeGraph::start_timed(Duration::ZERO);
    let fake_b = FakeGraph::start_timed(Duration::ZERO);
    let b = start(o, &db.url, "pg-wake-b", &fake_b.base_url(), 4);
    let a = start_with(
        o,
        &db.url,
        "pg-wake-a",
        &fake_a.base_url(),
        1,
        &[("WHATSAPP_MAX_MPS", "1")],
    );
    let run = "wake";
    let requests = events::signed_webhooks(a.addr, run, warm + n);
    let mut stream = TcpStream::connect(a.addr).expect("connect to instance A");
    stream.set_nodelay(true).expect("nodelay");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    let mut reader = http::Reader::default();
    let (mut from_ok, mut from_sent, mut answers) = (Vec::new(), Vec::new(), Vec::new());
    let (mut missed, mut refused, mut warm_missed) = (0usize, 0usize, 0usize);
    let mut first_error: Option<String> = None;
    let began = Instant::now();
    for (i, request) in requests.iter().enumerate() {
        if began.elapsed() > phase_deadline {
            break;
        }
        let measured = i >= warm;
        if measured {
            // 50–100 ms, spread so the gaps do not keep step with the
            // senders' 500 ms poll or the roster's 250 ms beat.
            std::thread::sleep(Duration::from_millis(50 + (i as u64 * 37) % 51));
        }
        let sent = Instant::now();
        let answer = stream
            .write_all(request)
            .and_then(|_| reader.read(&mut stream))
            .map_err(|e| e.to_string())
            .and_then(|m| m.ok_or_else(|| "connection closed".to_owned()));
        let ok = Instant::now();
        let processed = match &answer {
            Ok(m) => {
                m.status == 200
                    && serde_json::from_slice::<serde_json::Value>(&m.body)
                        .ok()
                        .and_then(|v| v.get("status")?.as_str().map(|s| s == "processed"))
                        .unwrap_or(false)
            }
            Err(_) => false,
        };
        if !processed {
            refused += usize::from(measured);
            first_error.get_or_insert_with(|| match &answer {
                Ok(m) => format!("{} {}", m.status, String::from_utf8_lossy(&m.body)),
                Err(e) => e.clone(),
            });
            if answer.is_err() {
                break;
            }
            continue;
        }
        // The first webhooks also wait for B to be allowed to send (a
        // newcomer on the roster waits a second) and warm its connections.
        let order = format!("ORD-{run}-{i:06}");
        let wait = if measured {
            wait_each
        } else {
            Duration::from_secs(15)
        };
        match fake_b.wait_for(&order, wait) {
            Some(at) if measured => {
                from_ok.push(signed_us(ok, at));
                from_sent.push(signed_us(sent, at));
                answers.push(signed_us(sent, ok));
            }
            Some(_) => {}
            None if measured => missed += 1,
            None => warm_missed += 1,
        }
    }
    let elapsed = began.elapsed();
    drop(stream);
    from_ok.sort_unstable();
    from_sent.sort_unstable();
    answers.sort_unstable();
    let got = from_ok.len();
    let sent_by_a = fake_a.messages();
    let dups = fake_a.duplicates() + fake_b.duplicates();
    let (p50, p99, max) = (
        pct_ms_signed(&from_ok, 50.0),
        pct_ms_signed(&from_ok, 99.0),
        from_ok.last().map_or(0.0, |&u| u as f64 / 1000.0),
    );
    let (s50, s99, smax) = (
        pct_ms_signed(&from_sent, 50.0),
        pct_ms_signed(&from_sent, 99.0),
        from_sent.last().map_or(0.0, |&u| u as f64 / 1000.0),
    );
    let (r50, r99) = (pct_ms_signed(&answers, 50.0), pct_ms_signed(&answers, 99.0));
    let min = from_ok.first().map_or(0.0, |&u| u as f64 / 1000.0);
    say(format!(
        "PostgreSQL wake latency, queued on A, first request at B's fake: {got} of {n} webhooks in {:.1} s; from A's 200 min {min:.2} ms, p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.1} ms; A's answer p50 {r50:.2} ms, p99 {r99:.2} ms; from sending p50 {s50:.2} ms, p99 {s99:.2} ms, max {smax:.1} ms; {missed} not at B within {wait_each:?}, {refused} not processed{}, {warm_missed} warm-ups missed; A's fake got {sent_by_a}, B's {}; duplicates {dups}",
        elapsed.as_secs_f64(),
        first_error.as_deref().map(|e| format!(" (first: {e})")).unwrap_or_default(),
        fake_b.messages(),
    ));
    let complete = got == n && missed == 0 && refused == 0;
    report.row(
        Row::new(
            "PostgreSQL: wake latency p99, queued on A → first request at B's fake",
            p99,
            "ms",
        )
        .note(&format!(
            "from A's 200 (a lower bound: queued at A's commit, before its answer): p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.1} ms, the target judged on this"
        ))
        .note(&format!(
            "from sending the webhook (an upper bound: A's own answer took p50 {r50:.2} ms, p99 {r99:.2} ms of it): p50 {s50:.2} ms, p99 {s99:.2} ms, max {smax:.1} ms"
        ))
        .note(&format!(
            "{got}/{n} webhooks one at a time, 50–100 ms apart{}{}",
            if missed > 0 {
                format!(", {missed} not at B's fake within {wait_each:?}")
            } else {
                String::new()
            },
            if refused > 0 {
                format!(", {refused} not processed")
            } else {
                String::new()
            }
        ))
        .note(&format!(
            "A held from sending by WHATSAPP_MAX_MPS=1 and a live roster row sorted first (share 0); A's fake got {sent_by_a} requests"
        ))
        .target("≤ 50 ms", complete && sent_by_a == 0 && p99 <= 50.0),
    );
    report.add_duplicates(
        "PostgreSQL wake latency, two instances",
        dups,
        fake_a
            .duplicate_examples()
            .into_iter()
            .chain(fake_b.duplicate_examples())
            .collect(),
    );
    let (sa, sb) = (a.stop(), b.stop());
    fake_a.stop();
    fake_b.stop();
    drop(db);
    let detail = json!({
        "webhooks": n,
        "warm_up": warm,
        "seen_at_b": got,
        "missed": missed,
        "not_processed": refused,
        "warm_up_missed": warm_missed,
        "seconds": elapsed.as_secs_f64(),
        "from_200_ms": {"min": min, "p50": p50, "p99": p99, "max": max},
        "answer_ms": {"p50": r50, "p99": r99},
        "from_sent_ms": {"p50": s50, "p99": s99, "max": smax},
        "sent_by_a": sent_by_a,
        "messages_at_b": fake_b.messages(),
        "duplicates": dups,
    });
    (sa, sb, detail)
}
