//! The orders list (`GET /admin/orders`, the page's orders): a keyset page,
//! an id or phone search, and where each order stands on SPEC §12's funnel.

use super::format::rfc3339;
use crate::db::sql::{Conn, OptionalExtension};
use crate::db::DbError;
use crate::domain::Money;
use crate::error::AppError;
use crate::outbox::{DeliveryState, Kind, Status};
use serde_json::{json, Value};

/// How far along the funnel of SPEC §12 an order got, in funnel order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    Paid,
    ConfirmationSent,
    ConfirmationDelivered,
    LinkSent,
    LinkDelivered,
    LinkOpened,
    ElderLinked,
}

impl Stage {
    pub const ALL: [Stage; 7] = [
        Stage::Paid,
        Stage::ConfirmationSent,
        Stage::ConfirmationDelivered,
        Stage::LinkSent,
        Stage::LinkDelivered,
        Stage::LinkOpened,
        Stage::ElderLinked,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Stage::Paid => "paid",
            Stage::ConfirmationSent => "confirmation_sent",
            Stage::ConfirmationDelivered => "confirmation_delivered",
            Stage::LinkSent => "link_sent",
            Stage::LinkDelivered => "link_delivered",
            Stage::LinkOpened => "link_opened",
            Stage::ElderLinked => "elder_linked",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Stage::Paid => "Paid",
            Stage::ConfirmationSent => "Confirmation sent",
            Stage::ConfirmationDelivered => "Confirmation delivered",
            Stage::LinkSent => "Link sent",
            Stage::LinkDelivered => "Link delivered",
            Stage::LinkOpened => "Link opened",
            Stage::ElderLinked => "Elder linked",
        }
    }

    /// 1-based position, for the page's step counter.
    pub fn step(self) -> usize {
        Stage::ALL.iter().position(|s| *s == self).unwrap_or(0) + 1
    }
}

/// Where one step of an order stands. A step whose message was dead-lettered,
/// cancelled or failed at WhatsApp is `Failed`, never `Done`, whatever later
/// steps reached (an elder can link through a link forwarded another way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepState {
    Done,
    Failed,
    Todo,
}

/// Each step of SPEC §12's funnel for one order, in `Stage::ALL` order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub steps: [StepState; 7],
}

impl Progress {
    /// The furthest step done.
    pub fn stage(&self) -> Stage {
        Stage::ALL
            .iter()
            .zip(self.steps)
            .filter(|(_, s)| *s == StepState::Done)
            .map(|(stage, _)| *stage)
            .next_back()
            .unwrap_or(Stage::Paid)
    }

    /// The first step that failed: where the order stopped.
    pub fn stopped(&self) -> Option<Stage> {
        Stage::ALL
            .iter()
            .zip(self.steps)
            .find(|(_, s)| *s == StepState::Failed)
            .map(|(stage, _)| *stage)
    }

    /// Where the order stands, in words a merchant reads at a glance.
    pub fn words(&self) -> String {
        let reached = self.stage();
        if let Some(stop) = self.stopped() {
            let why = match stop {
                Stage::ConfirmationSent => "the confirmation was not sent",
                Stage::ConfirmationDelivered => "WhatsApp could not deliver the confirmation",
                Stage::LinkSent => "the link message was not sent",
                Stage::LinkDelivered => "WhatsApp could not deliver the link message",
                // Only messages fail; the other steps are done or not yet.
                _ => "a step failed",
            };
            return if reached > stop {
                format!("Stopped: {why} (later: {})", reached.label().to_lowercase())
            } else {
                format!("Stopped: {why}")
            };
        }
        match reached {
            Stage::Paid => "Paid · confirmation not sent yet",
            Stage::ConfirmationSent => "Confirmation sent · not delivered yet",
            Stage::ConfirmationDelivered => "Confirmation delivered · link not sent yet",
            Stage::LinkSent => "Link sent · not delivered yet",
            Stage::LinkDelivered => "Link delivered · not opened yet",
            Stage::LinkOpened => "Link opened · no elder has written yet",
            Stage::ElderLinked => "Done: elder linked",
        }
        .to_owned()
    }
}

