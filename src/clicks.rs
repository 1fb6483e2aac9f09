//! The invite click log. A redirect must not wait for a disk write, and a
//! burst of clicks should not cost the writer a commit each: clicks collect
//! in memory, in the order they were answered, and a thread of their own
//! hands whatever arrived within `FLUSH_AFTER` of the first (at most
//! `FLUSH_AT`) to the writer as one job. A clean shutdown stores what is
//! still collected (`ClickLog::stop`, before the writer closes).

use crate::db::sql::{params_from_iter, Param};
use crate::db::MayRunTwice;
use crate::db::{DbError, Writer};
use crate::ids::new_id;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long the first click of a batch waits for others: a commit per
/// handful of clicks was a third of a redirect's cost on one core, while a
/// batch of a tenth of a second at full speed (over 2,000 clicks) held the
/// core long enough to show in the redirects' p99. Ten milliseconds or 128
/// clicks keeps both small, and the merchant's page does not notice.
const FLUSH_AFTER: Duration = Duration::from_millis(10);
/// A batch this large goes at once.
const FLUSH_AT: usize = 128;
#[derive(Clone)]
pub struct Click {
    pub token_id: String,
    pub order_id: String,
    pub at: i64,
    pub user_agent: Option<String>,
    /// Not a person opening the link: a link-preview fetcher, a `HEAD`
    /// request or a client without a `User-Agent` (stored as `is_preview`,
    /// which every count of people leaves out).
    pub preview: bool,
}

#[derive(Default)]
struct Pending {
    clicks: Vec<Click>,
    stopping: bool,
}

#[derive(Default)]
struct Shared {
    pending: Mutex<Pending>,
    /// A first click arrived, a batch filled, or stopping began.
    changed: Condvar,
}

#[derive(Clone)]
pub struct ClickLog {
    shared: Arc<Shared>,
    flusher: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl ClickLog {
    pub fn new(writer: Writer) -> ClickLog {
        let shared = Arc::new(Shared::default());
        let theirs = Arc::clone(&shared);
        let flusher = std::thread::Builder::new()
            .name("click-log".into())
            .spawn(move || flush_loop(&theirs, &writer))
            .expect("spawn the click log");
        ClickLog {
            shared,
            flusher: Arc::new(Mutex::new(Some(flusher))),
        }
    }

    pub fn record(&self, click: Click) {
        let mut pending = self.shared.pending.lock().expect("click log lock");
        pending.clicks.push(click);
        let n = pending.clicks.len();
        drop(pending);
        if n == 1 || n == FLUSH_AT {
            self.shared.changed.notify_one();
        }
    }

    /// Stores what is collected and stops; call before the writer closes.
    pub fn stop(&self) {
        self.shared.pending.lock().expect("click log lock").stopping = true;
        self.shared.changed.notify_one();
        if let Some(flusher) = self.flusher.lock().expect("click log lock").take() {
            let _ = flusher.join();
        }
    }
}

fn flush_loop(shared: &Shared, writer: &Writer) {
    // After a refused batch: how long before the next try, growing while
    // the database stays away, and whether that was logged already.
    let mut retry = FLUSH_AFTER;
    let mut pending = shared.pending.lock().expect("click log lock");
    loop {
        while pending.clicks.is_empty() && !pending.stopping {
            pending = shared.changed.wait(pending).expect("click log lock");
        }
        if pending.clicks.is_empty() {
            return;
        }
        pending = wait_while(shared, pending, Instant::now() + FLUSH_AFTER, |p| {
            p.clicks.len() < FLUSH_AT && !p.stopping
        });
        let batch = Arc::new(std::mem::take(&mut pending.clicks));
        let stopping = pending.stopping;
        drop(pending);
        let stored = store(writer, Arc::clone(&batch));
        pending = shared.pending.lock().expect("click log lock");
        match stored {
            Ok(()) => {
                if retry > FLUSH_AFTER {
                    log::info!("click log: the database takes clicks again");
                    retry = FLUSH_AFTER;
                }
            }
            Err(e) if !e.is_unavailable() => {
                // Refused for what they are (a constraint, a value), not
                // because the database is away: kept, they would hold back
                // every later click for ever. One by one, the others of the
                // batch are still stored.
                drop(pending);
                for click in batch.iter() {
                    if let Err(e) = store(writer, Arc::new(vec![click.clone()])) {
                        log::error!(
                            "click log: a click on token {} refused, not stored: {e}",
                            click.token_id
                        );
                    }
                }
                pending = shared.pending.lock().expect("click log lock");
            }
            Err(e) if stopping || matches!(e, DbError::Closed) => {
                log::error!(
                    "click log: {} click(s) not stored at shutdown: {e}",
                    batch.len()
                );
                return;
            }
            Err(e) => {
                if retry == FLUSH_AFTER {
                    log::error!(
                        "click log: {} click(s) not stored yet, kept and tried again: {e}",
                        batch.len()
                    );
                }
                // Ahead of what came since, so the order holds.
                let mut batch = Arc::unwrap_or_clone(batch);
                batch.append(&mut pending.clicks);
                pending.clicks = batch;
                // Not at once: the database just refused. A stop ends the
                // wait and tries once more.
                pending = wait_while(shared, pending, Instant::now() + retry, |p| !p.stopping);
                retry = (retry * 2).min(MAX_RETRY);
            }
        }
    }
}

/// Waits for `changed` while `waiting` holds, until `until` at the latest.
fn wait_while<'a>(
    shared: &'a Shared,
    mut pending: MutexGuard<'a, Pending>,
    until: Instant,
    waiting: impl Fn(&Pending) -> bool,
) -> MutexGuard<'a, Pending> {
    while waiting(&pending) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        pending = shared
            .changed
            .wait_timeout(pending, left)
            .expect("click log lock")
            .0;
    }
    pending
}

