//! The invite click log. A redirect must not wait for a disk write, and a
//! burst of clicks should not cost the writer a commit each: clicks collect
//! in memory, in the order they were answered, and a thread of their own
//! hands whatever arrived within `FLUSH_AFTER` of the first (at most
//! `FLUSH_AT`) to the writer as one job. A clean shutdown stores what is still collected
//! (`ClickLog::stop`, before the writer closes).

use crate::db::sql::params;
use crate::db::MayRunTwice;
use crate::db::{DbError, Writer};
use crate::ids::new_id;
use std::sync::{Arc, Condvar, Mutex};
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
    let mut pending = shared.pending.lock().expect("click log lock");
    loop {
        while pending.clicks.is_empty() && !pending.stopping {
            pending = shared.changed.wait(pending).expect("click log lock");
        }
        if pending.clicks.is_empty() {
            return;
        }
        let until = Instant::now() + FLUSH_AFTER;
        while pending.clicks.len() < FLUSH_AT && !pending.stopping {
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
        let batch = Arc::new(std::mem::take(&mut pending.clicks));
        drop(pending);
        let stored = store(writer, Arc::clone(&batch));
        pending = shared.pending.lock().expect("click log lock");
        if let Err(e) = stored {
            log::error!("click log: {} click(s) not stored yet: {e}", batch.len());
            if matches!(e, DbError::Closed) {
                return;
            }
            // Ahead of what came since, so the order holds; the next batch
            // tries them again.
            let mut batch = Arc::unwrap_or_clone(batch);
            batch.append(&mut pending.clicks);
            pending.clicks = batch;
            drop(pending);
            // Not at once: the database just refused.
            std::thread::sleep(FLUSH_AFTER);
            pending = shared.pending.lock().expect("click log lock");
        }
    }
}

/// One writer job for the batch, waited for: this thread has nothing else
/// to do, and a refused batch is kept.
fn store(writer: &Writer, batch: Arc<Vec<Click>>) -> Result<(), DbError> {
    writer.run_blocking(MayRunTwice::new(move |conn| {
        let mut insert = conn.prepare_cached(
            "INSERT INTO invite_clicks (id, token_id, order_id, clicked_at, user_agent, is_preview)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )?;
        for c in batch.iter() {
            insert.execute(params![
                new_id(),
                c.token_id,
                c.order_id,
                c.at,
                c.user_agent,
                c.preview
            ])?;
        }
        Ok(())
    }))
}
