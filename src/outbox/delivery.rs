//! What Meta says became of a message we sent (SPEC §9 statuses): its
//! delivery state moves only up, its pricing is recorded, and a status that
//! arrives before the send recorded its message id waits in
//! `pending_statuses` until `mark_sent` applies it. The inbound side only
//! parses statuses; every write to a sent message's state lives here, on the
//! outbox side.

use super::row::DeliveryState;
use super::window;
use crate::db::sql::{params, Conn, Dialect, OptionalExtension};
use crate::db::DbError;

/// What a status said the message cost (`statuses[].pricing`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Pricing {
    pub billable: Option<bool>,
    pub category: Option<String>,
    /// `pricing.type`: `regular`, `free_customer_service`, `free_entry_point`.
    pub pricing_type: Option<String>,
}

impl Pricing {
    /// SPEC §9: paid when the type is `regular`; a status without a type
    /// (Meta's pricing before July 2025) is paid when it is billable.
    pub fn paid(&self) -> Option<bool> {
        match self.pricing_type.as_deref() {
            Some(t) => Some(t == "regular"),
            None => self.billable,
        }
    }

    /// What a later status says, over what earlier ones said: Meta repeats
    /// the pricing on `sent`, `delivered` and `read`, not always whole.
    fn over(self, earlier: Pricing) -> Pricing {
        Pricing {
            billable: self.billable.or(earlier.billable),
            category: self.category.or(earlier.category),
            pricing_type: self.pricing_type.or(earlier.pricing_type),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct StatusUpdate {
    pub message_id: String,
    pub state: DeliveryState,
    pub error_code: Option<i64>,
    pub error_title: Option<String>,
    pub pricing: Option<Pricing>,
}

/// Whether this status may put its message back in the queue (the
/// webhook then wakes the sender).
pub fn may_requeue(s: &StatusUpdate) -> bool {
    s.state == DeliveryState::Failed && window::requeues_on(s.error_code)
}

/// Moves a message's delivery state up the order of SPEC §9 only, and
/// records the status's pricing. Unknown ids wait in `pending_statuses`.
pub fn apply_status(conn: &Conn, s: &StatusUpdate, now: i64) -> Result<bool, DbError> {
    // One message's statuses, and its send being recorded, one at a time:
    // the state is read, then moved up (two statuses at once must not move
    // it down), and a status for a send not yet recorded waits in
    // `pending_statuses`, which `apply_pending` must then see.
    conn.lock_key(&status_lock(&s.message_id))?;
    let current: Option<(Option<DeliveryState>, Pricing)> = conn
        .prepare_cached(
            "SELECT delivery_status, pricing_billable, pricing_category, pricing_type
             FROM outbox WHERE graph_message_id = $1",
        )?
        .query_row([&s.message_id], |r| {
            Ok((
                r.get(0)?,
                Pricing {
                    billable: r.get(1)?,
                    category: r.get(2)?,
                    pricing_type: r.get(3)?,
                },
            ))
        })
        .optional()?;
    let pricing = s.pricing.clone().unwrap_or_default();
    let Some((current, recorded)) = current else {
        conn.prepare_cached(
            "INSERT INTO pending_statuses (id, graph_message_id, status, error_code, error_title,
                                           received_at, pricing_billable, pricing_category,
                                           pricing_type)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )?
        .execute(params![
            crate::ids::new_id(),
            s.message_id,
            s.state,
            s.error_code,
            s.error_title,
            now,
            pricing.billable,
            pricing.category,
            pricing.pricing_type
        ])?;
        return Ok(false);
    };
    let pricing = s.pricing.is_some().then(|| pricing.over(recorded));
    let next = DeliveryState::advance(current, s.state);
    let error = match (s.error_code, &s.error_title) {
        (Some(code), Some(title)) => Some(format!("{code}: {title}")),
        (Some(code), None) => Some(code.to_string()),
        (None, Some(title)) => Some(title.clone()),
        (None, None) => None,
    };
    if pricing.is_none() && next.is_none() {
        return Ok(false);
    }
    let change = Change {
        message_id: &s.message_id,
        pricing: pricing.as_ref(),
        next,
        error: error.as_deref(),
        now,
    };
    match conn.dialect() {
        Dialect::Sqlite => change.write_by_steps(conn)?,
        Dialect::Postgres => change.write_at_once(conn)?,
    }
    if next == Some(DeliveryState::Failed) {
        window::after_failure(
            conn,
            &s.message_id,
            s.error_code,
            error.as_deref().unwrap_or_default(),
            now,
        )?;
    }
    Ok(next.is_some())
}

/// What one status changes in its message's row: the pricing it carried
/// (merged over what was recorded), and the delivery state it moves up to.
struct Change<'a> {
    message_id: &'a str,
    pricing: Option<&'a Pricing>,
    next: Option<DeliveryState>,
    error: Option<&'a str>,
    now: i64,
}

impl Change<'_> {
    /// SQLite, in process: a statement costs no round trip.
    fn write_by_steps(&self, conn: &Conn) -> Result<(), DbError> {
        if let Some(pricing) = self.pricing {
            // The metrics' counts follow the row (out before, in after).
            count_billable(conn, self.message_id, -1)?;
            count_paid(conn, self.message_id, -1)?;
            conn.prepare_cached(
                "UPDATE outbox SET pricing_billable = $2, pricing_category = $3, pricing_type = $4,
                        pricing_paid = $5
                 WHERE graph_message_id = $1",
            )?
            .execute(params![
                self.message_id,
                pricing.billable,
                pricing.category,
                pricing.pricing_type,
                pricing.paid()
            ])?;
            count_billable(conn, self.message_id, 1)?;
            count_paid(conn, self.message_id, 1)?;
        }
        if let Some(next) = self.next {
            // A superseded failure's error stays: it is the message's history.
            conn.prepare_cached(
                "UPDATE outbox SET delivery_status = $2,
                        delivery_error = COALESCE($3, delivery_error), delivery_updated_at = $4
                 WHERE graph_message_id = $1",
            )?
            .execute(params![self.message_id, next, self.error, self.now])?;
        }
        Ok(())
    }

