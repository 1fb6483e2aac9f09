//! Child processes: the release `orderlink` binary on a temp database, and
//! this binary re-executed as the ceiling server. Their CPU and memory are
//! read from /proc, so they are measured apart from the load generator.

use crate::http;
use crate::ports::free_port;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const PHONE_NUMBER_ID: &str = "106540352242922";
pub const BUSINESS_NUMBER: &str = "919999900000";
/// `WHATSAPP_APP_SECRET` of every child: what Meta's webhooks are signed with.
pub const APP_SECRET: &str = "bench-app-secret";

/// `--one-core`: the server children run pinned to CPU 0 and this process
/// (load generator, fake Graph API) to CPU 1, as on a one-vCPU VPS with
/// its client elsewhere.
pub static ONE_CORE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `--log LEVEL`: `RUST_LOG` for the orderlink children (unset: the
/// product's default, as a merchant runs it).
pub static LOG_LEVEL: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

/// A command for a server child: wrapped in `taskset -c 0` in one-core mode
/// (taskset execs the program, so the child's pid is the server's own).
pub fn server_command(program: &Path) -> Command {
    if ONE_CORE.load(std::sync::atomic::Ordering::Relaxed) {
        let mut cmd = Command::new("taskset");
        cmd.arg("-c").arg("0").arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

/// Pins every thread of this process (started later ones inherit it) to
/// CPU 1.
pub fn pin_self_to_cpu1() {
    let ok = Command::new("taskset")
        .args(["-a", "-p", "-c", "1", &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "taskset could not pin the bench to CPU 1 (needs 2 CPUs and util-linux)"
    );
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100.0)
}

/// User + system CPU time of a whole process (all its threads, live or gone).
pub fn process_cpu(pid: u32) -> Duration {
    let (user, system) = process_cpu_split(pid);
    user + system
}

/// Voluntary and involuntary context switches of a process's live threads
/// so far (from /proc/<pid>/task/*/status).
pub fn context_switches(pid: u32) -> (u64, u64) {
    let mut total = (0, 0);
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return total;
    };
    for task in tasks.flatten() {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        for line in status.lines() {
            let value = || {
                line.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            if line.starts_with("voluntary_ctxt_switches:") {
                total.0 += value();
            } else if line.starts_with("nonvoluntary_ctxt_switches:") {
                total.1 += value();
            }
        }
    }
    total
}

/// User and system CPU time of a whole process, apart.
pub fn process_cpu_split(pid: u32) -> (Duration, Duration) {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return (Duration::ZERO, Duration::ZERO);
    };
    // Fields after the command name, which may hold spaces: state is
    // field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|x| x.parse().ok())
        .collect();
    let at = |i: usize| Duration::from_secs_f64(*f.get(i).unwrap_or(&0) as f64 / clock_ticks());
    (at(0), at(1))
}

/// The whole machine's CPU so far, from /proc/stat's first line: busy
/// (everything but idle and iowait) and all, in clock ticks.
#[derive(Clone, Copy)]
pub struct MachineCpu {
    busy: u64,
    all: u64,
}

impl MachineCpu {
    pub fn now() -> MachineCpu {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let ticks: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        let all: u64 = ticks.iter().sum();
        let idle = ticks.get(3).unwrap_or(&0) + ticks.get(4).unwrap_or(&0);
        MachineCpu {
            busy: all - idle,
            all,
        }
    }

    /// Share of all cores busy since `before`, 0 to 1.
    pub fn busy_since(&self, before: &MachineCpu) -> f64 {
        let all = self.all.saturating_sub(before.all);
        if all == 0 {
            return 0.0;
        }
        self.busy.saturating_sub(before.busy) as f64 / all as f64
    }
}

/// CPU time of every live process named `postgres` (the server and its
/// backends): what PostgreSQL spent, when it runs on this machine.
pub fn postgres_cpu() -> Duration {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Duration::ZERO;
    };
    procs
        .flatten()
        .filter_map(|p| p.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "postgres")
        })
        .map(process_cpu)
        .sum()
}

