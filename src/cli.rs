//! The commands: `serve` (default), `migrate`, `backup PATH`, `check`,
//! `copy-to postgres://…`, `--version`. Only `serve` starts the server.

use crate::app;
use crate::config::Config;
use crate::db;
use std::path::Path;

const USAGE: &str = "usage: orderlink [serve | migrate | backup PATH | check | copy-to postgres://URL | --version]\n\n  copy-to postgres://URL  copies the stopped SQLite database (DATABASE_PATH) into an empty\n                          PostgreSQL database, migrating it first (docs/postgresql.md)";

pub fn run(args: &[String]) -> i32 {
    let command = args.first().map(String::as_str).unwrap_or("serve");
    match (command, args.len()) {
        ("serve", 0 | 1) => serve(),
        ("migrate", 1) => migrate(),
        ("backup", 2) => backup(Path::new(&args[1])),
        ("check", 1) => check(),
        ("copy-to", 2) => copy_to(&args[1]),
        ("--version" | "-V" | "version", 1) => {
            println!("orderlink {}", env!("CARGO_PKG_VERSION"));
            0
        }
        ("help" | "--help" | "-h", _) => {
            println!("{USAGE}");
            0
        }
        _ => {
            eprintln!("{USAGE}");
            2
        }
    }
}

fn load() -> Result<Config, i32> {
    match Config::from_env() {
        Ok(config) => {
            crate::logging::register_secrets(config.secrets());
            Ok(config)
        }
        Err(errors) => {
            for line in &errors.0 {
                eprintln!("orderlink: configuration error: {line}");
            }
            Err(2)
        }
    }
}

/// A fatal line, said once: through the log when it shows errors (the
/// journal, the test harness), on stderr otherwise.
fn fail(line: &str) -> i32 {
    if log::log_enabled!(log::Level::Error) {
        log::error!("{line}");
    } else {
        eprintln!("orderlink: {line}");
    }
    1
}

fn serve() -> i32 {
    let config = match load() {
        Ok(c) => c,
        Err(code) => return code,
    };
    app::announce(&config);
    let figment = app::figment();
    // Before the database is created or locked: a port that is taken is the
    // most common first-start mistake, and Rocket would only say so after.
    if let Err(line) = port_is_free(&figment) {
        return fail(&line);
    }
    let (rocket, services) = match app::build(config, figment) {
        Ok(built) => built,
        Err(line) => return fail(&line),
    };
    let result = rocket::execute(rocket.launch());
    // Rocket has stopped accepting and finished its in-flight requests;
    // now the sender finishes its sends and the writer its batch.
    services.shutdown();
    match result {
        Ok(_) => 0,
        Err(e) => fail(&format!("server failed: {e}")),
    }
}

/// Binds the configured address and port once and lets go, naming the port
/// when it is taken. A configuration Rocket cannot read is left for Rocket
/// to report.
fn port_is_free(figment: &rocket::figment::Figment) -> Result<(), String> {
    let Ok(config) = figment.extract::<rocket::Config>() else {
        return Ok(());
    };
    match std::net::TcpListener::bind((config.address, config.port)) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(format!(
            "port {} on {} is already in use (another orderlink, or another program, listens there); stop it or choose another port with ROCKET_PORT",
            config.port, config.address
        )),
        Err(e) => Err(format!(
            "cannot listen on port {} of {}: {e}",
            config.port, config.address
        )),
    }
}

