//! The commands: `serve` (default), `migrate`, `backup PATH`, `check`.
//! Only `serve` starts the server.

use crate::app;
use crate::config::Config;
use crate::db;
use std::path::Path;

const USAGE: &str = "usage: orderlink [serve | migrate | backup PATH | check]";

pub fn run(args: &[String]) -> i32 {
    let command = args.first().map(String::as_str).unwrap_or("serve");
    match (command, args.len()) {
        ("serve", 0 | 1) => serve(),
        ("migrate", 1) => migrate(),
        ("backup", 2) => backup(Path::new(&args[1])),
        ("check", 1) => check(),
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

fn serve() -> i32 {
    let config = match load() {
        Ok(c) => c,
        Err(code) => return code,
    };
    app::announce(&config);
    let (rocket, services) = match app::build(config, app::figment()) {
        Ok(built) => built,
        Err(line) => {
            eprintln!("orderlink: {line}");
            log::error!("{line}");
            return 1;
        }
    };
    let result = rocket::execute(rocket.launch());
    // Rocket has stopped accepting and finished its in-flight requests;
    // now the sender finishes its sends and the writer its batch.
    services.shutdown();
    match result {
        Ok(_) => 0,
        Err(e) => {
            log::error!("server failed: {e}");
            eprintln!("orderlink: server failed: {e}");
            1
        }
    }
}

fn migrate() -> i32 {
    let config = match load() {
        Ok(c) => c,
        Err(code) => return code,
    };
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

fn check() -> i32 {
    let mut problems = 0;
    let config = match Config::from_env() {
        Ok(c) => {
            println!(
                "ok: configuration ({} mode)",
                if c.is_sandbox() { "sandbox" } else { "live" }
            );
            Some(c)
        }
        Err(errors) => {
            for line in &errors.0 {
                println!("error: {line}");
            }
            problems += errors.0.len();
            None
        }
    };
    let path = config
        .as_ref()
        .map(|c| c.database_path.clone())
        .unwrap_or_else(|| {
            std::path::PathBuf::from(
                std::env::var("DATABASE_PATH").unwrap_or_else(|_| "data/orderlink.db".into()),
            )
        });
    if !path.exists() {
        println!(
            "warning: database {} does not exist yet; it is created at the first start",
            path.display()
        );
    } else {
        match db::open_reader(&path) {
            Err(e) => {
                println!("error: database {}: {e}", path.display());
                problems += 1;
            }
            Ok(conn) => {
                match conn.query_row("PRAGMA quick_check", [], |r| r.get::<_, String>(0)) {
                    Ok(ok) if ok == "ok" => {
                        println!("ok: database {} passes its integrity check", path.display())
                    }
                    Ok(bad) => {
                        println!("error: database {}: {bad}", path.display());
                        problems += 1;
                    }
                    Err(e) => {
                        println!("error: database {}: {e}", path.display());
                        problems += 1;
                    }
                }
                drop(conn);
                match db::open_writer(&path).map_err(|e| e.to_string()).and_then(|mut c| {
                    db::pending_migrations(&mut c).map_err(|e| e.to_string())
                }) {
                    Ok(p) if p.is_empty() => println!("ok: database schema is up to date"),
                    Ok(p) => println!("warning: {} migration(s) pending ({}); `orderlink migrate` or the next start applies them", p.len(), p.join(", ")),
                    Err(e) => {
                        println!("error: database {}: {e}", path.display());
                        problems += 1;
                    }
                }
            }
        }
    }
    if problems == 0 {
        0
    } else {
        1
    }
}
