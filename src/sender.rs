//! The sender: `SEND_WORKERS` blocking threads that take due messages from
//! the outbox, send them, and record each outcome durably.
//!
//! Claiming happens in memory: one process owns the database (the serve
//! command holds an exclusive lock file), and a message id stays in the
//! `claimed` set from the moment a worker takes it until a refill that
//! started after its outcome was committed has run (an earlier refill may
//! read a snapshot from before that commit, still showing the row queued),
//! so two workers can never send the same row. No transaction
//! is ever open across an HTTP call.

use crate::config::Config;
use crate::db::Db;
use crate::domain::{InviteToken, Money, OrderId};
use crate::links;
use crate::outbox::{self, Due, Kind, Variant};
use crate::whatsapp::{Message, SendOutcome, Transport, OUTSIDE_WINDOW, PAIR_RATE_LIMIT};
use rand::Rng;
use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Longest a worker sleeps before looking at the queue again, so a row made
/// due by the clock (a backoff running out) is never waited on for long.
const MAX_IDLE: Duration = Duration::from_millis(500);
const REFILL: usize = 256;
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// A configuration fault pauses sending for 15 retry steps at first, then
/// twice as long each time it persists, up to 300 steps or five minutes.
/// (Steps of `WHATSAPP_RETRY_BASE_MS`: 15 s at the default, milliseconds in
/// tests.)
fn pause_bounds(base: Duration) -> (Duration, Duration) {
    let ceiling = Duration::from_secs(300);
    let first = base.saturating_mul(15).min(ceiling);
    (first, base.saturating_mul(300).min(ceiling).max(first))
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

struct State {
    ready: VecDeque<Due>,
    /// Ids that are in `ready`, being sent, or done but possibly still
    /// queued in the snapshot of a refill that is running.
    claimed: HashSet<String>,
    /// Done ids, each with the number of refills started when it finished.
    done: Vec<(String, u64)>,
    refills_started: u64,
    refilling: bool,
    stopping: bool,
    /// Bumped by `wake`; lets a worker that found nothing notice that work
    /// arrived while it was looking.
    generation: u64,
    /// Set while a configuration fault (bad token, missing template) holds
    /// all sending.
    paused_until: Option<Instant>,
    pause_len: Duration,
    in_flight: usize,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    db: Db,
    config: Arc<Config>,
    transport: Box<dyn Transport>,
    pacer: Pacer,
}

/// Spaces sends evenly so that no one-second window holds more than
/// `WHATSAPP_MAX_MPS` of them, across all workers. Slots are stamped with
/// the moment a send actually starts (after the thread woke up), and no
/// window of `WINDOW` (a second plus a margin for the network's jitter)
/// may hold more than the cap: a worker that woke late cannot let the next
/// one bunch up behind it.
struct Pacer {
    interval: Duration,
    cap: usize,
    state: Mutex<PacerState>,
}

struct PacerState {
    next: Instant,
    /// Start times of the last `cap` sends (kept only for caps small enough
    /// to hold; above that, even spacing alone is far below any bunching).
    recent: VecDeque<Instant>,
}

const WINDOW: Duration = Duration::from_millis(1050);
const TRACKED_CAP: usize = 10_000;

impl Pacer {
    fn new(max_per_second: u32) -> Pacer {
        let cap = max_per_second.max(1) as usize;
        Pacer {
            interval: WINDOW / cap as u32,
            cap,
            state: Mutex::new(PacerState {
                next: Instant::now(),
                recent: VecDeque::new(),
            }),
        }
    }

    /// Blocks until this send may start, and records it.
    fn wait_turn(&self) {
        loop {
            let mut state = self.state.lock().expect("pacer lock");
            let now = Instant::now();
            let mut ready_at = state.next;
            if self.cap <= TRACKED_CAP && state.recent.len() >= self.cap {
                ready_at = ready_at.max(state.recent[0] + WINDOW);
            }
            if ready_at > now {
                drop(state);
                std::thread::sleep(ready_at - now);
                continue;
            }
            state.next = now + self.interval;
            if self.cap <= TRACKED_CAP {
                if state.recent.len() >= self.cap {
                    state.recent.pop_front();
                }
                state.recent.push_back(now);
            }
            return;
        }
    }
}

#[derive(Clone)]
pub struct Sender {
    shared: Arc<Shared>,
    handles: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Sender {
    pub fn start(db: Db, config: Arc<Config>, transport: Box<dyn Transport>) -> Sender {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                ready: VecDeque::new(),
                claimed: HashSet::new(),
                done: Vec::new(),
                refills_started: 0,
                refilling: false,
                stopping: false,
                generation: 0,
                paused_until: None,
                pause_len: pause_bounds(config.retry_base).0,
                in_flight: 0,
            }),
            changed: Condvar::new(),
            pacer: Pacer::new(config.max_mps),
            db,
            transport,
            config: config.clone(),
        });
        let handles = (0..config.send_workers)
            .map(|i| {
                let shared = shared.clone();
                std::thread::Builder::new()
                    .name(format!("sender-{i}"))
                    .spawn(move || worker(&shared))
                    .expect("spawn a sender thread")
            })
            .collect();
        Sender {
            shared,
            handles: Arc::new(Mutex::new(handles)),
        }
    }

    /// New or newly due messages exist; look now rather than at the next tick.
    /// One waiting worker is enough: it refills and wakes the others only
    /// if it found work (a burst of webhooks must not set every worker
    /// querying the outbox for each one).
    pub fn wake(&self) {
        let mut state = self.shared.state.lock().expect("sender lock");
        state.generation += 1;
        drop(state);
        self.shared.changed.notify_one();
    }

    /// Whether a configuration fault holds all sending (until Meta accepts
    /// again); the merchant's page shows it.
    pub fn is_paused(&self) -> bool {
        self.shared
            .state
            .lock()
            .expect("sender lock")
            .paused_until
            .is_some()
    }

    /// Stops taking new messages, lets in-flight sends finish (each is
    /// bounded by the HTTP timeout) and waits up to `bound` for the workers.
    /// Returns how many sends were still in flight when the bound ran out.
    pub fn stop(&self, bound: Duration) -> usize {
        {
            let mut state = self.shared.state.lock().expect("sender lock");
            state.stopping = true;
            state.ready.clear();
        }
        self.shared.changed.notify_all();
        let deadline = Instant::now() + bound;
        let mut state = self.shared.state.lock().expect("sender lock");
        while state.in_flight > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return state.in_flight;
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, left)
                .expect("sender lock")
                .0;
        }
        drop(state);
        for handle in self.handles.lock().expect("handles lock").drain(..) {
            let _ = handle.join();
        }
        0
    }
}

