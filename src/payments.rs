//! What a payment event does to the database, as one unit of work: claim the
//! idempotency key, upsert the order, create the token and queue both
//! messages. It runs inside one savepoint of the writer's batch, so either
//! all of it reaches the disk or none of it does.

use crate::db::sql::{params, Conn, OptionalExtension};
use crate::db::DbError;
use crate::domain::{EventKind, InviteToken, OrderId, Payment, PaymentEvent};
use crate::links;
use crate::outbox::{self, Kind, Recipient, Status, Variant};

/// What the webhook answers; each variant is one row of SPEC §4's table.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Processed {
        order_id: String,
        token: String,
    },
    SkippedInvalidPhone {
        order_id: String,
    },
    Duplicate {
        order_id: Option<String>,
        token: Option<String>,
    },
    AlreadyConfirmed {
        order_id: String,
        token: Option<String>,
    },
    Ignored,
    /// Recorded, not confirmed yet: it waits for another event of the same
    /// payment to name the merchant's order (`crate::held_payments`).
    Held {
        gateway_order_id: String,
    },
}

impl Outcome {
    /// The `outcome` label of the payment webhook's metric: the response's
    /// status, or `skipped_invalid_phone` when the order was recorded
    /// without a message.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Processed { .. } => "processed",
            Outcome::SkippedInvalidPhone { .. } => "skipped_invalid_phone",
            Outcome::Duplicate { .. } => "duplicate",
            Outcome::AlreadyConfirmed { .. } => "already_confirmed",
            Outcome::Ignored => "ignored",
            Outcome::Held { .. } => "held",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Context {
    pub now_ms: i64,
    pub token_ttl_ms: i64,
    /// `WHATSAPP_LINK_IN=message`: the order gets a link message of its
    /// own. Otherwise the confirmation carries the link and no link row is
    /// made, so nothing can send it a second time.
    pub link_message: bool,
}

pub fn record(
    conn: &Conn,
    key: &str,
    event: &PaymentEvent,
    ctx: &Context,
) -> Result<Outcome, DbError> {
    let (event_type, order_id) = match &event.kind {
        EventKind::PaymentSucceeded(p) => ("payment_succeeded", Some(p.order_id.as_str())),
        EventKind::Other(kind) => (kind.as_str(), None),
    };
    let claimed = conn
        .prepare_cached(
            "INSERT INTO webhook_events (idempotency_key, event_id, event_type, order_id, processed_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (idempotency_key) DO NOTHING",
        )?
        .execute(params![key, event.event_id, event_type, order_id, ctx.now_ms])?;
    if claimed == 0 {
        let order_id: Option<String> = conn
            .prepare_cached("SELECT order_id FROM webhook_events WHERE idempotency_key = $1")?
            .query_row([key], |r| r.get(0))?;
        let token = match &order_id {
            Some(id) => token_of(conn, id)?,
            None => None,
        };
        return Ok(Outcome::Duplicate { order_id, token });
    }
    match &event.kind {
        EventKind::Other(_) => Ok(Outcome::Ignored),
        EventKind::PaymentSucceeded(payment) => record_payment(conn, payment, ctx),
    }
}

/// What a payment does to an order already recorded (a replay with another
/// event id, an order first paid with an unusable phone): the `SET` list of
/// the order's upsert, shared by `record_payment` and
/// `record_in_one_statement` so the two paths cannot drift apart.
macro_rules! paid_again {
    () => {
        "user_id = excluded.user_id,
         payment_id = excluded.payment_id,
         status = 'PAID',
         customer_phone_e164 = COALESCE(excluded.customer_phone_e164, orders.customer_phone_e164),
         total_amount = excluded.total_amount,
         currency = excluded.currency,
         note = excluded.note,
         updated_at = excluded.updated_at"
    };
}

pub fn record_payment(conn: &Conn, p: &Payment, ctx: &Context) -> Result<Outcome, DbError> {
    let order_id = p.order_id.as_str();
    let phone = p.phone.as_ref().ok().map(|ph| ph.digits().to_owned());
    conn.prepare_cached(concat!(
        "INSERT INTO orders (id, user_id, payment_id, status, customer_phone_e164, total_amount,
                             currency, note, created_at, updated_at)
         VALUES ($1, $2, $3, 'PAID', $4, $5, $6, $7, $8, $8)
         ON CONFLICT (id) DO UPDATE SET ",
        paid_again!()
    ))?
    .execute(params![
        order_id,
        p.user_id,
        p.payment_id,
        phone,
        p.amount.minor_units(),
        p.amount.currency_code(),
        p.note.as_ref().map(|n| n.as_str()),
        ctx.now_ms,
    ])?;

