//! `WHATSAPP_MAX_MPS` (SPEC §10, §13): no one-second window holds more sends
//! than the cap, across all workers of this process and, on a shared
//! PostgreSQL, across all instances together.
//!
//! One process paces its own sends evenly ([`Pacer`]). Several instances
//! split the cap between them: each keeps a row in `sender_instances`
//! fresh (the roster, [`crate::roster`]) and paces at its [`share`] of the
//! cap among the live rows. The rules below make the shares of instances
//! that send at the same moment add up to no more than the cap, even while
//! one joins or dies and their views of the roster differ.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A second plus a margin for the network's jitter: the pacer keeps every
/// window this long at the cap, so any one-second window at Meta's end is.
pub const WINDOW: Duration = Duration::from_millis(1050);
/// Above this many sends per window even spacing alone is far below any
/// bunching, and start times are not kept.
const TRACKED_CAP: usize = 10_000;

/// This instance's part of the cap, from the ids of the instances it sees
/// live (itself among them) and its own id.
///
/// With no more instances than the cap each gets `cap / n` (rounded down:
/// up to n − 1 messages per second are left unused rather than risked).
/// With more, the first `cap` ids (sorted) get one each and the rest none.
///
/// Why it holds while views differ: an instance's view is a superset of
/// the instances actually sending (a newcomer sends only once every view in
/// use includes it; a dead one sends nothing), and the share only shrinks
/// as a view grows (a larger n divides smaller; an extra id can only push
/// one's rank down). So each sender's share is at most its share under the
/// exact set of senders, and those add up to at most the cap.
pub fn share(cap: u32, live: &[String], me: &str) -> u32 {
    let n = live.len().max(1) as u32;
    if n <= cap {
        return cap / n;
    }
    let rank = live.iter().filter(|id| id.as_str() < me).count() as u32;
    u32::from(rank < cap)
}

/// Spaces sends evenly so that no window of [`WINDOW`] holds more than the
/// current share of them. Sends are stamped when they actually start (after
/// the thread woke up), so a worker that woke late cannot let the next one
/// bunch up behind it.
pub struct Pacer {
    state: Mutex<PacerState>,
}

struct PacerState {
    /// Sends allowed per window now; 0 holds every send.
    per_window: usize,
    interval: Duration,
    /// The share holds until then (a roster view goes stale); `None`: for
    /// good (one instance, SQLite).
    valid_until: Option<Instant>,
    next: Instant,
    /// Start times of the sends of the last window (for shares small
    /// enough to track).
    recent: VecDeque<Instant>,
}

/// How long a held send looks again for a share (the roster refreshes it).
const HELD_POLL: Duration = Duration::from_millis(20);

impl Pacer {
    /// The whole cap, for good: the only instance.
    pub fn new(max_per_second: u32) -> Pacer {
        let pacer = Pacer::held();
        pacer.set_share(max_per_second.max(1), None);
        pacer
    }

    /// No share yet: every send waits until [`Pacer::set_share`] gives one.
    pub fn held() -> Pacer {
        Pacer {
            state: Mutex::new(PacerState {
                per_window: 0,
                interval: WINDOW,
                valid_until: None,
                next: Instant::now(),
                recent: VecDeque::new(),
            }),
        }
    }

    /// Sends allowed per second from now on, until `valid_until` (`None`:
    /// for good). A share of 0 holds every send.
    pub fn set_share(&self, per_second: u32, valid_until: Option<Instant>) {
        let mut state = self.state.lock().expect("pacer lock");
        state.per_window = per_second as usize;
        state.interval = WINDOW / per_second.max(1);
        state.valid_until = valid_until;
    }

    /// Sends allowed per second now (0 while held or stale).
    pub fn share(&self) -> u32 {
        let state = self.state.lock().expect("pacer lock");
        state.current(Instant::now()) as u32
    }

    /// Blocks until this send may start, and records it; `false` (nothing
    /// recorded) when its turn cannot come before `deadline`.
    pub fn wait_turn(&self, deadline: Instant) -> bool {
        loop {
            let mut state = self.state.lock().expect("pacer lock");
            let now = Instant::now();
            let per_window = state.current(now);
            let ready_at = if per_window == 0 {
                now + HELD_POLL
            } else {
                let mut at = state.next;
                if per_window <= TRACKED_CAP {
                    while state.recent.front().is_some_and(|t| *t + WINDOW <= now) {
                        state.recent.pop_front();
                    }
                    if state.recent.len() >= per_window {
                        at = at.max(state.recent[state.recent.len() - per_window] + WINDOW);
                    }
                }
                at
            };
            if ready_at > now || per_window == 0 {
                if ready_at > deadline {
                    return false;
                }
                drop(state);
                std::thread::sleep(ready_at - now);
                continue;
            }
            state.next = now + state.interval;
            if per_window <= TRACKED_CAP {
                state.recent.push_back(now);
            } else {
                state.recent.clear();
            }
            return true;
        }
    }
}

