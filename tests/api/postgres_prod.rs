//! SPEC §13 as amended (issue 19): PostgreSQL as a production store. TLS as
//! libpq reads `sslmode`/`sslrootcert`, errors that say whether the
//! database is away (503) or the request hit a bug or bad data (500), and
//! guarded state changes that no concurrent transaction can slip between.
//!
//! The PostgreSQL tests need ORDERLINK_TEST_POSTGRES_URL (`.ci/postgres`
//! gives a `verify-full` URL with its own CA); skipped loudly without it,
//! failed under CI=true.

use std::time::{Duration, Instant};

use orderlink::db::sql::params;
use orderlink::db::{Conn, Dialect};
use orderlink::domain::{EventKind, PaymentEvent};
use orderlink::outbox::{Requeue, Status};
use orderlink::payments::{record_in_one_statement, Context, Outcome};

use crate::postgres::postgres_url;
use crate::support::child::run_cli;
use crate::support::store::{connect, Scratch};
use crate::support::{payment_event, FakeGraph, TestApp};

/// The URL with its `sslrootcert` replaced (`None`: taken out, so the
/// system's roots are used).
fn with_root(url: &str, root: Option<&str>) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut pairs: Vec<String> = query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("sslrootcert="))
        .map(str::to_owned)
        .collect();
    if let Some(root) = root {
        pairs.push(format!("sslrootcert={root}"));
    }
    format!("{base}?{}", pairs.join("&"))
}

/// A CA of the test's own, trusted by nobody: `openssl`, as `.ci/postgres`
/// makes the cluster's.
fn other_ca(dir: &std::path::Path) -> String {
    let path = dir.join("other-ca.crt");
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=someone else's CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-keyout",
        ])
        .arg(dir.join("other-ca.key"))
        .arg("-out")
        .arg(&path)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    path.to_string_lossy().into_owned()
}

/// `verify-full` against the CI cluster's CA connects over TLS; the same
/// URL with another root, or with the system's roots, is refused, and the
/// refusal says it was the certificate and against which roots (the
/// server's start says so too, through `orderlink check`).
#[test]
#[cfg_attr(not(orderlink_pg), ignore = "needs PostgreSQL: source .ci/postgres")]
fn verify_full_connects_over_tls_and_a_wrong_root_is_refused_by_name() {
    let test = "verify_full_connects_over_tls_and_a_wrong_root_is_refused_by_name";
    let Some(url) = postgres_url(test) else {
        return;
    };
    assert!(
        url.contains("sslmode=verify-full") && url.contains("sslrootcert="),
        "ORDERLINK_TEST_POSTGRES_URL must be a verify-full URL (.ci/postgres makes one): {url}"
    );

    // The right root: TLS, checked.
    let mut client = connect(&url).expect("verify-full with the cluster's CA");
    let ssl: bool = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(ssl, "the connection is not encrypted");
    // sslmode=disable is plain, so the check above is not always true.
    let plain = url.replace("sslmode=verify-full", "sslmode=disable");
    let ssl: bool = connect(&plain)
        .expect("sslmode=disable")
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(!ssl, "sslmode=disable still encrypted");

    // Another CA's root file.
    let dir = tempfile::tempdir().unwrap();
    let wrong = other_ca(dir.path());
    let e = connect(&with_root(&url, Some(&wrong)))
        .err()
        .expect("refused");
    assert!(
        e.contains("certificate verify failed") && e.contains(&format!("sslrootcert {wrong}")),
        "{e}"
    );
    // No sslrootcert: the system's roots, which do not hold the test CA.
    let e = connect(&with_root(&url, None)).err().expect("refused");
    assert!(
        e.contains("certificate verify failed") && e.contains("system's root certificates"),
        "{e}"
    );
    // `require` with no root file encrypts without checking (libpq's meaning).
    let require = with_root(&url, None).replace("sslmode=verify-full", "sslmode=require");
    assert!(connect(&require).is_ok(), "sslmode=require");

    // The server refuses to start on it, with the same reason.
    let check = run_cli(
        &["check"],
        &[("DATABASE_URL".to_owned(), with_root(&url, Some(&wrong)))],
        Duration::from_secs(30),
    );
    let said = format!("{}{}", check.stdout, check.stderr);
    assert!(
        said.contains("certificate verify failed") && said.contains(&wrong),
        "{said}"
    );
}