    /// PostgreSQL: the pricing, the counts that follow it and the delivery
    /// state in one statement, one round trip instead of up to six. Every
    /// part of it sees the row as it was before (`old`); the counts take
    /// the row out of its category and put it into the new one, summed per
    /// category so that no count is written twice. A count is the sum of
    /// its slots (V17): this connection writes its own slot's row, so
    /// statuses on other connections do not wait for this one's commit.
    fn write_at_once(&self, conn: &Conn) -> Result<(), DbError> {
        let p = self.pricing.cloned().unwrap_or_default();
        conn.prepare_cached(&STATUS_AT_ONCE)?.query_row(
            params![
                self.message_id,
                self.pricing.is_some(),
                p.billable,
                p.category,
                p.pricing_type,
                p.paid(),
                self.next,
                self.error,
                self.now
            ],
            |r| r.get::<_, i64>(0),
        )?;
        Ok(())
    }
}

/// `Change::write_at_once`'s statement: `$1` the message id, `$2` whether
/// the status carried pricing, `$3`–`$6` the merged pricing and its paid
/// verdict, `$7`–`$9` the next delivery state (NULL: none), its error and
/// the time.
static STATUS_AT_ONCE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH mine AS (
             SELECT pg_backend_pid() % 128 AS slot
         ), old AS (
             SELECT COALESCE(pricing_category, '') AS category, pricing_billable, pricing_paid
             FROM outbox WHERE graph_message_id = $1
         ), new AS (
             UPDATE outbox SET
                    pricing_billable = CASE WHEN $2::BOOLEAN THEN $3::BOOLEAN
                                            ELSE pricing_billable END,
                    pricing_category = CASE WHEN $2 THEN $4::VARCHAR ELSE pricing_category END,
                    pricing_type = CASE WHEN $2 THEN $5::VARCHAR ELSE pricing_type END,
                    pricing_paid = CASE WHEN $2 THEN $6::BOOLEAN ELSE pricing_paid END,
                    delivery_status = COALESCE($7::VARCHAR, delivery_status),
                    delivery_error = CASE WHEN $7 IS NULL THEN delivery_error
                                          ELSE COALESCE($8::VARCHAR, delivery_error) END,
                    delivery_updated_at = CASE WHEN $7 IS NULL THEN delivery_updated_at
                                               ELSE $9::BIGINT END
             WHERE graph_message_id = $1
             RETURNING COALESCE(pricing_category, '') AS category, pricing_billable, pricing_paid
         ), {}, {}
         SELECT COUNT(*) FROM new",
        count_move("billable", "billable_counts", "pricing_billable"),
        count_move("paid", "paid_counts", "pricing_paid"),
    )
});

