//! The overview's counts (SPEC §12): the funnel over a few windows, the
//! queue's depth, and what paid messages cost, each an index range scan.

use crate::db::sql::Conn;
use crate::db::DbError;
use crate::outbox::{Kind, Status};

/// The funnel's five numbers over one window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Funnel {
    pub paid: i64,
    pub confirmation_delivered: i64,
    pub link_delivered: i64,
    pub link_opened: i64,
    pub elder_linked: i64,
}

impl Funnel {
    pub fn steps(&self) -> [(&'static str, i64); 5] {
        [
            ("Paid", self.paid),
            ("Confirmation delivered", self.confirmation_delivered),
            ("Link delivered", self.link_delivered),
            ("Link opened by a person", self.link_opened),
            ("Elder linked", self.elder_linked),
        ]
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueDepth {
    pub queued: i64,
    pub waiting: i64,
    pub dead: i64,
}

pub fn queue_depth(c: &Conn) -> Result<QueueDepth, DbError> {
    let mut depth = QueueDepth::default();
    let mut stmt = c.prepare_cached(
        "SELECT status, COUNT(*) FROM outbox WHERE status IN ('queued', 'sending', 'waiting', 'dead') GROUP BY status",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, Status>(0)?, r.get::<_, i64>(1)?)))?;
    for row in rows {
        let (status, n) = row?;
        match status {
            // A claimed row is still on its way out.
            Status::Queued | Status::Sending => depth.queued += n,
            Status::Waiting => depth.waiting = n,
            Status::Dead => depth.dead = n,
            // Not selected: neither is in the queue any more.
            Status::Sent | Status::Cancelled => {}
        }
    }
    Ok(depth)
}

/// Everything the overview shows, for the windows starting at each `since`.
#[derive(Debug, Clone)]
pub struct Overview {
    pub windows: Vec<(&'static str, Funnel)>,
    pub queue: QueueDepth,
    /// Paid messages (SPEC §9: pricing type `regular`, or billable without
    /// a type) by category, each with its count per window (same order as
    /// `windows`).
    pub costs: Vec<(String, Vec<i64>)>,
}

/// Paid messages queued on each day: `days` are the days' starts, oldest
/// first (midnights in the merchant's zone); the last day runs to now. One
/// range scan of the `outbox_paid` index (V12).
pub fn paid_per_day(c: &Conn, days: &[i64]) -> Result<Vec<i64>, DbError> {
    let Some(first) = days.first() else {
        return Ok(Vec::new());
    };
    let n = days.len();
    let args: Vec<i64> = days.iter().copied().chain([*first]).collect();
    // Messages since each day's start; a day is its count less the next's.
    let since: Vec<i64> = c
        .prepare_cached(&format!(
            "SELECT {} FROM outbox WHERE pricing_paid = TRUE AND created_at >= ${}",
            per_window("created_at", n, None),
            n + 1
        ))?
        .query_row(crate::db::sql::params_from_iter(args.iter()), |r| {
            (0..n).map(|i| r.get(i)).collect()
        })?;
    Ok((0..n)
        .map(|i| since[i] - since.get(i + 1).copied().unwrap_or(0))
        .collect())
}

/// One count per window, `$1`…`?n` being the windows' starts: a single scan
/// of the widest window (`?n+1`) counts them all.
fn per_window(column: &str, n: usize, distinct: Option<&str>) -> String {
    (1..=n)
        .map(|i| match distinct {
            None => format!("COALESCE(SUM(CASE WHEN {column} >= ${i} THEN 1 ELSE 0 END), 0)"),
            Some(d) => format!("COUNT(DISTINCT CASE WHEN {column} >= ${i} THEN {d} END)"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The funnel and the paid messages for windows `[since, now]`. Each
/// step is counted where it happened: orders by payment time, their messages
/// by the time they were queued (in the payment's own transaction, so the
/// same cohort), link opens and linked elders by their own time; paid
/// messages (migration V12's column, filled from Meta's statuses) by the
/// time they were queued. Five index range scans of V6's indexes, one per
/// table and step, each over the widest window: the cost follows the
/// month's traffic, not the database's size.
pub fn overview(c: &Conn, windows: &[(&'static str, i64)]) -> Result<Overview, DbError> {
    let n = windows.len();
    let widest = windows.iter().map(|w| w.1).min().unwrap_or(0);
    let args: Vec<i64> = windows.iter().map(|w| w.1).chain([widest]).collect();
    let args = crate::db::sql::params_from_iter(args.iter());
    let counts = |r: &crate::db::sql::Row<'_>, from: usize| -> Result<Vec<i64>, DbError> {
        (from..from + n).map(|i| r.get(i)).collect()
    };
    let w = n + 1;
    let paid = c
        .prepare_cached(&format!(
            "SELECT {} FROM orders WHERE created_at >= ${w}",
            per_window("created_at", n, None)
        ))?
        .query_row(args.clone(), |r| counts(r, 0))?;
    let mut delivered: Vec<(Kind, Vec<i64>)> = c
        .prepare_cached(&format!(
            "SELECT kind, {} FROM outbox WHERE kind IN ('confirmation', 'link') AND created_at >= ${w}
               AND delivery_status IN ('delivered', 'read') GROUP BY kind",
            per_window("created_at", n, None)
        ))?
        .query_map(args.clone(), |r| Ok((r.get(0)?, counts(r, 1)?)))?
        .collect::<Result<_, _>>()?;
    let mut delivered_of = |kind: Kind| {
        delivered
            .iter_mut()
            .find(|(k, _)| *k == kind)
            .map(|(_, v)| std::mem::take(v))
            .unwrap_or_else(|| vec![0; n])
    };
    let confirmation = delivered_of(Kind::Confirmation);
    let link = delivered_of(Kind::Link);
    let opened = c
        .prepare_cached(&format!(
            "SELECT {} FROM invite_clicks WHERE clicked_at >= ${w} AND NOT is_preview",
            per_window("clicked_at", n, Some("order_id"))
        ))?
        .query_row(args.clone(), |r| counts(r, 0))?;
    let linked = c
        .prepare_cached(&format!(
            "SELECT {} FROM contact_links WHERE linked_at >= ${w}",
            per_window("linked_at", n, Some("order_id"))
        ))?
        .query_row(args.clone(), |r| counts(r, 0))?;
    let costs: Vec<(String, Vec<i64>)> = c
        .prepare_cached(&format!(
            "SELECT COALESCE(pricing_category, 'unknown'), {} FROM outbox
             WHERE pricing_paid = TRUE AND created_at >= ${w}
             GROUP BY COALESCE(pricing_category, 'unknown') ORDER BY 1",
            per_window("created_at", n, None)
        ))?
        .query_map(args, |r| Ok((r.get(0)?, counts(r, 1)?)))?
        .collect::<Result<_, _>>()?;
    let funnels = windows
        .iter()
        .enumerate()
        .map(|(i, (name, _))| {
            (
                *name,
                Funnel {
                    paid: paid[i],
                    confirmation_delivered: confirmation[i],
                    link_delivered: link[i],
                    link_opened: opened[i],
                    elder_linked: linked[i],
                },
            )
        })
        .collect();
    Ok(Overview {
        windows: funnels,
        queue: queue_depth(c)?,
        // A category billed in no window of the page is left out.
        costs: costs
            .into_iter()
            .filter(|(_, v)| v.iter().any(|n| *n > 0))
            .collect(),
    })
}