/// A value the program cannot read back (a corrupted row) is a bug to look
/// at, not an outage: the webhook that reads it gets a 500 with a log
/// line, not a 503 that gateways retry for days. Runs on either store.
#[test]
fn a_value_that_does_not_convert_is_a_500_not_a_503() {
    // Arrange: a paid order, then its webhook record corrupted so that the
    // replay's read of `order_id` cannot convert it to text.
    let graph = FakeGraph::start();
    let app = TestApp::spawn(&graph);
    let body = payment_event("ORD-CONV-1").to_string();
    let first = app.post_webhook_with_id("msg_conv_1", &body);
    assert_eq!(first.status, 200, "{}", first.body);
    let db = app.db_rw();
    match db.dialect() {
        // SQLite keeps whatever it is given: a blob where text belongs.
        Dialect::Sqlite => {
            let n = db
                .execute(
                    "UPDATE webhook_events SET order_id = X'FF00' WHERE order_id = $1",
                    ["ORD-CONV-1"],
                )
                .unwrap();
            assert_eq!(n, 1);
        }
        // PostgreSQL checks types: the column itself becomes bytes.
        Dialect::Postgres => db
            .execute_batch(
                "ALTER TABLE webhook_events ALTER COLUMN order_id TYPE BYTEA
                 USING convert_to(order_id, 'UTF8')",
            )
            .unwrap(),
    }

    // Act: the gateway's retry of the same delivery.
    let again = app.post_webhook_with_id("msg_conv_1", &body);

    // Assert
    assert_eq!(again.status, 500, "{}", again.body);
    assert_eq!(again.error_code(), "internal", "{}", again.body);
    crate::support::wait_until("the 500 is logged", Duration::from_secs(10), || {
        app.logs()
            .lines()
            .any(|l| l.contains("/webhooks/payment: 500"))
    });
}

/// A scratch database of its own for `test`, or `None` (the test
/// skips, loudly) without a PostgreSQL server.
fn scratch_for(test: &str) -> Option<Scratch> {
    postgres_url(test).map(|url| Scratch::create(&url))
}

/// Waits until a transaction of the scratch database waits on a lock (the
/// other side of a race is where the test wants it) or `other` finished
/// without waiting (the race the test looks for did not happen).
fn waits_on_a_lock_or_ends<T>(watcher: &Conn, other: &std::thread::JoinHandle<T>, who: &str) {
    crate::support::wait_until(
        &format!("{who} to wait on a lock or finish"),
        Duration::from_secs(20),
        || {
            let waiting: i64 = watcher
                .query_row(
                    "SELECT COUNT(*) FROM pg_stat_activity
                     WHERE datname = current_database() AND wait_event_type = 'Lock'",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            waiting > 0 || other.is_finished()
        },
    );
}

fn outbox_status(c: &Conn, id: &str) -> String {
    c.query_row("SELECT status FROM outbox WHERE id = $1", [id], |r| {
        r.get(0)
    })
    .unwrap()
}

/// A scratch database for `test` holding order ORD-RACE's confirmation
/// (`conf`), claimed by `claim-1` and being sent, and its link (`link`) in
/// `link_status`; a connection to it, and the time the rows were made.
fn confirmation_sending_for(test: &str, link_status: &str) -> Option<(Scratch, Conn, i64)> {
    let scratch = scratch_for(test)?;
    let sender = scratch.migrated();
    let now = 1_800_000_000_000i64;
    sender
        .execute(
            "INSERT INTO orders (id, status, customer_phone_e164, total_amount, currency,
                                 created_at, updated_at)
             VALUES ('ORD-RACE', 'paid', '+919812345678', 100, 'INR', $1, $1)",
            params![now],
        )
        .unwrap();
    let insert = "INSERT INTO outbox (id, order_id, kind, slot, recipient, status, variant,
                                      attempts, next_attempt_at, created_at, updated_at,
                                      claimed_by, lease_until)
                  VALUES ($1, 'ORD-RACE', $2, 'main', '919812345678', $3, 'text', 1, $4, $4, $4,
                          $5, $6)";
    sender
        .execute(
            insert,
            params![
                "conf",
                "confirmation",
                "sending",
                now,
                Some("claim-1"),
                Some(now + 60_000)
            ],
        )
        .unwrap();
    sender
        .execute(
            insert,
            params![
                "link",
                "link",
                link_status,
                now,
                None::<String>,
                None::<i64>
            ],
        )
        .unwrap();
    Some((scratch, sender, now))
}