/// The CTE named `name` that moves this connection's slot of `table` by
/// what `verdict` said of the row before (`old`, out) and after (`new`,
/// in), summed per category.
fn count_move(name: &str, table: &str, verdict: &str) -> String {
    format!(
        "{name} AS (
             INSERT INTO {table} (category, slot, messages)
             SELECT category, (SELECT slot FROM mine), SUM(d) FROM (
                 SELECT category, -1 AS d FROM old WHERE {verdict} = TRUE
                 UNION ALL SELECT category, 1 FROM new WHERE {verdict} = TRUE
             ) AS c
             GROUP BY category HAVING SUM(d) <> 0
             ON CONFLICT (category, slot) DO UPDATE SET messages = {table}.messages + excluded.messages
         )"
    )
}

/// The lock (`Conn::lock_key`) that makes one message's statuses, and its
/// send being recorded, take turns.
pub fn status_lock(message_id: &str) -> String {
    format!("graph-message:{message_id}")
}

/// Applies statuses that arrived before their message id was recorded.
pub fn apply_pending(conn: &Conn, message_id: &str, now: i64) -> Result<(), DbError> {
    conn.lock_key(&status_lock(message_id))?;
    let pending: Vec<StatusUpdate> = conn
        .prepare_cached(
            "SELECT graph_message_id, status, error_code, error_title, pricing_billable,
                    pricing_category, pricing_type
             FROM pending_statuses
             WHERE graph_message_id = $1 ORDER BY received_at",
        )?
        .query_map([message_id], |r| {
            let billable: Option<bool> = r.get(4)?;
            let category: Option<String> = r.get(5)?;
            let pricing_type: Option<String> = r.get(6)?;
            Ok(StatusUpdate {
                message_id: r.get(0)?,
                state: r.get(1)?,
                error_code: r.get(2)?,
                error_title: r.get(3)?,
                pricing: (billable.is_some() || category.is_some() || pricing_type.is_some())
                    .then_some(Pricing {
                        billable,
                        category,
                        pricing_type,
                    }),
            })
        })?
        .collect::<Result<_, _>>()?;
    if pending.is_empty() {
        return Ok(());
    }
    for s in &pending {
        apply_status(conn, s, now)?;
    }
    conn.prepare_cached("DELETE FROM pending_statuses WHERE graph_message_id = $1")?
        .execute([message_id])?;
    Ok(())
}

/// Statuses for ids that never turn up (messages sent by other tools on the
/// same number) are dropped after a week.
pub fn prune_pending(conn: &Conn, now: i64) -> Result<(), DbError> {
    conn.prepare_cached("DELETE FROM pending_statuses WHERE received_at < $1")?
        .execute([now - 7 * 86_400_000])?;
    Ok(())
}

/// Two contacts merged into one: the elder replies slotted for `from` take
/// the slot of `into`, except where `into` already has the order's reply
/// (so the merged contact is not replied to twice).
pub fn move_reply_slots(conn: &Conn, from: &str, into: &str) -> Result<(), DbError> {
    conn.prepare_cached(
        "UPDATE outbox SET slot = $2
         WHERE kind = $3 AND slot = $1
           AND order_id NOT IN (SELECT order_id FROM outbox WHERE kind = $3 AND slot = $2)",
    )?
    .execute(params![from, into, super::row::Kind::ElderReply])?;
    Ok(())
}

/// Adds `delta` to the billable count of message `graph_message_id`'s
/// category when the row is billable: called with -1 before its pricing
/// changes and +1 after, in the same transaction, so `billable_counts`
/// always equals a count over `outbox` without the metrics scrape having
/// to make it (it reads the table: `metrics::Metrics::render`).
fn count_billable(conn: &Conn, graph_message_id: &str, delta: i64) -> Result<(), DbError> {
    conn.prepare_cached(
        "INSERT INTO billable_counts (category, slot, messages)
         SELECT COALESCE(pricing_category, ''), 0, $2 FROM outbox
          WHERE graph_message_id = $1 AND pricing_billable = TRUE
         ON CONFLICT (category, slot) DO UPDATE SET messages = billable_counts.messages + $2",
    )?
    .execute(params![graph_message_id, delta])?;
    Ok(())
}