fn worker(shared: &Shared) {
    while let Some(job) = next_job(shared) {
        process(shared, &job);
        let mut state = shared.state.lock().expect("sender lock");
        let seq = state.refills_started;
        state.done.push((job.id.clone(), seq));
        state.in_flight -= 1;
        drop(state);
        shared.changed.notify_all();
    }
}

/// Blocks until a message is due (claiming it) or the sender stops.
fn next_job(shared: &Shared) -> Option<Due> {
    let mut state = shared.state.lock().expect("sender lock");
    loop {
        if state.stopping {
            return None;
        }
        if let Some(until) = state.paused_until {
            let now = Instant::now();
            if until > now {
                state = shared
                    .changed
                    .wait_timeout(state, until - now)
                    .expect("sender lock")
                    .0;
                continue;
            }
        }
        if let Some(job) = state.ready.pop_front() {
            state.in_flight += 1;
            return Some(job);
        }
        if state.refilling {
            state = shared
                .changed
                .wait_timeout(state, MAX_IDLE)
                .expect("sender lock")
                .0;
            continue;
        }
        state.refilling = true;
        state.refills_started += 1;
        let refill = state.refills_started;
        let generation = state.generation;
        drop(state);
        let found = shared.db.reads.with(|conn| {
            let now = now_ms();
            let rows = outbox::due(conn, now, REFILL)?;
            let next = if rows.is_empty() {
                outbox::next_due_at(conn)?
            } else {
                None
            };
            Ok((rows, next, now))
        });
        state = shared.state.lock().expect("sender lock");
        state.refilling = false;
        let (rows, next_due, now) = match found {
            Ok(found) => found,
            Err(e) => {
                log::error!("sender: cannot read the outbox: {e}");
                (Vec::new(), None, now_ms())
            }
        };
        // Outcomes recorded before this refill started are in its snapshot;
        // their ids may be claimed again (a retry that is due at once).
        let State { done, claimed, .. } = &mut *state;
        done.retain(|(id, finished)| {
            let visible = *finished < refill;
            if visible {
                claimed.remove(id);
            }
            !visible
        });
        let mut added = 0;
        for row in rows {
            if state.claimed.insert(row.id.clone()) {
                state.ready.push_back(row);
                added += 1;
            }
        }
        if added > 0 {
            shared.changed.notify_all();
            continue;
        }
        if state.generation != generation {
            continue;
        }
        let wait = next_due
            .map(
                |at| Duration::from_millis((at - now).clamp(1, MAX_IDLE.as_millis() as i64) as u64),
            )
            .unwrap_or(MAX_IDLE);
        state = shared
            .changed
            .wait_timeout(state, wait)
            .expect("sender lock")
            .0;
    }
}

