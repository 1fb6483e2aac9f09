//! orderlink's benchmark (issue 5): the product against the ceilings of its
//! own parts, all measured in one run on one machine.
//!
//! `cargo run --release -p bench [-- --quick] [-- --out bench/results.json]`

mod admin_page;
mod ceiling;
mod child;
mod events;
mod fake_graph;
mod gateways;
mod http;
mod metrics;
mod pg;
// The test harness's own, so the bench and the tests find ports alike.
#[path = "../../tests/common/ports.rs"]
mod ports;
mod report;

use child::{CeilingServer, Options, Orderlink};
use fake_graph::FakeGraph;
use http::{Load, LoadResult};
use orderlink::clock::now_ms;
use report::{Report, Row};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Plan {
    quick: bool,
    out: PathBuf,
    concurrency: usize,
    ceiling_requests: usize,
    sqlite_full: usize,
    sqlite_normal: usize,
    webhooks: usize,
    invites: usize,
    delivery_orders: usize,
    /// Orders of the paid-order phase (webhook and both sends each).
    paid_orders: usize,
    big_db_orders: usize,
    /// Phases to run besides the ceilings (all by default).
    only: Option<Vec<String>>,
    /// Hard deadline of each request phase.
    phase_deadline: Duration,
    /// Hard deadline of each delivery run.
    delivery_deadline: Duration,
    /// `--bin PATH`: measure this orderlink binary instead of building one
    /// (a "before" build of another commit, side by side).
    bin: Option<PathBuf>,
    /// `--delivery 0x4,50x32`: which (fake latency ms, workers) runs.
    delivery_runs: Vec<(u64, usize)>,
}

impl Plan {
    fn runs(&self, phase: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|l| l.iter().any(|p| p == phase))
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: bench [--quick] [--both] [--out PATH] [--bin PATH] [--log RUST_LOG] [--concurrency N] [--one-core] [--postgres URL] [--delivery 0x4,50x32] [--delivery-orders N] [--only webhooks,gateways,delivery,startup,admin,metrics,postgres]"
    );
    std::process::exit(2)
}

fn plan(args: &[String], root: &Path) -> Plan {
    let quick = args.iter().any(|a| a == "--quick");
    let mut out = root.join("bench/results.json");
    let mut concurrency = 32;
    let mut only = None;
    let mut bin = None;
    let mut delivery_runs = vec![(0u64, 4usize), (0, 32), (50, 4), (50, 32)];
    let mut delivery_orders = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" | "--both" => {}
            // Read by `pg::url_from`.
            "--postgres" => {
                it.next().unwrap_or_else(|| usage());
            }
            "--one-core" => child::ONE_CORE.store(true, std::sync::atomic::Ordering::Relaxed),
            "--log" => {
                let level = it.next().unwrap_or_else(|| usage()).clone();
                let _ = child::LOG_LEVEL.set(Some(level));
            }
            "--out" => out = PathBuf::from(it.next().unwrap_or_else(|| usage())),
            "--bin" => {
                let path = PathBuf::from(it.next().unwrap_or_else(|| usage()));
                // The children run in their own folders: an absolute path.
                bin = Some(std::fs::canonicalize(&path).unwrap_or(path))
            }
            "--delivery" => {
                delivery_runs = it
                    .next()
                    .unwrap_or_else(|| usage())
                    .split(',')
                    .map(|run| {
                        let (l, w) = run.split_once('x').unwrap_or_else(|| usage());
                        match (l.parse(), w.parse()) {
                            (Ok(l), Ok(w)) if w > 0 => (l, w),
                            _ => usage(),
                        }
                    })
                    .collect()
            }
            "--delivery-orders" => {
                delivery_orders = Some(
                    it.next()
                        .and_then(|n| n.parse().ok())
                        .filter(|&n| n > 0)
                        .unwrap_or_else(|| usage()),
                )
            }
            "--only" => {
                let list: Vec<String> = it
                    .next()
                    .unwrap_or_else(|| usage())
                    .split(',')
                    .map(str::to_owned)
                    .collect();
                if list.iter().any(|p| {
                    ![
                        "webhooks", "gateways", "delivery", "startup", "admin", "metrics",
                        "postgres",
                    ]
                    .contains(&p.as_str())
                }) {
                    usage()
                }
                only = Some(list)
            }
            "--concurrency" => {
                concurrency = it
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|&n| n > 0 && n <= 1024)
                    .unwrap_or_else(|| usage())
            }
            _ => usage(),
        }
    }
    let pick = |full: usize, small: usize| if quick { small } else { full };
    Plan {
        quick,
        out,
        concurrency,
        only,
        bin,
        delivery_runs,
        ceiling_requests: pick(100_000, 20_000),
        sqlite_full: pick(3_000, 500),
        sqlite_normal: pick(10_000, 2_000),
        webhooks: pick(20_000, 4_000),
        invites: pick(20_000, 4_000),
        delivery_orders: delivery_orders.unwrap_or(pick(5_000, 500)),
        paid_orders: pick(5_000, 2_000),
        big_db_orders: pick(100_000, 10_000),
        phase_deadline: Duration::from_secs(pick(120, 30) as u64),
        delivery_deadline: Duration::from_secs(pick(240, 30) as u64),
    }
}

