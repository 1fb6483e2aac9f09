//! The invite click log. A redirect must not wait for a disk write, and a
//! burst of clicks should not cost the writer a commit each: clicks collect
//! in memory, in the order they were answered, and a thread of their own
//! stores what collected every [`FLUSH_EVERY`] in one write. Stopping it
//! (a clean shutdown, before the writer closes) stores what is left.

use crate::db::sql::params;
use crate::db::{DbError, Writer};
use crate::ids::new_id;
use crate::periodic::Periodic;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a click may wait in memory. At thousands of clicks a second
/// one commit (an fsync) per flush instead of per handful of clicks was a
/// quarter of a redirect's cost; a tenth of a second is nothing to the
/// merchant's page, which counts people, not milliseconds.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
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

type Pending = Arc<Mutex<Vec<Click>>>;

#[derive(Clone)]
pub struct ClickLog {
    pending: Pending,
    flusher: Arc<Mutex<Option<Periodic>>>,
}

impl ClickLog {
    pub fn start(writer: Writer) -> std::io::Result<ClickLog> {
        let pending: Pending = Default::default();
        let theirs = pending.clone();
        let flusher = Periodic::spawn("click-log", move |stop| loop {
            let stopping = stop.wait(FLUSH_EVERY);
            flush(&writer, &theirs, stopping);
            if stopping {
                return;
            }
        })?;
        Ok(ClickLog {
            pending,
            flusher: Arc::new(Mutex::new(Some(flusher))),
        })
    }

    pub fn record(&self, click: Click) {
        self.pending.lock().expect("click log lock").push(click);
    }

    /// Stores what is collected and stops the thread; call before the
    /// writer closes.
    pub fn stop(&self) {
        if let Some(flusher) = self.flusher.lock().expect("click log lock").take() {
            flusher.stop();
        }
    }
}

/// One write for everything collected; what the database refuses goes back
/// in front of what came meanwhile, for the next round.
fn flush(writer: &Writer, pending: &Pending, last: bool) {
    let batch = std::mem::take(&mut *pending.lock().expect("click log lock"));
    if batch.is_empty() {
        return;
    }
    let batch = Arc::new(batch);
    let rows = batch.clone();
    let stored = writer.run_blocking(move |conn| {
        let mut insert = conn.prepare_cached(
            "INSERT INTO invite_clicks (id, token_id, order_id, clicked_at, user_agent, is_preview)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for c in rows.iter() {
            insert.execute(params![
                new_id(),
                c.token_id,
                c.order_id,
                c.at,
                c.user_agent,
                c.preview
            ])?;
        }
        Ok::<_, DbError>(())
    });
    if let Err(e) = stored {
        // The job has ended and dropped its handle; a copy if it has not.
        let batch = Arc::try_unwrap(batch).unwrap_or_else(|b| (*b).clone());
        if last {
            log::error!(
                "click log: {} click(s) not stored at shutdown: {e}",
                batch.len()
            );
            return;
        }
        log::error!("click log: {} click(s) not stored yet: {e}", batch.len());
        let mut pending = pending.lock().expect("click log lock");
        let later = std::mem::replace(&mut *pending, batch);
        pending.extend(later);
    }
}