/// Builds the message a row stands for, from the order as stored now (so a
/// corrected template name applies to messages still queued).
fn render(config: &Config, job: &Due) -> Result<Message, String> {
    let order = OrderId::parse(&job.order_id).map_err(|e| format!("stored order id: {e}"))?;
    let message = match job.kind {
        Kind::Confirmation => {
            let amount = Money::new(job.total_amount, &job.currency)?;
            let note = job
                .note
                .clone()
                .unwrap_or_else(|| config.confirmation_note.clone());
            let params = [order.as_str().to_owned(), amount.display(), note];
            Message::template(
                &job.recipient,
                &config.template_name,
                &config.template_lang,
                &params,
            )
        }
        Kind::Link => {
            let token = job
                .token
                .as_deref()
                .and_then(InviteToken::parse)
                .ok_or("the order has no invite token")?;
            let link = links::wa_me_link(&config.business_number, &order, &token);
            match (job.variant, &config.invite_template) {
                (Variant::Template, Some(name)) => {
                    Message::template(&job.recipient, name, &config.template_lang, &[link])
                }
                _ => Message::text(&job.recipient, &links::link_message_body(&link)),
            }
        }
        Kind::ElderReply => {
            let text = config
                .elder_reply_text
                .as_deref()
                .ok_or("ELDER_REPLY_TEXT is no longer set")?
                .replace("{order_id}", order.as_str());
            Message::text(&job.recipient, &text)
        }
    };
    Ok(message.with_callback(order.as_str()))
}

