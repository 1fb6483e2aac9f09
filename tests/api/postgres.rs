//! SPEC §13, the groundwork: the embedded migrations build the same schema in
//! PostgreSQL, and `orderlink copy-to postgres://…` moves a stopped SQLite
//! database there row for row.
//!
//! These tests need a PostgreSQL whose user may create databases, named by
//! ORDERLINK_TEST_POSTGRES_URL (`.ci/postgres` starts a throwaway one). Each
//! test works in a scratch database of its own, dropped at the end. Without
//! the variable they skip, loudly; under CI=true they fail.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use ::postgres::types::Type;
use ::postgres::Client;
use rusqlite::types::Value;

use crate::support::child::{open_read_only, run_cli};
use crate::support::meta::{
    app_with_reply_on_sqlite, fresh_wamid, pay_and_send, prefilled_text_payload, status,
    statuses_payload, wait_for_replies, MetaApi,
};
use crate::support::store::Scratch;
use crate::support::{pay, payment_event, FakeGraph, Reply, PATIENCE};

const PAID: &str = "ORD-PG-1";
const DEAD: &str = "ORD-PG-2";
const ELDER: &str = "919811111111";

/// The server's URL of a PostgreSQL to test against, or `None` after saying
/// loudly that `test` is skipped (a panic under CI=true).
pub(crate) fn postgres_url(test: &str) -> Option<String> {
    match std::env::var("ORDERLINK_TEST_POSTGRES_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url.trim().to_owned()),
        _ => {
            let why = "ORDERLINK_TEST_POSTGRES_URL is not set (`source .ci/postgres` starts a throwaway PostgreSQL and sets it)";
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{test}: CI=true and {why}");
            }
            // Straight to stderr: the test harness captures eprintln! of a
            // passing test, and a skip must be seen.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "\n!!!!!!!! SKIPPED PostgreSQL test {test}: {why} !!!!!!!!\n"
            );
            None
        }
    }
}

