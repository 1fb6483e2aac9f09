//! SPEC §10: `/healthz` is 503 with the reason while the database has
//! reported itself damaged, and `orderlink check` runs SQLite's integrity
//! check. issue 18 §6: with two pages of the file overwritten the server
//! started, `/healthz` answered 200 `ok`, every payment got 503 for ever and
//! only the log said `database disk image is malformed`.

use std::io::{Seek, SeekFrom, Write};
use std::time::Duration;

use crate::support::child::{live_env, run_cli};
use crate::support::*;

/// Overwrites the first page of each table's b-tree with garbage, as a bad
/// disk or a stray `dd` would, after folding the WAL into the file.
fn overwrite_root_pages(db: &std::path::Path, tables: &[&str]) {
    let conn = rusqlite::Connection::open(db).expect("open the stopped app's database");
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .expect("checkpoint");
    let page_size: i64 = conn
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .expect("page size");
    let pages: Vec<i64> = tables
        .iter()
        .map(|t| {
            conn.query_row(
                "SELECT rootpage FROM sqlite_master WHERE type = 'table' AND name = $1",
                [t],
                |r| r.get(0),
            )
            .expect("root page")
        })
        .collect();
    drop(conn);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(db)
        .expect("open the file");
    for page in pages {
        file.seek(SeekFrom::Start(((page - 1) * page_size) as u64))
            .unwrap();
        file.write_all(&vec![0xA5; page_size as usize]).unwrap();
    }
    file.sync_all().unwrap();
}

#[test]
fn a_damaged_sqlite_file_makes_healthz_503_with_the_reason_and_check_reports_it() {
    // Arrange: a few paid orders, then the server stopped and two pages of
    // its file overwritten.
    let graph = FakeGraph::start();
    let mut app = TestApp::builder(&graph).on_sqlite().spawn();
    for i in 0..3 {
        pay(&app, &payment_event(&format!("ORD-H{i}")));
    }
    app.assert_sends_settled(&graph, 6);
    assert!(app.terminate(Duration::from_secs(20)).is_some());
    overwrite_root_pages(&app.db_path, &["webhook_events", "orders"]);

    // Act: it starts (the health probe's own row is intact), and a payment
    // meets the damage.
    app.restart();
    let paid = app.post_webhook(&payment_event("ORD-H9").to_string());

    // Assert
    assert!(paid.status >= 500, "{}: {}", paid.status, paid.body);
    let health = app.get("/healthz");
    assert_eq!(health.status, 503, "{}", health.body);
    let message = health.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(message.contains("malformed"), "{}", health.body);
    // Still 503 at the next probe: the damage is not forgotten.
    assert_eq!(app.get("/healthz").status, 503);
    assert!(app.logs().contains("DATABASE DAMAGED"), "{}", app.logs());

    // `orderlink check` runs the integrity check and names the problem.
    app.kill9();
    let check = run_cli(
        &["check"],
        &live_env(graph.base_url(), &app.db_path),
        Duration::from_secs(30),
    );
    assert!(!check.status.success(), "{}", check.output());
    assert!(
        check
            .stdout
            .lines()
            .any(|l| l.starts_with("error: database") && !l.contains("schema")),
        "{}",
        check.output()
    );
}
