//! Assembles the running program from a `Config`: the database (locked,
//! migrated), the writer and sender threads, and the Rocket instance.

use crate::config::{Config, Mode};
use crate::db::pool::PgPool;
use crate::db::MayRunTwice;
use crate::db::{self, Db, ReadPool, Writer};
use crate::metrics::Metrics;
use crate::pacer::Pacer;
use crate::routes;
use crate::sender::Sender;
use crate::state::AppState;
use crate::whatsapp::Sandbox;
use crate::whatsapp::{GraphClient, Transport};
use rocket::figment::Figment;
use rocket::{Build, Rocket};
use std::fs::File;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Everything that must be stopped, in order, after Rocket has shut down.
pub struct Services {
    pub sender: Sender,
    pub db: Db,
    store: Store,
    send_bound: Duration,
    /// On a shared database: this instance's place in the roster that
    /// splits `WHATSAPP_MAX_MPS` between instances (SPEC §13).
    roster: Option<crate::roster::Roster>,
    /// Confirms held gateway payments whose wait ended (SPEC §11).
    held: Option<crate::periodic::Periodic>,
    /// On PostgreSQL: wakes this instance's senders when any instance
    /// queues a message (`LISTEN`, SPEC §13).
    listener: Option<db::notify::Listener>,
    /// Invite clicks not yet handed to the writer.
    clicks: crate::clicks::ClickLog,
}

/// What each store runs beside the server.
enum Store {
    Sqlite {
        writer_thread: JoinHandle<()>,
        checkpointer: db::Checkpointer,
        _lock: File,
    },
    /// SPEC §13: no lock file (any number of instances share the database)
    /// and no checkpointer (PostgreSQL keeps its own WAL).
    Postgres { pool: Arc<PgPool> },
}

impl Services {
    /// Stops claiming, lets in-flight sends finish (bounded by one HTTP
    /// timeout plus a margin), then drains and stops the writer.
    pub fn shutdown(self) {
        let left = self.sender.stop(self.send_bound);
        if left > 0 {
            log::warn!("shutdown: {left} send(s) still in flight after {:?}; they will be retried after the next start", self.send_bound);
        }
        if let Some(held) = self.held {
            held.stop();
        }
        // It sends no more: its share goes to the others.
        if let Some(roster) = self.roster {
            roster.stop();
        }
        drop(self.listener);
        // The last clicks (the redirects answered during Rocket's grace
        // period among them) go to the writer before it closes.
        self.clicks.stop();
        self.db.writer.close();
        match self.store {
            Store::Sqlite {
                writer_thread,
                checkpointer,
                _lock,
            } => {
                let _ = writer_thread.join();
                checkpointer.stop();
            }
            Store::Postgres { pool } => pool.join(),
        }
        log::info!("shutdown complete");
    }
}

/// Opens (creating if needed), locks and migrates the database.
pub fn open_database(config: &Config) -> Result<(rusqlite::Connection, File), String> {
    let path = &config.database_path;
    db::prepare_path(path).map_err(|e| format!("DATABASE_PATH {}: {e}", path.display()))?;
    let lock = lock_file(path)?;
    let mut conn =
        db::open_writer(path).map_err(|e| format!("DATABASE_PATH {}: {e}", path.display()))?;
    let (applied, copy) = db::migrate_with_backup(&mut conn, path)?;
    if let Some(copy) = copy {
        log::info!(
            "before migrating, copied the database to {}",
            copy.display()
        );
    }
    if applied > 0 {
        log::info!("applied {applied} migration(s) to {}", path.display());
    }
    Ok((conn, lock))
}

/// Migrates the PostgreSQL database at `url` (SPEC §13). Instances starting
/// together take turns: an advisory lock is held around the migrations.
pub fn migrate_postgres(url: &str) -> Result<usize, String> {
    let mut client = crate::pg::connect(url)?;
    // Any constant will do, as long as every instance uses the same one.
    const MIGRATION_LOCK: i64 = 0x6f72_6465_726c_696e; // "orderlin"
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .map_err(|e| format!("PostgreSQL: {e}"))?;
    let applied = crate::pg::migrate(&mut client);
    let _ = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]);
    applied
}

/// Migrates PostgreSQL and connects the pool.
fn open_postgres(url: &str, size: usize) -> Result<Arc<PgPool>, String> {
    let applied = migrate_postgres(url)?;
    if applied > 0 {
        log::info!(
            "applied {applied} migration(s) to {}",
            crate::pg::redact(url)
        );
    }
    PgPool::start(url, size)
}

