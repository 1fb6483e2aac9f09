//! The wall clock in one place: every stored time is milliseconds since the
//! Unix epoch, and code that must be testable without sleeping (the
//! sender's step) takes the time as an argument, or a [`Clock`], instead of
//! reading it here.

use std::sync::Mutex;
use std::time::{Duration, Instant};

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Where a worker reads the time: the system's in production, a
/// [`ManualClock`] in tests, so a wait can be passed without sleeping.
pub trait Clock: Send + Sync {
    /// Milliseconds since the Unix epoch, as stored.
    fn now_ms(&self) -> i64;
    /// The monotonic time, for durations. Comparable with `Instant::now()`:
    /// what really sleeps (the rate cap's `Pacer`) takes deadlines in it.
    fn instant(&self) -> Instant;
}

impl dyn Clock {
    /// Starts measuring what passes on this clock from now.
    pub fn stopwatch(&self) -> Stopwatch<'_> {
        Stopwatch {
            clock: self,
            started: self.instant(),
        }
    }
}

/// The system's clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        now_ms()
    }

    fn instant(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that moves only when told. Its instants start at the real one
/// it was made at, so a deadline taken from it still means something to
/// code that waits in real time.
pub struct ManualClock {
    origin: (i64, Instant),
    passed: Mutex<Duration>,
}

impl ManualClock {
    /// A clock that reads `epoch_ms` until advanced.
    pub fn at(epoch_ms: i64) -> ManualClock {
        ManualClock {
            origin: (epoch_ms, Instant::now()),
            passed: Mutex::new(Duration::ZERO),
        }
    }

    pub fn advance(&self, by: Duration) {
        *self.passed.lock().expect("clock lock") += by;
    }

    fn passed(&self) -> Duration {
        *self.passed.lock().expect("clock lock")
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.origin.0 + self.passed().as_millis() as i64
    }

    fn instant(&self) -> Instant {
        self.origin.1 + self.passed()
    }
}

/// What has passed on a clock since a moment.
pub struct Stopwatch<'a> {
    clock: &'a dyn Clock,
    started: Instant,
}

impl Stopwatch<'_> {
    /// The moment it started, on its clock.
    pub fn started(&self) -> Instant {
        self.started
    }

    pub fn elapsed(&self) -> Duration {
        self.clock.instant().saturating_duration_since(self.started)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told_and_both_readings_move_together() {
        let clock = ManualClock::at(1_000);
        let (ms, instant) = (clock.now_ms(), clock.instant());
        let watch = (&clock as &dyn Clock).stopwatch();
        assert_eq!((clock.now_ms(), clock.instant()), (ms, instant));
        assert_eq!(watch.elapsed(), Duration::ZERO);
        clock.advance(Duration::from_millis(1500));
        assert_eq!(clock.now_ms(), 2_500);
        assert_eq!(clock.instant() - instant, Duration::from_millis(1500));
        assert_eq!(watch.elapsed(), Duration::from_millis(1500));
    }
}