fn migrate() -> i32 {
    let config = match load() {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Some(url) = &config.database_url {
        return match app::migrate_postgres(url) {
            Ok(_) => {
                println!("database {} is up to date", crate::pg::redact(url));
                0
            }
            Err(line) => {
                eprintln!("orderlink: {line}");
                1
            }
        };
    }
    match app::open_database(&config) {
        Ok(_) => {
            println!("database {} is up to date", config.database_path.display());
            0
        }
        Err(line) => {
            eprintln!("orderlink: {line}");
            1
        }
    }
}

/// SQLite's online backup API: a consistent snapshot while the server keeps
/// writing (WAL readers do not block the writer).
fn backup(dest: &Path) -> i32 {
    let config = match load() {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Some(url) = &config.database_url {
        eprintln!(
            "orderlink: backup copies the SQLite file; DATABASE_URL keeps everything in PostgreSQL at {}: back it up with pg_dump",
            crate::pg::redact(url)
        );
        return 1;
    }
    match backup_to(&config.database_path, dest) {
        Ok(pages) => {
            println!(
                "backup of {} written to {} ({pages} pages)",
                config.database_path.display(),
                dest.display()
            );
            0
        }
        Err(line) => {
            eprintln!("orderlink: backup failed: {line}");
            1
        }
    }
}

pub fn backup_to(source: &Path, dest: &Path) -> Result<i32, String> {
    if !source.exists() {
        return Err(format!("{} does not exist", source.display()));
    }
    let src = db::open_reader(source).map_err(|e| e.to_string())?;
    db::copy_database(&src, dest)
}

/// SPEC §13: a stopped SQLite database into an empty PostgreSQL one. Needs only
/// DATABASE_PATH, not the server's whole configuration.
fn copy_to(url: &str) -> i32 {
    let path = database_path_from_env();
    match crate::pg::copy_to(&path, url) {
        Ok(counts) => {
            for (table, rows) in &counts {
                println!("{table}: {rows} row(s)");
            }
            let total: u64 = counts.iter().map(|(_, n)| n).sum();
            println!(
                "copied {} ({total} rows in {} tables) to {} in one transaction",
                path.display(),
                counts.len(),
                crate::pg::redact(url)
            );
            0
        }
        Err(line) => {
            eprintln!("orderlink: copy-to failed: {line}");
            1
        }
    }
}

fn database_path_from_env() -> std::path::PathBuf {
    std::path::PathBuf::from(
        std::env::var("DATABASE_PATH")
            .ok()
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "data/orderlink.db".into()),
    )
}

/// Every problem at once, one line each: the configuration's
/// errors, then where the database lives, then the database itself. A
/// problem makes the exit status non-zero; a warning does not.
fn check() -> i32 {
    let mut report = Report::default();
    let config = match Config::from_env() {
        Ok(c) => {
            report.ok(format!(
                "configuration ({} mode)",
                if c.is_sandbox() { "sandbox" } else { "live" }
            ));
            Some(c)
        }
        Err(errors) => {
            for line in errors.0 {
                report.problem(line);
            }
            None
        }
    };
    live_mode_warnings(&mut report);
    first_hour_warnings(&mut report);
    if let Some(url) = postgres_url() {
        check_postgres(&url, &mut report);
        return report.finish();
    }
    let path = config
        .as_ref()
        .map(|c| c.database_path.clone())
        .unwrap_or_else(|| {
            std::path::PathBuf::from(
                std::env::var("DATABASE_PATH")
                    .ok()
                    .map(|v| v.trim().to_owned())
                    .filter(|v| !v.is_empty())
                    .unwrap_or_else(|| "data/orderlink.db".into()),
            )
        });
    match database_location_problem(&path) {
        Some(problem) => report.problem(problem),
        None if !path.exists() => report.warning(format!(
            "database {} does not exist yet; it is created at the first start",
            path.display()
        )),
        None => check_database(&path, &mut report),
    }
    report.finish()
}

/// What lets live mode start but leaves part of it broken. Read from the
/// environment itself, so they are named also when the configuration has
/// errors.
fn live_mode_warnings(report: &mut Report) {
    let var = |name: &str| {
        std::env::var(name)
            .ok()
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    if var("WHATSAPP_TOKEN").is_none() {
        return;
    }
    if var("WHATSAPP_VERIFY_TOKEN").is_none() {
        report.warning("WHATSAPP_VERIFY_TOKEN is not set: Meta's webhook verification (GET /webhooks/whatsapp) gets 403, so the elder's chat cannot be connected".into());
    }
    let base = var("APP_BASE_URL")
        .unwrap_or_else(|| crate::config::default_app_base_url(var("ROCKET_PORT").as_deref()));
    if base.to_ascii_lowercase().starts_with("http://") {
        report.warning(format!(
            "APP_BASE_URL {base} is not https: customers get invite links on a plain-text or local address; set the public https:// URL"
        ));
    }
}

/// What a first setup gets wrong without an error: a misspelled variable
/// (which silently leaves its default, sandbox mode for WHATSAPP_TOKEN), and
/// tokens or secrets too short to protect anything. The environment already
/// holds `.env`'s variables (main loads it); the file is read again only to
/// say where a name came from.
fn first_hour_warnings(report: &mut Report) {
    use crate::config::lint;
    let in_dotenv: std::collections::BTreeSet<String> = dotenvy::from_path_iter(".env")
        .map(|lines| lines.filter_map(Result::ok).map(|(k, _)| k).collect())
        .unwrap_or_default();
    let mut names: Vec<String> = std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .collect();
    names.sort();
    for name in names {
        if let Some(line) = lint::unknown_variable(&name) {
            let place = if in_dotenv.contains(&name) {
                ".env"
            } else {
                "the environment"
            };
            report.warning(format!("{line} [in {place}]"));
        }
    }
    let var = |name: &str| {
        std::env::var(name)
            .ok()
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    for line in lint::short_secrets(var) {
        report.warning(line);
    }
}

/// DATABASE_URL when it names PostgreSQL (a malformed one is a
/// configuration error, reported with the others).
fn postgres_url() -> Option<String> {
    let url = std::env::var("DATABASE_URL").unwrap_or_default();
    let url = url.trim();
    (url.starts_with("postgres://") || url.starts_with("postgresql://")).then(|| url.to_owned())
}

/// SPEC §13: the server keeps everything in PostgreSQL; the SQLite file is
/// not looked at.
fn check_postgres(url: &str, report: &mut Report) {
    let shown = crate::pg::redact(url);
    if std::env::var("DATABASE_PATH").is_ok_and(|p| !p.trim().is_empty()) {
        report.warning(format!(
            "DATABASE_PATH is set but not used: DATABASE_URL keeps everything in PostgreSQL at {shown}"
        ));
    }
    let mut client = match crate::pg::connect(url) {
        Ok(c) => c,
        Err(e) => return report.problem(e),
    };
    report.ok(format!("database: PostgreSQL at {shown} answers"));
    // Whether the connection is encrypted, and how far the server was
    // checked: what a merchant on a rented database wants to see.
    let mode = crate::pg_tls::parse(url)
        .map(|t| t.mode.as_str())
        .unwrap_or("?");
    match client.query_one(
        "SELECT ssl, COALESCE(version, '') FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        &[],
    ) {
        Ok(row) if row.get::<_, bool>(0) => report.ok(format!(
            "database connection is encrypted ({}, sslmode={mode})",
            row.get::<_, String>(1)
        )),
        Ok(_) => report.warning(format!(
            "database connection is NOT encrypted (sslmode={mode}); use sslmode=verify-full unless the database is on this machine or a private network"
        )),
        Err(e) => report.warning(format!("cannot tell whether the connection is encrypted: {e}")),
    }
    match crate::pg::pending_migrations(&mut client) {
        Ok(p) if p.is_empty() => report.ok("database schema is up to date".into()),
        Ok(p) => report.warning(format!(
            "{} migration(s) pending ({}); they are applied at the next start",
            p.len(),
            p.join(", ")
        )),
        Err(e) => report.problem(format!("database {shown}: {e}")),
    }
}

#[derive(Default)]
struct Report {
    problems: usize,
}

impl Report {
    fn ok(&mut self, line: String) {
        println!("ok: {line}");
    }
    fn warning(&mut self, line: String) {
        println!("warning: {line}");
    }
    fn problem(&mut self, line: String) {
        println!("error: {line}");
        self.problems += 1;
    }
    fn finish(self) -> i32 {
        if self.problems == 0 {
            0
        } else {
            println!("{} problem(s) found", self.problems);
            1
        }
    }
}

/// Why the database can never be created or written at `path`, if so: a
/// folder on the way is a regular file, or the folder it would live in
/// (the nearest one that exists) refuses a new file. Probed by creating and
/// removing a file there, which is what the server will do, so permissions,
/// ACLs and read-only mounts are all judged as they will be.
pub fn database_location_problem(path: &Path) -> Option<String> {
    let shown = path.display();
    if path.is_dir() {
        return Some(format!(
            "DATABASE_PATH {shown} is a folder; it must name the database file"
        ));
    }
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut existing = parent;
    while !existing.exists() {
        match existing.parent().filter(|p| !p.as_os_str().is_empty()) {
            Some(up) => existing = up,
            None => {
                existing = Path::new(".");
                break;
            }
        }
    }
    if !existing.is_dir() {
        return Some(format!(
            "DATABASE_PATH {shown} can never be created: {} is a file, not a folder",
            existing.display()
        ));
    }
    let probe = existing.join(format!(".orderlink-check-{}", std::process::id()));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            None
        }
        Err(e) => Some(format!(
            "DATABASE_PATH {shown} can never be created: the folder {} does not accept new files ({e})",
            existing.display()
        )),
    }
}

fn check_database(path: &Path, report: &mut Report) {
    let conn = match db::open_reader(path) {
        Ok(conn) => conn,
        Err(e) => return report.problem(format!("database {}: {e}", path.display())),
    };
    match conn.query_row("PRAGMA quick_check", [], |r| r.get::<_, String>(0)) {
        Ok(ok) if ok == "ok" => report.ok(format!(
            "database {} passes its integrity check",
            path.display()
        )),
        Ok(bad) => report.problem(format!("database {}: {bad}", path.display())),
        Err(e) => report.problem(format!("database {}: {e}", path.display())),
    }
    drop(conn);
    match db::open_writer(path)
        .map_err(|e| e.to_string())
        .and_then(|mut c| db::pending_migrations(&mut c).map_err(|e| e.to_string()))
    {
        Ok(p) if p.is_empty() => report.ok("database schema is up to date".into()),
        Ok(p) => report.warning(format!(
            "{} migration(s) pending ({}); `orderlink migrate` or the next start applies them",
            p.len(),
            p.join(", ")
        )),
        Err(e) => report.problem(format!("database {}: {e}", path.display())),
    }
}
