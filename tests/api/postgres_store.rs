//! SPEC §13: the server on PostgreSQL, tested in every run (the whole suite
//! runs there too under ORDERLINK_TEST_STORE=postgres, see `.ci/run`): the
//! storage seam's value conversions, and a server started with a password
//! in DATABASE_URL that never shows it. Needs ORDERLINK_TEST_POSTGRES_URL,
//! like tests/api/postgres.rs (skipped loudly without it, failed under CI).

use std::time::Duration;

use orderlink::db::sql::{params, OptionalExtension};
use orderlink::db::{Conn, DbError};

use crate::postgres::postgres_url;
use crate::support::child::run_cli;
use crate::support::store::Scratch;
use crate::support::{pay, payment_event, FakeGraph, TestApp, PATIENCE};

/// The same statements on both stores give the same values, though
/// PostgreSQL types them strictly (an i64 into INTEGER, 0/1 into BOOLEAN,
/// SUM of a BIGINT being NUMERIC, EXISTS a boolean).
#[test]
#[cfg_attr(not(orderlink_pg), ignore = "needs PostgreSQL: source .ci/postgres")]
fn the_seam_binds_and_reads_postgresql_types_as_it_does_sqlite_ones() {
    let Some(admin_url) =
        postgres_url("the_seam_binds_and_reads_postgresql_types_as_it_does_sqlite_ones")
    else {
        return;
    };
    let scratch = Scratch::create(&admin_url);
    let dir = tempfile::tempdir().unwrap();
    let stores = [
        Conn::from(rusqlite::Connection::open(dir.path().join("seam.db")).unwrap()),
        Conn::from(scratch.client()),
    ];
    for conn in &stores {
        let store = format!("{:?}", conn.dialect());
        conn.execute_batch(
            "CREATE TABLE t (k VARCHAR(20) PRIMARY KEY, small INTEGER NOT NULL,
                             big BIGINT NOT NULL, flag BOOLEAN, note TEXT)",
        )
        .unwrap();
        let insert = "INSERT INTO t (k, small, big, flag, note) VALUES ($1, $2, $3, $4, $5)";
        for (k, small, big, flag) in [("a", 1i64, 5_000_000_000i64, true), ("b", 2, 7, false)] {
            let n = conn
                .prepare_cached(insert)
                .unwrap()
                .execute(params![k, small, big, flag, None::<String>])
                .unwrap();
            assert_eq!(n, 1, "{store}");
        }
        // A BOOLEAN given as SQLite's 0/1 integer, and a NULL text.
        conn.execute(insert, params!["c", 3u32, 1i64, 1i64, "x'; --"])
            .unwrap();

        let (sum, count, any): (i64, i64, bool) = conn
            .query_row(
                "SELECT SUM(big), COUNT(*), EXISTS (SELECT 1 FROM t WHERE flag = TRUE) FROM t",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!((sum, count, any), (5_000_000_008, 3, true), "{store}");

        // `$2` before `$1`: each store takes the text as written.
        let rows: Vec<(String, bool, Option<String>)> = conn
            .prepare("SELECT k, flag, note FROM t WHERE $2 > 0 AND k > $1 ORDER BY k LIMIT $2")
            .unwrap()
            .query_map(params!["a", 2i64], |r| {
                Ok((r.get("k")?, r.get(1)?, r.get(2)?))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            rows,
            vec![
                ("b".to_owned(), false, None),
                ("c".to_owned(), true, Some("x'; --".to_owned()))
            ],
            "{store}"
        );
        let none = conn
            .query_row("SELECT small FROM t WHERE k = $1", ["zz"], |r| {
                r.get::<_, i64>(0)
            })
            .optional()
            .unwrap();
        assert_eq!(none, None, "{store}");
        let small: u32 = conn
            .query_row("SELECT small FROM t WHERE k = $1", ["c"], |r| r.get(0))
            .unwrap();
        assert_eq!(small, 3, "{store}");
    }

    // PostgreSQL checks what SQLite would store as given: a value that does
    // not fit its column is an error naming why, not a silent change.
    let pg = &stores[1];
    let wide = pg
        .execute("UPDATE t SET small = $1 WHERE k = 'a'", params![1i64 << 40])
        .unwrap_err();
    assert!(
        matches!(&wide, DbError::Pg(_)) && wide.to_string().contains("out of range"),
        "{wide}"
    );
}

/// A server on PostgreSQL records a paid order and sends its messages, and
/// the password in DATABASE_URL appears in no log line and no `check` line.
#[test]
#[cfg_attr(not(orderlink_pg), ignore = "needs PostgreSQL: source .ci/postgres")]
fn a_server_on_postgresql_sends_and_never_logs_the_password_of_database_url() {
    let Some(admin_url) =
        postgres_url("a_server_on_postgresql_sends_and_never_logs_the_password_of_database_url")
    else {
        return;
    };
    // Arrange: a URL with a password (the throwaway cluster trusts loopback,
    // so any password connects).
    const PASSWORD: &str = "pg-s3cret-7f2a91";
    let scratch = Scratch::create(&admin_url);
    let with_password =
        scratch
            .url
            .replacen("://orderlink@", &format!("://orderlink:{PASSWORD}@"), 1);
    assert!(with_password.contains(PASSWORD), "{}", scratch.url);
    let graph = FakeGraph::start();

    // Act
    let mut app = TestApp::builder(&graph)
        .env("DATABASE_URL", &with_password)
        .spawn();
    let processed = pay(&app, &payment_event("ORD-PGS-1"));
    app.wait_for_outbox_status("ORD-PGS-1", "link", "sent", PATIENCE);
    let check = run_cli(
        &["check"],
        &[("DATABASE_URL".to_owned(), with_password.clone())],
        Duration::from_secs(20),
    );
    assert!(app
        .terminate(Duration::from_secs(15))
        .is_some_and(|s| s.success()));

    // Assert: the rows are in PostgreSQL, not in a SQLite file.
    let mut pg = scratch.client();
    let token: String = pg
        .query_one(
            "SELECT token FROM whatsapp_tokens WHERE order_id = 'ORD-PGS-1'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(token, processed.token);
    let sent: i64 = pg
        .query_one(
            "SELECT COUNT(*) FROM outbox WHERE order_id = 'ORD-PGS-1' AND status = 'sent'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(sent, 2);
    assert!(
        !app.db_path.exists(),
        "no SQLite file is made on PostgreSQL"
    );
    let logs = app.logs();
    assert!(
        logs.contains("database: PostgreSQL at postgres://orderlink@"),
        "{logs}"
    );
    assert!(!logs.contains(PASSWORD), "{logs}");
    assert!(check.status.success(), "{}", check.output());
    assert!(!check.output().contains(PASSWORD), "{}", check.output());
}

/// Two claims at once on PostgreSQL (two instances' senders) take disjoint
/// rows without waiting for each other: the claim's FOR UPDATE SKIP LOCKED.
#[test]
#[cfg_attr(not(orderlink_pg), ignore = "needs PostgreSQL: source .ci/postgres")]
fn concurrent_claims_on_postgresql_skip_each_others_rows_instead_of_waiting() {
    let Some(admin_url) =
        postgres_url("concurrent_claims_on_postgresql_skip_each_others_rows_instead_of_waiting")
    else {
        return;
    };
    // Arrange: ten paid orders, so ten due confirmations.
    let scratch = Scratch::create(&admin_url);
    orderlink::pg::migrate(&mut scratch.client()).unwrap();
    let setup = Conn::from(scratch.client());
    let ctx = orderlink::payments::Context {
        now_ms: 1_000,
        token_ttl_ms: 1_000_000,
        link_message: true,
    };
    for i in 0..10 {
        let body = payment_event(&format!("ORD-CLAIM-{i}")).to_string();
        let event = orderlink::domain::PaymentEvent::parse(body.as_bytes(), None).unwrap();
        orderlink::payments::record(&setup, &format!("evt-claim-{i}"), &event, &ctx).unwrap();
    }
    let (a, b) = (Conn::from(scratch.client()), Conn::from(scratch.client()));
    // Without SKIP LOCKED the second claim would wait for the first's locks:
    // give up after a second rather than hang.
    b.execute_batch("SET lock_timeout = '1s'").unwrap();

    // Act: the first claim's transaction stays open while the second claims.
    a.execute_batch("BEGIN").unwrap();
    let first = orderlink::outbox::claim(&a, "a", 2_000, 60_000, 6).unwrap();
    b.execute_batch("BEGIN").unwrap();
    let second = orderlink::outbox::claim(&b, "b", 2_000, 60_000, 6).expect("not blocked");
    b.execute_batch("COMMIT").unwrap();
    a.execute_batch("COMMIT").unwrap();

    // Assert
    let ids = |rows: &[orderlink::outbox::Due]| {
        rows.iter()
            .map(|r| r.id.clone())
            .collect::<std::collections::BTreeSet<_>>()
    };
    assert_eq!(first.len(), 6);
    assert_eq!(second.len(), 4, "the rest, none of the first claim's");
    assert!(ids(&first).is_disjoint(&ids(&second)));
    let claimed: Vec<(String, i64)> = setup
        .prepare("SELECT claimed_by, COUNT(*) FROM outbox WHERE status = 'sending' GROUP BY claimed_by ORDER BY 1")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(claimed, vec![("a".to_owned(), 6), ("b".to_owned(), 4)]);
}