/// The race of issue 19: the merchant retries a dead link while the
/// sender records its confirmation as sent. `mark_sent` releases the
/// order's waiting links; a retry that read "confirmation not sent" before
/// that commit and wrote `waiting` after it left the link waiting for
/// ever. The retry now waits for the confirmation's outcome and reads it.
#[test]
#[cfg_attr(not(orderlink_pg), ignore = "needs PostgreSQL: source .ci/postgres")]
fn a_link_retried_while_its_confirmation_is_recorded_sent_is_not_left_waiting() {
    let test = "a_link_retried_while_its_confirmation_is_recorded_sent_is_not_left_waiting";
    let Some((scratch, sender, now)) = confirmation_sending_for(test, "dead") else {
        return;
    };

    // Act: the sender's outcome, open (not committed yet) ...
    sender.execute_batch("BEGIN").unwrap();
    orderlink::outbox::mark_sent(
        &sender,
        "conf",
        "claim-1",
        "wamid.race",
        orderlink::outbox::Variant::Text,
        1,
        None,
        now,
    )
    .unwrap();
    // ... while the merchant's retry runs in its own transaction.
    let retry_url = scratch.url.clone();
    let retry = std::thread::spawn(move || {
        let c = Conn::from(connect(&retry_url).unwrap());
        c.execute_batch("BEGIN").unwrap();
        let answer = orderlink::outbox::requeue(&c, "link", now).unwrap();
        c.execute_batch("COMMIT").unwrap();
        answer
    });
    // The retry either waits for the outcome's row lock or (the old
    // read-then-write) finishes without it; either way, then commit.
    let watcher = Conn::from(scratch.client());
    waits_on_a_lock_or_ends(&watcher, &retry, "the retry");
    sender.execute_batch("COMMIT").unwrap();
    let answer = retry.join().unwrap();

    // Assert: the confirmation is sent, so the link is queued, not waiting.
    assert_eq!(outbox_status(&sender, "conf"), "sent");
    assert_eq!(answer, Requeue::Done(Status::Queued));
    assert_eq!(outbox_status(&sender, "link"), "queued");
}