/// The longest wait between tries while the database refuses clicks.
const MAX_RETRY: Duration = Duration::from_secs(5);

/// One writer job for the batch, waited for: this thread has nothing else
/// to do, and a refused batch is kept. Committed without waiting for the
/// disk: these clicks were answered already, and a crash would lose those
/// still collected here just the same.
fn store(writer: &Writer, batch: Arc<Vec<Click>>) -> Result<(), DbError> {
    writer.run_blocking_unsynced(
        None,
        MayRunTwice::new(move |conn| {
            for chunk in batch.chunks(ROWS_PER_INSERT) {
                let ids: Vec<String> = chunk.iter().map(|_| new_id()).collect();
                let mut values: Vec<&dyn Param> = Vec::with_capacity(chunk.len() * 6);
                for (c, id) in chunk.iter().zip(&ids) {
                    values.extend([
                        id as &dyn Param,
                        &c.token_id,
                        &c.order_id,
                        &c.at,
                        &c.user_agent,
                        &c.preview,
                    ]);
                }
                conn.prepare_cached(&INSERTS[chunk.len() - 1])?
                    .execute(params_from_iter(values))?;
            }
            Ok(())
        }),
    )
}

/// Clicks per INSERT: one statement per click was most of a click's cost
/// in the writer (starting, binding and resetting it), beside the rows
/// themselves.
const ROWS_PER_INSERT: usize = 16;

/// The INSERT of 1, 2, … `ROWS_PER_INSERT` clicks, written once.
static INSERTS: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
    (1..=ROWS_PER_INSERT)
        .map(|rows| {
            let values: Vec<String> = (0..rows)
                .map(|r| {
                    let b = r * 6;
                    format!(
                        "(${}, ${}, ${}, ${}, ${}, ${})",
                        b + 1,
                        b + 2,
                        b + 3,
                        b + 4,
                        b + 5,
                        b + 6
                    )
                })
                .collect();
            format!(
                "INSERT INTO invite_clicks (id, token_id, order_id, clicked_at, user_agent, is_preview) VALUES {}",
                values.join(", ")
            )
        })
        .collect()
});

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{migrate, open_writer};

    /// Records `clicks` on a fresh database holding order `ORD-1` and its
    /// token `t1` (and whatever `setup` adds), stops the log and the writer,
    /// and reads back what was stored: (clicked_at, user_agent, is_preview),
    /// in insertion order.
    fn record_and_read(clicks: Vec<Click>, setup: &str) -> Vec<(i64, Option<String>, bool)> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let mut conn = open_writer(&path).unwrap();
        migrate(&mut conn).unwrap();
        conn.execute_batch(
            "INSERT INTO orders (id, status, total_amount, currency, created_at, updated_at)
             VALUES ('ORD-1', 'PAID', 100, 'INR', 0, 0);
             INSERT INTO whatsapp_tokens (id, order_id, token, expires_at, created_at)
             VALUES ('t1', 'ORD-1', 'tok', 1, 0);",
        )
        .unwrap();
        conn.execute_batch(setup).unwrap();
        let (writer, thread) = Writer::start(conn);
        let log = ClickLog::new(writer.clone());
        for click in clicks {
            log.record(click);
        }
        log.stop();
        writer.close();
        thread.join().unwrap();

        let conn = rusqlite::Connection::open(&path).unwrap();
        let stored = conn
            .prepare("SELECT clicked_at, user_agent, is_preview FROM invite_clicks ORDER BY rowid")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        stored
    }

    fn click(token_id: &str, at: usize, user_agent: Option<String>, preview: bool) -> Click {
        Click {
            token_id: token_id.into(),
            order_id: "ORD-1".into(),
            at: at as i64,
            user_agent,
            preview,
        }
    }

    /// More clicks than one INSERT takes, all inside one batch: every one is
    /// stored, in the order answered.
    #[test]
    fn a_burst_is_stored_whole_and_in_order_across_several_inserts() {
        let n = 2 * ROWS_PER_INSERT + 3;
        let stored = record_and_read(
            (0..n)
                .map(|i| click("t1", i, Some(format!("ua-{i:02}")), i % 2 == 1))
                .collect(),
            "",
        );
        let expected: Vec<(i64, Option<String>, bool)> = (0..n)
            .map(|i| (i as i64, Some(format!("ua-{i:02}")), i % 2 == 1))
            .collect();
        assert_eq!(stored, expected);
    }

    /// A click the database refuses for what it is, not because it is away,
    /// is dropped alone: the clicks beside it in its batch are stored. No
    /// constraint of the schema refuses a click the server can make (V16), so
    /// a trigger stands in for one that might (a value out of range).
    #[test]
    fn a_refused_click_does_not_hold_back_the_others() {
        let stored = record_and_read(
            ["t1", "refused", "t1"]
                .into_iter()
                .enumerate()
                .map(|(i, token)| click(token, i, None, false))
                .collect(),
            "CREATE TRIGGER refuse BEFORE INSERT ON invite_clicks
             WHEN NEW.token_id = 'refused'
             BEGIN SELECT RAISE(ABORT, 'refused'); END;",
        );
        let times: Vec<i64> = stored.iter().map(|(at, _, _)| *at).collect();
        assert_eq!(times, vec![0, 2]);
    }
}