fn process(shared: &Shared, job: &Due) {
    let config = &shared.config;
    let attempts = job.attempts + 1;
    let message = match render(config, job) {
        Ok(m) => m,
        Err(why) => {
            record(
                shared,
                job,
                Record::Dead(format!("cannot build the message: {why}"), attempts),
            );
            crate::metrics::get().message(job.kind.as_str(), "dead");
            return;
        }
    };
    shared.pacer.wait_turn();
    let started = Instant::now();
    let outcome = shared.transport.send(&message);
    crate::metrics::get().send_result(job.kind.as_str(), &outcome, started.elapsed());
    let fault = matches!(outcome, SendOutcome::ConfigFault { .. });
    let what = format!(
        "{} for order {} to {}",
        job.kind, job.order_id, job.recipient
    );
    let next = match outcome {
        SendOutcome::Accepted { message_id } => {
            log::info!("sent {what} (attempt {attempts}): {message_id}");
            resume_after_fault(shared);
            let variant = if message.is_template() && job.kind == Kind::Link {
                Variant::Template
            } else {
                job.variant
            };
            Record::Sent(message_id, variant, attempts)
        }
        SendOutcome::Rejected {
            code: Some(OUTSIDE_WINDOW),
            reason,
        } if job.kind == Kind::Link && job.variant == Variant::Text => {
            if config.invite_template.is_some() {
                log::info!("{what}: outside the 24-hour window (131047), sending it as the invite template");
                Record::Retry {
                    attempts,
                    variant: Variant::Template,
                    delay: Duration::ZERO,
                    error: reason,
                }
            } else {
                let why = format!(
                    "{reason}; the customer has not written in 24 hours, so WhatsApp refuses the link as text: set WHATSAPP_INVITE_TEMPLATE to an approved template with one body variable to send it"
                );
                log::warn!("dead-lettered {what}: {why}");
                Record::Dead(why, attempts)
            }
        }
        SendOutcome::Rejected { reason, .. } => {
            log::warn!("dead-lettered {what}: {reason}");
            Record::Dead(reason, attempts)
        }
        SendOutcome::Transient {
            reason,
            retry_after,
            code,
        } => {
            if attempts >= config.max_attempts {
                log::warn!("dead-lettered {what} after {attempts} attempts: {reason}");
                Record::Dead(
                    format!("{reason} (gave up after {attempts} attempts)"),
                    attempts,
                )
            } else {
                let mut delay = backoff(config.retry_base, attempts);
                if code == Some(PAIR_RATE_LIMIT) {
                    // Only this recipient is throttled; the row's own delay
                    // keeps everyone else's messages flowing.
                    delay = delay.max(Duration::from_secs(1));
                }
                if let Some(after) = retry_after {
                    delay = delay.max(after);
                }
                log::info!(
                    "retrying {what} in {} ms (attempt {attempts}): {reason}",
                    delay.as_millis()
                );
                Record::Retry {
                    attempts,
                    variant: job.variant,
                    delay,
                    error: reason,
                }
            }
        }
        SendOutcome::ConfigFault { code, reason } => {
            let pause = pause_for_fault(shared, code, &reason);
            // Not the message's fault: the attempt is not counted.
            Record::Retry {
                attempts: job.attempts,
                variant: job.variant,
                delay: pause,
                error: reason,
            }
        }
    };
    let counted = match &next {
        Record::Sent(..) => "sent",
        Record::Retry { .. } if fault => "paused",
        Record::Retry { .. } => "retry",
        Record::Dead(..) => "dead",
    };
    crate::metrics::get().message(job.kind.as_str(), counted);
    record(shared, job, next);
}

/// Exponential backoff with jitter: the n-th retry waits between half and
/// all of `base · 2^(n-1)`.
pub fn backoff(base: Duration, attempts: u32) -> Duration {
    let exp = attempts.saturating_sub(1).min(30);
    let full = base.saturating_mul(1u32 << exp).min(MAX_BACKOFF);
    let factor = rand::thread_rng().gen_range(0.5..=1.0);
    full.mul_f64(factor)
}

fn pause_for_fault(shared: &Shared, code: i64, reason: &str) -> Duration {
    let mut state = shared.state.lock().expect("sender lock");
    let now = Instant::now();
    if state.paused_until.is_some_and(|until| until > now) {
        return state.pause_len;
    }
    let first = state.paused_until.is_none();
    let (first_pause, max_pause) = pause_bounds(shared.config.retry_base);
    let pause = if first {
        first_pause
    } else {
        (state.pause_len * 2).min(max_pause)
    };
    state.pause_len = pause;
    state.paused_until = Some(now + pause);
    if first {
        log::error!(
            "SENDING PAUSED: WhatsApp reports a configuration fault (code {code}: {reason}). Check WHATSAPP_TOKEN, WHATSAPP_TEMPLATE_NAME, WHATSAPP_TEMPLATE_LANG and WHATSAPP_INVITE_TEMPLATE. Queued messages are kept and sending resumes by itself once WhatsApp accepts a message again (next try in {} ms).",
            pause.as_millis()
        );
    } else {
        log::warn!(
            "sending still paused: configuration fault {code} persists; next try in {} s",
            pause.as_secs()
        );
    }
    pause
}

fn resume_after_fault(shared: &Shared) {
    let mut state = shared.state.lock().expect("sender lock");
    if state.paused_until.take().is_some() {
        state.pause_len = pause_bounds(shared.config.retry_base).0;
        log::warn!("sending resumed: WhatsApp accepted a message again");
    }
}

enum Record {
    Sent(String, Variant, u32),
    Retry {
        attempts: u32,
        variant: Variant,
        delay: Duration,
        error: String,
    },
    Dead(String, u32),
}