/// A scratch folder for this run's databases, removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let dir = std::env::temp_dir().join(format!("orderlink-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // BENCH_KEEP=1 leaves the servers' databases and logs to read.
        if std::env::var_os("BENCH_KEEP").is_some() {
            eprintln!("bench: kept {}", self.0.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn say(line: impl AsRef<str>) {
    eprintln!("bench: {}", line.as_ref());
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("ceiling-server") {
        let port = args
            .get(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| usage());
        std::process::exit(ceiling::serve(port));
    }
    if args.first().map(String::as_str) == Some("micro") {
        micro();
        return;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned();
    if args.iter().any(|a| a == "--both") {
        std::process::exit(both(&args, &root));
    }
    let plan = plan(&args, &root);
    if child::ONE_CORE.load(std::sync::atomic::Ordering::Relaxed) {
        child::pin_self_to_cpu1();
        say("one-core mode: servers pinned to CPU 0, load generator and fake Graph to CPU 1");
    }
    let bin = match &plan.bin {
        Some(path) => {
            say(format!("measuring {} (not built)", path.display()));
            path.clone()
        }
        None => build_orderlink(&root),
    };
    let scratch = Scratch::new();
    let mut report = Report::new(plan.quick, plan.concurrency);
    report.detail("loadavg_at_start", json!(report::loadavg()));
    let started = Instant::now();

    // 1. Ceilings.
    let ceilings = measure_ceilings(&plan, &scratch.0, &mut report);

    // 2-4. Webhooks and invites on one orderlink child.
    let o = Options {
        bin: &bin,
        rocket_toml: &root.join("Rocket.toml"),
        dir: &scratch.0.join("serve"),
        api_base: String::new(),
        send_workers: 4,
    };
    let mut peak_rss = Vec::new();
    if plan.runs("webhooks") {
        webhooks_and_invites(&plan, &o, &ceilings, &mut report, &mut peak_rss);
        paid_orders(&plan, &o, &mut report, &mut peak_rss);
    }

    // 4b. Gateway webhooks against the generic route (issue 9).
    if plan.runs("gateways") {
        gateways::gateways(&plan, &o, &mut report, &mut peak_rss);
    }

    // 5. Delivery.
    if plan.runs("delivery") {
        delivery(&plan, &o, &scratch.0, &mut report, &mut peak_rss);
    }

    // 5b. PostgreSQL (SPEC §13), when a server is named.
    if let Some(url) = pg::url_from(&args).filter(|_| plan.runs("postgres")) {
        let pg_plan = pg::Plan {
            quick: plan.quick,
            concurrency: plan.concurrency,
            webhooks: plan.webhooks,
            delivery_orders: plan.delivery_orders,
            phase_deadline: plan.phase_deadline,
            delivery_deadline: plan.delivery_deadline,
        };
        peak_rss.extend(pg::measure(&url, &pg_plan, &o, &mut report));
    }

    let total = report.duplicates_total();
    let dup_note = report.duplicates_text();
    report.row(
        Row::new(
            "duplicate messages at the fake, whole run",
            total as f64,
            "",
        )
        .note(&dup_note)
        .target("0", total == 0),
    );

    // 6. Memory, size, start-up.
    if plan.runs("startup") {
        startup(&plan, &o, &scratch.0, &mut report, &mut peak_rss);
    }
    let size = std::fs::metadata(&bin).map(|m| m.len()).unwrap_or(0);
    let (peak_kib, peak_where) = peak_rss
        .iter()
        .max_by_key(|(k, _)| *k)
        .cloned()
        .unwrap_or((0, String::new()));
    let peak_mib = peak_kib as f64 / 1024.0;
    report.row(
        Row::new(
            "orderlink peak RSS (VmHWM), max over all children",
            peak_mib,
            "MiB",
        )
        .note(&peak_where)
        .target("≤ 40 MiB", peak_mib > 0.0 && peak_mib <= 40.0),
    );
    report.detail(
        "peak_rss_kib_per_child",
        json!(peak_rss
            .iter()
            .map(|(k, w)| json!({"child": w, "vm_hwm_kib": k}))
            .collect::<Vec<_>>()),
    );
    report.row(Row::new(
        "release binary size",
        size as f64 / (1024.0 * 1024.0),
        "MiB",
    ));
    report.detail("binary_bytes", json!(size));
    report.detail("wall_seconds", json!(started.elapsed().as_secs_f64()));

    if plan.runs("admin") {
        admin_page::measure(
            &bin,
            &root.join("Rocket.toml"),
            &scratch.0,
            plan.quick,
            &mut report,
        );
    }

    if plan.runs("metrics") {
        metrics::measure(&scratch.0, plan.quick, &mut report);
    }

    // 7. The table and the JSON.
    report.print();
    if let Some(parent) = plan.out.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    std::fs::write(&plan.out, report.json()).expect("write the results");
    say(format!(
        "wrote {} ({:.0} s)",
        plan.out.display(),
        started.elapsed().as_secs_f64()
    ));
}

/// `bench micro`: the webhook's three pieces of work, each timed alone on
/// this thread's CPU clock (µs per call, median of 5 rounds of 20,000):
/// the Standard Webhooks signature check, the parse of the event (with the
/// duplicate-key check, the phone included), the phone number alone.
fn micro() {
    use orderlink::domain::{PaymentEvent, PhoneE164};
    use orderlink::signature::WebhookSecret;
    let secret = WebhookSecret::parse(events::SECRET).expect("secret");
    let body = events::payment_body("evt_micro_000001", "ORD-micro-000001");
    let ts = now_ms() / 1000;
    let sig = secret.sign("msg_micro", &ts.to_string(), body.as_bytes());
    let phones: Vec<String> = (0..1000)
        .map(|i| format!("+91 98{:03} {:05}", i, i * 7))
        .collect();
    let time = |name: &str, f: &mut dyn FnMut(usize)| {
        let n = 20_000;
        let mut rounds: Vec<f64> = (0..5)
            .map(|_| {
                let t0 = http::thread_cpu();
                for i in 0..n {
                    f(i);
                }
                (http::thread_cpu() - t0).as_secs_f64() * 1e6 / n as f64
            })
            .collect();
        rounds.sort_by(f64::total_cmp);
        println!("{name}: {:.2} µs per call", rounds[2]);
    };
    time("signature (Standard Webhooks, HMAC-SHA256)", &mut |_| {
        secret
            .verify("msg_micro", &ts.to_string(), &sig, body.as_bytes(), ts)
            .expect("valid");
    });
    time("duplicate-key check", &mut |_| {
        orderlink::domain::reject_duplicate_keys(body.as_bytes()).expect("unique");
    });
    time("event parse (duplicate keys, shape, phone)", &mut |_| {
        PaymentEvent::parse(body.as_bytes(), None).expect("parses");
    });
    time("phone number, 1,000 distinct +91 numbers", &mut |i| {
        let _ = PhoneE164::parse(&phones[i % phones.len()], None);
    });
    // The product's logger, as `serve` installs it: run with stderr sent to
    // a file (`bench micro 2>/tmp/micro.log`), as a unit's journal takes it.
    orderlink::logging::init();
    let token = "0b7c6a4e-5f1d-4c3b-9a2e-8d7f6e5c4b3a";
    time("mask a request line (invite URI with a token)", &mut |_| {
        let _ = orderlink::logging::mask(&format!("GET /w/invite/{token} 302 0.1ms"));
    });
    time(
        "log a request line at INFO (mask, format, write)",
        &mut |_| {
            log::info!(target: "orderlink::http", "GET /w/invite/{token} 302 {:.1}ms", 0.1);
        },
    );
    time("log an order's paid line at INFO", &mut |i| {
        log::info!("order ORD-micro-{i:06}: paid; confirmation and link message queued");
    });
}

/// `--both`: the whole run twice from this one command, first with the
/// servers on one core (`--one-core`), then unpinned on every core, each
/// in its own child process of this binary; then one table with a column
/// for each, and both JSON documents in one file.
fn both(args: &[String], root: &Path) -> i32 {
    let rest: Vec<&String> = {
        let mut skip_value = false;
        args.iter()
            .filter(|a| {
                if skip_value {
                    skip_value = false;
                    return false;
                }
                if *a == "--out" {
                    skip_value = true;
                    return false;
                }
                !matches!(a.as_str(), "--both" | "--one-core")
            })
            .collect()
    };
    let out = args
        .iter()
        .position(|a| a == "--out")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("bench/results.json"));
    let exe = std::env::current_exe().expect("own path");
    let scratch = Scratch::new();
    let mut docs = Vec::new();
    for (name, pin) in [("1 core", true), ("2 cores", false)] {
        let part = scratch.0.join(format!("{}.json", name.replace(' ', "-")));
        say(format!("--both: the {name} run"));
        let mut cmd = Command::new(&exe);
        cmd.args(&rest).arg("--out").arg(&part);
        if pin {
            cmd.arg("--one-core");
        }
        let ok = cmd.status().is_ok_and(|s| s.success());
        let doc: Option<serde_json::Value> = std::fs::read_to_string(&part)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        match (ok, doc) {
            (true, Some(doc)) => docs.push((name, doc)),
            _ => {
                eprintln!("bench: the {name} run failed");
                return 1;
            }
        }
    }
    report::print_side_by_side(&docs, &rest);
    let combined: serde_json::Map<String, serde_json::Value> = docs
        .into_iter()
        .map(|(name, doc)| (name.to_owned(), doc))
        .collect();
    if let Some(parent) = out.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    std::fs::write(
        &out,
        serde_json::to_string_pretty(&combined).expect("serialise") + "\n",
    )
    .expect("write the results");
    say(format!("wrote {}", out.display()));
    0
}

/// `cargo build --release --bin orderlink` with the cargo that runs us.
fn build_orderlink(root: &Path) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    say("building the release orderlink binary");
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--release", "--bin", "orderlink"])
        .current_dir(root);
    // `cargo run` gave this process the bench package's own variables;
    // build scripts (ring's) watch some of them, so passing them on would
    // make every build of the product, ours and the developer's, rebuild
    // them in turn.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_PKG_")
            || [
                "CARGO_MANIFEST_DIR",
                "CARGO_MANIFEST_PATH",
                "CARGO_MANIFEST_LINKS",
                "CARGO_CRATE_NAME",
                "CARGO_BIN_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "OUT_DIR",
            ]
            .contains(&name.as_ref())
        {
            cmd.env_remove(name.as_ref());
        }
    }
    let status = cmd.status().expect("run cargo");
    if !status.success() {
        eprintln!("bench: cargo build --release --bin orderlink failed");
        std::process::exit(1);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let target = if target.is_relative() {
        root.join(target)
    } else {
        target
    };
    target.join("release/orderlink")
}

struct Ceilings {
    constant_rps: f64,
    redirect_rps: f64,
    /// Requests per second of the ceiling server's own CPU time.
    constant_per_cpu: f64,
    redirect_per_cpu: f64,
    sqlite_full_tps: f64,
}

/// Requests per second of server CPU time (0 when none was measured).
fn per_cpu_second(n: usize, cpu: Duration) -> f64 {
    if cpu.is_zero() {
        0.0
    } else {
        n as f64 / cpu.as_secs_f64()
    }
}

fn load_line(name: &str, r: &LoadResult, server_cpu: Duration) {
    say(format!(
        "{name}: {} in {:.2} s = {:.0}/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, server CPU {:.4} ms/req [{}]{}",
        r.completed,
        r.elapsed.as_secs_f64(),
        r.rate(),
        r.pct_ms(50.0),
        r.pct_ms(99.0),
        r.max_ms(),
        cpu_per_ms(server_cpu, r.completed as u64),
        r.statuses_text(),
        if r.hit_deadline {
            " (deadline hit)"
        } else {
            ""
        }
    ));
    if let Some(e) = &r.first_error {
        say(format!("{name}: first error: {e}"));
    }
}

/// Server CPU milliseconds per request (or message).
fn cpu_per_ms(cpu: Duration, n: u64) -> f64 {
    cpu.as_secs_f64() * 1000.0 / n.max(1) as f64
}

fn load_detail(r: &LoadResult, server_cpu: Duration) -> serde_json::Value {
    json!({
        "server_cpu_ms_per_request": cpu_per_ms(server_cpu, r.completed as u64),
        "completed": r.completed,
        "io_errors": r.errors,
        "seconds": r.elapsed.as_secs_f64(),
        "per_second": r.rate(),
        "p50_ms": r.pct_ms(50.0),
        "p90_ms": r.pct_ms(90.0),
        "p99_ms": r.pct_ms(99.0),
        "max_ms": r.max_ms(),
        "statuses": r.statuses.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        "hit_deadline": r.hit_deadline,
        "load_generator_cpu_seconds": r.client_cpu.as_secs_f64(),
        "server_cpu_seconds": server_cpu.as_secs_f64(),
        "first_error": r.first_error,
    })
}

fn measure_ceilings(plan: &Plan, dir: &Path, report: &mut Report) -> Ceilings {
    let server = CeilingServer::start();
    let get = |path: &str| {
        Arc::new(vec![format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: bench\r\n\r\n",
            server.addr
        )
        .into_bytes()])
    };
    let run = |requests| {
        let cpu0 = server.cpu();
        let cs0 = server.context_switches();
        let r = http::run(&Load {
            addr: server.addr,
            requests,
            total: plan.ceiling_requests,
            concurrency: plan.concurrency,
            deadline: plan.phase_deadline,
            keep_bodies: false,
        });
        let cpu = server.cpu().saturating_sub(cpu0);
        let cs = switches_per(server.context_switches(), cs0, r.completed);
        say(format!(
            "ceiling: context switches per request {:.2} voluntary, {:.2} involuntary",
            cs.0, cs.1
        ));
        (r, cpu)
    };
    // A short warm-up so both figures see a running server.
    let _ = http::run(&Load {
        addr: server.addr,
        requests: get("/hello"),
        total: 2_000,
        concurrency: plan.concurrency,
        deadline: plan.phase_deadline,
        keep_bodies: false,
    });
    let (constant, constant_cpu) = run(get("/hello"));
    load_line("ceiling: Rocket constant string", &constant, constant_cpu);
    let (redirect, redirect_cpu) = run(get("/r"));
    load_line("ceiling: Rocket constant 302", &redirect, redirect_cpu);
    drop(server);

    let c = plan.concurrency;
    report.row(
        Row::new(
            &format!("ceiling: Rocket constant string, c={c}"),
            constant.rate(),
            "req/s",
        )
        .latency(&constant),
    );
    report.row(
        Row::new(
            &format!("ceiling: Rocket constant 302, c={c}"),
            redirect.rate(),
            "req/s",
        )
        .latency(&redirect),
    );
    // The load generator's own figure: requests it can drive per second of
    // its own CPU, against what the server did with the rest of the machine.
    let gen_capacity = constant.completed as f64 / constant.client_cpu.as_secs_f64().max(1e-9);
    let secs = constant.elapsed.as_secs_f64().max(1e-9);
    report.row(
        Row::new(
            "load generator: req per CPU-second of its own",
            gen_capacity,
            "req/s",
        )
        .ceiling(constant.rate(), "constant-string req/s")
        .note(&format!(
            "CPU during that run: generator {:.0} %, server {:.0} % (of one core)",
            100.0 * constant.client_cpu.as_secs_f64() / secs,
            100.0 * constant_cpu.as_secs_f64() / secs
        )),
    );
    report.detail(
        "ceiling_constant_string",
        load_detail(&constant, constant_cpu),
    );
    report.detail("ceiling_constant_302", load_detail(&redirect, redirect_cpu));

    let full = ceiling::sqlite(dir, "FULL", plan.sqlite_full, plan.phase_deadline);
    let normal = ceiling::sqlite(dir, "NORMAL", plan.sqlite_normal, plan.phase_deadline);
    let mut sqlite = serde_json::Map::new();
    for (name, r) in [("FULL", &full), ("NORMAL", &normal)] {
        let cpu_share = r.cpu.as_secs_f64() / r.elapsed.as_secs_f64().max(1e-9);
        say(format!(
            "ceiling: raw SQLite synchronous={name}: {} tx in {:.2} s = {:.0} tx/s ({:.0} % of it on CPU)",
            r.transactions,
            r.elapsed.as_secs_f64(),
            r.rate(),
            100.0 * cpu_share
        ));
        report.row(
            Row::new(
                &format!("ceiling: raw SQLite, one webhook per tx, synchronous={name}"),
                r.rate(),
                "tx/s",
            )
            .note(&format!(
                "{} tx; {:.0} µs CPU per tx, {:.0} % of the time on CPU",
                r.transactions,
                1e6 * r.cpu.as_secs_f64() / r.transactions.max(1) as f64,
                100.0 * cpu_share
            )),
        );
        sqlite.insert(
            name.to_ascii_lowercase(),
            json!({"transactions": r.transactions, "seconds": r.elapsed.as_secs_f64(),
                   "per_second": r.rate(), "cpu_seconds": r.cpu.as_secs_f64()}),
        );
    }
    report.detail("ceiling_sqlite", json!(sqlite));
    Ceilings {
        constant_rps: constant.rate(),
        redirect_rps: redirect.rate(),
        constant_per_cpu: per_cpu_second(constant.completed, constant_cpu),
        redirect_per_cpu: per_cpu_second(redirect.completed, redirect_cpu),
        sqlite_full_tps: full.rate(),
    }
}

