//! Waking every instance's senders at once (SPEC §13): an instance that
//! queued a message says so with `NOTIFY orderlink_outbox` (`Writer::
//! announce`), and each instance keeps one connection of its own (outside
//! the pool) that `LISTEN`s and wakes its senders. Without it, another
//! instance found the message at its next poll, up to half a second later.
//!
//! A notification is a hint, never the only way a message is found: the
//! senders still poll, and after the listening connection is lost and made
//! again they are woken once, for whatever was queued meanwhile.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;

/// The channel every instance listens on.
pub const CHANNEL: &str = "orderlink_outbox";

/// How often the listening thread looks at its stop flag.
const TICK: Duration = Duration::from_millis(500);

/// The listening thread; stopped when dropped.
pub struct Listener {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Listener {
    /// Listens on `url` and calls `wake` for each notification.
    pub fn start(url: &str, wake: impl Fn() + Send + 'static) -> Listener {
        let stop = Arc::new(AtomicBool::new(false));
        let (url, flag) = (url.to_owned(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("db-listen".into())
            .spawn(move || listen(&url, &flag, &wake))
            .map_err(|e| log::error!("database: cannot start the LISTEN thread: {e}"))
            .ok();
        Listener { stop, thread }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn listen(url: &str, stop: &AtomicBool, wake: &dyn Fn()) {
    let mut backoff = Duration::from_millis(200);
    while !stop.load(Ordering::SeqCst) {
        let mut client = match crate::pg::connect(url) {
            Ok(c) => c,
            Err(e) => {
                log::warn!("database: LISTEN connection: {e}; trying again in {backoff:?}");
                sleep_unless_stopped(backoff, stop);
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        if let Err(e) = client.batch_execute(&format!("LISTEN {CHANNEL}")) {
            log::warn!("database: LISTEN: {e}");
            sleep_unless_stopped(backoff, stop);
            continue;
        }
        backoff = Duration::from_millis(200);
        // Whatever was queued while no one listened.
        wake();
        while !stop.load(Ordering::SeqCst) {
            let first = client.notifications().timeout_iter(TICK).next();
            match first {
                Ok(Some(_)) => {
                    // A burst is one wake-up: take what else has arrived
                    // (without waiting) before waking.
                    let _ = client.notifications().iter().count();
                    wake();
                }
                Ok(None) => {
                    if client.is_closed() {
                        break;
                    }
                }
                Err(e) => {
                    log::warn!("database: LISTEN connection lost: {e}");
                    break;
                }
            }
        }
    }
}

fn sleep_unless_stopped(wait: Duration, stop: &AtomicBool) {
    let until = std::time::Instant::now() + wait;
    while !stop.load(Ordering::SeqCst) && std::time::Instant::now() < until {
        std::thread::sleep(TICK.min(until - std::time::Instant::now()));
    }
}
