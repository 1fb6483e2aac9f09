//! What Meta says became of a message we sent (SPEC §9 statuses): its
//! delivery state moves only up, its pricing is recorded, and a status that
//! arrives before the send recorded its message id waits in
//! `pending_statuses` until `mark_sent` applies it. The inbound side only
//! parses statuses; every write to a sent message's state lives here, on the
//! outbox side.

use super::DeliveryState;
use crate::db::sql::{params, Conn, OptionalExtension};
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

/// Moves a message's delivery state up the order of SPEC §9 only, and
/// records the status's pricing. Unknown ids wait in `pending_statuses`.
pub fn apply_status(conn: &Conn, s: &StatusUpdate, now: i64) -> Result<bool, DbError> {
    // One message's statuses, and its send being recorded, one at a time:
    // the state is read, then moved up (two statuses at once must not move
    // it down), and a status for a send not yet recorded waits in
    // `pending_statuses`, which `apply_pending` must then see.
    conn.lock_key(&format!("graph-message:{}", s.message_id))?;
    let current: Option<(Option<DeliveryState>, Pricing)> = conn
        .prepare_cached(
            "SELECT delivery_status, pricing_billable, pricing_category, pricing_type
             FROM outbox WHERE graph_message_id = ?1",
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
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
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
    if s.pricing.is_some() {
        let pricing = pricing.over(recorded);
        // The metrics' counts follow the row (out before, in after).
        crate::metrics::count_billable(conn, &s.message_id, -1)?;
        crate::metrics::count_paid(conn, &s.message_id, -1)?;
        conn.prepare_cached(
            "UPDATE outbox SET pricing_billable = ?2, pricing_category = ?3, pricing_type = ?4,
                    pricing_paid = ?5
             WHERE graph_message_id = ?1",
        )?
        .execute(params![
            s.message_id,
            pricing.billable,
            pricing.category,
            pricing.pricing_type,
            pricing.paid()
        ])?;
        crate::metrics::count_billable(conn, &s.message_id, 1)?;
        crate::metrics::count_paid(conn, &s.message_id, 1)?;
    }
    let Some(next) = DeliveryState::advance(current, s.state) else {
        return Ok(false);
    };
    let error = match (s.error_code, &s.error_title) {
        (Some(code), Some(title)) => Some(format!("{code}: {title}")),
        (Some(code), None) => Some(code.to_string()),
        (None, Some(title)) => Some(title.clone()),
        (None, None) => None,
    };
    // A superseded failure's error stays: it is the message's history.
    conn.prepare_cached(
        "UPDATE outbox SET delivery_status = ?2, delivery_error = COALESCE(?3, delivery_error),
                delivery_updated_at = ?4
         WHERE graph_message_id = ?1",
    )?
    .execute(params![s.message_id, next, error, now])?;
    if next == DeliveryState::Failed {
        super::window::after_failure(conn, s, error.as_deref().unwrap_or_default(), now)?;
    }
    Ok(true)
}

/// Applies statuses that arrived before their message id was recorded.
pub fn apply_pending(conn: &Conn, message_id: &str, now: i64) -> Result<(), DbError> {
    conn.lock_key(&format!("graph-message:{message_id}"))?;
    let pending: Vec<StatusUpdate> = conn
        .prepare_cached(
            "SELECT graph_message_id, status, error_code, error_title, pricing_billable,
                    pricing_category, pricing_type
             FROM pending_statuses
             WHERE graph_message_id = ?1 ORDER BY received_at",
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
    conn.prepare_cached("DELETE FROM pending_statuses WHERE graph_message_id = ?1")?
        .execute([message_id])?;
    Ok(())
}

/// Statuses for ids that never turn up (messages sent by other tools on the
/// same number) are dropped after a week.
pub fn prune_pending(conn: &Conn, now: i64) -> Result<(), DbError> {
    conn.prepare_cached("DELETE FROM pending_statuses WHERE received_at < ?1")?
        .execute([now - 7 * 86_400_000])?;
    Ok(())
}

/// Two contacts merged into one: the elder replies slotted for `from` take
/// the slot of `into`, except where `into` already has the order's reply
/// (so the merged contact is not replied to twice).
pub fn move_reply_slots(conn: &Conn, from: &str, into: &str) -> Result<(), DbError> {
    conn.prepare_cached(
        "UPDATE outbox SET slot = ?2
         WHERE kind = ?3 AND slot = ?1
           AND order_id NOT IN (SELECT order_id FROM outbox WHERE kind = ?3 AND slot = ?2)",
    )?
    .execute(params![from, into, super::Kind::ElderReply])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Pricing;

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
}