/// Waits until the fake has received `n` distinct messages (duplicates do
/// not count); the time since `since`.
fn wait_messages(
    fake: &FakeGraph,
    n: u64,
    since: Instant,
    deadline: Duration,
) -> Result<Duration, Duration> {
    loop {
        if fake.unique() >= n {
            return Ok(since.elapsed());
        }
        if since.elapsed() > deadline {
            return Err(since.elapsed());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Waits (to `deadline`) until the server's outbox holds no row that can
/// still be sent: none queued, claimed (`sending`) or waiting.
/// Context switches of the server's threads since `before`, per request.
fn switches_since(server: &Orderlink, before: (u64, u64), requests: usize) -> (f64, f64) {
    switches_per(server.context_switches(), before, requests)
}

fn switches_per(now: (u64, u64), before: (u64, u64), requests: usize) -> (f64, f64) {
    let n = requests.max(1) as f64;
    (
        now.0.saturating_sub(before.0) as f64 / n,
        now.1.saturating_sub(before.1) as f64 / n,
    )
}

fn wait_outbox_settled(db: &Path, deadline: Duration) -> bool {
    let start = Instant::now();
    let Ok(conn) =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return false;
    };
    let _ = conn.busy_timeout(Duration::from_secs(5));
    loop {
        let open = count(
            &conn,
            "SELECT COUNT(*) FROM outbox WHERE status IN ('queued', 'sending', 'waiting')",
        );
        if open == 0 {
            return true;
        }
        if start.elapsed() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn invite_path(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let url = v.get("invite_url")?.as_str()?;
    let rest = url.split_once("://")?.1;
    Some(rest[rest.find('/')?..].to_owned())
}

fn count(conn: &rusqlite::Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0)).unwrap_or(-1)
}

fn webhooks_and_invites(
    plan: &Plan,
    o: &Options,
    ceilings: &Ceilings,
    report: &mut Report,
    peak_rss: &mut Vec<(u64, String)>,
) {
    let fake = FakeGraph::start(Duration::ZERO);
    let opts = Options {
        api_base: fake.base_url(),
        ..*o
    };
    let server = Orderlink::start(&opts);
    let c = plan.concurrency;

    // 3. Webhooks.
    let requests = Arc::new(events::signed_webhooks(server.addr, "w", plan.webhooks));
    let cpu0 = server.cpu();
    let cs0 = server.context_switches();
    let order_cpu0 = cpu0;
    let hooks = http::run(&Load {
        addr: server.addr,
        requests,
        total: plan.webhooks,
        concurrency: c,
        deadline: plan.phase_deadline,
        keep_bodies: true,
    });
    let hooks_cpu = server.cpu().saturating_sub(cpu0);
    let hooks_cs = switches_since(&server, cs0, hooks.completed);
    load_line("orderlink: signed payment webhooks", &hooks, hooks_cpu);
    say(format!(
        "orderlink: webhooks: context switches per request {:.2} voluntary, {:.2} involuntary",
        hooks_cs.0, hooks_cs.1
    ));
    let sent_during = fake.messages();
    let mut outcome_counts = std::collections::BTreeMap::<String, usize>::new();
    let mut invite_paths = Vec::new();
    for (_, body) in &hooks.bodies {
        let status = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("status")?.as_str().map(str::to_owned))
            .unwrap_or_else(|| "(no status)".into());
        *outcome_counts.entry(status).or_default() += 1;
        if let Some(p) = invite_path(body) {
            invite_paths.push(p);
        }
    }
    let processed = outcome_counts.get("processed").copied().unwrap_or(0);
    let non_200: usize = hooks
        .statuses
        .iter()
        .filter(|(s, _)| **s != 200)
        .map(|(_, n)| n)
        .sum();
    report.row(
        Row::new(&format!("webhooks/s, c={c}"), hooks.rate(), "req/s")
            .latency(&hooks)
            .ceiling(ceilings.sqlite_full_tps, "raw SQLite FULL tx/s")
            .target("≥ 8,000/s", hooks.rate() >= 8000.0),
    );
    report.row(
        Row::new(&format!("webhooks/s, c={c}"), hooks.rate(), "req/s")
            .ceiling(ceilings.constant_rps, "constant-string req/s")
            .target(
                "≥ 0.15 of ceiling",
                hooks.rate() >= 0.15 * ceilings.constant_rps,
            ),
    );
    // Little's law: with c requests in flight and each answered only after
    // a commit of its batch (at most c requests), c per commit is the most
    // a durable webhook can do here.
    report.row(
        Row::new(&format!("webhooks/s, c={c}"), hooks.rate(), "req/s").ceiling(
            c as f64 * ceilings.sqlite_full_tps,
            &format!("fsync-only bound: {c} per commit × raw FULL tx/s"),
        ),
    );
    // By CPU: what the server spends per webhook against what the
    // constant-string server spends per request (the issue's one-core
    // target). Messages sent during the phase are in it too.
    let hooks_per_cpu = per_cpu_second(hooks.completed, hooks_cpu);
    report.row(per_cpu_row(
        "webhooks per server CPU-second",
        hooks_per_cpu,
        ("webhook", 0.15),
        (
            ceilings.constant_per_cpu,
            "constant-string",
            "constant string",
        ),
    ));
    report.row(
        Row::new("webhook p99 latency", hooks.pct_ms(99.0), "ms")
            .note(&format!(
                "p50 {:.2} ms, max {:.1} ms",
                hooks.pct_ms(50.0),
                hooks.max_ms()
            ))
            .target("≤ 10 ms", hooks.pct_ms(99.0) <= 10.0),
    );
    report.row(
        Row::new("webhook answers", hooks.completed as f64, "")
            .note(&format!(
                "HTTP [{}]; bodies {}",
                hooks.statuses_text(),
                outcome_counts
                    .iter()
                    .map(|(k, v)| format!("{k}×{v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ))
            .target(
                "all 200 processed",
                processed == plan.webhooks && non_200 == 0 && hooks.errors == 0,
            ),
    );
    let mut detail = load_detail(&hooks, hooks_cpu);
    detail["context_switches_per_request"] = json!([hooks_cs.0, hooks_cs.1]);
    detail["body_statuses"] = json!(outcome_counts);
    detail["messages_delivered_during_phase"] = json!(sent_during);

    // Let the sender finish the messages those webhooks queued, so the
    // invite phase measures redirects alone.
    let drain_start = Instant::now();
    let expected = 2 * processed as u64;
    let drained = wait_messages(&fake, expected, drain_start, plan.phase_deadline);
    // And until no row is left that could still be sent (queued, claimed or
    // waiting): a request reaches the fake before its outcome is written,
    // so after that nothing more will come from this phase.
    let settled = wait_outbox_settled(&server.db_path, plan.phase_deadline);
    // End to end: every webhook of the phase and both messages of each,
    // sent and recorded, on the server's CPU.
    let order_cpu = server.cpu().saturating_sub(order_cpu0);
    let per_order_ms = cpu_per_ms(order_cpu, processed as u64);
    // The paid-order figure proper is its own phase (`paid_orders`); this
    // one, over the larger run, is kept beside it.
    report.row(
        Row::new(
            "server CPU per paid order, over the webhook phase",
            per_order_ms,
            "ms",
        )
        .note(&format!(
            "{:.2} s CPU from the first webhook until the outbox settled, {processed} orders, {} messages",
            order_cpu.as_secs_f64(),
            2 * processed
        )),
    );
    say(format!(
        "orderlink: {} of {expected} messages reached the fake ({} during the webhooks; drained {:.2} s later{}{}), duplicates {}",
        fake.messages(),
        sent_during,
        drained.unwrap_or_else(|e| e).as_secs_f64(),
        if drained.is_err() { ", deadline hit" } else { "" },
        if settled { "" } else { ", outbox not settled by the deadline" },
        fake.duplicates()
    ));
    detail["messages_expected"] = json!(expected);
    detail["messages_delivered"] = json!(fake.messages());
    detail["drain_seconds_after_phase"] = json!(drained.unwrap_or_else(|e| e).as_secs_f64());
    detail["duplicates"] = json!(fake.duplicates());
    detail["fake_rejected_requests"] = json!(fake.rejected());
    report.detail("webhooks", detail);

    // 4. Invites, over the real tokens from the answers, each clicked once.
    let invites = if invite_paths.is_empty() {
        say("orderlink: no invite_url in any webhook answer; skipping invites");
        None
    } else {
        let requests: Vec<Vec<u8>> = invite_paths
            .iter()
            .map(|p| {
                format!(
                    "GET {p} HTTP/1.1\r\nHost: {}\r\nUser-Agent: Mozilla/5.0 (Linux; Android 14) bench\r\n\r\n",
                    server.addr
                )
                .into_bytes()
            })
            .collect();
        let cpu0 = server.cpu();
        let cs0 = server.context_switches();
        let r = http::run(&Load {
            addr: server.addr,
            requests: Arc::new(requests),
            total: plan.invites,
            concurrency: c,
            deadline: plan.phase_deadline,
            keep_bodies: false,
        });
        let cpu = server.cpu().saturating_sub(cpu0);
        let cs = switches_since(&server, cs0, r.completed);
        load_line("orderlink: invite redirects", &r, cpu);
        say(format!(
            "orderlink: invites: context switches per request {:.2} voluntary, {:.2} involuntary",
            cs.0, cs.1
        ));
        let mut detail = load_detail(&r, cpu);
        detail["context_switches_per_request"] = json!([cs.0, cs.1]);
        report.detail("invites", detail);
        Some((r, cpu))
    };
    if let Some((r, cpu)) = &invites {
        let floor = 0.5 * ceilings.redirect_rps;
        report.row(
            Row::new(&format!("invite redirects/s, c={c}"), r.rate(), "req/s")
                .latency(r)
                .ceiling(ceilings.redirect_rps, "constant-302 req/s")
                .target("≥ 0.5 of ceiling", r.rate() >= floor),
        );
        report.row(
            Row::new("invite p99 latency", r.pct_ms(99.0), "ms")
                .note(&format!("HTTP [{}]", r.statuses_text()))
                .target("≤ 3 ms", r.pct_ms(99.0) <= 3.0),
        );
        let per_cpu = per_cpu_second(r.completed, *cpu);
        report.row(per_cpu_row(
            "invite redirects per server CPU-second",
            per_cpu,
            ("redirect", 0.5),
            (ceilings.redirect_per_cpu, "constant-302", "constant 302"),
        ));
    }
    // Idle: nothing arrives and nothing is due. A merchant's one core is
    // shared with everything else on the box; a sleeping server must not
    // take any of it (its senders once woke each other for ever).
    let idle_for = Duration::from_secs(3);
    let idle0 = server.cpu();
    std::thread::sleep(idle_for);
    let idle = server.cpu().saturating_sub(idle0);
    let idle_share = idle.as_secs_f64() / idle_for.as_secs_f64();
    say(format!(
        "orderlink: idle {} s after the run: {:.0} ms of CPU ({:.1} % of a core)",
        idle_for.as_secs(),
        idle.as_secs_f64() * 1e3,
        idle_share * 100.0
    ));
    report.row(
        Row::new(
            "server CPU while idle, share of its core",
            idle_share * 100.0,
            "%",
        )
        .note(&format!(
            "{:.0} ms of CPU in {} s with nothing arriving or due",
            idle.as_secs_f64() * 1e3,
            idle_for.as_secs()
        ))
        .target("≤ 1 %", idle_share <= 0.01),
    );
    let dups = fake.duplicates();
    let dup_examples = fake.duplicate_examples();
    let db_path = server.db_path.clone();
    let stopped = server.stop();
    fake.stop();
    note_stopped("webhooks+invites", &stopped, peak_rss, report);
    // What reached the disk: the product's own record of the run.
    let conn = rusqlite::Connection::open(&db_path).expect("reopen");
    let db = json!({
        "orders_paid": count(&conn, "SELECT COUNT(*) FROM orders WHERE status = 'PAID'"),
        "tokens": count(&conn, "SELECT COUNT(*) FROM whatsapp_tokens"),
        "outbox_sent": count(&conn, "SELECT COUNT(*) FROM outbox WHERE status = 'sent'"),
        "outbox_not_sent": count(&conn, "SELECT COUNT(*) FROM outbox WHERE status <> 'sent'"),
        "invite_clicks": count(&conn, "SELECT COUNT(*) FROM invite_clicks"),
    });
    say(format!("orderlink database after the run: {db}"));
    report.detail("webhooks_invites_database", db);
    report.add_duplicates("webhooks+invites", dups, dup_examples);
}

/// Server CPU per paid order: a fresh child takes `plan.paid_orders`
/// signed webhooks at the run's concurrency while its senders deliver both
/// messages of each to the fake at 0 ms; all of the child's CPU from just
/// before the first webhook until its outbox has settled, ÷ the orders.
fn paid_orders(plan: &Plan, o: &Options, report: &mut Report, peak_rss: &mut Vec<(u64, String)>) {
    let n = plan.paid_orders;
    let fake = FakeGraph::start(Duration::ZERO);
    let dir = o.dir.with_file_name("paid-orders");
    let server = Orderlink::start(&Options {
        api_base: fake.base_url(),
        dir: &dir,
        ..*o
    });
    let requests = Arc::new(events::signed_webhooks(server.addr, "p", n));
    let cpu0 = server.cpu();
    let cs0 = server.context_switches();
    let start = Instant::now();
    let hooks = http::run(&Load {
        addr: server.addr,
        requests,
        total: n,
        concurrency: plan.concurrency,
        deadline: plan.phase_deadline,
        keep_bodies: false,
    });
    let delivered = wait_messages(&fake, 2 * n as u64, start, plan.phase_deadline);
    let settled = wait_outbox_settled(&server.db_path, plan.phase_deadline);
    let cpu = server.cpu().saturating_sub(cpu0);
    let (user, system) = server.cpu_split();
    let cs = switches_since(&server, cs0, n);
    let ok = hooks.statuses.get(&200).copied().unwrap_or(0);
    let per_order = cpu_per_ms(cpu, ok as u64);
    say(format!(
        "paid orders: {ok} of {n} webhooks answered 200, {} messages at the fake {:.2} s after the first webhook{}{}; server CPU {:.2} s = {per_order:.3} ms per order; context switches per order {:.2} voluntary, {:.2} involuntary",
        fake.messages(),
        delivered.unwrap_or_else(|e| e).as_secs_f64(),
        if delivered.is_err() { " (deadline hit)" } else { "" },
        if settled { "" } else { ", outbox not settled by the deadline" },
        cpu.as_secs_f64(),
        cs.0,
        cs.1
    ));
    report.row(
        Row::new(
            "server CPU per paid order, end to end (fake 0 ms)",
            per_order,
            "ms",
        )
        .note(&format!(
            "{ok} orders: webhook at c={}, both messages sent and recorded; {:.2} s CPU",
            plan.concurrency,
            cpu.as_secs_f64()
        ))
        .target(
            "≤ 0.4 ms",
            per_order > 0.0 && per_order <= 0.4 && ok == n && settled,
        ),
    );
    report.detail(
        "paid_orders",
        json!({"orders": n, "answered_200": ok, "server_cpu_seconds": cpu.as_secs_f64(),
               "server_cpu_ms_per_order": per_order,
               "server_user_seconds_whole_life": user.as_secs_f64(),
               "server_system_seconds_whole_life": system.as_secs_f64(),
               "context_switches_per_order": [cs.0, cs.1],
               "messages_delivered": fake.messages(), "duplicates": fake.duplicates(),
               "outbox_settled": settled,
               "seconds_to_all_messages": delivered.unwrap_or_else(|e| e).as_secs_f64()}),
    );
    let dups = fake.duplicates();
    let examples = fake.duplicate_examples();
    let stopped = server.stop();
    fake.stop();
    note_stopped("paid orders", &stopped, peak_rss, report);
    report.add_duplicates("paid orders", dups, examples);
}

fn note_stopped(
    name: &str,
    s: &child::Stopped,
    peak_rss: &mut Vec<(u64, String)>,
    report: &mut Report,
) {
    if let Some(k) = s.peak_rss_kib {
        peak_rss.push((k, name.to_owned()));
    }
    if s.errors > 0 || !s.exit.contains("exit status: 0") {
        say(format!(
            "{name}: orderlink {}; {} ERROR / {} WARN log lines {:?}",
            s.exit, s.errors, s.warnings, s.error_lines
        ));
    }
    report.child(
        name,
        json!({"exit": s.exit, "log_errors": s.errors, "log_warnings": s.warnings,
               "first_error_lines": s.error_lines, "first_warning_lines": s.warning_lines, "vm_hwm_kib": s.peak_rss_kib}),
    );
}

fn delivery(
    plan: &Plan,
    o: &Options,
    dir: &Path,
    report: &mut Report,
    peak_rss: &mut Vec<(u64, String)>,
) {
    let orders = plan.delivery_orders;
    let messages = 2 * orders as u64;
    let mut details = Vec::new();
    for &(latency_ms, workers) in &plan.delivery_runs {
        let name = format!("delivery {latency_ms} ms × {workers} workers");
        let run_dir = dir.join(format!("deliver-{latency_ms}-{workers}"));
        std::fs::create_dir_all(&run_dir).expect("run dir");
        let fill = events::populate(&run_dir.join("o.db"), "d", orders, orders);
        let fake = FakeGraph::start(Duration::from_millis(latency_ms));
        let server = Orderlink::start(&Options {
            dir: &run_dir,
            api_base: fake.base_url(),
            send_workers: workers,
            ..*o
        });
        let done = wait_messages(&fake, messages, server.spawned, plan.delivery_deadline);
        let elapsed = done.unwrap_or_else(|e| e);
        let ready_ms = server.ready_after.as_secs_f64() * 1000.0;
        let spawned = server.spawned;
        let cpu = server.cpu();
        let (user, system) = server.cpu_split();
        let (voluntary, involuntary) = server.context_switches();
        // Anything sent twice would arrive after the last first copy: stop
        // the server (in-flight sends finish, then it exits) and wait until
        // the fake has read every connection to its end, so every request
        // it will ever get is counted.
        let stopped = server.stop();
        let all_read = fake.wait_connections_closed(Duration::from_secs(10));
        let got = fake.messages();
        let unique = fake.unique();
        let rate = unique.min(messages) as f64 / elapsed.as_secs_f64().max(1e-9);
        let steady = fake
            .first_to_last()
            .map(|d| (got.saturating_sub(1)) as f64 / d.as_secs_f64().max(1e-9));
        let dups = fake.duplicates();
        say(format!(
            "{name}: {got} of {messages} messages in {:.2} s from spawn = {rate:.0}/s (first→last {:.0}/s; ready after {ready_ms:.1} ms; first message {:.1} ms after spawn){}; duplicates {dups}{}; rejected {}",
            elapsed.as_secs_f64(),
            steady.unwrap_or(0.0),
            fake.first_at().map_or(-1.0, |t| (t - spawned).as_secs_f64() * 1000.0),
            if done.is_err() { " DEADLINE HIT" } else { "" },
            if all_read { "" } else { " (a connection stayed open 10 s after exit)" },
            fake.rejected(),
        ));
        let cpu_per_msg = cpu_per_ms(cpu, got);
        say(format!(
            "{name}: server CPU {cpu_per_msg:.4} ms per message (user {:.4}, system {:.4}; start-up included), context switches per message {:.2} voluntary, {:.2} involuntary",
            cpu_per_ms(user, got),
            cpu_per_ms(system, got),
            voluntary as f64 / got.max(1) as f64,
            involuntary as f64 / got.max(1) as f64,
        ));
        fake.stop();
        note_stopped(&name, &stopped, peak_rss, report);
        report.add_duplicates(&name, dups, fake.duplicate_examples());
        let mut row = Row::new(
            &format!("delivered msg/s, fake {latency_ms} ms, SEND_WORKERS={workers}"),
            rate,
            "msg/s",
        )
        .note(&format!(
            "{unique}/{messages} distinct msgs in {:.2} s from spawn, {dups} duplicates{}; server CPU {cpu_per_msg:.3} ms/msg",
            elapsed.as_secs_f64(),
            if done.is_err() { ", DEADLINE HIT" } else { "" }
        ));
        if latency_ms > 0 {
            let bound = workers as f64 / (latency_ms as f64 / 1000.0);
            row = row.ceiling(bound, "workers ÷ latency");
            if workers == 32 {
                row = row.target("≥ 90 % of bound", rate >= 0.9 * bound);
            }
        } else if workers == 4 {
            row = row.target("≥ 2,000 msg/s", rate >= 2000.0);
        }
        report.row(row);
        details.push(json!({
            "fake_latency_ms": latency_ms, "send_workers": workers, "orders": orders,
            "messages_expected": messages, "messages_received": got, "distinct_messages_received": unique, "duplicates": dups,
            "fake_rejected_requests": fake.rejected(),
            "seconds_from_spawn": elapsed.as_secs_f64(), "per_second_from_spawn": rate,
            "per_second_first_to_last": steady,
            "ready_after_ms": ready_ms,
            "populate_seconds": fill.as_secs_f64(),
            "hit_deadline": done.is_err(),
            "server_cpu_ms_per_message": cpu_per_msg,
            "server_user_cpu_ms_per_message": cpu_per_ms(user, got),
            "server_system_cpu_ms_per_message": cpu_per_ms(system, got),
            "context_switches_per_message": [voluntary as f64 / got.max(1) as f64, involuntary as f64 / got.max(1) as f64],
        }));
    }
    report.detail("delivery", json!(details));
}

fn startup(
    plan: &Plan,
    o: &Options,
    dir: &Path,
    report: &mut Report,
    peak_rss: &mut Vec<(u64, String)>,
) {
    let fake = FakeGraph::start(Duration::ZERO);
    let mut measure = |name: &str, run_dir: &Path, report: &mut Report| -> f64 {
        let server = Orderlink::start(&Options {
            dir: run_dir,
            api_base: fake.base_url(),
            ..*o
        });
        let ms = server.ready_after.as_secs_f64() * 1000.0;
        let stopped = server.stop();
        note_stopped(name, &stopped, peak_rss, report);
        ms
    };
    // Three fresh empty databases; the median.
    let mut empty: Vec<f64> = (0..3)
        .map(|i| {
            measure(
                "start-up, empty database",
                &dir.join(format!("start-empty-{i}")),
                report,
            )
        })
        .collect();
    empty.sort_by(f64::total_cmp);
    say(format!("start-up on an empty database: {empty:.1?} ms"));
    report.row(
        Row::new(
            "start-up to first accepted request, empty database (median of 3)",
            empty[1],
            "ms",
        )
        .target("≤ 200 ms", empty[1] <= 200.0),
    );

    let big_dir = dir.join("start-big");
    std::fs::create_dir_all(&big_dir).expect("big dir");
    let n = plan.big_db_orders;
    let fill = events::populate(&big_dir.join("o.db"), "big", n, 5_000);
    events::mark_all_sent(&big_dir.join("o.db"));
    say(format!(
        "populated {n} orders in {:.1} s",
        fill.as_secs_f64()
    ));
    let mut big: Vec<f64> = (0..3)
        .map(|_| measure(&format!("start-up, {n}-order database"), &big_dir, report))
        .collect();
    big.sort_by(f64::total_cmp);
    say(format!("start-up on a {n}-order database: {big:.1?} ms"));
    report.row(Row::new(
        &format!("start-up to first accepted request, {n}-order database (median of 3)"),
        big[1],
        "ms",
    ));
    report.detail(
        "startup_ms",
        json!({"empty": empty, "big": big, "big_orders": n, "big_populate_seconds": fill.as_secs_f64()}),
    );
    fake.stop();
}

/// A "per server CPU-second" row against its constant ceiling's: `(what,
/// share)` names one request and the target share of the ceiling;
/// `(ceiling, ceiling name, one ceiling request)` the constant server's rate.
fn per_cpu_row(
    name: &str,
    per_cpu: f64,
    (what, share): (&str, f64),
    (ceiling, ceiling_name, ceiling_one): (f64, &str, &str),
) -> Row {
    Row::new(name, per_cpu, "req/s")
        .ceiling(ceiling, &format!("{ceiling_name} per CPU-second"))
        .note(&format!(
            "{:.3} ms CPU per {what}, {:.3} ms per {ceiling_one}",
            1000.0 / per_cpu.max(1e-9),
            1000.0 / ceiling.max(1e-9)
        ))
        .target(
            &format!("≥ {share} of ceiling, by CPU"),
            per_cpu >= share * ceiling,
        )
}
