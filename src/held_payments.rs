//! SPEC §11: Razorpay's `payment.captured` arrives first and carries no
//! order entity, so when the merchant's id is only in the order's `receipt`
//! or `notes` it names the order by Razorpay's `order_…` id. Such an event is
//! recorded here instead of confirmed: the same payment's `order.paid`,
//! which names the merchant's order, confirms it (and [`settle`] ends the
//! wait in the same transaction); when none comes within
//! `RAZORPAY_ORDER_WAIT_MS`, [`release_due`] confirms it under Razorpay's
//! id. Both run under the payment's lock and delete the row they act on, so
//! exactly one of them confirms, on either store, across instances, and
//! across restarts (the row is the wait).

use crate::db::sql::{params, Conn, OptionalExtension};
use crate::db::DbError;
use crate::domain::{EventKind, Money, Note, OrderId, Payment, PaymentEvent, PhoneE164};
use crate::payments::{self, Context, Outcome};

/// Holds `event` (claiming its idempotency key) until `due_at`, unless its
/// key was claimed before (then `None`: the caller answers as for any
/// replay). Call under [`payments::payment_lock`], after checking that no order holds
/// the payment yet.
pub fn hold(
    conn: &Conn,
    source: &str,
    key: &str,
    event: &PaymentEvent,
    order_id_source: Option<&str>,
    now: i64,
    due_at: i64,
) -> Result<Option<Outcome>, DbError> {
    let EventKind::PaymentSucceeded(p) = &event.kind else {
        return Ok(None);
    };
    let claimed = conn
        .prepare_cached(
            "INSERT INTO webhook_events (idempotency_key, event_id, event_type, order_id, processed_at)
             VALUES ($1, $2, 'payment_succeeded', NULL, $3)
             ON CONFLICT (idempotency_key) DO NOTHING",
        )?
        .execute(params![key, event.event_id, now])?;
    if claimed == 0 {
        return Ok(None);
    }
    // A second delivery of the payment under another key keeps the first
    // wait: it names the same gateway order.
    conn.prepare_cached(
        "INSERT INTO held_payments (source, payment_id, idempotency_key, order_id, order_id_source,
                                    user_id, total_amount, currency, customer_phone_e164, note,
                                    received_at, due_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         ON CONFLICT (source, payment_id) DO NOTHING",
    )?
    .execute(params![
        source,
        p.payment_id,
        key,
        p.order_id.as_str(),
        order_id_source,
        p.user_id,
        p.amount.minor_units(),
        p.amount.currency_code(),
        p.phone.as_ref().ok().map(|ph| ph.digits().to_owned()),
        p.note.as_ref().map(|n| n.as_str()),
        now,
        due_at,
    ])?;
    log::info!(
        "{source} payment for gateway order {}: recorded; waiting up to {} ms for its order.paid to name the merchant's order",
        p.order_id,
        due_at - now
    );
    Ok(Some(Outcome::Held {
        gateway_order_id: p.order_id.as_str().to_owned(),
    }))
}

/// A payment of `source` was recorded under `order_id`: a held event of the
/// same payment is done, and its key now points at that order.
pub fn settle(conn: &Conn, source: &str, payment_id: &str, order_id: &str) -> Result<(), DbError> {
    let key: Option<String> = conn
        .prepare_cached(
            "SELECT idempotency_key FROM held_payments WHERE source = $1 AND payment_id = $2",
        )?
        .query_row(params![source, payment_id], |r| r.get(0))
        .optional()?;
    if let Some(key) = key {
        conn.prepare_cached("DELETE FROM held_payments WHERE source = $1 AND payment_id = $2")?
            .execute(params![source, payment_id])?;
        conn.prepare_cached("UPDATE webhook_events SET order_id = $2 WHERE idempotency_key = $1")?
            .execute(params![key, order_id])?;
    }
    Ok(())
}

/// Confirms, under the gateway's order id, each held payment whose wait
/// ended by `now` (a few per call); returns the orders it queued messages
/// for.
pub fn release_due(conn: &Conn, ctx: &Context) -> Result<Vec<String>, DbError> {
    let due: Vec<(String, String)> = conn
        .prepare_cached(
            "SELECT source, payment_id FROM held_payments WHERE due_at <= $1
             ORDER BY due_at, source, payment_id LIMIT 20",
        )?
        .query_map([ctx.now_ms], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut queued = Vec::new();
    for (source, payment_id) in due {
        conn.lock_key(&payments::payment_lock(&source, &payment_id))?;
        let row = conn
            .prepare_cached(
                "SELECT idempotency_key, order_id, order_id_source, user_id, total_amount, currency,
                        customer_phone_e164, note
                 FROM held_payments WHERE source = $1 AND payment_id = $2",
            )?
            .query_row(params![source, payment_id], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, Option<String>>(6)?,
                    r.get::<_, Option<String>>(7)?,
                ))
            })
            .optional()?;
        // Settled by its order.paid since the first look (another instance).
        let Some((key, order_id, field, user_id, amount, currency, phone, note)) = row else {
            continue;
        };
        conn.prepare_cached("DELETE FROM held_payments WHERE source = $1 AND payment_id = $2")?
            .execute(params![source, payment_id])?;
        let (Ok(order), Ok(amount)) = (OrderId::parse(&order_id), Money::new(amount, &currency))
        else {
            log::error!("{source} payment {payment_id}: held payment unreadable; not confirmed");
            continue;
        };
        let payment = Payment {
            order_id: order,
            payment_id: payment_id.clone(),
            user_id,
            amount,
            phone: match phone {
                Some(digits) => PhoneE164::parse(&format!("+{digits}"), None),
                None => Err("the gateway sent no usable phone number".into()),
            },
            note: note.as_deref().and_then(Note::clean),
        };
        let outcome = payments::record_payment(conn, &payment, ctx)?;
        let recorded_under = match &outcome {
            Outcome::Processed { order_id, .. }
            | Outcome::SkippedInvalidPhone { order_id }
            | Outcome::AlreadyConfirmed { order_id, .. } => order_id.clone(),
            _ => order_id.clone(),
        };
        if let Some(field) = field {
            conn.prepare_cached(
                "UPDATE orders SET order_id_source = COALESCE(order_id_source, $2) WHERE id = $1",
            )?
            .execute(params![recorded_under, field])?;
        }
        conn.prepare_cached("UPDATE webhook_events SET order_id = $2 WHERE idempotency_key = $1")?
            .execute(params![key, recorded_under])?;
        log::info!(
            "{source} payment for gateway order {order_id}: no order.paid named another order; confirmed under {order_id}"
        );
        if matches!(outcome, Outcome::Processed { .. }) {
            queued.push(recorded_under);
        }
    }
    Ok(queued)
}