/// One serving process per database: the in-memory claim of the sender is
/// only exclusive if no second process sends from the same outbox.
fn lock_file(path: &std::path::Path) -> Result<File, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock_path)
        .map_err(|e| {
            format!(
                "cannot create lock file {}: {e}",
                lock_path.to_string_lossy()
            )
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(_) => Err(format!(
            "another orderlink process is already serving {} (lock file {} is held)",
            path.display(),
            lock_path.to_string_lossy()
        )),
    }
}

pub fn build(config: Config, figment: Figment) -> Result<(Rocket<Build>, Services), String> {
    let config = Arc::new(config);
    let (db, store) = match &config.database_url {
        Some(url) => {
            let pool = open_postgres(url, config.database_pool_size)?;
            let db = Db {
                writer: Writer::postgres(pool.clone()),
                reads: ReadPool::postgres(pool.clone()),
            };
            (db, Store::Postgres { pool })
        }
        None => {
            let (conn, lock) = open_database(&config)?;
            let catch_up = db::CatchUp::default();
            let (writer, writer_thread) = Writer::start_with(conn, catch_up.clone());
            let checkpointer = db::Checkpointer::start(&config.database_path, catch_up)
                .map_err(|e| format!("DATABASE_PATH {}: {e}", config.database_path.display()))?;
            let db = Db {
                writer,
                reads: ReadPool::new(&config.database_path),
            };
            let store = Store::Sqlite {
                writer_thread,
                checkpointer,
                _lock: lock,
            };
            (db, store)
        }
    };
    let transport: Box<dyn Transport> = match &config.mode {
        Mode::Sandbox => Box::new(Sandbox),
        Mode::Live {
            token,
            phone_number_id,
        } => Box::new(GraphClient::new(
            &config.api_base,
            phone_number_id,
            token,
            config.timeout,
            config.send_workers,
        )),
    };
    // On PostgreSQL other instances may share the outbox and the rate cap:
    // this one sends only at the share the roster gives it.
    let shared = matches!(store, Store::Postgres { .. });
    let pacer = Arc::new(if shared {
        Pacer::held()
    } else {
        Pacer::new(config.max_mps)
    });
    // This app's own numbers: the routes, the webhook fairing and the
    // sender count into one `Metrics`, and another app in the process
    // (the tests build several) into its own.
    let metrics = Arc::new(Metrics::new());
    let sender = Sender::start_paced(
        db.clone(),
        config.clone(),
        transport,
        pacer.clone(),
        metrics.clone(),
    );
    let roster = shared.then(|| crate::roster::join(&db, config.max_mps, pacer, sender.clone()));
    let held = start_held_payments(&db, &config, &sender)?;
    let listener = config.database_url.as_deref().map(|url| {
        let sender = sender.clone();
        db::notify::Listener::start(url, move || sender.wake())
    });
    let clicks = crate::clicks::ClickLog::new(db.writer.clone());
    let services = Services {
        listener,
        clicks: clicks.clone(),
        sender: sender.clone(),
        db: db.clone(),
        store,
        send_bound: config.timeout + Duration::from_secs(2),
        roster,
        held: Some(held),
    };
    let sender_for_halt = sender.clone();
    let rocket = rocket::custom(figment)
        .manage(AppState {
            clicks,
            tokens: crate::token_cache::TokenCache::default(),
            prune: crate::periodic::AtMostEvery::new(60_000),
            config,
            db,
            sender,
        })
        .manage(routes::admin_page::PageState::default())
        .manage(metrics.clone())
        .mount("/", routes::routes())
        .register("/", routes::catchers())
        .attach(routes::request_log::RequestLog)
        .attach(routes::metrics::WebhookTimer(metrics))
        .attach(halt_sends_on_shutdown(sender_for_halt))
        .attach(rocket::fairing::AdHoc::on_liftoff("listening", |rocket| {
            Box::pin(async move {
                // Rocket's own "launched" line is kept at INFO under its
                // target, which the default filter hides: this one says it.
                let c = rocket.config();
                log::info!("listening on http://{}:{}", c.address, c.port);
            })
        }));
    Ok((rocket, services))
}