    let already_queued: bool = conn
        .prepare_cached("SELECT 1 FROM outbox WHERE order_id = $1 AND kind = $2")?
        .query_row(params![order_id, Kind::Confirmation], |_| Ok(()))
        .optional()?
        .is_some();
    if already_queued {
        return Ok(Outcome::AlreadyConfirmed {
            order_id: order_id.to_owned(),
            token: token_of(conn, order_id)?,
        });
    }
    let Some(phone) = phone else {
        return Ok(Outcome::SkippedInvalidPhone {
            order_id: order_id.to_owned(),
        });
    };

    // An order that was paid earlier with an unusable phone may already
    // hold a token; reuse it so one order never has two live links.
    let token = match token_of(conn, order_id)? {
        Some(t) => t,
        None => {
            let token = InviteToken::generate().as_string();
            conn.prepare_cached(
                "INSERT INTO whatsapp_tokens (id, order_id, token, expires_at, created_at)
                 VALUES ($1, $2, $3, $4, $5)",
            )?
            .execute(params![
                crate::ids::new_id(),
                order_id,
                token,
                ctx.now_ms.saturating_add(ctx.token_ttl_ms),
                ctx.now_ms
            ])?;
            token
        }
    };
    let customer = Recipient::Phone(phone);
    outbox::enqueue_order(conn, order_id, &customer, ctx.link_message, ctx.now_ms)?;
    Ok(Outcome::Processed {
        order_id: order_id.to_owned(),
        token,
    })
}

/// A token `record_in_one_statement` made, as the redirect's memory wants it.
#[derive(Debug, Clone, PartialEq)]
pub struct MadeToken {
    pub id: String,
    pub expires_at: i64,
}

