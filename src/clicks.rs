//! The invite click log. A redirect must not wait for a disk write, and a
//! burst of clicks should not cost the writer one savepoint each: clicks
//! collect in memory and one writer job stores everything collected when it
//! runs.

use crate::db::sql::params;
use crate::db::MayRunTwice;
use crate::db::{DbError, Writer};
use crate::ids::new_id;
use std::sync::{Arc, Mutex};

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
    /// A flush job is queued and has not taken the buffer yet.
    scheduled: bool,
}

#[derive(Clone)]
pub struct ClickLog {
    pending: Arc<Mutex<Pending>>,
    writer: Writer,
}

impl ClickLog {
    pub fn new(writer: Writer) -> ClickLog {
        ClickLog {
            pending: Arc::new(Mutex::new(Pending::default())),
            writer,
        }
    }

    pub fn record(&self, click: Click) {
        let schedule = {
            let mut pending = self.pending.lock().expect("click log lock");
            pending.clicks.push(click);
            !std::mem::replace(&mut pending.scheduled, true)
        };
        // One flush at a time: it takes everything that arrived until it
        // runs.
        if schedule {
            let pending = self.pending.clone();
            self.writer.spawn(MayRunTwice::new(move |conn| {
                let batch = {
                    let mut pending = pending.lock().expect("click log lock");
                    pending.scheduled = false;
                    std::mem::take(&mut pending.clicks)
                };
                let stored = (|| -> Result<(), DbError> {
                    let mut insert = conn.prepare_cached(
                        "INSERT INTO invite_clicks (id, token_id, order_id, clicked_at, user_agent, is_preview)
                         VALUES ($1, $2, $3, $4, $5, $6)",
                    )?;
                    for c in &batch {
                        insert.execute(params![new_id(), c.token_id, c.order_id, c.at, c.user_agent, c.preview])?;
                    }
                    Ok(())
                })();
                if let Err(e) = &stored {
                    log::error!("click log: {} click(s) not stored yet: {e}", batch.len());
                    // Back in the buffer: the next click's flush retries them.
                    pending.lock().expect("click log lock").clicks.extend(batch);
                }
                stored
            }));
        }
    }
}