/// A status of a message whose send is being recorded: it came first, so
/// it waits in `pending_statuses`, holding its lock, while `mark_sent`
/// (one statement on PostgreSQL) waits for that lock. The statement must
/// read after the lock is held, or it would not see the status, which
/// would then never apply. It applies, and the confirmation's follow-ups
/// run after it: the link is released and the order stamped.
#[test]
#[cfg_attr(not(orderlink_pg), ignore = "needs PostgreSQL: source .ci/postgres")]
fn a_status_kept_while_its_send_is_recorded_applies_and_the_link_is_released() {
    let test = "a_status_kept_while_its_send_is_recorded_applies_and_the_link_is_released";
    let Some((scratch, sender, now)) = confirmation_sending_for(test, "waiting") else {
        return;
    };

    // Arrange: the status, open (not committed yet): the row does not
    // have its message id, so the status is kept.
    let status = Conn::from(scratch.client());
    status.execute_batch("BEGIN").unwrap();
    let delivered = orderlink::outbox::StatusUpdate {
        message_id: "wamid.early".into(),
        state: orderlink::outbox::DeliveryState::Delivered,
        error_code: None,
        error_title: None,
        pricing: None,
    };
    assert!(!orderlink::outbox::apply_status(&status, &delivered, now).unwrap());

    // Act: the send's outcome, which waits for the status's lock ...
    let url = scratch.url.clone();
    let recorder = std::thread::spawn(move || {
        let c = Conn::from(connect(&url).unwrap());
        c.execute_batch("BEGIN").unwrap();
        let variant = orderlink::outbox::Variant::Text;
        orderlink::outbox::mark_sent(&c, "conf", "claim-1", "wamid.early", variant, 1, None, now)
            .unwrap();
        c.execute_batch("COMMIT").unwrap();
    });
    waits_on_a_lock_or_ends(&sender, &recorder, "the send's outcome");
    // ... until the status commits.
    status.execute_batch("COMMIT").unwrap();
    recorder.join().unwrap();

    // Assert
    let (delivery, sent_at_order): (Option<String>, Option<i64>) = sender
        .query_row(
            "SELECT o.delivery_status, d.last_confirmation_sent_at
             FROM outbox o JOIN orders d ON d.id = o.order_id WHERE o.id = 'conf'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        delivery.as_deref(),
        Some("delivered"),
        "the kept status applied"
    );
    assert_eq!(sent_at_order, Some(now), "the order is stamped");
    let kept: i64 = sender
        .query_row("SELECT COUNT(*) FROM pending_statuses", [], |r| r.get(0))
        .unwrap();
    assert_eq!(kept, 0);
    assert_eq!(outbox_status(&sender, "conf"), "sent");
    assert_eq!(outbox_status(&sender, "link"), "queued");
}

/// The one-statement webhook (SPEC §13) reads one snapshot, so a new event
/// of an order whose other event is not committed yet sees no messages of
/// it. Its statement then waits for the other, fails on the other's
/// committed messages (a unique violation, which undoes its token too), and
/// its second run, as the writer makes it, answers `already_confirmed` with
/// the other's token: one order, one token, one confirmation.
#[test]
#[cfg_attr(not(orderlink_pg), ignore = "needs PostgreSQL: source .ci/postgres")]
fn two_new_events_of_one_order_at_once_make_one_token_on_the_one_statement_path() {
    let test = "two_new_events_of_one_order_at_once_make_one_token_on_the_one_statement_path";
    let Some(scratch) = scratch_for(test) else {
        return;
    };
    let first = scratch.migrated();
    let ctx = Context {
        now_ms: 1_800_000_000_000,
        token_ttl_ms: 86_400_000,
        link_message: true,
    };
    let event = || {
        let body = payment_event("ORD-TWICE").to_string();
        let event = PaymentEvent::parse(body.as_bytes(), None).unwrap();
        let EventKind::PaymentSucceeded(p) = event.kind else {
            panic!("a payment")
        };
        (event.event_id, p)
    };
    let (a_id, a) = event();
    let (b_id, b) = event();

    // Act: A's statement, in a transaction left open ...
    first.execute_batch("BEGIN").unwrap();
    let (a_outcome, a_made) =
        record_in_one_statement(&first, "key-a", &a_id, &a, Some("data.order_id"), &ctx)
            .unwrap()
            .expect("a new key");
    let Outcome::Processed { token, .. } = a_outcome else {
        panic!("A: {a_outcome:?}")
    };
    assert!(a_made.is_some());
    // ... while B's runs alone, as the webhook's does.
    let url = scratch.url.clone();
    let other = std::thread::spawn(move || {
        let c = Conn::from(connect(&url).unwrap());
        let once = record_in_one_statement(&c, "key-b", &b_id, &b, None, &ctx);
        let again = record_in_one_statement(&c, "key-b", &b_id, &b, None, &ctx);
        (once, again)
    });
    let watcher = Conn::from(scratch.client());
    waits_on_a_lock_or_ends(&watcher, &other, "B's statement");
    first.execute_batch("COMMIT").unwrap();
    let (once, again) = other.join().unwrap();

    // Assert
    let err = once.expect_err("B's first run read the snapshot without A's messages");
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains("duplicate key"), "{err}");
    assert_eq!(
        again.unwrap(),
        Some((
            Outcome::AlreadyConfirmed {
                order_id: "ORD-TWICE".into(),
                token: Some(token)
            },
            None
        ))
    );
    let count = |sql: &str| -> i64 { watcher.query_row(sql, [], |r| r.get(0)).unwrap() };
    assert_eq!(count("SELECT COUNT(*) FROM whatsapp_tokens"), 1);
    assert_eq!(count("SELECT COUNT(*) FROM outbox"), 2);
    assert_eq!(count("SELECT COUNT(*) FROM webhook_events"), 2);
}