/// Writes the outcome durably; keeps trying while the database refuses
/// (a full disk), because losing a "sent" would mean a second copy.
fn record(shared: &Shared, job: &Due, outcome: Record) {
    let mut wait = Duration::from_millis(50);
    loop {
        let id = job.id.clone();
        let now = now_ms();
        let result = match &outcome {
            Record::Sent(message_id, variant, attempts) => {
                let (message_id, variant, attempts) = (message_id.clone(), *variant, *attempts);
                shared.db.writer.run_blocking(move |c| {
                    outbox::mark_sent(c, &id, &message_id, variant, attempts, now)
                })
            }
            Record::Retry {
                attempts,
                variant,
                delay,
                error,
            } => {
                let (attempts, variant, error) = (*attempts, *variant, error.clone());
                let next = now + delay.as_millis() as i64;
                shared.db.writer.run_blocking(move |c| {
                    outbox::mark_retry(c, &id, attempts, variant, next, &error, now)
                })
            }
            Record::Dead(error, attempts) => {
                let (error, attempts) = (error.clone(), *attempts);
                shared
                    .db
                    .writer
                    .run_blocking(move |c| outbox::mark_dead(c, &id, attempts, &error, now))
            }
        };
        match result {
            Ok(()) => break,
            Err(crate::db::DbError::Closed) => {
                log::error!(
                    "sender: database closed before the outcome of message {} was recorded",
                    job.id
                );
                return;
            }
            Err(e) => {
                log::error!(
                    "sender: cannot record the outcome of message {}: {e}; retrying",
                    job.id
                );
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    }
    if matches!(outcome, Record::Sent(..)) && job.kind == Kind::Confirmation {
        // The link message has just become due.
        let mut state = shared.state.lock().expect("sender lock");
        state.generation += 1;
        drop(state);
        shared.changed.notify_all();
    }
}

/// Sandbox mode: nothing leaves the machine; each message is logged (phone
/// and token masked) and recorded as sent with a `sandbox-` id.
pub struct Sandbox;

impl Transport for Sandbox {
    fn send(&self, message: &Message) -> SendOutcome {
        let id = format!("sandbox-{}", uuid::Uuid::new_v4().simple());
        let text = mask_tokens_in(&message.describe());
        log::info!(
            "sandbox: {} to {} recorded as sent ({id}): {text}",
            if message.is_template() {
                "template"
            } else {
                "text"
            },
            message.recipient()
        );
        SendOutcome::Accepted { message_id: id }
    }
}

/// Masks every invite token inside a text, in any case.
pub fn mask_tokens_in(text: &str) -> String {
    crate::logging::mask_uuids(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_jitter_bounds() {
        let base = Duration::from_millis(100);
        for attempt in 1..=6u32 {
            let full = base * (1 << (attempt - 1));
            for _ in 0..50 {
                let d = backoff(base, attempt);
                assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d:?}");
            }
        }
        assert!(backoff(Duration::from_secs(1), 40) <= MAX_BACKOFF);
    }

    #[test]
    fn pacer_never_lets_a_window_hold_more_than_the_cap() {
        let pacer = Arc::new(Pacer::new(50));
        let stamps = Arc::new(Mutex::new(Vec::new()));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (pacer, stamps) = (pacer.clone(), stamps.clone());
                std::thread::spawn(move || {
                    for _ in 0..20 {
                        pacer.wait_turn();
                        stamps.lock().unwrap().push(Instant::now());
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let mut stamps = stamps.lock().unwrap().clone();
        stamps.sort();
        for (i, start) in stamps.iter().enumerate() {
            let in_window = stamps[i..]
                .iter()
                .take_while(|s| **s < *start + Duration::from_secs(1))
                .count();
            assert!(in_window <= 50, "{in_window} sends within a second");
        }
    }

    #[test]
    fn tokens_are_masked_in_texts() {
        let t = InviteToken::generate().as_string();
        let masked = mask_tokens_in(&format!("Token%3A%20{t} end {}", t.to_uppercase()));
        assert!(!masked.contains(&t));
        assert!(!masked.contains(&t.to_uppercase()));
        assert!(masked.contains(&t[..8]));
    }
}