/// A new payment event in one statement, for PostgreSQL (SPEC §13: one
/// round trip per webhook where it can; `Writer::run_alone` sends it without
/// BEGIN and COMMIT). The same steps as `record` and `record_payment`, as
/// data-modifying CTEs that PostgreSQL runs to completion together: claim
/// the idempotency key, upsert the order (with where its id came from, as
/// `note_order_id_source` keeps it: the first source stays), and, when the order's messages are
/// not queued yet and its phone is usable, make its token (or keep the one
/// it has) and queue them. Every CTE after the key's reads from `ev`, so a
/// key already taken writes nothing: `None` then, and the caller runs the
/// general `record`, which answers the duplicate.
///
/// All of it reads one snapshot, taken before a concurrent event of the
/// same order may commit; the messages are therefore inserted without `ON
/// CONFLICT`, so that such an event's committed rows fail this statement
/// (a unique violation, undoing all of it) and its second run reads them
/// and answers `AlreadyConfirmed`, never a second token. SQLite has no
/// data-modifying CTEs; its one writer runs `record` in the group commit.
pub fn record_in_one_statement(
    conn: &Conn,
    key: &str,
    event_id: &str,
    p: &Payment,
    order_id_source: Option<&str>,
    ctx: &Context,
) -> Result<Option<(Outcome, Option<MadeToken>)>, DbError> {
    let order_id = p.order_id.as_str();
    let phone = p.phone.as_ref().ok().map(|ph| ph.digits().to_owned());
    let new_token = InviteToken::generate().as_string();
    let row = conn
        .prepare_cached(concat!(
            "WITH ev AS (
                 INSERT INTO webhook_events (idempotency_key, event_id, event_type, order_id, processed_at)
                 VALUES ($1, $2, 'payment_succeeded', $3, $4)
                 ON CONFLICT (idempotency_key) DO NOTHING
                 RETURNING 1
             ), prior AS (
                 SELECT EXISTS (SELECT 1 FROM outbox WHERE order_id = $3 AND kind = $12) AS queued,
                        (SELECT token FROM whatsapp_tokens WHERE order_id = $3
                         ORDER BY created_at LIMIT 1) AS token
             ), ord AS (
                 INSERT INTO orders (id, user_id, payment_id, status, customer_phone_e164,
                                     total_amount, currency, note, created_at, updated_at,
                                     order_id_source)
                 SELECT $3, $5, $6, 'PAID', $7, $8, $9, $10, $4, $4, $23 FROM ev
                 ON CONFLICT (id) DO UPDATE SET
                     order_id_source = COALESCE(orders.order_id_source, excluded.order_id_source), ",
            paid_again!(),
            "
                 RETURNING 1
             ), fresh AS (
                 SELECT 1 FROM ev, prior WHERE NOT prior.queued AND $7::VARCHAR IS NOT NULL
             ), tok AS (
                 INSERT INTO whatsapp_tokens (id, order_id, token, expires_at, created_at)
                 SELECT $11, $3, $13, $14, $4 FROM fresh, prior WHERE prior.token IS NULL
                 RETURNING id, token, expires_at
             ), msgs AS (
                 INSERT INTO outbox (id, order_id, kind, slot, recipient, recipient_user_id, status,
                                     variant, attempts, next_attempt_at, created_at, updated_at)
                 SELECT m.id, $3, m.kind, '', $7, NULL, m.status, m.variant, 0, $4, $4, $4
                 FROM fresh,
                      (VALUES ($15::VARCHAR, $12::VARCHAR, $16::VARCHAR, $17::VARCHAR),
                              ($18, $19, $20, $21)) AS m (id, kind, status, variant)
                 WHERE m.kind = $12 OR $22
                 RETURNING 1
             )
             SELECT (SELECT COUNT(*) FROM ev), prior.queued, prior.token,
                    (SELECT id FROM tok), (SELECT expires_at FROM tok),
                    (SELECT COUNT(*) FROM ord), (SELECT COUNT(*) FROM msgs)
             FROM prior"
        ))?
        .query_row(
            params![
                key,
                event_id,
                order_id,
                ctx.now_ms,
                p.user_id,
                p.payment_id,
                phone,
                p.amount.minor_units(),
                p.amount.currency_code(),
                p.note.as_ref().map(|n| n.as_str()),
                crate::ids::new_id(),
                Kind::Confirmation,
                new_token,
                ctx.now_ms.saturating_add(ctx.token_ttl_ms),
                crate::ids::new_id(),
                Status::Queued,
                Variant::Template,
                crate::ids::new_id(),
                Kind::Link,
                Status::Waiting,
                Variant::Text,
                ctx.link_message,
                order_id_source,
            ],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, bool>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                ))
            },
        )?;
    let (claimed, queued, prior_token, made_id, made_expires) = row;
    if claimed == 0 {
        return Ok(None);
    }
    let order_id = order_id.to_owned();
    if queued {
        let outcome = Outcome::AlreadyConfirmed {
            order_id,
            token: prior_token,
        };
        return Ok(Some((outcome, None)));
    }
    if phone.is_none() {
        return Ok(Some((Outcome::SkippedInvalidPhone { order_id }, None)));
    }
    let made = made_id
        .zip(made_expires)
        .map(|(id, expires_at)| MadeToken { id, expires_at });
    let token = match prior_token {
        Some(kept) => kept,
        None => new_token,
    };
    Ok(Some((Outcome::Processed { order_id, token }, made)))
}

pub fn token_of(conn: &Conn, order_id: &str) -> Result<Option<String>, DbError> {
    conn.prepare_cached(
        "SELECT token FROM whatsapp_tokens WHERE order_id = $1 ORDER BY created_at LIMIT 1",
    )?
    .query_row([order_id], |r| r.get(0))
    .optional()
}

/// The invite URL and wa.me link for a stored token.
pub fn links_for(
    app_base_url: &str,
    business_number: &str,
    order_id: &str,
    token: &str,
) -> Option<(String, String)> {
    let order = OrderId::parse(order_id).ok()?;
    let token = InviteToken::parse(token)?;
    Some((
        links::invite_url(app_base_url, &token),
        links::wa_me_link(business_number, &order, &token),
    ))
}

/// The lock two events of one gateway payment take turns on, so that only
/// one of them finds no order and makes one (PostgreSQL; SQLite's one
/// writer already serialises them).
pub fn payment_lock(source: &str, payment_id: &str) -> String {
    format!("payment:{source}:{payment_id}")
}

/// A gateway payment already recorded under an order stays with that order.
/// Razorpay's `payment.captured` carries no order entity, so when the
/// merchant's id is only in the order's `notes` or `receipt`, it maps to
/// another candidate than the `order.paid` of the same payment; both must
/// still give one confirmation. Returns whether an order holds the payment.
pub fn keep_with_its_order(
    conn: &Conn,
    source: &str,
    kind: &mut EventKind,
) -> Result<bool, DbError> {
    let EventKind::PaymentSucceeded(p) = kind else {
        return Ok(false);
    };
    // Two events of one payment (Razorpay's order.paid and payment.captured
    // at once) must not both find no order and make two.
    conn.lock_key(&payment_lock(source, &p.payment_id))?;
    let existing: Option<String> = conn
        .prepare_cached(
            "SELECT id FROM orders WHERE payment_id = $1 AND order_id_source LIKE $2 LIMIT 1",
        )?
        .query_row(params![p.payment_id, format!("{source} %")], |r| r.get(0))
        .optional()?;
    let found = existing.is_some();
    if let Some(id) = existing {
        if id != p.order_id.as_str() {
            if let Ok(order_id) = crate::domain::OrderId::parse(&id) {
                log::info!(
                    "{source} payment for order {}: already recorded under order {id}",
                    p.order_id
                );
                p.order_id = order_id;
            }
        }
    }
    Ok(found)
}