/// The guarded requeue on both stores: only a dead or cancelled message
/// moves; anything else is a conflict naming its status, and an unknown id
/// is not found.
#[test]
#[cfg_attr(not(orderlink_pg), ignore = "needs PostgreSQL: source .ci/postgres")]
fn requeue_moves_only_dead_or_cancelled_messages_on_either_store() {
    let dir = tempfile::tempdir().unwrap();
    let lite_path = dir.path().join("requeue.db");
    let mut lite = orderlink::db::open_writer(&lite_path).unwrap();
    orderlink::db::migrate(&mut lite).unwrap();
    let mut stores = vec![Conn::from(lite)];
    let scratch = postgres_url("requeue_moves_only_dead_or_cancelled_messages_on_either_store")
        .map(|url| Scratch::create(&url));
    if let Some(scratch) = &scratch {
        stores.push(scratch.migrated());
    }
    for c in &stores {
        let store = format!("{:?}", c.dialect());
        c.execute(
            "INSERT INTO orders (id, status, total_amount, currency, created_at, updated_at)
             VALUES ('O1', 'paid', 1, 'INR', 1, 1)",
            [],
        )
        .unwrap();
        for (id, kind, status) in [
            ("c", "confirmation", "dead"),
            ("l", "link", "cancelled"),
            ("s", "elder_reply", "sent"),
        ] {
            c.execute(
                "INSERT INTO outbox (id, order_id, kind, slot, recipient, status, variant,
                                     attempts, next_attempt_at, created_at, updated_at)
                 VALUES ($1, 'O1', $2, $1, '91', $3, 'text', 8, 1, 1, 1)",
                params![id, kind, status],
            )
            .unwrap();
        }
        let requeue = |id: &str| orderlink::outbox::requeue(c, id, 5).unwrap();
        // The link's confirmation is dead, not sent: the link waits.
        assert_eq!(requeue("l"), Requeue::Done(Status::Waiting), "{store}");
        assert_eq!(requeue("c"), Requeue::Done(Status::Queued), "{store}");
        assert_eq!(requeue("s"), Requeue::Refused(Status::Sent), "{store}");
        assert_eq!(requeue("c"), Requeue::Refused(Status::Queued), "{store}");
        assert_eq!(requeue("nope"), Requeue::NotFound, "{store}");
        let attempts: i64 = c
            .query_row("SELECT attempts FROM outbox WHERE id = 'c'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(attempts, 0, "{store}");
    }
}

/// A message queued on one instance wakes the senders of every instance at
/// once (SPEC §13): `Writer::announce` on one pool is a NOTIFY that another
/// instance's listener turns into a wake-up, well before its next poll.
#[test]
#[cfg_attr(not(orderlink_pg), ignore = "needs PostgreSQL: source .ci/postgres")]
fn an_announcement_on_one_instance_wakes_a_listener_on_another() {
    let Some(admin_url) =
        postgres_url("an_announcement_on_one_instance_wakes_a_listener_on_another")
    else {
        return;
    };
    let scratch = Scratch::create(&admin_url);
    let (woken, wakes) = std::sync::mpsc::channel::<Instant>();
    let listener = orderlink::db::notify::Listener::start(&scratch.url, move || {
        let _ = woken.send(Instant::now());
    });
    // The first wake-up comes with the connection (for what was queued
    // while no one listened).
    wakes
        .recv_timeout(Duration::from_secs(20))
        .expect("the listener connects and wakes once");

    let pool = orderlink::db::pool::PgPool::start(&scratch.url, 2).unwrap();
    let writer = orderlink::db::Writer::postgres(pool.clone());
    let mut latencies = Vec::new();
    for _ in 0..20 {
        let announced = Instant::now();
        writer.announce();
        let at = wakes
            .recv_timeout(Duration::from_secs(5))
            .expect("the announcement wakes the other instance's listener");
        latencies.push(at - announced);
        // One wake-up per announcement: nothing else is pending.
        while wakes.try_recv().is_ok() {}
    }
    latencies.sort();
    eprintln!(
        "announce → wake: median {:?}, max {:?}",
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1]
    );
    writer.close();
    pool.join();
    drop(listener);
}

