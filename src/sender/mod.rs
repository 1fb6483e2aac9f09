//! The sender: `SEND_WORKERS` threads, each a loop around one step,
//! [`Sender::deliver_next`], that claims due rows in storage, sends one
//! message and records its outcome.
//!
//! The claim is a row's own state (`sending`, `claimed_by`, `lease_until`),
//! taken with one write in the writer's transaction, so no two senders (in
//! this process or, on a shared store, in another) can hold the same row.
//! No transaction is open across an HTTP call. An outcome is written only
//! while the claim still holds the row; a row whose lease ran out (its
//! sender crashed) is simply due again, so start-up needs no recovery pass.
//! What each outcome means for the row is the pure [`decide::decide`];
//! which way a link goes is [`link`]'s; the message a row stands for,
//! `render`'s.

pub mod decide;
pub mod link;
mod render;
#[cfg(test)]
mod testing;

use crate::clock::{Clock, Stopwatch, SystemClock};
use crate::config::Config;
use crate::db::Db;
use crate::db::MayRunTwice;
use crate::metrics::Metrics;
use crate::outbox::{self, Due, Kind, Variant};
use crate::pacer::Pacer;
use crate::whatsapp::Transport;
use decide::{decide, next_pause, Decision};
use link::{link_variant, link_via, no_invite_template};
use render::{held_template, render, HELD_TEMPLATE};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Longest a worker sleeps before looking at the queue again, so a row made
/// due by the clock (a backoff running out) is never waited on for long.
const MAX_IDLE: Duration = Duration::from_millis(500);
/// Slack on a lease beyond the HTTP timeout: time spent waiting for the
/// rate cap's turn and recording the outcome.
const LEASE_SLACK: Duration = Duration::from_secs(5);

/// What one call of [`Sender::deliver_next`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Sent,
    Retried,
    Dead,
    /// A configuration fault holds all sending until the pause ends.
    Paused,
    /// The answer was lost: the message waits for Meta's status (§5).
    Unsure,
    /// Nothing is due now.
    Empty,
}

struct State {
    /// Rows this sender has claimed in storage and not yet sent.
    claimed: VecDeque<Held>,
    stopping: bool,
    /// Bumped by `wake`; lets a worker that found nothing notice that work
    /// arrived while it was looking.
    generation: u64,
    /// Set (in clock milliseconds) while a configuration fault holds all
    /// sending.
    paused_until: Option<i64>,
    pause_len: Option<Duration>,
    in_flight: usize,
    /// When the next row falls due, as last seen by a claim that found none.
    next_due: Option<i64>,
    /// Outcomes the database could not take when they came (SPEC §5): kept
    /// here and written when it answers again, never dropped, and never
    /// holding a worker on one row.
    unrecorded: Vec<Unrecorded>,
}

/// An outcome waiting for the database.
struct Unrecorded {
    claim: String,
    job: Due,
    decision: Decision,
    now: i64,
    retry_at: Instant,
    wait: Duration,
}

/// A claimed row in hand: the claim that holds it and until when.
#[derive(Clone)]
struct Held {
    claim: String,
    lease_until: i64,
    row: Due,
}

/// A row is sent only while its lease has room for the whole send (the HTTP
/// timeout) plus this: a row held too long is given back, never sent on a
/// lease another sender may take over mid-call.
const SEND_MARGIN: Duration = Duration::from_secs(2);

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    db: Db,
    config: Arc<Config>,
    transport: Box<dyn Transport>,
    /// `WHATSAPP_MAX_MPS`, or this instance's share of it (`crate::roster`).
    pacer: Arc<Pacer>,
    /// The app's metrics (the same the routes count into).
    metrics: Arc<Metrics>,
    /// This sender's name in `claimed_by`; each claim adds its sequence
    /// number, so a slow send whose lease another claim took over (even in
    /// this process) cannot overwrite the newer outcome.
    instance: String,
    claims: AtomicU64,
    /// Where the step reads the time besides its `now` (the system's clock
    /// unless a test gives its own), so a test passes a slow call or a kept
    /// outcome's wait without sleeping.
    clock: Arc<dyn Clock>,
}