impl PacerState {
    fn current(&self, now: Instant) -> usize {
        match self.valid_until {
            Some(until) if until <= now => 0,
            _ => self.per_window,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn ids(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn one_instance_takes_the_whole_cap() {
        assert_eq!(share(80, &ids(&["a"]), "a"), 80);
    }

    #[test]
    fn instances_split_the_cap_rounding_down() {
        let live = ids(&["a", "b", "c"]);
        let shares: Vec<u32> = live.iter().map(|me| share(80, &live, me)).collect();
        assert_eq!(shares, [26, 26, 26]);
        assert_eq!(share(80, &ids(&["a", "b"]), "b"), 40);
    }

    #[test]
    fn with_more_instances_than_the_cap_the_first_ids_get_one_each() {
        let live = ids(&["d", "a", "c", "b"]);
        let shares: Vec<u32> = ["a", "b", "c", "d"]
            .iter()
            .map(|me| share(2, &live, me))
            .collect();
        assert_eq!(shares, [1, 1, 0, 0]);
    }

    /// Every mix of views a joining or dying instance can cause: each
    /// sender sees the senders plus any set of instances that do not send
    /// (one joining, one dead), each sender its own; the shares must never
    /// add up past the cap.
    #[test]
    fn shares_of_senders_with_different_views_never_exceed_the_cap() {
        let all = ids(&["a", "b", "c", "d", "e"]);
        for cap in 1..=12u32 {
            for senders_mask in 1u32..(1 << all.len()) {
                let pick = |inside: bool| -> Vec<String> {
                    (0..all.len())
                        .filter(|i| (senders_mask & (1 << i) != 0) == inside)
                        .map(|i| all[i].clone())
                        .collect()
                };
                let (senders, others) = (pick(true), pick(false));
                let views = 1usize << others.len();
                // One extra set per sender, every combination.
                for mut combo in 0..views.pow(senders.len() as u32) {
                    let mut total = 0;
                    for me in &senders {
                        let extra = combo % views;
                        combo /= views;
                        let mut view = senders.clone();
                        view.extend(
                            (0..others.len())
                                .filter(|i| extra & (1 << i) != 0)
                                .map(|i| others[i].clone()),
                        );
                        total += share(cap, &view, me);
                    }
                    assert!(total <= cap, "cap {cap}, senders {senders:?}: {total}");
                }
            }
        }
    }

    fn stamps_of(pacer: Arc<Pacer>, threads: usize, each: usize) -> Vec<Instant> {
        let stamps = Arc::new(Mutex::new(Vec::new()));
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (pacer, stamps) = (pacer.clone(), stamps.clone());
                std::thread::spawn(move || {
                    for _ in 0..each {
                        let far = Instant::now() + Duration::from_secs(60);
                        assert!(pacer.wait_turn(far));
                        stamps.lock().unwrap().push(Instant::now());
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let mut stamps = stamps.lock().unwrap().clone();
        stamps.sort();
        stamps
    }

    fn busiest_second(stamps: &[Instant]) -> usize {
        stamps
            .iter()
            .enumerate()
            .map(|(i, start)| {
                stamps[i..]
                    .iter()
                    .take_while(|s| **s < *start + Duration::from_secs(1))
                    .count()
            })
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn pacer_never_lets_a_window_hold_more_than_the_cap() {
        let stamps = stamps_of(Arc::new(Pacer::new(50)), 4, 20);
        assert!(busiest_second(&stamps) <= 50, "{stamps:?}");
    }

    #[test]
    fn a_smaller_share_applies_to_the_sends_already_made() {
        let pacer = Arc::new(Pacer::new(40));
        let first = stamps_of(pacer.clone(), 2, 10);
        // A second instance joined: half the cap, counted over the window
        // that already holds 20 sends.
        pacer.set_share(20, None);
        let mut all = first;
        all.extend(stamps_of(pacer, 2, 10));
        all.sort();
        assert!(busiest_second(&all) <= 40, "{all:?}");
        let last_window = all
            .iter()
            .filter(|t| **t > *all.last().unwrap() - Duration::from_secs(1))
            .count();
        assert!(last_window <= 20, "{last_window} sends in the last second");
    }

    #[test]
    fn a_held_pacer_gives_no_turn_and_says_so_at_the_deadline() {
        let pacer = Pacer::held();
        assert_eq!(pacer.share(), 0);
        let start = Instant::now();
        assert!(!pacer.wait_turn(start + Duration::from_millis(60)));
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn a_stale_share_holds_sends_until_refreshed() {
        let pacer = Pacer::new(100);
        pacer.set_share(100, Some(Instant::now()));
        assert_eq!(pacer.share(), 0);
        assert!(!pacer.wait_turn(Instant::now() + Duration::from_millis(30)));
        pacer.set_share(100, Some(Instant::now() + Duration::from_secs(5)));
        assert_eq!(pacer.share(), 100);
        assert!(pacer.wait_turn(Instant::now()));
    }

    #[test]
    fn a_turn_beyond_the_deadline_is_refused_without_waiting() {
        let pacer = Pacer::new(1);
        assert!(pacer.wait_turn(Instant::now()));
        let start = Instant::now();
        assert!(!pacer.wait_turn(start + Duration::from_millis(100)));
        assert!(start.elapsed() < Duration::from_millis(50));
    }
}