/// A claim reads the rows it takes, not the outbox (issue 19): each kind of
/// due row is read in its index's order with its own LIMIT. The `OR` form it
/// replaced read every due row and sorted them to keep four: in the bench, a
/// sequential scan of 886 pages per claim. Counted with
/// `pg_stat_xact_user_tables`, the claiming transaction's own reads.
#[test]
#[cfg_attr(not(orderlink_pg), ignore = "needs PostgreSQL: source .ci/postgres")]
fn a_claim_reads_the_rows_it_takes_not_the_whole_backlog() {
    let test = "a_claim_reads_the_rows_it_takes_not_the_whole_backlog";
    let Some(scratch) = scratch_for(test) else {
        return;
    };
    let c = scratch.migrated();
    let now = 1_800_000_000_000i64;
    // A backlog of 3,000 due messages and 3,000 sent ones, with statistics.
    c.execute_batch(&format!(
        "INSERT INTO orders (id, status, total_amount, currency, created_at, updated_at)
         SELECT 'O' || i, 'paid', 100, 'INR', {now}, {now} FROM generate_series(1, 3000) i;
         INSERT INTO outbox (id, order_id, kind, slot, recipient, status, variant, attempts,
                             next_attempt_at, created_at, updated_at)
         SELECT k || i, 'O' || i, k, '', '919812345678',
                CASE k WHEN 'confirmation' THEN 'queued' ELSE 'sent' END, 'text', 0,
                {now} - i, {now}, {now}
         FROM generate_series(1, 3000) i, (VALUES ('confirmation'), ('link')) AS kinds (k);
         ANALYZE"
    ))
    .unwrap();

    c.execute_batch("BEGIN").unwrap();
    let rows = orderlink::outbox::claim(&c, "claim-1", now, now + 60_000, 4).unwrap();
    let read: i64 = c
        .query_row(
            "SELECT COALESCE(seq_tup_read, 0) + COALESCE(idx_tup_fetch, 0)
             FROM pg_stat_xact_user_tables WHERE relname = 'outbox'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    c.execute_batch("COMMIT").unwrap();

    // The four oldest due rows, and a few more read than taken at most.
    let mut ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
    ids.sort();
    assert_eq!(
        ids,
        [
            "confirmation2997",
            "confirmation2998",
            "confirmation2999",
            "confirmation3000"
        ]
    );
    assert!(
        read <= 40,
        "the claim read {read} outbox rows to take 4 of a backlog of 3,000"
    );
}

/// On PostgreSQL a status's pricing, the metrics' counts that follow it and
/// its delivery state are one statement (`apply_status`): after every
/// status the kept counts equal a count over the outbox, on a sequence that
/// moves messages between categories, in and out of billable and paid, and
/// repeats a category (the statement's per-category sums), written from two
/// connections (two slots of each count, V17).
#[test]
#[cfg_attr(not(orderlink_pg), ignore = "needs PostgreSQL: source .ci/postgres")]
fn a_status_s_pricing_and_the_counts_it_moves_agree_with_the_outbox_in_one_statement() {
    use orderlink::outbox::{apply_status, DeliveryState, Pricing, StatusUpdate};
    let test = "a_status_s_pricing_and_the_counts_it_moves_agree_with_the_outbox_in_one_statement";
    let Some(scratch) = scratch_for(test) else {
        return;
    };
    let c = scratch.migrated();
    c.execute_batch(
        "INSERT INTO orders (id, status, customer_phone_e164, total_amount, currency, created_at, updated_at)
           VALUES ('ORD-1', 'PAID', '919876543210', 100, 'INR', 1, 1);
         INSERT INTO outbox (id, order_id, kind, slot, recipient, status, variant, attempts,
                             next_attempt_at, created_at, updated_at, graph_message_id)
           VALUES ('r1', 'ORD-1', 'confirmation', '', '919876543210', 'sent', 'text', 1, 1, 1, 1, 'g1'),
                  ('r2', 'ORD-1', 'link', '', '919876543210', 'sent', 'text', 1, 1, 1, 1, 'g2'),
                  ('r3', 'ORD-1', 'elder_reply', '919811111111', '919811111111', 'sent', 'text', 1, 1, 1, 1, 'g3');",
    )
    .unwrap();
    let counts = |sql: &str| -> Vec<(String, i64)> {
        let mut stmt = c.prepare(sql).unwrap();
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
        rows.collect::<Result<_, _>>().unwrap()
    };
    let kept = |table: &str| {
        counts(&format!(
            "SELECT category, CAST(SUM(messages) AS BIGINT) FROM {table}
             GROUP BY category HAVING SUM(messages) <> 0 ORDER BY 1"
        ))
    };
    let counted = |verdict: &str| {
        counts(&format!(
            "SELECT COALESCE(pricing_category, ''), COUNT(*) FROM outbox
             WHERE {verdict} = TRUE GROUP BY 1 ORDER BY 1"
        ))
    };
    let status =
        |id: &str, state, billable, category: Option<&str>, t: Option<&str>| StatusUpdate {
            message_id: id.to_owned(),
            state,
            error_code: None,
            error_title: None,
            pricing: Some(Pricing {
                billable,
                category: category.map(str::to_owned),
                pricing_type: t.map(str::to_owned),
            }),
        };

    // Two connections take turns: each writes its own slot of a count.
    let other = scratch.migrated();
    let slot = |c: &Conn| -> i64 {
        c.query_row("SELECT pg_backend_pid() % 128", [], |r| r.get(0))
            .unwrap()
    };
    let mut on = [&c, &other].into_iter().cycle();

    use DeliveryState::*;
    for s in [
        status("g1", Sent, Some(true), Some("utility"), Some("regular")),
        status("g2", Delivered, Some(true), Some("marketing"), None),
        status("g2", Read, Some(true), Some("marketing"), None),
        status("g1", Read, Some(false), Some("utility"), None),
        status(
            "g3",
            Delivered,
            None,
            Some("service"),
            Some("free_customer_service"),
        ),
        status("g3", Read, Some(true), None, None),
        status("g2", Read, Some(true), Some("utility"), Some("regular")),
        status(
            "g1",
            Delivered,
            Some(true),
            Some("marketing"),
            Some("regular"),
        ),
        status("g9", Sent, Some(true), Some("utility"), None),
    ] {
        apply_status(on.next().unwrap(), &s, 2).unwrap();
        assert_eq!(
            kept("billable_counts"),
            counted("pricing_billable"),
            "after {s:?}"
        );
        assert_eq!(kept("paid_counts"), counted("pricing_paid"), "after {s:?}");
    }

    if slot(&c) != slot(&other) {
        let slots: i64 = c
            .query_row(
                "SELECT COUNT(DISTINCT slot) FROM billable_counts",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(slots, 2, "each connection counted in its own slot");
    }

    // The end state, spelled out; and the state only moved up.
    assert_eq!(
        kept("billable_counts"),
        vec![
            ("marketing".to_owned(), 1),
            ("service".to_owned(), 1),
            ("utility".to_owned(), 1)
        ]
    );
    assert_eq!(
        kept("paid_counts"),
        vec![("marketing".to_owned(), 1), ("utility".to_owned(), 1)]
    );
    let delivery: Vec<(String, String)> = {
        let mut stmt = c
            .prepare("SELECT graph_message_id, delivery_status FROM outbox ORDER BY 1")
            .unwrap();
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
        rows.collect::<Result<_, _>>().unwrap()
    };
    let read = || "read".to_owned();
    assert_eq!(
        delivery,
        vec![
            ("g1".into(), read()),
            ("g2".into(), read()),
            ("g3".into(), read())
        ]
    );
}