/// The first payment that named the order says where its id came from.
pub fn note_order_id_source(conn: &Conn, order_id: &OrderId, source: &str) -> Result<(), DbError> {
    conn.prepare_cached(
        "UPDATE orders SET order_id_source = COALESCE(order_id_source, $2) WHERE id = $1",
    )?
    .execute(params![order_id.as_str(), source])?;
    Ok(())
}

/// The id and expiry of an invite token just made, for the redirect's
/// memory of tokens.
pub fn token_made(conn: &Conn, token: &str) -> Result<Option<(String, i64)>, DbError> {
    conn.prepare_cached("SELECT id, expires_at FROM whatsapp_tokens WHERE token = $1")?
        .query_row(params![token], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db;

    fn database() -> (tempfile::TempDir, Conn) {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = db::open_writer(&dir.path().join("p.db")).unwrap();
        db::migrate(&mut conn).unwrap();
        (dir, Conn::from(conn))
    }

    fn event(id: &str, order: &str, phone: &str, note: &str) -> PaymentEvent {
        let body = serde_json::json!({"id": id, "type": "payment_succeeded", "data": {
            "order_id": order, "payment_id": "pay_1", "amount": 49900, "currency": "INR",
            "customer_phone": phone, "note": note}});
        PaymentEvent::parse(body.to_string().as_bytes(), None).unwrap()
    }

    const CTX: Context = Context {
        now_ms: 1_000,
        token_ttl_ms: 10_000,
        link_message: true,
    };

    #[test]
    fn hostile_notes_round_trip_through_the_database_intact() {
        let (_dir, conn) = database();
        let notes = [
            "'; DROP TABLE orders; --",
            "<script>alert(\"x\")</script> & \\",
            "😀👍🏽 👨‍👩‍👧 مرحبا \u{202e}שלום\u{202c}",
        ];
        for (i, note) in notes.iter().enumerate() {
            let e = event(
                &format!("evt_{i}"),
                &format!("ORD-{i}"),
                "+91 98765 43210",
                note,
            );
            record(&conn, &format!("k{i}"), &e, &CTX).unwrap();
            let stored: String = conn
                .query_row(
                    "SELECT note FROM orders WHERE id = $1",
                    [format!("ORD-{i}")],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(stored, *note);
        }
        let orders: i64 = conn
            .query_row("SELECT COUNT(*) FROM orders", [], |r| r.get(0))
            .unwrap();
        assert_eq!(orders, 3);
    }

    #[test]
    fn each_row_of_the_webhook_table() {
        let (_dir, conn) = database();
        let e = event("evt_1", "ORD-1", "+91 98765 43210", "n");
        let first = record(&conn, "k1", &e, &CTX).unwrap();
        let Outcome::Processed { token, .. } = first else {
            panic!("{first:?}")
        };
        assert_eq!(
            record(&conn, "k1", &e, &CTX).unwrap(),
            Outcome::Duplicate {
                order_id: Some("ORD-1".into()),
                token: Some(token.clone())
            }
        );
        assert_eq!(
            record(&conn, "k2", &e, &CTX).unwrap(),
            Outcome::AlreadyConfirmed {
                order_id: "ORD-1".into(),
                token: Some(token)
            }
        );
        let bad_phone = event("evt_3", "ORD-2", "12", "n");
        assert_eq!(
            record(&conn, "k3", &bad_phone, &CTX).unwrap(),
            Outcome::SkippedInvalidPhone {
                order_id: "ORD-2".into()
            }
        );
        let other = PaymentEvent::parse(br#"{"id":"evt_4","type":"refund"}"#, None).unwrap();
        assert_eq!(record(&conn, "k4", &other, &CTX).unwrap(), Outcome::Ignored);
        let messages: i64 = conn
            .query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0))
            .unwrap();
        assert_eq!(messages, 2);
    }
}
