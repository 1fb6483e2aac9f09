//! A background thread that repeats its task until told to stop (the WAL
//! checkpointer, the roster of instances): one way to wait between rounds
//! that wakes at once on stop, and one way to stop and join. And
//! `AtMostEvery`, for housekeeping that rides on requests.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Raised once, at stop; the thread's waits end as soon as it is.
#[derive(Default)]
pub struct StopSignal {
    stopped: Mutex<bool>,
    raised: Condvar,
}

impl StopSignal {
    /// Waits up to `timeout`; `true` when the thread should stop (spurious
    /// wake-ups are waited out).
    pub fn wait(&self, timeout: Duration) -> bool {
        let stopped = self.stopped.lock().expect("stop signal lock");
        let (stopped, _) = self
            .raised
            .wait_timeout_while(stopped, timeout, |s| !*s)
            .expect("stop signal lock");
        *stopped
    }

    fn raise(&self) {
        *self.stopped.lock().expect("stop signal lock") = true;
        self.raised.notify_all();
    }
}

pub struct Periodic {
    signal: Arc<StopSignal>,
    handle: Option<JoinHandle<()>>,
}

impl Periodic {
    /// Starts a thread named `name` running `body`, which loops on
    /// `StopSignal::wait` and returns once it says stop.
    pub fn spawn<F>(name: &str, body: F) -> std::io::Result<Periodic>
    where
        F: FnOnce(&StopSignal) + Send + 'static,
    {
        let signal = Arc::new(StopSignal::default());
        let theirs = signal.clone();
        let handle = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || body(&theirs))?;
        Ok(Periodic {
            signal,
            handle: Some(handle),
        })
    }

    /// Raises the signal and waits for the thread's last round.
    pub fn stop(mut self) {
        self.signal.raise();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Says yes to one caller at a time, at most once per `every_ms`: for
/// housekeeping that rides on a request (pruning week-old rows), so it
/// does not cost every request a statement.
pub struct AtMostEvery {
    every_ms: i64,
    next: std::sync::atomic::AtomicI64,
}

impl AtMostEvery {
    pub fn new(every_ms: i64) -> AtMostEvery {
        AtMostEvery {
            every_ms,
            next: std::sync::atomic::AtomicI64::new(i64::MIN),
        }
    }

    /// Whether the task is due at `now`; a `true` books the next turn.
    pub fn due(&self, now: i64) -> bool {
        use std::sync::atomic::Ordering;
        let next = self.next.load(Ordering::Relaxed);
        now >= next
            && self
                .next
                .compare_exchange(
                    next,
                    now.saturating_add(self.every_ms),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    #[test]
    fn a_stop_ends_a_long_wait_at_once_and_the_last_round_runs() {
        let rounds = Arc::new(AtomicUsize::new(0));
        let seen = rounds.clone();
        let t = Periodic::spawn("test-periodic", move |stop| {
            while !stop.wait(Duration::from_secs(60)) {
                seen.fetch_add(1, Ordering::SeqCst);
            }
            seen.fetch_add(100, Ordering::SeqCst);
        })
        .unwrap();
        let began = Instant::now();
        t.stop();
        assert!(began.elapsed() < Duration::from_secs(10));
        assert_eq!(rounds.load(Ordering::SeqCst), 100);
    }

    #[test]
    fn at_most_every_says_yes_first_then_once_per_interval() {
        let every = AtMostEvery::new(60_000);
        assert!(every.due(1_000));
        assert!(!every.due(1_000));
        assert!(!every.due(60_999));
        assert!(every.due(61_000));
        assert!(!every.due(61_001));
    }
}