/// Each step's state, from what the outbox (status, delivery status of the
/// confirmation and of the link) and the click and contact tables hold.
pub fn progress_of(
    confirmation: (Option<Status>, Option<DeliveryState>),
    link: (Option<Status>, Option<DeliveryState>),
    opened: bool,
    linked: bool,
) -> Progress {
    let sent = |status: Option<Status>| match status {
        Some(Status::Sent) => StepState::Done,
        Some(Status::Dead | Status::Cancelled) => StepState::Failed,
        Some(Status::Waiting | Status::Queued | Status::Sending) | None => StepState::Todo,
    };
    let delivered = |delivery: Option<DeliveryState>| match delivery {
        Some(DeliveryState::Delivered | DeliveryState::Read) => StepState::Done,
        Some(DeliveryState::Failed) => StepState::Failed,
        Some(DeliveryState::Sent) | None => StepState::Todo,
    };
    let done = |yes: bool| {
        if yes {
            StepState::Done
        } else {
            StepState::Todo
        }
    };
    Progress {
        steps: [
            StepState::Done,
            sent(confirmation.0),
            delivered(confirmation.1),
            sent(link.0),
            delivered(link.1),
            done(opened),
            done(linked),
        ],
    }
}

/// The furthest stage reached, from what the outbox and the click and
/// contact tables hold for one order.
pub fn stage_of(
    confirmation: (Option<Status>, Option<DeliveryState>),
    link: (Option<Status>, Option<DeliveryState>),
    opened: bool,
    linked: bool,
) -> Stage {
    let delivered = |d: Option<DeliveryState>| {
        matches!(d, Some(DeliveryState::Delivered | DeliveryState::Read))
    };
    let sent = |s: Option<Status>| s == Some(Status::Sent);
    if linked {
        Stage::ElderLinked
    } else if opened {
        Stage::LinkOpened
    } else if delivered(link.1) {
        Stage::LinkDelivered
    } else if sent(link.0) {
        Stage::LinkSent
    } else if delivered(confirmation.1) {
        Stage::ConfirmationDelivered
    } else if sent(confirmation.0) {
        Stage::ConfirmationSent
    } else {
        Stage::Paid
    }
}

/// One row of the orders list.
#[derive(Debug, Clone)]
pub struct OrderRow {
    pub id: String,
    pub status: String,
    pub phone_e164: Option<String>,
    pub amount: String,
    pub created_at: i64,
    pub stage: Stage,
    /// Each step, failed ones apart from done ones.
    pub progress: Progress,
    /// A message of the order is dead-lettered or was refused by WhatsApp.
    pub trouble: Option<String>,
}

impl OrderRow {
    pub fn json(&self) -> Value {
        json!({
            "id": self.id,
            "status": self.status,
            "customer_phone": self.phone_e164.as_ref().map(|p| format!("+{p}")),
            "amount": self.amount,
            "created_at": rfc3339(Some(self.created_at)),
            "stage": self.stage.code(),
            "stopped_at": self.progress.stopped().map(Stage::code),
            "stage_words": self.progress.words(),
            "trouble": self.trouble,
        })
    }
}

pub const ORDERS_DEFAULT_LIMIT: usize = 25;
pub const ORDERS_MAX_LIMIT: usize = 200;

/// A page of the orders list: newest first, keyset-paginated by the last
/// order shown (`before`), optionally filtered.
#[derive(Debug, Clone, Default)]
pub struct OrdersQuery {
    pub limit: usize,
    pub before: Option<String>,
    /// An order id (or its beginning), or the last digits of a phone number.
    pub search: Option<String>,
}

pub struct OrdersPage {
    pub rows: Vec<OrderRow>,
    /// Pass as `before` for the next (older) page; `None` on the last page.
    pub next_before: Option<String>,
}

/// The digits of a search that can be the end of a phone number: 3 to 15
/// digits, spaces, dashes and a leading `+` allowed.
fn phone_tail(q: &str) -> Option<String> {
    let digits: String = q.chars().filter(char::is_ascii_digit).collect();
    let only_phone_chars = q
        .chars()
        .all(|ch| ch.is_ascii_digit() || matches!(ch, ' ' | '-' | '+' | '(' | ')'));
    (only_phone_chars && (3..=15).contains(&digits.len())).then_some(digits)
}