/// VmHWM (peak resident set) of a live process, in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Polls `path` every millisecond until it answers 200; the time since
/// `since`, or `None` past `deadline` or when the child died.
fn wait_ready(
    child: &mut Child,
    addr: SocketAddr,
    path: &str,
    since: Instant,
    deadline: Duration,
) -> Option<Duration> {
    loop {
        if let Ok(m) = http::get_once(addr, path, Duration::from_secs(2)) {
            if m.status == 200 {
                return Some(since.elapsed());
            }
        }
        if since.elapsed() > deadline {
            return None;
        }
        if let Ok(Some(status)) = child.try_wait() {
            eprintln!("bench: child exited before it was ready: {status}");
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// This binary's `ceiling-server` subcommand, running.
pub struct CeilingServer {
    child: Child,
    pub addr: SocketAddr,
}

impl CeilingServer {
    pub fn start() -> CeilingServer {
        let port = free_port();
        let exe = std::env::current_exe().expect("own path");
        let mut child = server_command(&exe)
            .args(["ceiling-server", &port.to_string()])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start the ceiling server");
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        wait_ready(
            &mut child,
            addr,
            "/hello",
            Instant::now(),
            Duration::from_secs(30),
        )
        .expect("the ceiling server answers");
        CeilingServer { child, addr }
    }

    pub fn cpu(&self) -> Duration {
        process_cpu(self.child.id())
    }

    pub fn context_switches(&self) -> (u64, u64) {
        context_switches(self.child.id())
    }
}

impl Drop for CeilingServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Options<'a> {
    pub bin: &'a Path,
    pub rocket_toml: &'a Path,
    pub dir: &'a Path,
    pub api_base: String,
    pub send_workers: usize,
}

/// The release `orderlink` binary, serving.
pub struct Orderlink {
    child: Child,
    /// `BENCH_PERF_DIR` set: `perf record -g` attached to this child from
    /// ready to stop, so a profile holds this server's samples only.
    perf: Option<Child>,
    pub addr: SocketAddr,
    pub spawned: Instant,
    /// Spawn to the first 200 from `GET /healthz`.
    pub ready_after: Duration,
    pub db_path: PathBuf,
    log_path: PathBuf,
}

pub struct Stopped {
    pub peak_rss_kib: Option<u64>,
    pub exit: String,
    pub warnings: usize,
    pub errors: usize,
    /// The first few ERROR and WARN lines of its log, if any.
    pub error_lines: Vec<String>,
    pub warning_lines: Vec<String>,
}

impl Orderlink {
    pub fn start(o: &Options) -> Orderlink {
        Orderlink::start_with(o, &[])
    }

    /// `start` with more environment (e.g. `DATABASE_URL`).
    pub fn start_with(o: &Options, env: &[(&str, &str)]) -> Orderlink {
        std::fs::create_dir_all(o.dir).expect("child dir");
        let port = free_port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let db_path = o.dir.join("o.db");
        let log_path = o.dir.join("orderlink.log");
        let log = std::fs::File::create(&log_path).expect("child log");
        let mut cmd = server_command(o.bin);
        cmd.arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("WHATSAPP_TOKEN", "bench")
            .env("WHATSAPP_PHONE_NUMBER_ID", PHONE_NUMBER_ID)
            .env("WHATSAPP_BUSINESS_NUMBER_E164", BUSINESS_NUMBER)
            .env("PAYMENT_WEBHOOK_SECRET", crate::events::SECRET)
            .env("WHATSAPP_APP_SECRET", APP_SECRET)
            .env("RAZORPAY_WEBHOOK_SECRET", crate::events::RAZORPAY_SECRET)
            .env("WHATSAPP_API_BASE", &o.api_base)
            .env("DATABASE_PATH", &db_path)
            .env("ROCKET_CONFIG", o.rocket_toml)
            .env("ROCKET_ADDRESS", "127.0.0.1")
            .env("ROCKET_PORT", port.to_string())
            .env("WHATSAPP_MAX_MPS", "1000000")
            // The product's own log level unless `--log LEVEL` names one: a
            // merchant's server runs at the default, one line per request.
            .envs(
                LOG_LEVEL
                    .get()
                    .and_then(|l| l.as_deref())
                    .map(|l| ("RUST_LOG", l)),
            )
            .env("SEND_WORKERS", o.send_workers.to_string())
            .env("APP_BASE_URL", format!("http://{addr}"))
            .envs(env.iter().copied())
            // Its own folder as working directory: no stray .env is read.
            .current_dir(o.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log);
        let spawned = Instant::now();
        let mut child = cmd.spawn().expect("start orderlink");
        let ready_after = wait_ready(
            &mut child,
            addr,
            "/healthz",
            spawned,
            Duration::from_secs(60),
        );
        let Some(ready_after) = ready_after else {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            panic!("orderlink did not become ready; its log:\n{log}");
        };
        let perf = std::env::var_os("BENCH_PERF_DIR").map(|dir| {
            let name = o.dir.file_name().map(|n| n.to_string_lossy().into_owned());
            let out = PathBuf::from(dir).join(format!("{}.perf", name.unwrap_or_default()));
            let perf = Command::new("perf")
                .args(["record", "-F", "4999", "-g", "-o"])
                .arg(&out)
                .args(["-p", &child.id().to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start perf record");
            // perf needs a moment to attach; the first samples matter less.
            std::thread::sleep(Duration::from_millis(300));
            perf
        });
        Orderlink {
            child,
            perf,
            addr,
            spawned,
            ready_after,
            db_path,
            log_path,
        }
    }

    pub fn cpu(&self) -> Duration {
        process_cpu(self.child.id())
    }

    pub fn cpu_split(&self) -> (Duration, Duration) {
        process_cpu_split(self.child.id())
    }

    pub fn context_switches(&self) -> (u64, u64) {
        context_switches(self.child.id())
    }

    /// Reads VmHWM, then SIGTERM (graceful shutdown; SIGKILL after 20 s).
    pub fn stop(mut self) -> Stopped {
        if let Some(mut perf) = self.perf.take() {
            let _ = Command::new("kill")
                .args(["-INT", &perf.id().to_string()])
                .status();
            let _ = perf.wait();
        }
        let peak_rss_kib = peak_rss_kib(self.child.id());
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        let exit = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break format!("{status} after SIGTERM"),
                Ok(None) if start.elapsed() > Duration::from_secs(20) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break "killed: no exit within 20 s of SIGTERM".to_owned();
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => break format!("wait failed: {e}"),
            }
        };
        let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
        let warnings: Vec<&str> = log.lines().filter(|l| l.contains("WARN")).collect();
        Stopped {
            peak_rss_kib,
            exit,
            warnings: warnings.len(),
            errors: errors.len(),
            error_lines: errors.iter().take(3).map(|l| l.to_string()).collect(),
            warning_lines: warnings.iter().take(5).map(|l| l.to_string()).collect(),
        }
    }
}