/// SQLite's tables of ours (not its own, not refinery's bookkeeping).
fn sqlite_tables(conn: &rusqlite::Connection) -> Vec<String> {
    conn.prepare(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite%'
         AND name <> 'refinery_schema_history' ORDER BY name",
    )
    .unwrap()
    .query_map([], |r| r.get(0))
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

/// `(name, declared type, not null, primary key position)` of each column.
fn sqlite_columns(conn: &rusqlite::Connection, table: &str) -> Vec<(String, String, bool, i64)> {
    conn.prepare(&format!("PRAGMA table_info({table})"))
        .unwrap()
        .query_map([], |r| {
            Ok((
                r.get::<_, String>("name")?,
                r.get::<_, String>("type")?.to_ascii_uppercase(),
                r.get::<_, bool>("notnull")?,
                r.get::<_, i64>("pk")?,
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// What a portable declared type must be in PostgreSQL: `(data_type, length)`.
fn postgres_type_for(declared: &str) -> (String, Option<i32>) {
    let (base, length) = match declared.split_once('(') {
        Some((base, rest)) => (
            base.trim(),
            Some(rest.trim_end_matches(')').trim().parse::<i32>().unwrap()),
        ),
        None => (declared, None),
    };
    let data_type = match base {
        "VARCHAR" => "character varying",
        "CHAR" => "character",
        "TEXT" => "text",
        "BIGINT" => "bigint",
        "INTEGER" => "integer",
        "BOOLEAN" => "boolean",
        other => panic!("declared type {other} is not one of the portable types; add it here"),
    };
    (data_type.to_owned(), length)
}

#[test]
#[cfg_attr(not(orderlink_pg), ignore = "needs PostgreSQL: source .ci/postgres")]
fn the_sqlite_migrations_build_the_same_tables_and_columns_in_postgresql() {
    let Some(admin_url) =
        postgres_url("the_sqlite_migrations_build_the_same_tables_and_columns_in_postgresql")
    else {
        return;
    };
    // Arrange: an empty scratch database, and the SQLite schema the server makes.
    let scratch = Scratch::create(&admin_url);
    let dir = tempfile::tempdir().unwrap();
    let mut lite = rusqlite::Connection::open(dir.path().join("schema.db")).unwrap();
    orderlink::db::migrate(&mut lite).unwrap();
    let mut pg = scratch.client();

    // Act: the same embedded migrations, twice (the second run has nothing to do).
    let applied = orderlink::pg::migrate(&mut pg).expect("the migrations apply to PostgreSQL");
    let again = orderlink::pg::migrate(&mut pg).expect("a second run");

    // Assert
    let lite_versions: Vec<i64> = lite
        .prepare("SELECT version FROM refinery_schema_history ORDER BY version")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let pg_versions: Vec<i64> = pg
        .query(
            "SELECT version::bigint FROM refinery_schema_history ORDER BY version",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        pg_versions, lite_versions,
        "the same migrations on both sides"
    );
    assert_eq!(applied, lite_versions.len());
    assert_eq!(again, 0);

    let mut pg_columns: BTreeMap<(String, String), (String, Option<i32>, bool)> = BTreeMap::new();
    for row in pg
        .query(
            "SELECT table_name::text, column_name::text, data_type::text,
                    character_maximum_length, is_nullable = 'NO'
             FROM information_schema.columns WHERE table_schema = current_schema()",
            &[],
        )
        .unwrap()
    {
        pg_columns.insert(
            (row.get(0), row.get(1)),
            (row.get(2), row.get(3), row.get(4)),
        );
    }
    let pg_primary_keys: BTreeMap<String, Vec<String>> = pg
        .query(
            "SELECT tc.table_name::text, kcu.column_name::text
             FROM information_schema.table_constraints tc
             JOIN information_schema.key_column_usage kcu
               ON kcu.constraint_name = tc.constraint_name AND kcu.table_schema = tc.table_schema
             WHERE tc.constraint_type = 'PRIMARY KEY' AND tc.table_schema = current_schema()
             ORDER BY tc.table_name, kcu.ordinal_position",
            &[],
        )
        .unwrap()
        .iter()
        .fold(BTreeMap::new(), |mut keys, r| {
            keys.entry(r.get(0)).or_insert_with(Vec::new).push(r.get(1));
            keys
        });

    let tables = sqlite_tables(&lite);
    assert!(tables.len() >= 10, "SQLite tables: {tables:?}");
    let mut checked = 0;
    for table in &tables {
        let columns = sqlite_columns(&lite, table);
        for (name, declared, not_null, pk) in &columns {
            let (data_type, length, pg_not_null) = pg_columns
                .get(&(table.clone(), name.clone()))
                .unwrap_or_else(|| panic!("PostgreSQL has no column {table}.{name}"))
                .clone();
            let expected = postgres_type_for(declared);
            assert_eq!(
                (data_type, length),
                expected,
                "{table}.{name} is {declared} in SQLite"
            );
            // A primary key is NOT NULL in PostgreSQL whether said or not; SQLite
            // (for a key that is not an INTEGER rowid) only when said. The
            // application never writes NULL there, so that difference is compatible.
            let lite_not_null = *not_null || (*pk > 0 && pg_not_null);
            assert_eq!(
                pg_not_null, lite_not_null,
                "{table}.{name}: NOT NULL on one side only"
            );
            checked += 1;
        }
        let mut lite_key: Vec<(i64, String)> = columns
            .iter()
            .filter(|c| c.3 > 0)
            .map(|c| (c.3, c.0.clone()))
            .collect();
        lite_key.sort();
        let lite_key: Vec<String> = lite_key.into_iter().map(|(_, n)| n).collect();
        assert_eq!(
            pg_primary_keys.get(table).cloned().unwrap_or_default(),
            lite_key,
            "primary key of {table}"
        );
        let pg_count = pg_columns.keys().filter(|(t, _)| t == table).count();
        assert_eq!(
            pg_count,
            columns.len(),
            "columns of {table}: PostgreSQL has more"
        );
    }
    println!(
        "{} tables, {checked} columns alike in SQLite and PostgreSQL",
        tables.len()
    );
}

/// Every row of `table`, each as SQLite values (PostgreSQL's read back to
/// SQLite's kinds by their column type), sorted.
fn sqlite_rows(conn: &rusqlite::Connection, table: &str) -> Vec<Vec<Value>> {
    let mut stmt = conn.prepare(&format!("SELECT * FROM {table}")).unwrap();
    let n = stmt.column_count();
    let mut rows: Vec<Vec<Value>> = stmt
        .query_map([], |r| (0..n).map(|i| r.get::<_, Value>(i)).collect())
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    rows.sort_by_key(|r| format!("{r:?}"));
    rows
}

fn postgres_rows(pg: &mut Client, table: &str, columns: &[String]) -> Vec<Vec<Value>> {
    let list = columns.join(", ");
    let mut rows: Vec<Vec<Value>> = pg
        .query(&format!("SELECT {list} FROM {table}"), &[])
        .unwrap()
        .iter()
        .map(|row| {
            row.columns()
                .iter()
                .enumerate()
                .map(|(i, c)| match *c.type_() {
                    Type::BOOL => row
                        .get::<_, Option<bool>>(i)
                        .map_or(Value::Null, |b| Value::Integer(b.into())),
                    Type::INT8 => row
                        .get::<_, Option<i64>>(i)
                        .map_or(Value::Null, Value::Integer),
                    Type::INT4 => row
                        .get::<_, Option<i32>>(i)
                        .map_or(Value::Null, |v| Value::Integer(v.into())),
                    Type::VARCHAR | Type::TEXT | Type::BPCHAR => row
                        .get::<_, Option<String>>(i)
                        .map_or(Value::Null, Value::Text),
                    ref other => panic!("{table}.{}: unexpected type {other}", c.name()),
                })
                .collect()
        })
        .collect();
    rows.sort_by_key(|r| format!("{r:?}"));
    rows
}

fn copy_env(db: &Path) -> Vec<(String, String)> {
    vec![(
        "DATABASE_PATH".to_owned(),
        db.to_string_lossy().into_owned(),
    )]
}

#[test]
#[cfg_attr(not(orderlink_pg), ignore = "needs PostgreSQL: source .ci/postgres")]
fn copy_to_moves_a_stopped_database_into_an_empty_postgresql_row_for_row() {
    let Some(admin_url) =
        postgres_url("copy_to_moves_a_stopped_database_into_an_empty_postgresql_row_for_row")
    else {
        return;
    };
    // Arrange: a database made by the real server: a paid order whose messages
    // were sent and delivered (with pricing), an elder linked through the
    // token who got a reply, two opens of the invite (one a link preview), and
    // an order whose confirmation Meta refused for good (a dead letter).
    let graph = FakeGraph::start();
    // SQLite is the source here, also when the suite runs on PostgreSQL.
    let mut app = app_with_reply_on_sqlite(&graph);
    let processed = pay_and_send(&app, PAID);
    let confirmation = app
        .outbox_row(PAID, "confirmation")
        .graph_message_id
        .expect("confirmation graph id");
    app.deliver(&statuses_payload(vec![
        status(&confirmation, "sent", "919876543210"),
        status(&confirmation, "delivered", "919876543210"),
    ]));
    let invite_path = format!("/w/invite/{}", processed.token);
    let opened = app.get_no_redirect(&invite_path);
    assert_eq!(opened.status, 302, "invite: {}", opened.body);
    let preview = app.get_no_redirect_with(&invite_path, &[("User-Agent", "WhatsApp/2.23.20.0 A")]);
    assert!(preview.status < 400, "preview: {}", preview.body);
    app.deliver(&prefilled_text_payload(
        ELDER,
        "Asha",
        &fresh_wamid(),
        &processed,
    ));
    wait_for_replies(&graph, ELDER, 1);
    app.wait_for_outbox_status(PAID, "elder_reply", "sent", PATIENCE);
    graph.script([Reply::meta_error(400, 100)]);
    pay(&app, &payment_event(DEAD));
    app.wait_for_outbox_status(DEAD, "confirmation", "dead", PATIENCE);
    let scratch = Scratch::create(&admin_url);
    let env = copy_env(&app.db_path);

    // Act 1: while the server runs, copy-to refuses and writes nothing.
    let running = run_cli(&["copy-to", &scratch.url], &env, Duration::from_secs(60));

    // Assert 1
    assert!(!running.status.success(), "{}", running.output());
    assert!(running.stderr.contains("lock"), "{}", running.output());
    let mut pg = scratch.client();
    let has_orders: bool = pg
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM information_schema.tables WHERE table_name = 'orders')",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(!has_orders, "nothing is created before the lock is held");

    // Act 2: stopped, the copy runs.
    assert!(
        app.terminate(Duration::from_secs(20)).is_some(),
        "server stops"
    );
    let copied = run_cli(&["copy-to", &scratch.url], &env, Duration::from_secs(120));

    // Assert 2: every table row for row, and the counts it printed.
    assert!(copied.status.success(), "{}", copied.output());
    let lite = open_read_only(&app.db_path);
    let tables = sqlite_tables(&lite);
    let mut nonempty = 0;
    for table in &tables {
        let columns: Vec<String> = sqlite_columns(&lite, table)
            .into_iter()
            .map(|c| c.0)
            .collect();
        let expected = sqlite_rows(&lite, table);
        let got = postgres_rows(&mut pg, table, &columns);
        assert_eq!(got, expected, "{table}: PostgreSQL differs from SQLite");
        assert!(
            copied
                .stdout
                .lines()
                .any(|l| l == format!("{table}: {} row(s)", expected.len())),
            "no count line for {table}: {}",
            copied.output()
        );
        if !expected.is_empty() {
            nonempty += 1;
        }
    }
    for (what, sql) in [
        ("orders", "SELECT COUNT(*) FROM orders"),
        (
            "a dead letter",
            "SELECT COUNT(*) FROM outbox WHERE status = 'dead'",
        ),
        (
            "an elder reply",
            "SELECT COUNT(*) FROM outbox WHERE kind = 'elder_reply'",
        ),
        (
            "a priced delivery",
            "SELECT COUNT(*) FROM outbox WHERE pricing_billable = 1",
        ),
        (
            "a contact linked by token",
            "SELECT COUNT(*) FROM contact_links WHERE token_id IS NOT NULL",
        ),
        (
            "the elder's message",
            "SELECT COUNT(*) FROM inbound_messages",
        ),
        ("clicks", "SELECT COUNT(*) FROM invite_clicks"),
        (
            "a preview click",
            "SELECT COUNT(*) FROM invite_clicks WHERE is_preview = 1",
        ),
        (
            "a real click",
            "SELECT COUNT(*) FROM invite_clicks WHERE is_preview = 0",
        ),
    ] {
        let n: i64 = lite.query_row(sql, [], |r| r.get(0)).unwrap();
        assert!(n > 0, "the arranged database has {what} ({sql})");
    }
    // Copied tables come with statistics (copy-to's own ANALYZE, not
    // autovacuum's, which PostgreSQL records apart): plans made from the
    // first request on know the tables' sizes.
    let unanalyzed: Vec<String> = pg
        .query(
            "SELECT relname::text FROM pg_stat_user_tables
             WHERE relname IN ('orders', 'outbox', 'whatsapp_tokens', 'webhook_events')
               AND last_analyze IS NULL",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        unanalyzed.is_empty(),
        "copy-to left {unanalyzed:?} without statistics"
    );
    println!(
        "{nonempty} of {} tables held rows; all alike:\n{}",
        tables.len(),
        copied.stdout
    );

    // Act 3: a second copy into the same, no longer empty, database.
    let again = run_cli(&["copy-to", &scratch.url], &env, Duration::from_secs(60));

    // Assert 3: refused, and nothing doubled.
    assert!(!again.status.success(), "{}", again.output());
    assert!(again.stderr.contains("not empty"), "{}", again.output());
    let orders: i64 = pg
        .query_one("SELECT count(*) FROM orders", &[])
        .unwrap()
        .get(0);
    assert_eq!(orders, 2);
}

#[test]
#[cfg_attr(not(orderlink_pg), ignore = "needs PostgreSQL: source .ci/postgres")]
fn copy_to_is_in_the_help_and_check_validates_a_postgresql_database_url() {
    let dir = tempfile::tempdir().unwrap();
    let help = run_cli(&["--help"], &[], Duration::from_secs(20));
    assert!(
        help.stdout.contains("copy-to postgres://"),
        "{}",
        help.output()
    );
    let env = vec![
        (
            "DATABASE_PATH".to_owned(),
            dir.path().join("o.db").to_string_lossy().into_owned(),
        ),
        (
            "DATABASE_URL".to_owned(),
            "postgres://shop:s3cret-pw@db.internal/orderlink".to_owned(),
        ),
    ];
    // A server nobody answers: a problem, named without its password, and
    // the SQLite file is not what the server would use.
    let check = run_cli(&["check"], &env, Duration::from_secs(20));
    assert!(!check.status.success(), "{}", check.output());
    assert!(
        check.stdout.contains("warning: DATABASE_PATH is set but not used: DATABASE_URL keeps everything in PostgreSQL at postgres://shop@db.internal/orderlink")
            && check.stdout.contains("error: cannot connect to postgres://shop@db.internal/orderlink"),
        "{}",
        check.output()
    );
    assert!(!check.output().contains("s3cret-pw"), "{}", check.output());
    assert!(
        !check.output().contains("does not run on PostgreSQL"),
        "{}",
        check.output()
    );

    // A real, empty one: it answers, and its migrations are pending until
    // the first start.
    let Some(admin_url) =
        postgres_url("copy_to_is_in_the_help_and_check_validates_a_postgresql_database_url")
    else {
        return;
    };
    let scratch = Scratch::create(&admin_url);
    let env = vec![("DATABASE_URL".to_owned(), scratch.url.clone())];
    let check = run_cli(&["check"], &env, Duration::from_secs(20));
    assert!(check.status.success(), "{}", check.output());
    assert!(
        check.stdout.contains("ok: database: PostgreSQL at")
            && check.stdout.contains("migration(s) pending"),
        "{}",
        check.output()
    );
    let migrated = run_cli(&["migrate"], &env, Duration::from_secs(60));
    assert!(migrated.status.success(), "{}", migrated.output());
    let check = run_cli(&["check"], &env, Duration::from_secs(20));
    assert!(
        check.stdout.contains("ok: database schema is up to date"),
        "{}",
        check.output()
    );
}

mod older {
    refinery::embed_migrations!("migrations");
}

#[test]
fn copy_to_refuses_a_missing_or_unmigrated_database_and_names_an_unreachable_server_without_its_password(
) {
    // Arrange: a SQLite database left at V1, and a PostgreSQL URL nobody answers
    // (a refusal must come before any connection).
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old.db");
    let mut conn = rusqlite::Connection::open(&old).unwrap();
    older::migrations::runner()
        .set_target(refinery::Target::Version(1))
        .run(&mut conn)
        .unwrap();
    drop(conn);
    let nowhere = "postgres://orderlink@127.0.0.1:1/orderlink";

    // Act
    let pending = run_cli(
        &["copy-to", nowhere],
        &copy_env(&old),
        Duration::from_secs(20),
    );
    let missing = run_cli(
        &["copy-to", nowhere],
        &copy_env(&dir.path().join("none.db")),
        Duration::from_secs(20),
    );
    let not_postgres = run_cli(
        &["copy-to", "mysql://x@127.0.0.1/y"],
        &copy_env(&old),
        Duration::from_secs(20),
    );

    let current = dir.path().join("current.db");
    older::migrations::runner()
        .run(&mut rusqlite::Connection::open(&current).unwrap())
        .unwrap();
    let unreachable = run_cli(
        &[
            "copy-to",
            "postgres://orderlink:pw-s3cret@127.0.0.1:1/orderlink",
        ],
        &copy_env(&current),
        Duration::from_secs(20),
    );

    // Assert
    assert_eq!(
        unreachable.status.code(),
        Some(1),
        "{}",
        unreachable.output()
    );
    assert!(
        unreachable
            .stderr
            .contains("cannot connect to postgres://orderlink@127.0.0.1:1/orderlink: error connecting to server"),
        "{}",
        unreachable.output()
    );
    assert!(
        !unreachable.output().contains("pw-s3cret"),
        "{}",
        unreachable.output()
    );
    assert_eq!(pending.status.code(), Some(1), "{}", pending.output());
    assert!(
        pending.stderr.contains("migration(s) pending")
            && pending.stderr.contains("orderlink migrate"),
        "{}",
        pending.output()
    );
    let versions: i64 = rusqlite::Connection::open(&old)
        .unwrap()
        .query_row("SELECT COUNT(*) FROM refinery_schema_history", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(versions, 1, "copy-to does not migrate the SQLite file");
    assert_eq!(missing.status.code(), Some(1), "{}", missing.output());
    assert!(
        missing.stderr.contains("does not exist"),
        "{}",
        missing.output()
    );
    assert!(!dir.path().join("none.db").exists(), "{}", missing.output());
    assert_eq!(
        not_postgres.status.code(),
        Some(1),
        "{}",
        not_postgres.output()
    );
    assert!(
        not_postgres.stderr.contains("postgres://"),
        "{}",
        not_postgres.output()
    );
}

#[test]
#[cfg_attr(not(orderlink_pg), ignore = "needs PostgreSQL: source .ci/postgres")]
fn copy_to_stops_at_a_value_that_does_not_fit_and_leaves_no_copied_row() {
    let Some(admin_url) =
        postgres_url("copy_to_stops_at_a_value_that_does_not_fit_and_leaves_no_copied_row")
    else {
        return;
    };
    // Arrange: a contact (copied before orders), a good order, and an order
    // whose amount SQLite kept as text (its type affinity allows it).
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("odd.db");
    let mut conn = rusqlite::Connection::open(&db).unwrap();
    older::migrations::runner().run(&mut conn).unwrap();
    conn.execute_batch(
        "INSERT INTO contacts (id, wa_id, user_id, profile_name, created_at, updated_at)
             VALUES ('919811111111', '919811111111', NULL, 'Asha', 1, 1);
         INSERT INTO orders (id, status, total_amount, currency, created_at, updated_at)
             VALUES ('ORD-GOOD', 'paid', 49900, 'INR', 1, 1),
                    ('ORD-ODD', 'paid', 'forty-nine', 'INR', 1, 1);",
    )
    .unwrap();
    drop(conn);
    let scratch = Scratch::create(&admin_url);

    // Act
    let run = run_cli(
        &["copy-to", &scratch.url],
        &copy_env(&db),
        Duration::from_secs(60),
    );

    // Assert: the table and column named, and no row of any table landed.
    assert_eq!(run.status.code(), Some(1), "{}", run.output());
    assert!(
        run.stderr
            .contains("orders.total_amount: cannot store SQLite text as PostgreSQL int8"),
        "{}",
        run.output()
    );
    let mut pg = scratch.client();
    for table in ["contacts", "orders"] {
        let n: i64 = pg
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .unwrap()
            .get(0);
        assert_eq!(n, 0, "{table} after a failed copy");
    }
}

/// The outage tests' own cluster (support/pg_cluster.rs) can be stopped and
/// started again on the same port and data, and keeps what was committed.
#[test]
#[cfg_attr(not(orderlink_pg), ignore = "needs PostgreSQL: source .ci/postgres")]
fn a_private_cluster_keeps_its_data_across_a_stop_and_a_start() {
    if postgres_url("a_private_cluster_keeps_its_data_across_a_stop_and_a_start").is_none() {
        return;
    }
    let cluster = crate::support::pg_cluster::PgCluster::start();
    let mut client = Client::connect(&cluster.url(), ::postgres::NoTls).unwrap();
    client
        .batch_execute("CREATE TABLE kept (v INTEGER); INSERT INTO kept VALUES (7)")
        .unwrap();
    drop(client);
    cluster.stop_server();
    assert!(
        Client::connect(&cluster.url(), ::postgres::NoTls).is_err(),
        "the cluster still answered after stop_server"
    );
    cluster.start_server();
    cluster.wait_ready(Duration::from_secs(30));
    let mut client = Client::connect(&cluster.url(), ::postgres::NoTls).unwrap();
    let v: i32 = client.query_one("SELECT v FROM kept", &[]).unwrap().get(0);
    assert_eq!(v, 7);
}