pub fn orders_list(c: &Conn, q: &OrdersQuery) -> Result<Result<OrdersPage, AppError>, DbError> {
    let cursor: Option<(i64, String)> = match &q.before {
        None => None,
        Some(id) => {
            let at = c
                .prepare_cached("SELECT created_at FROM orders WHERE id = $1")?
                .query_row([id], |r| r.get::<_, i64>(0))
                .optional()?;
            match at {
                Some(at) => Some((at, id.clone())),
                None => {
                    return Ok(Err(AppError::InvalidPayload(format!(
                        "before: no order {id}"
                    ))))
                }
            }
        }
    };
    let search = q.search.as_deref().map(str::trim).filter(|s| !s.is_empty());
    // An id prefix as a range on the primary key (no LIKE escaping, and the
    // index answers it); a phone tail as a suffix match.
    let id_lo = search.map(str::to_owned);
    let id_hi = search.map(|s| format!("{s}\u{10FFFF}"));
    let phone_like = search.and_then(phone_tail).map(|d| format!("%{d}"));
    let limit = q.limit.clamp(1, ORDERS_MAX_LIMIT);
    // Only the conditions in use are in the statement, so that SQLite can
    // seek: the keyset as a row value on (created_at, id), an id prefix as a
    // range of the primary key. A phone tail cannot use an index; it is
    // checked on the covering index orders_created (V6), never the table.
    // Placeholders are numbered as their values are pushed: `$N` is what
    // both stores take as written (SQLite binds it by its name).
    let mut conditions: Vec<String> = Vec::new();
    let mut args: Vec<&dyn crate::db::sql::Param> = Vec::new();
    if let Some((at, id)) = &cursor {
        let n = args.len();
        conditions.push(format!("(o.created_at, o.id) < (${}, ${})", n + 1, n + 2));
        args.extend([at as &dyn crate::db::sql::Param, id]);
    }
    match (&id_lo, &id_hi, &phone_like) {
        (Some(lo), Some(hi), None) => {
            let n = args.len();
            conditions.push(format!("o.id >= ${} AND o.id < ${}", n + 1, n + 2));
            args.extend([lo as &dyn crate::db::sql::Param, hi]);
        }
        (Some(lo), Some(hi), Some(like)) => {
            let n = args.len();
            conditions.push(format!(
                "((o.id >= ${} AND o.id < ${}) OR o.customer_phone_e164 LIKE ${})",
                n + 1,
                n + 2,
                n + 3
            ));
            args.extend([lo as &dyn crate::db::sql::Param, hi, like]);
        }
        _ => {}
    }
    let fetch = (limit + 1) as i64;
    args.push(&fetch);
    let limit_at = args.len();
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    let mut stmt = c.prepare_cached(&format!(
        "SELECT o.id, o.status, o.customer_phone_e164, o.total_amount, o.currency, o.created_at,
                (SELECT m.status FROM outbox m WHERE m.order_id = o.id AND m.kind = 'confirmation' AND m.slot = ''),
                (SELECT m.delivery_status FROM outbox m WHERE m.order_id = o.id AND m.kind = 'confirmation' AND m.slot = ''),
                (SELECT m.status FROM outbox m WHERE m.order_id = o.id AND m.kind = 'link' AND m.slot = ''),
                (SELECT m.delivery_status FROM outbox m WHERE m.order_id = o.id AND m.kind = 'link' AND m.slot = ''),
                EXISTS (SELECT 1 FROM invite_clicks k WHERE k.order_id = o.id AND NOT k.is_preview),
                EXISTS (SELECT 1 FROM contact_links l WHERE l.order_id = o.id),
                (SELECT MIN(m.kind) FROM outbox m WHERE m.order_id = o.id
                   AND (m.status = 'dead' OR m.delivery_status = 'failed'))
         FROM orders o
         {filter}
         ORDER BY o.created_at DESC, o.id DESC
         LIMIT ${limit_at}"
    ))?;
    let mut rows: Vec<OrderRow> = stmt
        .query_map(args.as_slice(), |r| {
            let amount: i64 = r.get(3)?;
            let currency: String = r.get(4)?;
            let confirmation: (Option<Status>, Option<DeliveryState>) = (r.get(6)?, r.get(7)?);
            let link: (Option<Status>, Option<DeliveryState>) = (r.get(8)?, r.get(9)?);
            let trouble: Option<Kind> = r.get(12)?;
            let progress = progress_of(confirmation, link, r.get(10)?, r.get(11)?);
            Ok(OrderRow {
                id: r.get(0)?,
                status: r.get(1)?,
                phone_e164: r.get(2)?,
                amount: Money::new(amount, &currency)
                    .map(|m| m.display())
                    .unwrap_or_else(|_| format!("{currency} {amount}")),
                created_at: r.get(5)?,
                stage: stage_of(confirmation, link, r.get(10)?, r.get(11)?),
                progress,
                trouble: trouble.map(|kind| format!("{kind} failed")),
            })
        })?
        .collect::<Result<_, _>>()?;
    let next_before = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(|r| r.id.clone())
    } else {
        None
    };
    Ok(Ok(OrdersPage { rows, next_before }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::DeliveryState::{Delivered, Failed, Read};
    use crate::outbox::Status::{Dead, Sent, Waiting};

    #[test]
    fn the_stage_is_the_furthest_step_reached() {
        assert_eq!(
            stage_of((None, None), (None, None), false, false),
            Stage::Paid
        );
        assert_eq!(
            stage_of(
                (Some(Sent), Some(Read)),
                (Some(Waiting), None),
                false,
                false
            ),
            Stage::ConfirmationDelivered
        );
        assert_eq!(
            stage_of(
                (Some(Sent), None),
                (Some(Sent), Some(Delivered)),
                false,
                false
            ),
            Stage::LinkDelivered
        );
        // An elder can be linked through a forwarded link whose delivery
        // status never arrived: the furthest step wins.
        assert_eq!(
            stage_of((Some(Dead), None), (None, None), false, true),
            Stage::ElderLinked
        );
    }

    #[test]
    fn a_failed_or_dead_step_is_never_done_and_the_words_say_where_it_stopped() {
        // The link failed at WhatsApp, yet an elder linked (a link forwarded
        // some other way): the link's delivery is failed, not done.
        let p = progress_of(
            (Some(Sent), Some(Delivered)),
            (Some(Sent), Some(Failed)),
            false,
            true,
        );
        assert_eq!(p.steps[4], StepState::Failed);
        assert_eq!(p.stopped(), Some(Stage::LinkDelivered));
        assert_eq!(
            p.words(),
            "Stopped: WhatsApp could not deliver the link message (later: elder linked)"
        );
        // A dead confirmation: nothing after it is done.
        let p = progress_of((Some(Dead), None), (Some(Waiting), None), false, false);
        assert_eq!(
            p.steps,
            [
                StepState::Done,
                StepState::Failed,
                StepState::Todo,
                StepState::Todo,
                StepState::Todo,
                StepState::Todo,
                StepState::Todo
            ]
        );
        assert_eq!(p.words(), "Stopped: the confirmation was not sent");
        assert_eq!(p.stage(), Stage::Paid);
        // No failure: the furthest step and what comes next.
        let p = progress_of(
            (Some(Sent), Some(Read)),
            (Some(Sent), Some(Delivered)),
            false,
            false,
        );
        assert_eq!(p.stopped(), None);
        assert_eq!(p.words(), "Link delivered · not opened yet");
        let p = progress_of((Some(Sent), None), (Some(Sent), None), true, true);
        assert_eq!(p.words(), "Done: elder linked");
    }

    #[test]
    fn a_phone_tail_is_three_to_fifteen_digits() {
        assert_eq!(phone_tail("3210").as_deref(), Some("3210"));
        assert_eq!(
            phone_tail("+91 98765-43210").as_deref(),
            Some("919876543210")
        );
        assert_eq!(phone_tail("12"), None);
        assert_eq!(phone_tail("ORD-1042"), None);
    }
}