/// The thread that confirms held gateway payments once their wait ends
/// (`crate::held_payments`): it looks a few times per wait, at most every
/// second, so a payment is confirmed soon after its `RAZORPAY_ORDER_WAIT_MS`,
/// also one held before a restart.
fn start_held_payments(
    db: &Db,
    config: &Arc<Config>,
    sender: &Sender,
) -> Result<crate::periodic::Periodic, String> {
    let every =
        (config.razorpay_order_wait / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let (writer, sender) = (db.writer.clone(), sender.clone());
    let token_ttl_ms = config.token_ttl.as_millis() as i64;
    let link_message = config.link_in.sends_link_message();
    crate::periodic::Periodic::spawn("held-payments", move |stop| {
        while !stop.wait(every) {
            let ctx = crate::payments::Context {
                now_ms: crate::clock::now_ms(),
                token_ttl_ms,
                link_message,
            };
            match writer.run_blocking(MayRunTwice::new(move |c| {
                crate::held_payments::release_due(c, &ctx)
            })) {
                Ok(queued) if !queued.is_empty() => sender.wake(),
                Ok(_) => {}
                Err(crate::db::DbError::Closed) => return,
                Err(e) => log::warn!("held payments: cannot release those due: {e}"),
            }
        }
    })
    .map_err(|e| format!("cannot start the held-payments thread: {e}"))
}

/// SIGTERM or Ctrl-C: no send starts once the signal came (Rocket's own
/// grace period for open requests follows, and may last seconds); sends in
/// flight finish and are recorded in `Services::shutdown`.
fn halt_sends_on_shutdown(sender: Sender) -> impl rocket::fairing::Fairing {
    rocket::fairing::AdHoc::on_shutdown("halt sends", move |_| {
        Box::pin(async move {
            log::info!("shutdown: no new sends from now on");
            sender.halt();
        })
    })
}

/// Rocket's figment (Rocket.toml, ROCKET_*), with the body limits the spec
/// promises unless the operator set them.
pub fn figment() -> Figment {
    use rocket::data::{Limits, ToByteUnit};
    let limits = Limits::default()
        .limit("json", 64.kibibytes())
        .limit("bytes", 64.kibibytes())
        .limit("string", 64.kibibytes());
    Figment::from(rocket::Config::figment()).join(("limits", limits))
}

pub fn announce(config: &Config) {
    if config.is_sandbox() {
        log::warn!("SANDBOX MODE: WHATSAPP_TOKEN is not set, so no message leaves this machine; each is logged and recorded as sent with a sandbox- id");
        if config.business_number_is_placeholder {
            // Nobody's phone: the log may show it whole.
            crate::logging::register_public_number(crate::config::SANDBOX_BUSINESS_NUMBER);
            log::warn!(
                "sandbox: WHATSAPP_BUSINESS_NUMBER_E164 is not set; links use the placeholder number {}",
                crate::config::SANDBOX_BUSINESS_NUMBER
            );
        }
        if config.webhook_secret.is_none() {
            log::warn!("sandbox: PAYMENT_WEBHOOK_SECRET is not set; unsigned payment webhooks are accepted");
        }
    } else {
        log::info!("live mode: sending through {}", config.api_base);
        if config.invite_template.is_none() && config.link_in.sends_link_message() {
            log::warn!("WHATSAPP_INVITE_TEMPLATE is not set: customers who have not written to the shop in 24 hours will not get the link (WhatsApp error 131047)");
        }
    }
    log::info!("{}", crate::sender::link::describe_link_in(config));
    if config.admin_token.is_none() {
        log::info!(
            "ADMIN_TOKEN is not set: the admin API and the merchant's page are disabled (404)"
        );
    }
    match &config.database_url {
        Some(url) => log::info!(
            "database: PostgreSQL at {} (DATABASE_PATH is not used)",
            crate::pg::redact(url)
        ),
        None => log::info!("database: {}", config.database_path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rocket::http::{Header, Status};
    use rocket::local::blocking::Client;

    fn app(dir: &std::path::Path) -> (Client, Services) {
        let path = dir.join("o.db");
        let path = path.to_str().unwrap();
        let config =
            Config::from_source(&[("DATABASE_PATH", path), ("METRICS_TOKEN", "scrape")]).unwrap();
        let (rocket, services) = build(config, figment()).unwrap();
        (Client::untracked(rocket).unwrap(), services)
    }

    fn scrape(client: &Client) -> String {
        let res = client
            .get("/metrics")
            .header(Header::new("Authorization", "Bearer scrape"))
            .dispatch();
        assert_eq!(res.status(), Status::Ok);
        res.into_string().unwrap()
    }

    #[test]
    fn two_apps_in_one_process_count_into_their_own_metrics() {
        let (one_dir, two_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (one, one_services) = app(one_dir.path());
        let (two, two_services) = app(two_dir.path());

        let refused = one
            .post("/webhooks/payment")
            .body("not json")
            .dispatch()
            .status();
        assert!(refused.code >= 400, "{refused}");

        let series = "orderlink_webhooks_total{outcome=";
        assert!(scrape(&one).contains(series), "{}", scrape(&one));
        assert!(!scrape(&two).contains(series), "{}", scrape(&two));
        drop((one, two));
        one_services.shutdown();
        two_services.shutdown();
    }
}
