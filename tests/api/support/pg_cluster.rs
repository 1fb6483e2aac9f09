//! A PostgreSQL cluster of one test's own, for tests that stop and start the
//! database under load (outages, SPEC §5 and §13). The shared cluster of
//! `.ci/postgres` serves every other test at once, so it must never be
//! stopped; this one lives in a temp folder, on its own loopback port, and is
//! removed when dropped. It uses the same Debian server binaries as
//! `.ci/postgres` (and, like it, runs as the `postgres` user when we are root,
//! since initdb refuses root).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub struct PgCluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    pub port: u16,
    as_postgres: bool,
}

/// The newest `/usr/lib/postgresql/*/bin` with a server in it.
fn server_bin() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL's server is not installed (/usr/lib/postgresql): source .ci/postgres installs it")
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").exists())
        .collect();
    found.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found
        .pop()
        .expect("no initdb under /usr/lib/postgresql/*/bin")
}

fn is_root() -> bool {
    // The uid of our own process, without a libc dependency.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

impl PgCluster {
    /// A new cluster, started, with an empty database `orderlink` owned by the
    /// superuser `orderlink` (trust on loopback only).
    pub fn start() -> PgCluster {
        let bin = server_bin();
        let as_postgres = is_root();
        let dir = tempfile::Builder::new()
            .prefix("orderlink-pgc.")
            .tempdir()
            .expect("temp dir");
        if as_postgres {
            chown_postgres(dir.path());
        }
        let port = super::ports::free_port();
        let cluster = PgCluster {
            bin,
            dir,
            port,
            as_postgres,
        };
        let data = cluster.data_dir();
        cluster.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "orderlink",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        cluster.start_server();
        cluster.run(
            "createdb",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                "orderlink",
                "orderlink",
            ],
        );
        cluster
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The URL of the `orderlink` database (a test may add `?…` options).
    pub fn url(&self) -> String {
        format!("postgres://orderlink@127.0.0.1:{}/orderlink", self.port)
    }

    /// Starts the server again on the same port and data (after `stop`).
    pub fn start_server(&self) {
        let data = self.data_dir();
        let log = self.dir.path().join("server.log");
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        self.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-t",
                "60",
                "-o",
                &opts,
                "start",
            ],
        );
    }

    /// Stops the server at once (`-m immediate`: as a crash or a cut looks to
    /// its clients), and returns when it is down.
    pub fn stop_server(&self) {
        let data = self.data_dir();
        self.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
    }

    /// Waits until the server accepts connections again.
    pub fn wait_ready(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if ::postgres::Client::connect(&self.url(), ::postgres::NoTls).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the test cluster did not accept connections within {timeout:?}");
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let exe = self.bin.join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let out = cmd.args(args).output().expect("run a PostgreSQL tool");
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn chown_postgres(path: &Path) {
    let ok = Command::new("chown")
        .arg("postgres:")
        .arg(path)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "chown postgres: {} (is there a postgres user? .ci/postgres makes one)",
        path.display()
    );
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.data_dir();
        let exe = self.bin.join("pg_ctl");
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let _ = cmd
            .args([
                "-D",
                data.to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ])
            .output();
    }
}
