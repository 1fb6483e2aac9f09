//! The ceilings: what the framework and the database can do on this machine,
//! measured in the same run as the product.

use crate::events;
use orderlink::clock::now_ms;
use orderlink::domain::PaymentEvent;
use orderlink::payments::{self, Context};
use std::path::Path;
use std::time::{Duration, Instant};

/// Where the constant 302 points: a wa.me link as long as the product's.
pub const REDIRECT_TO: &str = "https://wa.me/919999900000?text=Hi%2C%20I%E2%80%99m%20contacting%20on%20behalf%20of%20order%20ORD-000001.%20Token%3A%2012345678-1234-4123-8123-123456789abc";

#[rocket::get("/hello")]
fn constant() -> &'static str {
    "Hello, world!"
}

#[rocket::get("/r")]
fn redirect() -> rocket::response::Redirect {
    rocket::response::Redirect::found(REDIRECT_TO)
}

/// `bench ceiling-server PORT`: a minimal Rocket 0.5 server, log off,
/// default workers, answering `GET /hello` with a constant string and `GET /r`
/// with a constant 302. Runs until killed.
pub fn serve(port: u16) -> i32 {
    let config = rocket::Config {
        address: std::net::Ipv4Addr::LOCALHOST.into(),
        port,
        log_level: rocket::config::LogLevel::Off,
        cli_colors: false,
        ..rocket::Config::release_default()
    };
    let rocket = rocket::custom(config).mount("/", rocket::routes![constant, redirect]);
    match rocket::execute(rocket.launch()) {
        Ok(_) => 0,
        Err(e) => {
            eprintln!("ceiling server: {e}");
            1
        }
    }
}

pub struct SqliteCeiling {
    pub transactions: usize,
    pub elapsed: Duration,
    /// CPU time of the committing thread (the rest of `elapsed` is I/O).
    pub cpu: Duration,
}

impl SqliteCeiling {
    pub fn rate(&self) -> f64 {
        self.transactions as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Commits `n` transactions, each one webhook's unit of work
/// (`payments::record`: webhook_events, orders upsert, whatsapp_tokens, two
/// outbox rows), on the product's schema and pragmas, with `synchronous` set
/// to `sync` after `open_writer`. Bounded by `deadline`.
pub fn sqlite(dir: &Path, sync: &str, n: usize, deadline: Duration) -> SqliteCeiling {
    let path = dir.join(format!("raw-{}.db", sync.to_ascii_lowercase()));
    let conn = open_migrated(&path);
    conn.pragma_update(None, "synchronous", sync)
        .expect("set synchronous");
    let conn = orderlink::db::Conn::from(conn);
    let events: Vec<(String, PaymentEvent)> = (0..n)
        .map(|i| {
            let id = format!("raw_{}_{i}", sync.to_ascii_lowercase());
            let body = events::payment_body(&id, &format!("RAW-{i:07}"));
            (
                id,
                PaymentEvent::parse(body.as_bytes(), None).expect("bench event parses"),
            )
        })
        .collect();
    let ttl = 90 * 24 * 3600 * 1000;
    let cpu0 = crate::http::thread_cpu();
    let start = Instant::now();
    let mut done = 0;
    for (key, event) in &events {
        if start.elapsed() > deadline {
            break;
        }
        conn.execute_batch("BEGIN IMMEDIATE").expect("begin");
        let ctx = Context {
            now_ms: now_ms(),
            token_ttl_ms: ttl,
            link_message: true,
        };
        let outcome = payments::record(&conn, key, event, &ctx).expect("record");
        debug_assert!(matches!(outcome, payments::Outcome::Processed { .. }));
        conn.execute_batch("COMMIT").expect("commit");
        done += 1;
    }
    SqliteCeiling {
        transactions: done,
        elapsed: start.elapsed(),
        cpu: crate::http::thread_cpu().saturating_sub(cpu0),
    }
}

/// A database at `path` with the product's folder/file permissions, writer
/// pragmas (WAL, synchronous=FULL, foreign keys) and migrations.
pub fn open_migrated(path: &Path) -> rusqlite::Connection {
    orderlink::db::prepare_path(path).expect("prepare the database path");
    let mut conn = orderlink::db::open_writer(path).expect("open the database");
    orderlink::db::migrate(&mut conn).expect("migrate");
    conn
}