/// `count_billable` for paid messages (`pricing_paid`, V12): keeps
/// `paid_counts` equal to a count over `outbox`.
fn count_paid(conn: &Conn, graph_message_id: &str, delta: i64) -> Result<(), DbError> {
    conn.prepare_cached(
        "INSERT INTO paid_counts (category, slot, messages)
         SELECT COALESCE(pricing_category, ''), 0, $2 FROM outbox
          WHERE graph_message_id = $1 AND pricing_paid = TRUE
         ON CONFLICT (category, slot) DO UPDATE SET messages = paid_counts.messages + $2",
    )?
    .execute(params![graph_message_id, delta])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{apply_status, DeliveryState, Pricing, StatusUpdate};
    use crate::db::sql::Conn;

    fn priced(pricing_type: Option<&str>, billable: Option<bool>) -> Pricing {
        Pricing {
            billable,
            category: Some("utility".into()),
            pricing_type: pricing_type.map(str::to_owned),
        }
    }

    #[test]
    fn a_message_is_paid_when_its_type_is_regular_or_without_a_type_when_billable() {
        // The type decides, whatever the deprecated `billable` says.
        assert_eq!(priced(Some("regular"), Some(false)).paid(), Some(true));
        assert_eq!(priced(Some("regular"), None).paid(), Some(true));
        assert_eq!(
            priced(Some("free_customer_service"), Some(true)).paid(),
            Some(false)
        );
        assert_eq!(priced(Some("free_entry_point"), None).paid(), Some(false));
        // Pricing from before July 2025: billable alone.
        assert_eq!(priced(None, Some(true)).paid(), Some(true));
        assert_eq!(priced(None, Some(false)).paid(), Some(false));
        assert_eq!(priced(None, None).paid(), None);
    }

    #[test]
    fn a_later_status_s_pricing_fills_in_what_it_says_and_keeps_the_rest() {
        let earlier = priced(Some("regular"), Some(true));
        let later = Pricing {
            billable: None,
            category: Some("marketing".into()),
            pricing_type: None,
        };
        let merged = later.over(earlier);
        assert_eq!(merged.category.as_deref(), Some("marketing"));
        assert_eq!(merged.pricing_type.as_deref(), Some("regular"));
        assert_eq!(merged.paid(), Some(true));
    }

    mod embedded {
        refinery::embed_migrations!("migrations");
    }

    fn kept(conn: &Conn) -> Vec<(String, i64)> {
        let mut stmt = conn
            .prepare(
                "SELECT category, CAST(SUM(messages) AS BIGINT) FROM billable_counts
                 GROUP BY category HAVING SUM(messages) > 0 ORDER BY 1",
            )
            .unwrap();
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
        rows.collect::<Result<_, _>>().unwrap()
    }

    fn counted(conn: &Conn) -> Vec<(String, i64)> {
        let mut stmt = conn
            .prepare(
                "SELECT COALESCE(pricing_category, ''), COUNT(*) FROM outbox
                 WHERE pricing_billable = TRUE GROUP BY 1 ORDER BY 1",
            )
            .unwrap();
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
        rows.collect::<Result<_, _>>().unwrap()
    }

    fn status(
        id: &str,
        state: DeliveryState,
        billable: Option<bool>,
        category: Option<&str>,
    ) -> StatusUpdate {
        StatusUpdate {
            message_id: id.to_owned(),
            state,
            error_code: None,
            error_title: None,
            pricing: Some(Pricing {
                billable,
                category: category.map(str::to_owned),
                pricing_type: None,
            }),
        }
    }

    /// A database at migration `version` holding one order's three sent
    /// messages (one billable, two unpriced), then migrated to the latest:
    /// what a migration that counts what is there finds.
    fn sent_rows_migrated_from(version: i32) -> (tempfile::TempDir, Conn) {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = crate::db::open_writer(&dir.path().join("m.db")).unwrap();
        embedded::migrations::runner()
            .set_target(refinery::Target::Version(version))
            .run(&mut conn)
            .unwrap();
        conn.execute_batch(
            "INSERT INTO orders (id, status, customer_phone_e164, total_amount, currency, created_at, updated_at)
               VALUES ('ORD-1', 'PAID', '919876543210', 100, 'INR', 1, 1);
             INSERT INTO outbox (id, order_id, kind, slot, recipient, status, variant, attempts,
                                 next_attempt_at, created_at, updated_at, graph_message_id,
                                 pricing_billable, pricing_category)
               VALUES ('r1', 'ORD-1', 'confirmation', '', '919876543210', 'sent', 'text', 1, 1, 1, 1, 'g1', TRUE, 'utility'),
                      ('r2', 'ORD-1', 'link', '', '919876543210', 'sent', 'text', 1, 1, 1, 1, 'g2', NULL, NULL),
                      ('r3', 'ORD-1', 'elder_reply', '919811111111', '919811111111', 'sent', 'text', 1, 1, 1, 1, 'g3', NULL, NULL);",
        )
        .unwrap();
        crate::db::migrate(&mut conn).unwrap();
        (dir, Conn::from(conn))
    }

    #[test]
    fn billable_counts_equal_a_count_over_the_outbox_whatever_statuses_arrive() {
        // Arrange: a database from before V8 with one billable message,
        // then migrated (the migration counts what is there).
        let (_dir, conn) = sent_rows_migrated_from(6);
        assert_eq!(kept(&conn), vec![("utility".to_owned(), 1)]);

        // Act and assert: after every status, the kept counts are the count.
        use DeliveryState::*;
        for s in [
            status("g2", Delivered, Some(true), Some("marketing")),
            status("g2", Read, Some(true), Some("marketing")),
            status("g1", Read, Some(false), Some("utility")),
            status("g3", Delivered, None, Some("service")),
            status("g3", Read, Some(true), None),
            status("g2", Read, Some(true), Some("utility")),
            status("g9", Sent, Some(true), Some("utility")),
        ] {
            apply_status(&conn, &s, 2).unwrap();
            assert_eq!(kept(&conn), counted(&conn), "after {s:?}");
        }
        assert_eq!(
            kept(&conn),
            vec![("service".to_owned(), 1), ("utility".to_owned(), 1)]
        );
    }

    fn paid_kept(conn: &Conn) -> Vec<(String, i64)> {
        let mut stmt = conn
            .prepare(
                "SELECT category, CAST(SUM(messages) AS BIGINT) FROM paid_counts
                 GROUP BY category HAVING SUM(messages) > 0 ORDER BY 1",
            )
            .unwrap();
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
        rows.collect::<Result<_, _>>().unwrap()
    }

    fn paid_counted(conn: &Conn) -> Vec<(String, i64)> {
        let mut stmt = conn
            .prepare(
                "SELECT COALESCE(pricing_category, ''), COUNT(*) FROM outbox
                 WHERE pricing_billable = TRUE AND pricing_type IS NULL
                    OR pricing_type = 'regular'
                 GROUP BY 1 ORDER BY 1",
            )
            .unwrap();
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
        rows.collect::<Result<_, _>>().unwrap()
    }

    #[test]
    fn paid_counts_follow_the_pricing_type_whatever_statuses_arrive() {
        // Arrange: a database from before V12 with one billable message
        // (no type then: billable decides) and two unpriced ones.
        let (_dir, conn) = sent_rows_migrated_from(10);
        assert_eq!(paid_kept(&conn), vec![("utility".to_owned(), 1)]);

        let typed = |id: &str, billable: Option<bool>, category: &str, t: Option<&str>| {
            let mut s = status(id, DeliveryState::Delivered, billable, Some(category));
            s.pricing.as_mut().unwrap().pricing_type = t.map(str::to_owned);
            s
        };
        for s in [
            // Free inside the customer's window, though still "billable".
            typed("g2", Some(true), "service", Some("free_customer_service")),
            typed("g3", None, "service", Some("free_entry_point")),
            typed("g1", Some(true), "utility", Some("regular")),
            // A later status that names only the category keeps the type.
            typed("g1", None, "marketing", None),
        ] {
            apply_status(&conn, &s, 2).unwrap();
            assert_eq!(paid_kept(&conn), paid_counted(&conn), "after {s:?}");
        }
        assert_eq!(paid_kept(&conn), vec![("marketing".to_owned(), 1)]);
        // The billable gauge still counts what Meta called billable.
        assert_eq!(
            kept(&conn),
            vec![("marketing".to_owned(), 1), ("service".to_owned(), 1)]
        );
    }
}