#[derive(Clone)]
pub struct Sender {
    shared: Arc<Shared>,
    handles: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Sender {
    /// A sender with no threads: the caller drives it with `deliver_next`.
    pub fn new(
        db: Db,
        config: Arc<Config>,
        transport: Box<dyn Transport>,
        metrics: Arc<Metrics>,
    ) -> Sender {
        let pacer = Arc::new(Pacer::new(config.max_mps));
        Sender::paced(db, config, transport, pacer, metrics)
    }

    /// A sender with no threads whose sends `pacer` spaces (shared with the
    /// roster when instances split the cap).
    pub fn paced(
        db: Db,
        config: Arc<Config>,
        transport: Box<dyn Transport>,
        pacer: Arc<Pacer>,
        metrics: Arc<Metrics>,
    ) -> Sender {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                claimed: VecDeque::new(),
                stopping: false,
                generation: 0,
                paused_until: None,
                pause_len: None,
                in_flight: 0,
                next_due: None,
                unrecorded: Vec::new(),
            }),
            changed: Condvar::new(),
            pacer,
            metrics,
            db,
            transport,
            config,
            instance: uuid::Uuid::new_v4().simple().to_string()[..12].to_owned(),
            claims: AtomicU64::new(0),
            clock: Arc::new(SystemClock),
        });
        Sender {
            shared,
            handles: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// The sender with its `SEND_WORKERS` threads, each a loop around
    /// `deliver_next` on the system clock.
    pub fn start(
        db: Db,
        config: Arc<Config>,
        transport: Box<dyn Transport>,
        metrics: Arc<Metrics>,
    ) -> Sender {
        let pacer = Arc::new(Pacer::new(config.max_mps));
        Sender::start_paced(db, config, transport, pacer, metrics)
    }

    /// `start`, with the sends spaced by `pacer`.
    pub fn start_paced(
        db: Db,
        config: Arc<Config>,
        transport: Box<dyn Transport>,
        pacer: Arc<Pacer>,
        metrics: Arc<Metrics>,
    ) -> Sender {
        let workers = config.send_workers;
        let sender = Sender::paced(db, config, transport, pacer, metrics);
        let handles = (0..workers)
            .map(|i| {
                let sender = sender.clone();
                std::thread::Builder::new()
                    .name(format!("sender-{i}"))
                    .spawn(move || sender.work())
                    .expect("spawn a sender thread")
            })
            .collect();
        *sender.handles.lock().expect("handles lock") = handles;
        sender
    }

    /// This sender, reading the time from `clock` (the system's by
    /// default). Only for a sender with no threads yet: its workers share
    /// one clock from the start.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Sender {
        Arc::get_mut(&mut self.shared)
            .expect("a clock is given before the sender is shared")
            .clock = clock;
        self
    }

    /// New or newly due messages exist; look now rather than at the next tick.
    pub fn wake(&self) {
        let mut state = self.shared.state.lock().expect("sender lock");
        state.generation += 1;
        state.next_due = None;
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

    /// One step at time `now` (clock milliseconds): claims due rows if this
    /// sender holds none, sends one, records its outcome.
    pub fn deliver_next(&self, now: i64) -> Step {
        let shared = &*self.shared;
        // Time spent inside the step (a claim waiting on a commit, the rate
        // cap, the HTTP call) moves the clock on for what follows the answer.
        let entered = shared.clock.stopwatch();
        let mut state = shared.state.lock().expect("sender lock");
        if state.stopping {
            return Step::Empty;
        }
        if state.paused_until.is_some_and(|until| until > now) {
            return Step::Paused;
        }
        // Counted from before the claim, so `stop` waits for it.
        state.in_flight += 1;
        if state
            .unrecorded
            .iter()
            .any(|u| u.retry_at <= shared.clock.instant())
        {
            drop(state);
            self.record_kept();
            state = shared.state.lock().expect("sender lock");
        }
        let room = (shared.config.timeout + SEND_MARGIN).as_millis() as i64;
        let job = loop {
            match state.claimed.pop_front() {
                Some(held) if held.lease_until - room > now => {
                    // Never send with the lock held: recording takes it.
                    drop(state);
                    break Some(held);
                }
                Some(held) => {
                    drop(state);
                    self.give_back(vec![held]);
                    state = shared.state.lock().expect("sender lock");
                }
                None => {
                    drop(state);
                    break self.claim(now);
                }
            }
        };
        let step = match job {
            Some(held) => {
                // The send must start while the lease still has room for it.
                // (The pacer waits in real time; the clock's instants are
                // real ones, a manual clock's counted from when it was made.)
                let latest = entered.started()
                    + Duration::from_millis((held.lease_until - room - now).max(0) as u64);
                self.send_one(&held, now, &entered, latest)
            }
            None => Step::Empty,
        };
        let mut state = shared.state.lock().expect("sender lock");
        state.in_flight -= 1;
        // Only `stop` waits for the count. Waking every worker at the end of
        // every step set idle workers claiming from each other's steps, a
        // claim each, for ever: an idle server took a whole core.
        let stopping = state.stopping;
        drop(state);
        if stopping {
            shared.changed.notify_all();
        }
        step
    }

    /// Gives claimed rows back unsent: due again at once.
    fn give_back(&self, held: Vec<Held>) {
        let mut by_claim: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for h in held {
            by_claim.entry(h.claim).or_default().push(h.row.id);
        }
        for (claim, ids) in by_claim {
            if let Err(e) = self
                .shared
                .db
                .writer
                .run_blocking(MayRunTwice::new(move |c| outbox::release(c, &claim, &ids)))
            {
                log::warn!("sender: claimed messages not given back ({e}); they are due again when their lease ends");
            }
        }
    }

    /// Claims a batch (a few per worker: one write per batch, not per
    /// message; at most two seconds of sends under the rate cap, so the
    /// batch clears the pacer well inside its lease); keeps all but the
    /// first for the next steps.
    fn claim(&self, now: i64) -> Option<Held> {
        let shared = &*self.shared;
        let claim = format!(
            "{}:{}",
            shared.instance,
            shared.claims.fetch_add(1, Ordering::Relaxed)
        );
        let lease = (shared.config.timeout * 2 + LEASE_SLACK).as_millis() as i64;
        // This instance's part of the rate cap (all of it on SQLite); none
        // (a newcomer not yet counted by the others, or a stale roster):
        // claim nothing, leave the rows to the instances that may send.
        let share = shared.pacer.share() as usize;
        if share == 0 {
            return None;
        }
        let limit = (shared.config.send_workers * 4)
            .min(share * 2)
            .clamp(1, 256);
        let wait = shared.config.unsure_wait.as_millis() as i64;
        let result = {
            let claim = claim.clone();
            shared.db.writer.run_blocking(MayRunTwice::new(move |c| {
                // A lease that ran out: its sender may have sent (§5).
                let lapsed = outbox::unsure::lapse(c, now, wait, lease)?;
                let rows = outbox::claim(c, &claim, now, now + lease, limit)?;
                let next = if rows.is_empty() {
                    outbox::next_due_at(c)?
                } else {
                    None
                };
                Ok((rows, next, lapsed))
            }))
        };
        let (rows, next) = match result {
            Ok((rows, next, lapsed)) => {
                log_lapsed(&lapsed, wait);
                (rows, next)
            }
            Err(e) => {
                log::error!("sender: cannot claim from the outbox: {e}");
                return None;
            }
        };
        let mut state = shared.state.lock().expect("sender lock");
        state.next_due = next;
        let mut rows = rows.into_iter().map(|row| Held {
            claim: claim.clone(),
            lease_until: now + lease,
            row,
        });
        let first = rows.next();
        let more = rows.len() > 0;
        state.claimed.extend(rows);
        drop(state);
        if more {
            shared.changed.notify_all();
        }
        first
    }

    fn send_one(&self, held: &Held, now: i64, entered: &Stopwatch, latest: Instant) -> Step {
        let (claim, job) = (held.claim.as_str(), &held.row);
        let shared = &*self.shared;
        let config = &shared.config;
        if job.kind == Kind::Link
            && job.variant == Variant::Template
            && config.invite_template.is_none()
        {
            // Requeued by a later 131047 status, with no template to carry it.
            let decision = Decision::Dead {
                error: no_invite_template(
                    "WhatsApp refused the link text with 131047 (Re-engagement message) in a later status",
                ),
                attempts: job.attempts,
            };
            return self.record(claim, job, decision, now, now);
        }
        let variant = link_variant(config, job, || {
            let order_id = job.order_id.clone();
            let last = shared
                .db
                .reads
                .with(move |c| outbox::last_customer_message_at(c, &order_id));
            match last {
                Ok(last) => outbox::window_open(last, now),
                Err(e) => {
                    // Not known to be open: the template reaches the customer either way.
                    log::warn!("sender: cannot read the customer's last message ({e}); sending the link as the invite template");
                    false
                }
            }
        });
        let rendered;
        let job_as_sent = if variant == job.variant {
            job
        } else {
            rendered = Due {
                variant,
                ..job.clone()
            };
            &rendered
        };
        let message = match render(config, job_as_sent) {
            Ok(m) => m,
            Err(why) => {
                let decision = Decision::Dead {
                    error: format!("cannot build the message: {why}"),
                    attempts: job.attempts + 1,
                };
                return self.record(claim, job, decision, now, now);
            }
        };
        // SPEC §9: a template Meta paused, disabled or rejected (its template
        // webhook) is not sent; sending pauses as for 132001.
        if let Some(reason) = held_template(&shared.db, &message) {
            let fault = Decision::Fault {
                code: HELD_TEMPLATE,
                reason,
            };
            return self.record(claim, job, fault, now, now);
        }
        if !shared.pacer.wait_turn(latest) || self.is_stopping() {
            // No turn under the rate cap (or no share of it) in time, or
            // a shutdown began meanwhile (no send starts after SIGTERM):
            // not sent, so due again at once, here or at another instance.
            self.give_back(vec![held.clone()]);
            return Step::Empty;
        }
        let started = shared.clock.stopwatch();
        let outcome = shared.transport.send(&message);
        shared
            .metrics
            .send_result(job.kind.as_str(), &outcome, started.elapsed());
        // Backoffs, Retry-After and pauses count from the answer, not from
        // the step's start: the call itself may have taken seconds.
        let answered = now + entered.elapsed().as_millis() as i64;
        let sent_variant = if message.is_template() && job.kind == Kind::Link {
            Variant::Template
        } else {
            job.variant
        };
        let decision = decide(job, sent_variant, outcome, config, answered);
        self.record(claim, job, decision, now, answered)
    }

    /// Logs and writes a decision; the one place each outcome passes.
    /// `answered` is when Meta answered (pauses count from it); `now` the
    /// step's time, stamped on the row.
    fn record(&self, claim: &str, job: &Due, decision: Decision, now: i64, answered: i64) -> Step {
        let what = format!(
            "{} for order {} to {}",
            job.kind, job.order_id, job.recipient
        );
        let (decision, step) = match decision {
            Decision::Fault { code, reason } => {
                let pause = self.pause_for_fault(code, &reason, answered);
                // Not the message's fault: the attempt is not counted.
                let retry = Decision::Retry {
                    attempts: job.attempts,
                    variant: job.variant,
                    at: answered + pause.as_millis() as i64,
                    error: reason,
                };
                (retry, Step::Paused)
            }
            Decision::Sent {
                ref message_id,
                attempts,
                ..
            } => {
                log::info!("sent {what} (attempt {attempts}): {message_id}");
                self.resume_after_fault();
                (decision, Step::Sent)
            }
            Decision::Retry {
                attempts,
                variant,
                at,
                ref error,
            } => {
                if variant != job.variant {
                    log::info!("{what}: outside the 24-hour window (131047), sending it as the invite template");
                } else {
                    log::info!(
                        "retrying {what} in {} ms (attempt {attempts}): {error}",
                        at - answered
                    );
                }
                (decision, Step::Retried)
            }
            Decision::Dead {
                ref error,
                attempts,
            } => {
                log::warn!("dead-lettered {what} (attempt {attempts}): {error}");
                (decision, Step::Dead)
            }
            Decision::ToPhone { ref error, .. } => {
                log::info!("{what}: WhatsApp cannot reach this BSUID with it (131062); sending it to the phone number if one is known: {error}");
                (decision, Step::Retried)
            }
            Decision::Unsure {
                ref error,
                attempts,
                give_up,
                ..
            } => {
                if give_up {
                    log::warn!("dead-lettered {what} (attempt {attempts}), unsure: {error}");
                } else {
                    log::warn!("unsure: {what} (attempt {attempts}): {error}");
                }
                (decision, Step::Unsure)
            }
        };
        self.shared.metrics.message(
            job.kind.as_str(),
            match step {
                Step::Sent => "sent",
                Step::Paused => "paused",
                Step::Dead => "dead",
                Step::Unsure => "unsure",
                _ => "retry",
            },
        );
        self.write(claim, job, &decision, now);
        // A sent confirmation has made its link due; this worker's next step
        // claims it. Waking the idle ones too would set each of them
        // claiming (a write) for one row: the profile's largest cost per
        // message at 0 ms latency.
        step
    }

    /// Writes the outcome, or keeps it for a later step when the database
    /// cannot take it now (SPEC §5: never lost, never holding the worker).
    fn write(&self, claim: &str, job: &Due, decision: &Decision, now: i64) {
        match self.try_write(claim, job, decision, now) {
            Ok(()) => {}
            Err(crate::db::DbError::Closed) => log::error!(
                "sender: database closed before the outcome of message {} was recorded; it is unsure after the next start",
                job.id
            ),
            Err(e) => {
                log::error!(
                    "sender: cannot record the outcome of message {} now ({e}); kept and recorded when the database answers",
                    job.id
                );
                let wait = Duration::from_millis(50);
                self.shared
                    .state
                    .lock()
                    .expect("sender lock")
                    .unrecorded
                    .push(Unrecorded {
                        claim: claim.to_owned(),
                        job: job.clone(),
                        decision: decision.clone(),
                        now,
                        retry_at: self.shared.clock.instant() + wait,
                        wait,
                    });
            }
        }
    }

    /// Tries the kept outcomes once each; those the database still refuses
    /// are kept, each with a growing wait.
    fn record_kept(&self) {
        let kept = std::mem::take(&mut self.shared.state.lock().expect("sender lock").unrecorded);
        let mut still = Vec::new();
        for mut u in kept {
            if u.retry_at > self.shared.clock.instant() {
                still.push(u);
                continue;
            }
            match self.try_write(&u.claim, &u.job, &u.decision, u.now) {
                Ok(()) => log::info!(
                    "sender: the kept outcome of message {} is recorded",
                    u.job.id
                ),
                Err(crate::db::DbError::Closed) => {}
                Err(_) => {
                    u.wait = (u.wait * 2).min(Duration::from_secs(5));
                    u.retry_at = self.shared.clock.instant() + u.wait;
                    still.push(u);
                }
            }
        }
        self.shared
            .state
            .lock()
            .expect("sender lock")
            .unrecorded
            .extend(still);
    }

    fn try_write(
        &self,
        claim: &str,
        job: &Due,
        decision: &Decision,
        now: i64,
    ) -> Result<(), crate::db::DbError> {
        let (id, order_id, claim, decision) = (
            job.id.clone(),
            job.order_id.clone(),
            claim.to_owned(),
            decision.clone(),
        );
        let (config, kind, claimed) = (Arc::clone(&self.shared.config), job.kind, job.variant);
        // A send recorded holding its statuses' lock from the start: on
        // PostgreSQL the lock rides with BEGIN (`outbox::mark_sent`).
        let lock = match &decision {
            Decision::Sent { message_id, .. } => Some(outbox::status_lock(message_id)),
            _ => None,
        };
        let work = MayRunTwice::new(move |c: &crate::db::sql::Conn| {
            match decision.clone() {
                Decision::Sent {
                    message_id,
                    variant,
                    attempts,
                } => {
                    let via = link_via(&config, kind, claimed, variant);
                    outbox::mark_sent(c, &id, &claim, &message_id, variant, attempts, via, now)
                }
                Decision::ToPhone { error, attempts } => {
                    if outbox::retry_to_phone(c, &id, &claim, attempts, &error, now)? {
                        Ok(())
                    } else {
                        let error = format!("{error}; no phone number is known for this BSUID");
                        outbox::mark_dead(c, &id, &claim, attempts, &error, now)
                    }
                }
                Decision::Retry {
                    attempts,
                    variant,
                    at,
                    error,
                } => outbox::mark_retry(c, &id, &claim, attempts, variant, at, &error, now),
                Decision::Dead { error, attempts } => {
                    outbox::mark_dead(c, &id, &claim, attempts, &error, now)
                }
                Decision::Unsure {
                    attempts,
                    until,
                    error,
                    give_up,
                } => outbox::unsure::mark_unsure(
                    c, &id, &order_id, &claim, attempts, until, now, &error, give_up, now,
                )
                .map(|proven| {
                    if let Some(p) = proven {
                        log::info!(
                            "{} for order {}: a status already received proves WhatsApp accepted it ({})",
                            p.kind,
                            p.order_id,
                            p.message_id
                        );
                    }
                }),
                Decision::Fault { .. } => Ok(()),
            }
        });
        // Waited for, but not for the disk: the claim before the send did
        // wait, so an outcome a power cut takes leaves the message claimed,
        // and its lapsed lease makes it unsure (SPEC §5), never sent again
        // at once. Waiting for an fsync per handful of outcomes was a third
        // of a message's CPU at 0 ms (docs/performance.md, 2026-12-08).
        self.shared.db.writer.run_blocking_unsynced(lock, work)
    }

    fn is_stopping(&self) -> bool {
        self.shared.state.lock().expect("sender lock").stopping
    }

    /// SIGTERM: from now on no send starts (sends in flight finish, and
    /// `stop` waits for them). Called as soon as the signal arrives, before
    /// the web server's grace period.
    pub fn halt(&self) {
        self.shared.state.lock().expect("sender lock").stopping = true;
        self.shared.changed.notify_all();
    }

    fn pause_for_fault(&self, code: i64, reason: &str, now: i64) -> Duration {
        let mut state = self.shared.state.lock().expect("sender lock");
        if let (Some(until), Some(len)) = (state.paused_until, state.pause_len) {
            if until > now {
                // Another worker's send hit the same fault meanwhile.
                return len;
            }
        }
        let first = state.paused_until.is_none();
        let pause = next_pause(state.pause_len, self.shared.config.retry_base);
        state.pause_len = Some(pause);
        state.paused_until = Some(now + pause.as_millis() as i64);
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

    /// Ends a pause at once (Meta approved a held template again) and
    /// looks at the queue now.
    pub fn resume(&self, why: &str) {
        let mut state = self.shared.state.lock().expect("sender lock");
        if state.paused_until.take().is_some() {
            state.pause_len = None;
            log::warn!("sending resumed: {why}");
        }
        drop(state);
        self.wake();
    }

    fn resume_after_fault(&self) {
        let mut state = self.shared.state.lock().expect("sender lock");
        if state.paused_until.take().is_some() {
            state.pause_len = None;
            log::warn!("sending resumed: WhatsApp accepted a message again");
        }
    }

    /// A worker thread: steps on the sender's clock (the system's: workers
    /// start with it), sleeping in real time when there is nothing to do
    /// until woken, the next row falls due, or the pause ends.
    fn work(&self) {
        let shared = &*self.shared;
        loop {
            let generation = {
                let state = shared.state.lock().expect("sender lock");
                if state.stopping {
                    return;
                }
                state.generation
            };
            let now = shared.clock.now_ms();
            let step = self.deliver_next(now);
            if !matches!(step, Step::Empty | Step::Paused) {
                continue;
            }
            let state = shared.state.lock().expect("sender lock");
            if state.stopping {
                return;
            }
            if (step == Step::Empty && !state.claimed.is_empty()) || state.generation != generation
            {
                continue;
            }
            let until = match step {
                Step::Paused => state.paused_until,
                _ => state.next_due,
            };
            let wait = until
                .map(|at| {
                    Duration::from_millis((at - now).clamp(1, MAX_IDLE.as_millis() as i64) as u64)
                })
                .unwrap_or(MAX_IDLE);
            let _unused = shared
                .changed
                .wait_timeout(state, wait)
                .expect("sender lock");
        }
    }

    /// Stops taking new messages, lets in-flight sends finish (each is
    /// bounded by the HTTP timeout) and waits up to `bound` for the workers;
    /// rows claimed but not sent are given back. Returns how many sends were
    /// still in flight when the bound ran out.
    pub fn stop(&self, bound: Duration) -> usize {
        {
            let mut state = self.shared.state.lock().expect("sender lock");
            state.stopping = true;
        }
        self.shared.changed.notify_all();
        // Real time, not the sender's clock: this waits for real threads
        // to finish real HTTP calls.
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
        let mut unsent: Vec<Held> = state.claimed.drain(..).collect();
        for u in state.unrecorded.iter_mut() {
            u.retry_at = self.shared.clock.instant();
        }
        drop(state);
        // One last try for outcomes the database refused; what it still
        // refuses is left to the next start, where the row is unsure.
        self.record_kept();
        for handle in self.handles.lock().expect("handles lock").drain(..) {
            let _ = handle.join();
        }
        // Workers may have claimed more while stopping; they are joined now.
        unsent.extend(
            self.shared
                .state
                .lock()
                .expect("sender lock")
                .claimed
                .drain(..),
        );
        self.give_back(unsent);
        0
    }
}

/// Says what became of rows whose sender stopped before recording.
fn log_lapsed(lapsed: &[outbox::unsure::Lapsed], wait: i64) {
    for l in lapsed {
        match &l.proven {
            Some(id) => log::info!(
                "{} for order {}: its sender stopped before recording the answer; a status already received proves WhatsApp accepted it ({id})",
                l.kind,
                l.order_id
            ),
            None if l.gave_up => log::warn!(
                "dead-lettered {} for order {}: its sender stopped before recording the answer of its second copy; not sent a third time",
                l.kind,
                l.order_id
            ),
            None => log::warn!(
                "unsure: {} for order {}: its sender stopped before recording the answer; not sent again before WhatsApp's status for it has had {wait} ms to arrive",
                l.kind,
                l.order_id
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::sender::testing::{config, rejected, transient, unsure};
    use crate::whatsapp::{Message, SendOutcome};

    /// Something a test makes happen while a message is on its way.
    type Meanwhile = Arc<Mutex<Option<Box<dyn FnOnce() + Send>>>>;

    /// A transport that answers from a script (then accepts) and records
    /// what it was asked to send; each call takes `call_takes` on the rig's
    /// clock.
    struct Scripted {
        script: Mutex<VecDeque<SendOutcome>>,
        sent: Arc<Mutex<Vec<String>>>,
        clock: Arc<ManualClock>,
        call_takes: Arc<Mutex<Duration>>,
        meanwhile: Meanwhile,
    }

    impl Transport for Scripted {
        fn send(&self, message: &Message) -> SendOutcome {
            if let Some(f) = self.meanwhile.lock().unwrap().take() {
                f();
            }
            self.clock.advance(*self.call_takes.lock().unwrap());
            let mut sent = self.sent.lock().unwrap();
            sent.push(message.describe());
            let n = sent.len();
            self.script
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or(SendOutcome::Accepted {
                    message_id: format!("wamid.{n}"),
                })
        }
    }

    struct Rig {
        _dir: tempfile::TempDir,
        path: std::path::PathBuf,
        sender: Sender,
        sent: Arc<Mutex<Vec<String>>>,
        db: Db,
        clock: Arc<ManualClock>,
        call_takes: Arc<Mutex<Duration>>,
        meanwhile: Meanwhile,
    }

    const T0: i64 = 1_900_000_000_000;

    /// One paid order (its confirmation queued, its link waiting) in a fresh
    /// database, and a sender with no threads over a scripted transport.
    fn rig(script: Vec<SendOutcome>) -> Rig {
        rig_of(script, 1)
    }

    /// `orders` paid orders, ORD-1…
    fn rig_of(script: Vec<SendOutcome>, orders: usize) -> Rig {
        rig_paced(script, orders, Arc::new(Pacer::new(1_000_000)))
    }

    fn rig_paced(script: Vec<SendOutcome>, orders: usize, pacer: Arc<Pacer>) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        crate::db::prepare_path(&path).unwrap();
        let mut conn = crate::db::open_writer(&path).unwrap();
        crate::db::migrate(&mut conn).unwrap();
        let conn = crate::db::Conn::from(conn);
        let ctx = crate::payments::Context {
            now_ms: T0,
            token_ttl_ms: 90 * 24 * 3600 * 1000,
            link_message: true,
        };
        for i in 1..=orders {
            let body = format!(
                r#"{{"id":"evt_{i}","type":"payment_succeeded","created_at":"2026-11-26T10:00:00Z",
                "data":{{"order_id":"ORD-{i}","payment_id":"pay_{i}","user_id":"u","amount":49900,
                        "currency":"INR","customer_phone":"+91 98765 43210"}}}}"#
            );
            let event = crate::domain::PaymentEvent::parse(body.as_bytes(), None).unwrap();
            crate::payments::record(&conn, &format!("evt_{i}"), &event, &ctx).unwrap();
        }
        let conn = conn.into_lite().expect("a SQLite connection");
        let (writer, _) = crate::db::Writer::start(conn);
        let db = Db {
            writer,
            reads: crate::db::ReadPool::new(&path),
        };
        let sent = Arc::new(Mutex::new(Vec::new()));
        // A clock that stands still until a test (or a call said to take
        // time) moves it: time inside a step is exactly the `now` each test
        // gives, however long the step really takes.
        let clock = Arc::new(ManualClock::at(T0));
        let call_takes = Arc::new(Mutex::new(Duration::ZERO));
        let meanwhile: Meanwhile = Arc::new(Mutex::new(None));
        let transport = Scripted {
            script: Mutex::new(script.into()),
            sent: sent.clone(),
            clock: clock.clone(),
            call_takes: call_takes.clone(),
            meanwhile: meanwhile.clone(),
        };
        let sender = Sender::paced(
            db.clone(),
            Arc::new(config(&[])),
            Box::new(transport),
            pacer,
            Arc::new(crate::metrics::Metrics::new()),
        )
        .with_clock(clock.clone());
        Rig {
            _dir: dir,
            path,
            sender,
            sent,
            db,
            clock,
            call_takes,
            meanwhile,
        }
    }

    impl Rig {
        /// Steps until nothing is due at `now`; the steps taken.
        fn drain(&self, now: i64) -> Vec<Step> {
            let mut steps = Vec::new();
            loop {
                let step = self.sender.deliver_next(now);
                if step == Step::Empty || step == Step::Paused || steps.len() > 50 {
                    return steps;
                }
                steps.push(step);
            }
        }

        fn statuses(&self) -> Vec<(String, String)> {
            let conn = crate::db::open_reader(&self.path).unwrap();
            let mut stmt = conn
                .prepare("SELECT kind, status FROM outbox ORDER BY kind")
                .unwrap();
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            rows
        }
    }

    const HOUR: i64 = 3_600_000;

    #[test]
    fn a_retry_waits_for_its_backoff_on_the_clock_then_each_message_goes_once() {
        let rig = rig(vec![transient(None, None)]);
        assert_eq!(rig.drain(T0), vec![Step::Retried]);
        // The backoff (500–1000 ms) has not run out; the link waits.
        assert_eq!(rig.drain(T0 + 499), vec![]);
        assert_eq!(rig.drain(T0 + 1000), vec![Step::Sent, Step::Sent]);
        // Past every backoff and lease: nothing more goes out, ever.
        assert_eq!(rig.drain(T0 + 24 * HOUR), vec![]);
        assert_eq!(rig.sent.lock().unwrap().len(), 3);
        assert_eq!(
            rig.statuses(),
            vec![
                ("confirmation".into(), "sent".into()),
                ("link".into(), "sent".into())
            ]
        );
    }

    /// Backoffs count from Meta's answer: a call that took three seconds
    /// moves the retry three seconds on.
    #[test]
    fn a_retry_counts_its_backoff_from_the_answer_not_from_the_step_start() {
        let rig = rig(vec![transient(None, None)]);
        *rig.call_takes.lock().unwrap() = Duration::from_secs(3);
        assert_eq!(rig.drain(T0), vec![Step::Retried]);
        *rig.call_takes.lock().unwrap() = Duration::ZERO;
        // The backoff (500–1000 ms) would have run out from the step's start.
        assert_eq!(rig.drain(T0 + 1000), vec![]);
        assert_eq!(rig.drain(T0 + 3499), vec![]);
        assert_eq!(rig.drain(T0 + 4000), vec![Step::Sent, Step::Sent]);
    }

    /// SPEC §5: an outcome the database cannot take when it comes is kept,
    /// not lost and not holding the worker, and written once its wait has
    /// passed on the sender's clock (no test sleeps for it).
    #[test]
    fn an_outcome_the_database_refused_is_kept_and_written_when_its_wait_passes() {
        let rig = rig(vec![]);
        let path = rig.path.clone();
        let rename = move |from: &str, to: &str| {
            crate::db::open_writer(&path)
                .unwrap()
                .execute_batch(&format!("ALTER TABLE {from} RENAME TO {to}"))
                .unwrap();
        };
        let away = rename.clone();
        *rig.meanwhile.lock().unwrap() = Some(Box::new(move || away("outbox", "outbox_away")));
        assert_eq!(rig.sender.deliver_next(T0), Step::Sent);
        rename("outbox_away", "outbox");
        // Kept for its first wait (50 ms): the confirmation is not recorded
        // sent, so its link is not due yet.
        assert_eq!(rig.drain(T0 + 10), vec![]);
        assert_eq!(
            rig.statuses(),
            vec![
                ("confirmation".into(), "sending".into()),
                ("link".into(), "waiting".into())
            ]
        );
        rig.clock.advance(Duration::from_millis(50));
        assert_eq!(rig.drain(T0 + 20), vec![Step::Sent]);
        assert_eq!(rig.sent.lock().unwrap().len(), 2);
        assert_eq!(
            rig.statuses(),
            vec![
                ("confirmation".into(), "sent".into()),
                ("link".into(), "sent".into())
            ]
        );
    }

    #[test]
    fn a_batch_claimed_at_once_is_sent_from_hand_one_step_each() {
        let rig = rig_of(vec![], 5);
        // One claim takes the five confirmations; the steps send them from
        // hand, then the five links they released.
        assert_eq!(rig.drain(T0), vec![Step::Sent; 10]);
        assert_eq!(rig.drain(T0 + 24 * HOUR), vec![]);
        assert_eq!(rig.sent.lock().unwrap().len(), 10);
    }

    #[test]
    fn a_row_in_hand_whose_lease_has_no_room_for_a_send_is_given_back_not_sent() {
        let rig = rig_of(vec![], 2);
        let held = rig.sender.claim(T0).unwrap();
        let lease = held.lease_until;
        rig.sender
            .shared
            .state
            .lock()
            .unwrap()
            .claimed
            .push_back(held);
        // Its lease ends within the HTTP timeout: handed back and claimed
        // afresh (one send each, no send on the old claim).
        let late = lease - 1000;
        assert_eq!(rig.drain(late), vec![Step::Sent; 4]);
        assert_eq!(rig.sent.lock().unwrap().len(), 4);
    }

    #[test]
    fn a_dead_confirmation_cancels_its_link() {
        let rig = rig(vec![rejected(131026)]);
        assert_eq!(rig.drain(T0), vec![Step::Dead]);
        assert_eq!(rig.drain(T0 + 24 * HOUR), vec![]);
        assert_eq!(rig.sent.lock().unwrap().len(), 1);
        assert_eq!(
            rig.statuses(),
            vec![
                ("confirmation".into(), "dead".into()),
                ("link".into(), "cancelled".into())
            ]
        );
    }

    #[test]
    fn a_configuration_fault_pauses_every_send_until_the_pause_ends() {
        let rig = rig(vec![SendOutcome::ConfigFault {
            code: 190,
            reason: "token expired".into(),
        }]);
        assert_eq!(rig.sender.deliver_next(T0), Step::Paused);
        assert!(rig.sender.is_paused());
        // 15 steps of 1000 ms.
        assert_eq!(rig.sender.deliver_next(T0 + 14_999), Step::Paused);
        assert_eq!(rig.drain(T0 + 15_000), vec![Step::Sent, Step::Sent]);
        assert!(!rig.sender.is_paused());
        assert_eq!(rig.drain(T0 + 24 * HOUR), vec![]);
        assert_eq!(rig.sent.lock().unwrap().len(), 3);
    }

    #[test]
    fn a_claim_whose_lease_ran_out_is_taken_over_and_its_late_outcome_is_ignored() {
        let rig = rig(vec![]);
        // A sender that crashed (or hangs) after claiming the confirmation.
        let stale = rig
            .db
            .writer
            .run_blocking(MayRunTwice::new(|c| {
                outbox::claim(c, "gone:0", T0, T0 + 30_000, 10)
            }))
            .unwrap();
        assert_eq!(stale.len(), 1);
        // Held until its lease runs out.
        assert_eq!(rig.drain(T0 + 29_999), vec![]);
        // SPEC §5: its sender may have sent it before it stopped, so it is
        // unsure, not due: it waits WHATSAPP_UNSURE_WAIT_MS (60 s) for a
        // status, then goes (no status comes here).
        assert_eq!(rig.drain(T0 + 30_000), vec![]);
        assert_eq!(rig.drain(T0 + 89_999), vec![]);
        assert!(rig.sent.lock().unwrap().is_empty());
        assert_eq!(rig.drain(T0 + 90_100), vec![Step::Sent, Step::Sent]);
        // The old claimant comes back with an outcome: nothing changes.
        let id = stale[0].id.clone();
        rig.db
            .writer
            .run_blocking(MayRunTwice::new(move |c| {
                outbox::mark_retry(c, &id, "gone:0", 1, Variant::Template, T0, "late", T0)
            }))
            .unwrap();
        assert_eq!(rig.drain(T0 + 24 * HOUR), vec![]);
        assert_eq!(rig.sent.lock().unwrap().len(), 2);
        assert_eq!(
            rig.statuses(),
            vec![
                ("confirmation".into(), "sent".into()),
                ("link".into(), "sent".into())
            ]
        );
    }

    fn proof(order: &str, wamid: &str) -> outbox::unsure::Proof {
        outbox::unsure::Proof {
            message_id: wamid.into(),
            order_id: order.into(),
            recipient_id: Some("919876543210".into()),
            recipient_user_id: None,
            reported_at: None,
        }
    }

    /// SPEC §5: a lost answer is not sent again at once; a status naming the
    /// order records it sent with that id, and the link then goes at once.
    #[test]
    fn an_unsure_send_waits_and_a_status_naming_its_order_records_it_sent() {
        let rig = rig(vec![unsure()]);
        assert_eq!(rig.drain(T0), vec![Step::Unsure]);
        assert_eq!(rig.drain(T0 + 59_000), vec![]);
        let p = proof("ORD-1", "wamid.LOST");
        let proven = rig
            .db
            .writer
            .run_blocking(MayRunTwice::new(move |c| {
                outbox::unsure::record_proof(c, &p, T0 + 1000)
            }))
            .unwrap();
        assert_eq!(proven.map(|p| p.kind), Some(Kind::Confirmation));
        // The link goes at once; the confirmation never again.
        assert_eq!(rig.drain(T0 + 1000), vec![Step::Sent]);
        assert_eq!(rig.drain(T0 + 24 * HOUR), vec![]);
        assert_eq!(rig.sent.lock().unwrap().len(), 2);
        let conn = crate::db::open_reader(&rig.path).unwrap();
        let id: String = conn
            .query_row(
                "SELECT graph_message_id FROM outbox WHERE kind = 'confirmation'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(id, "wamid.LOST");
    }

    /// …and only a wait that passes with no status sends it again, once.
    #[test]
    fn an_unsure_send_with_no_status_goes_again_once_after_the_wait() {
        let rig = rig(vec![unsure()]);
        assert_eq!(rig.drain(T0), vec![Step::Unsure]);
        assert_eq!(rig.drain(T0 + 59_999), vec![]);
        assert_eq!(rig.drain(T0 + 60_000), vec![Step::Sent, Step::Sent]);
        assert_eq!(rig.sent.lock().unwrap().len(), 3);
    }

    /// SPEC §5 "may be sent a second time": when the second copy's answer
    /// is lost too, the message is dead-lettered, never sent a third time.
    #[test]
    fn a_second_lost_answer_dead_letters_the_message_instead_of_a_third_copy() {
        let rig = rig(vec![unsure(), unsure()]);
        assert_eq!(rig.drain(T0), vec![Step::Unsure]);
        assert_eq!(rig.drain(T0 + 60_000), vec![Step::Unsure]);
        assert_eq!(rig.drain(T0 + 24 * HOUR), vec![]);
        assert_eq!(rig.sent.lock().unwrap().len(), 2);
        assert_eq!(
            rig.statuses(),
            vec![
                ("confirmation".into(), "dead".into()),
                ("link".into(), "cancelled".into())
            ]
        );
    }

    /// A proof that came while the send was in flight (or before a dead
    /// sender's lease ran out) is kept and settles the row when it turns
    /// unsure; a status for a message id already known proves nothing else.
    #[test]
    fn a_proof_kept_before_the_send_turned_unsure_settles_it_and_known_ids_prove_nothing() {
        let rig = rig_of(vec![], 2);
        let stale = rig
            .db
            .writer
            .run_blocking(MayRunTwice::new(|c| {
                outbox::claim(c, "gone:0", T0, T0 + 30_000, 1)
            }))
            .unwrap();
        let order = stale[0].order_id.clone();
        let other = if order == "ORD-1" { "ORD-2" } else { "ORD-1" };
        // The other order's confirmation goes normally.
        assert_eq!(rig.drain(T0), vec![Step::Sent, Step::Sent]);
        let sent = rig.sent.lock().unwrap().len();
        // A status for a known id naming the stale order proves nothing.
        let known: String = crate::db::open_reader(&rig.path)
            .unwrap()
            .query_row(
                "SELECT graph_message_id FROM outbox WHERE order_id = $1 AND kind = 'confirmation'",
                [other],
                |r| r.get(0),
            )
            .unwrap();
        let (p, o) = (proof(&order, &known), order.clone());
        let none = rig
            .db
            .writer
            .run_blocking(MayRunTwice::new(move |c| {
                outbox::unsure::record_proof(c, &p, T0 + 1)?;
                // The real one, while the dead sender's lease still holds.
                outbox::unsure::record_proof(c, &proof(&o, "wamid.INFLIGHT"), T0 + 2)
            }))
            .unwrap();
        assert_eq!(none, None);
        // The lease runs out: settled by the kept proof, never resent.
        assert_eq!(rig.drain(T0 + 30_000), vec![Step::Sent]);
        assert_eq!(rig.drain(T0 + 24 * HOUR), vec![]);
        assert_eq!(rig.sent.lock().unwrap().len(), sent + 1);
        let id: String = crate::db::open_reader(&rig.path)
            .unwrap()
            .query_row(
                "SELECT graph_message_id FROM outbox WHERE order_id = $1 AND kind = 'confirmation'",
                [&order],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(id, "wamid.INFLIGHT");
    }

    #[test]
    fn stopping_gives_claimed_rows_back_at_once() {
        let rig = rig(vec![]);
        // Claim and keep: the sender holds the row in hand, unsent.
        let claimed = rig.sender.claim(T0).unwrap();
        rig.sender
            .shared
            .state
            .lock()
            .unwrap()
            .claimed
            .push_back(claimed);
        rig.sender.stop(Duration::from_secs(1));
        assert_eq!(
            rig.statuses(),
            vec![
                ("confirmation".into(), "queued".into()),
                ("link".into(), "waiting".into())
            ]
        );
    }

    /// An instance the others do not count yet (or whose roster is stale)
    /// has no share of the cap: it must leave the rows to those that may
    /// send, not hold them unsent until its lease runs out.
    #[test]
    fn without_a_share_of_the_rate_cap_nothing_is_claimed_or_sent() {
        let pacer = Arc::new(Pacer::held());
        let rig = rig_paced(vec![], 1, pacer.clone());
        assert_eq!(rig.sender.deliver_next(T0), Step::Empty);
        assert_eq!(
            rig.statuses(),
            vec![
                ("confirmation".into(), "queued".into()),
                ("link".into(), "waiting".into())
            ]
        );
        assert!(rig.sent.lock().unwrap().is_empty());
        pacer.set_share(10, None);
        assert_eq!(rig.sender.deliver_next(T0), Step::Sent);
    }

    /// A row in hand whose turn under the cap cannot come while its lease
    /// has room is given back unsent, never sent late.
    #[test]
    fn a_row_whose_turn_comes_too_late_for_its_lease_is_given_back() {
        let pacer = Arc::new(Pacer::new(10));
        let rig = rig_paced(vec![], 1, pacer.clone());
        let held = rig.sender.claim(T0).unwrap();
        rig.sender
            .shared
            .state
            .lock()
            .unwrap()
            .claimed
            .push_back(held);
        // The share went stale after the claim: no turn within the lease.
        pacer.set_share(10, Some(Instant::now()));
        // The lease's room (timeout + margin) is all but gone at this time.
        let lease = (rig.sender.shared.config.timeout * 2 + LEASE_SLACK).as_millis() as i64;
        let room = (rig.sender.shared.config.timeout + SEND_MARGIN).as_millis() as i64;
        let late = T0 + lease - room - 30;
        assert_eq!(rig.sender.deliver_next(late), Step::Empty);
        assert!(rig.sent.lock().unwrap().is_empty());
        assert_eq!(
            rig.statuses(),
            vec![
                ("confirmation".into(), "queued".into()),
                ("link".into(), "waiting".into())
            ]
        );
    }
}
