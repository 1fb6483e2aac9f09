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
//! What each outcome means for the row is the pure [`decide`].

use crate::config::{Config, LinkIn};
use crate::db::Db;
use crate::domain::{InviteToken, Money, OrderId};
use crate::links;
use crate::metrics::Metrics;
use crate::outbox::{self, Due, Kind, LinkVia, Recipient, Variant};
use crate::pacer::Pacer;
use crate::whatsapp::{
    Message, SendOutcome, Transport, BSUID_REFUSED, OUTSIDE_WINDOW, PAIR_RATE_LIMIT,
};
use rand::Rng;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Longest a worker sleeps before looking at the queue again, so a row made
/// due by the clock (a backoff running out) is never waited on for long.
const MAX_IDLE: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// Slack on a lease beyond the HTTP timeout: time spent waiting for the
/// rate cap's turn and recording the outcome.
const LEASE_SLACK: Duration = Duration::from_secs(5);

/// A configuration fault pauses sending for 15 retry steps at first, then
/// twice as long each time it persists, up to 300 steps or five minutes.
/// (Steps of `WHATSAPP_RETRY_BASE_MS`: 15 s at the default, milliseconds in
/// tests.)
fn pause_bounds(base: Duration) -> (Duration, Duration) {
    let ceiling = Duration::from_secs(300);
    let first = base.saturating_mul(15).min(ceiling);
    (first, base.saturating_mul(300).min(ceiling).max(first))
}

/// The pause after a configuration fault: the first one, or the previous
/// one doubled up to the bound.
pub fn next_pause(previous: Option<Duration>, base: Duration) -> Duration {
    let (first, max) = pause_bounds(base);
    previous.map_or(first, |p| (p * 2).min(max).max(first))
}

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

/// What to write for a row after an attempt: the whole retry, 24-hour,
/// pair-rate and dead-letter policy, as a pure function of the row, what
/// Meta said, the configuration and the time.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Sent {
        message_id: String,
        variant: Variant,
        attempts: u32,
    },
    Retry {
        attempts: u32,
        variant: Variant,
        at: i64,
        error: String,
    },
    Dead {
        error: String,
        attempts: u32,
    },
    /// Meta cannot reach this BSUID with this message (131062): queued
    /// again for the contact's phone number, or dead when none is known.
    ToPhone {
        error: String,
        attempts: u32,
    },
    /// Our configuration is at fault, not the message: sending pauses and
    /// the row is retried after the pause, its attempt not counted.
    Fault {
        code: i64,
        reason: String,
    },
    /// The answer was lost (SPEC §5): not sent again before `until` unless
    /// no status proves it by then; with `give_up` (its attempts spent) it
    /// is dead-lettered, and a late proof still records it sent.
    Unsure {
        attempts: u32,
        until: i64,
        error: String,
        give_up: bool,
    },
}

/// The rules. `sent_variant` is how the message went out (a link may have
/// gone as the invite template). Jitter comes from the row id, so the same
/// inputs always give the same answer and rows retrying together still
/// spread out.
pub fn decide(
    due: &Due,
    sent_variant: Variant,
    outcome: SendOutcome,
    config: &Config,
    now: i64,
) -> Decision {
    let attempts = due.attempts + 1;
    match outcome {
        SendOutcome::Accepted { message_id } => Decision::Sent {
            message_id,
            variant: sent_variant,
            attempts,
        },
        SendOutcome::Rejected {
            code: Some(OUTSIDE_WINDOW),
            reason,
        } if due.kind == Kind::Link && due.variant == Variant::Text => {
            if config.invite_template.is_some() {
                Decision::Retry {
                    attempts,
                    variant: Variant::Template,
                    at: now,
                    error: reason,
                }
            } else {
                Decision::Dead {
                    error: no_invite_template(&reason),
                    attempts,
                }
            }
        }
        SendOutcome::Rejected {
            code: Some(BSUID_REFUSED),
            reason,
        } if matches!(due.recipient, Recipient::User(_)) => Decision::ToPhone {
            error: reason,
            attempts,
        },
        SendOutcome::Rejected { reason, .. } => Decision::Dead {
            error: reason,
            attempts,
        },
        SendOutcome::Transient {
            reason,
            retry_after,
            code,
        } => {
            if attempts >= config.max_attempts {
                return Decision::Dead {
                    error: format!("{reason} (gave up after {attempts} attempts)"),
                    attempts,
                };
            }
            let mut delay = backoff_with(config.retry_base, attempts, jitter(&due.id, attempts));
            if code == Some(PAIR_RATE_LIMIT) {
                // Only this recipient is throttled; the row's own delay
                // keeps everyone else's messages flowing.
                delay = delay.max(Duration::from_secs(1));
            }
            if let Some(after) = retry_after {
                delay = delay.max(after);
            }
            Decision::Retry {
                attempts,
                variant: due.variant,
                at: now + delay.as_millis() as i64,
                error: reason,
            }
        }
        SendOutcome::ConfigFault { code, reason } => Decision::Fault { code, reason },
        SendOutcome::Unsure { reason } => {
            let give_up = attempts >= config.max_attempts;
            let wait = config.unsure_wait.as_millis() as i64;
            // When the wait passes with no status, the message is retried
            // "as usual" (SPEC §5): no sooner than its backoff either.
            let backoff = backoff_with(config.retry_base, attempts, jitter(&due.id, attempts));
            Decision::Unsure {
                attempts,
                until: now + wait.max(backoff.as_millis() as i64),
                error: if give_up {
                    format!("{reason} (gave up after {attempts} attempts; a status from WhatsApp naming the order still records it as sent)")
                } else {
                    format!("{reason}; not sent again before WhatsApp's status for it has had {wait} ms to arrive (WHATSAPP_UNSURE_WAIT_MS)")
                },
                give_up,
            }
        }
    }
}

/// Why a link refused outside the window (131047) ends: no template to
/// carry it.
pub fn no_invite_template(reason: &str) -> String {
    format!(
        "{reason}; the customer has not written in 24 hours, so WhatsApp refuses the link as text: set WHATSAPP_INVITE_TEMPLATE to an approved template with one body variable to send it"
    )
}

/// Which way the link went, recorded on the row that carried it once Meta
/// accepted it: `claimed` is the row's variant when it was claimed (a
/// template only after a 131047), `sent` how it went out.
pub fn link_via(config: &Config, kind: Kind, claimed: Variant, sent: Variant) -> Option<LinkVia> {
    match kind {
        Kind::Confirmation => match config.link_in {
            LinkIn::Message => None,
            LinkIn::Confirmation => Some(LinkVia::InConfirmation),
            LinkIn::Button => Some(LinkVia::InButton),
        },
        Kind::Link => Some(match (claimed, sent) {
            (Variant::Template, _) => LinkVia::TemplateAfter131047,
            (Variant::Text, Variant::Template) => LinkVia::TemplateWindowClosed,
            // With the invite template set, a text goes only into an open window.
            (Variant::Text, Variant::Text) if config.invite_template.is_some() => {
                LinkVia::TextWindowOpen
            }
            (Variant::Text, Variant::Text) => LinkVia::TextNoTemplate,
        }),
        Kind::ElderReply => None,
    }
}

/// How a due link goes (SPEC §5): as the invite template when one is set
/// and the customer's window is not known to be open; as queued otherwise.
pub fn link_variant(config: &Config, job: &Due, window_open: impl FnOnce() -> bool) -> Variant {
    if job.kind == Kind::Link && job.variant == Variant::Text && config.invite_template.is_some() {
        if window_open() {
            Variant::Text
        } else {
            Variant::Template
        }
    } else {
        job.variant
    }
}

/// What each order sends under `WHATSAPP_LINK_IN`, for the start-up log
/// (sandbox mode then prints each message as it would go).
pub fn describe_link_in(config: &Config) -> String {
    let confirmation = format!("the confirmation template {}", config.template_name);
    match config.link_in {
        LinkIn::Message => format!(
            "WHATSAPP_LINK_IN=message: each order sends {confirmation}, then the link as a text when the customer wrote within 24 hours, {}",
            match &config.invite_template {
                Some(name) => format!("otherwise as the invite template {name} (a second paid message)"),
                None => "otherwise nothing that arrives (WHATSAPP_INVITE_TEMPLATE is not set)".into(),
            }
        ),
        LinkIn::Confirmation => format!(
            "WHATSAPP_LINK_IN=confirmation: each order sends one message, {confirmation} with the invite URL {}/w/invite/<token> as its fourth body parameter",
            config.app_base_url
        ),
        LinkIn::Button => format!(
            "WHATSAPP_LINK_IN=button: each order sends one message, {confirmation} whose URL button {}/w/invite/{{{{1}}}} gets the token",
            config.app_base_url
        ),
    }
}

/// A factor in [0.5, 1] from the row and attempt (FNV-1a).
fn jitter(id: &str, attempts: u32) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes().chain(attempts.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    0.5 + 0.5 * ((h >> 11) as f64 / (1u64 << 53) as f64)
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
        });
        Sender {
            shared,
            handles: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// The sender with its `SEND_WORKERS` threads, each a loop around
    /// `deliver_next` on the wall clock.
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
        // Time spent inside the step (a claim waiting on a commit, the rate
        // cap, the HTTP call) moves the clock on for what follows the answer.
        let entered = Instant::now();
        let shared = &*self.shared;
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
            .any(|u| u.retry_at <= Instant::now())
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
                let latest =
                    entered + Duration::from_millis((held.lease_until - room - now).max(0) as u64);
                self.send_one(&held, now, entered, latest)
            }
            None => Step::Empty,
        };
        shared.state.lock().expect("sender lock").in_flight -= 1;
        shared.changed.notify_all();
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
                .run_blocking(move |c| outbox::release(c, &claim, &ids))
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
            shared.db.writer.run_blocking(move |c| {
                // A lease that ran out: its sender may have sent (§5).
                let lapsed = outbox::unsure::lapse(c, now, wait, lease)?;
                let rows = outbox::claim(c, &claim, now, now + lease, limit)?;
                let next = if rows.is_empty() {
                    outbox::next_due_at(c)?
                } else {
                    None
                };
                Ok((rows, next, lapsed))
            })
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

    fn send_one(&self, held: &Held, now: i64, entered: Instant, latest: Instant) -> Step {
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
                Ok(last) => outbox::window_open(last, crate::clock::now_ms()),
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
        let started = Instant::now();
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
                        retry_at: Instant::now() + wait,
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
            if u.retry_at > Instant::now() {
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
                    u.retry_at = Instant::now() + u.wait;
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
        self.shared
            .db
            .writer
            .run_blocking(move |c| match decision.clone() {
                Decision::Sent {
                    message_id,
                    variant,
                    attempts,
                } => {
                    if let Some(via) = link_via(&config, kind, claimed, variant) {
                        outbox::set_link_via(c, &id, &claim, via)?;
                    }
                    outbox::mark_sent(c, &id, &claim, &message_id, variant, attempts, now)
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
            })
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

    /// A worker thread: steps on the wall clock, sleeping when there is
    /// nothing to do until woken, the next row falls due, or the pause ends.
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
            let now = crate::clock::now_ms();
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
            u.retry_at = Instant::now();
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

/// The code a held template is paused under: Meta's own for a template it
/// will not send (SPEC §5), so the pause reads the same as one Meta answered.
const HELD_TEMPLATE: i64 = 132001;

/// Why `message` must not go now, when it is a template Meta's template
/// webhooks hold. A database that cannot say does not hold it: Meta's own
/// answer (132001) still pauses sending if the template is refused.
fn held_template(db: &Db, message: &Message) -> Option<String> {
    let (name, language) = message.template_name()?;
    let (name, language) = (name.to_owned(), language.to_owned());
    db.reads
        .with(move |c| crate::template_health::held(c, &name, &language))
        .unwrap_or_else(|e| {
            log::warn!("sender: cannot read template health: {e}");
            None
        })
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
            let mut params = vec![order.as_str().to_owned(), amount.display(), note];
            let token = || {
                job.token
                    .as_deref()
                    .and_then(InviteToken::parse)
                    .ok_or("the order has no invite token")
            };
            if config.link_in == LinkIn::Confirmation {
                params.push(links::invite_url(&config.app_base_url, &token()?));
            }
            let message = Message::template(
                &job.recipient,
                &config.template_name,
                &config.template_lang,
                &params,
            );
            if config.link_in == LinkIn::Button {
                message.with_url_button(&token()?.as_string())
            } else {
                message
            }
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

/// Exponential backoff with jitter: the n-th retry waits between half and
/// all of `base · 2^(n-1)`.
pub fn backoff(base: Duration, attempts: u32) -> Duration {
    backoff_with(base, attempts, rand::thread_rng().gen_range(0.5..=1.0))
}

/// The backoff with a given jitter factor in [0.5, 1].
fn backoff_with(base: Duration, attempts: u32, factor: f64) -> Duration {
    let exp = attempts.saturating_sub(1).min(30);
    let full = base.saturating_mul(1u32 << exp).min(MAX_BACKOFF);
    full.mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::outbox::Recipient;
    use crate::whatsapp::CONFIG_FAULT_CODES;

    struct Pairs(Vec<(&'static str, &'static str)>);

    impl crate::config::Source for Pairs {
        fn get(&self, name: &str) -> Option<String> {
            self.0
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    /// Sandbox configuration; `pairs` override the defaults.
    fn config(pairs: &[(&'static str, &'static str)]) -> Config {
        let mut all = pairs.to_vec();
        all.extend([
            ("WHATSAPP_MAX_MPS", "1000000"),
            ("WHATSAPP_RETRY_BASE_MS", "1000"),
            ("WHATSAPP_MAX_ATTEMPTS", "3"),
        ]);
        Config::from_source(&Pairs(all)).unwrap()
    }

    fn due(kind: Kind, variant: Variant, attempts: u32) -> Due {
        Due {
            id: "0190f0f0-0000-7000-8000-000000000001".into(),
            order_id: "ORD-1".into(),
            kind,
            recipient: Recipient::Phone("919876543210".into()),
            variant,
            attempts,
            total_amount: 49900,
            currency: "INR".into(),
            note: None,
            token: None,
        }
    }

    fn transient(code: Option<i64>, retry_after: Option<Duration>) -> SendOutcome {
        SendOutcome::Transient {
            reason: "busy".into(),
            retry_after,
            code,
        }
    }

    fn unsure() -> SendOutcome {
        SendOutcome::Unsure {
            reason: "timeout".into(),
        }
    }

    fn rejected(code: i64) -> SendOutcome {
        SendOutcome::Rejected {
            code: Some(code),
            reason: format!("({code})"),
        }
    }

    /// What a decision amounts to, for the table: the kind, the attempts it
    /// records, the variant, and the delay (ms) before the retry.
    fn shape(d: &Decision, now: i64) -> (&'static str, u32, Option<Variant>, i64) {
        match d {
            Decision::Sent {
                attempts, variant, ..
            } => ("sent", *attempts, Some(*variant), 0),
            Decision::Retry {
                attempts,
                variant,
                at,
                ..
            } => ("retry", *attempts, Some(*variant), at - now),
            Decision::Dead { attempts, .. } => ("dead", *attempts, None, 0),
            Decision::ToPhone { attempts, .. } => ("to_phone", *attempts, None, 0),
            Decision::Fault { .. } => ("fault", 0, None, 0),
            Decision::Unsure {
                attempts,
                until,
                give_up,
                ..
            } => (
                if *give_up { "unsure-dead" } else { "unsure" },
                *attempts,
                None,
                until - now,
            ),
        }
    }

    #[test]
    fn decide_follows_the_rules_of_spec_5_as_a_table() {
        let plain = config(&[]);
        let fast = config(&[("WHATSAPP_RETRY_BASE_MS", "10")]);
        let invite = config(&[("WHATSAPP_INVITE_TEMPLATE", "order_link")]);
        let now = 1_000_000;
        let (c, l, t, x) = (
            Kind::Confirmation,
            Kind::Link,
            Variant::Template,
            Variant::Text,
        );
        let accepted = || SendOutcome::Accepted {
            message_id: "wamid.1".into(),
        };
        // (config, row kind, row variant, attempts so far, sent as, outcome)
        //   → (decision, attempts recorded, variant, delay in ms: exact or a range)
        type Case<'a> = (
            &'a Config,
            Kind,
            Variant,
            u32,
            Variant,
            SendOutcome,
            (&'static str, u32, Option<Variant>),
            (i64, i64),
        );
        let table: Vec<Case> = vec![
            // Accepted: sent, attempt counted, the variant it went out as.
            (&plain, c, t, 0, t, accepted(), ("sent", 1, Some(t)), (0, 0)),
            (
                &invite,
                l,
                t,
                1,
                t,
                accepted(),
                ("sent", 2, Some(t)),
                (0, 0),
            ),
            // 5xx/429: backoff base·2^(n-1), jittered into [half, all].
            (
                &plain,
                c,
                t,
                0,
                t,
                transient(None, None),
                ("retry", 1, Some(t)),
                (500, 1000),
            ),
            (
                &plain,
                c,
                t,
                1,
                t,
                transient(None, None),
                ("retry", 2, Some(t)),
                (1000, 2000),
            ),
            // Retry-After wins when longer.
            (
                &plain,
                c,
                t,
                0,
                t,
                transient(None, Some(Duration::from_secs(7))),
                ("retry", 1, Some(t)),
                (7000, 7000),
            ),
            // Pair rate (131056): at least a second, this row only.
            (
                &fast,
                c,
                t,
                0,
                t,
                transient(Some(PAIR_RATE_LIMIT), None),
                ("retry", 1, Some(t)),
                (1000, 1000),
            ),
            // The last attempt dead-letters.
            (
                &plain,
                c,
                t,
                2,
                t,
                transient(None, None),
                ("dead", 3, None),
                (0, 0),
            ),
            // 24-hour rule: a text link refused with 131047 goes again at once
            // as the invite template, or dies naming the setting.
            (
                &invite,
                l,
                x,
                0,
                x,
                rejected(OUTSIDE_WINDOW),
                ("retry", 1, Some(t)),
                (0, 0),
            ),
            (
                &plain,
                l,
                x,
                0,
                x,
                rejected(OUTSIDE_WINDOW),
                ("dead", 1, None),
                (0, 0),
            ),
            // …but a confirmation (already a template) refused so just dies.
            (
                &invite,
                c,
                t,
                0,
                t,
                rejected(OUTSIDE_WINDOW),
                ("dead", 1, None),
                (0, 0),
            ),
            (
                &plain,
                c,
                t,
                0,
                t,
                rejected(131026),
                ("dead", 1, None),
                (0, 0),
            ),
            // §5: a lost answer is not sent again at once: it waits
            // WHATSAPP_UNSURE_WAIT_MS (60 s by default) for Meta's status,
            // its send counted; its last attempt dead-letters it unsent.
            (
                &plain,
                c,
                t,
                0,
                t,
                unsure(),
                ("unsure", 1, None),
                (60_000, 60_000),
            ),
            (
                &plain,
                c,
                t,
                2,
                t,
                unsure(),
                ("unsure-dead", 3, None),
                (60_000, 60_000),
            ),
        ];
        for (i, (config, kind, variant, attempts, sent_as, outcome, want, (lo, hi))) in
            table.into_iter().enumerate()
        {
            let d = decide(&due(kind, variant, attempts), sent_as, outcome, config, now);
            let (what, n, v, delay) = shape(&d, now);
            assert_eq!((what, n, v), want, "row {i}: {d:?}");
            assert!(
                (lo..=hi).contains(&delay),
                "row {i}: delay {delay} not in {lo}..={hi}"
            );
        }
        let dead = decide(&due(l, x, 0), x, rejected(OUTSIDE_WINDOW), &plain, now);
        assert!(
            matches!(dead, Decision::Dead { ref error, .. } if error.contains("WHATSAPP_INVITE_TEMPLATE"))
        );
        for code in CONFIG_FAULT_CODES {
            let outcome = SendOutcome::ConfigFault {
                code,
                reason: "bad token".into(),
            };
            let d = decide(&due(c, t, 0), t, outcome, &plain, now);
            assert!(matches!(d, Decision::Fault { code: got, .. } if got == code));
        }
        // Pure: the same inputs, the same answer (jitter comes from the row).
        let once = decide(&due(c, t, 1), t, transient(None, None), &plain, now);
        assert_eq!(
            once,
            decide(&due(c, t, 1), t, transient(None, None), &plain, now)
        );
    }

    #[test]
    fn the_2026_codes_end_a_message_and_131062_goes_to_the_phone_as_rows() {
        let plain = config(&[]);
        let now = 1_000_000;
        let bsuid = crate::domain::Bsuid::parse("IN.1648738043044942").unwrap();
        let mut to_user = due(Kind::ElderReply, Variant::Text, 0);
        to_user.recipient = Recipient::User(bsuid);
        let to_phone = due(Kind::ElderReply, Variant::Text, 0);
        // (row, code) → decision
        let table = [
            (&to_phone, 131026, "dead"),
            (&to_phone, 131049, "dead"),
            (&to_phone, 130472, "dead"),
            (&to_user, 131026, "dead"),
            (&to_user, 131049, "dead"),
            (&to_user, 130472, "dead"),
            // Addressed by BSUID: again, to the number (dead there if none).
            (&to_user, 131062, "to_phone"),
            // Already addressed to a number: nothing else to try.
            (&to_phone, 131062, "dead"),
        ];
        for (i, (row, code, want)) in table.into_iter().enumerate() {
            let d = decide(row, Variant::Text, rejected(code), &plain, now);
            assert_eq!(shape(&d, now).0, want, "row {i}: {d:?}");
            assert_eq!(shape(&d, now).1, 1, "row {i}: the attempt counts");
        }
        // Whatever HTTP status carries them, they are not retried.
        for code in [131026, 131049, 130472, 131062] {
            let body = format!(r#"{{"error":{{"message":"m","code":{code}}}}}"#);
            assert!(
                matches!(
                    crate::whatsapp::classify(500, None, &body),
                    SendOutcome::Rejected { code: Some(c), .. } if c == code
                ),
                "{code}"
            );
        }
    }

    #[test]
    fn the_link_goes_by_the_window_and_records_which_way_as_a_table() {
        use LinkVia::*;
        let plain = config(&[]);
        let invite = config(&[("WHATSAPP_INVITE_TEMPLATE", "order_link")]);
        let in_conf = config(&[("WHATSAPP_LINK_IN", "confirmation")]);
        let in_button = config(&[("WHATSAPP_LINK_IN", "button")]);
        let (l, x, t) = (Kind::Link, Variant::Text, Variant::Template);
        // (config, row variant, window open) → sent as
        let ways = [
            (&plain, x, false, x),
            (&plain, x, true, x),
            (&invite, x, true, x),
            (&invite, x, false, t),
            // Requeued after a 131047: a template whatever the window.
            (&invite, t, true, t),
        ];
        for (i, (cfg, variant, open, want)) in ways.into_iter().enumerate() {
            assert_eq!(
                link_variant(cfg, &due(l, variant, 0), || open),
                want,
                "row {i}"
            );
        }
        // Without the template the window is never read.
        link_variant(&plain, &due(l, x, 0), || panic!("window read"));
        // (config, kind, claimed as, sent as) → link_via
        let vias = [
            (&plain, l, x, x, Some(TextNoTemplate)),
            (&invite, l, x, x, Some(TextWindowOpen)),
            (&invite, l, x, t, Some(TemplateWindowClosed)),
            (&invite, l, t, t, Some(TemplateAfter131047)),
            (&plain, Kind::Confirmation, t, t, None),
            (&in_conf, Kind::Confirmation, t, t, Some(InConfirmation)),
            (&in_button, Kind::Confirmation, t, t, Some(InButton)),
            (&in_button, Kind::ElderReply, x, x, None),
        ];
        for (i, (cfg, kind, claimed, sent, want)) in vias.into_iter().enumerate() {
            assert_eq!(link_via(cfg, kind, claimed, sent), want, "row {i}");
        }
    }

    #[test]
    fn the_confirmation_carries_the_link_as_link_in_says() {
        let token = "0f8fad5b-d9cb-469f-a165-70867728950e";
        let mut job = due(Kind::Confirmation, Variant::Template, 0);
        job.token = Some(token.into());
        let body = |pairs: &[(&'static str, &'static str)]| -> serde_json::Value {
            let cfg = config(pairs);
            serde_json::from_str(&render(&cfg, &job).unwrap().to_json()).unwrap()
        };
        let plain = body(&[]);
        assert_eq!(plain["template"]["components"].as_array().unwrap().len(), 1);
        assert_eq!(
            plain["template"]["components"][0]["parameters"]
                .as_array()
                .unwrap()
                .len(),
            3
        );
        let conf = body(&[
            ("WHATSAPP_LINK_IN", "confirmation"),
            ("APP_BASE_URL", "https://shop.example"),
        ]);
        assert_eq!(
            conf["template"]["components"][0]["parameters"][3],
            serde_json::json!({"type": "text", "text": format!("https://shop.example/w/invite/{token}")})
        );
        let button = body(&[("WHATSAPP_LINK_IN", "button")]);
        assert_eq!(
            button["template"]["components"][1],
            serde_json::json!({"type": "button", "sub_type": "url", "index": "0",
                               "parameters": [{"type": "text", "text": token}]})
        );
        assert_eq!(
            button["template"]["components"][0]["parameters"]
                .as_array()
                .unwrap()
                .len(),
            3
        );
    }

    #[test]
    fn pauses_start_at_fifteen_steps_and_double_up_to_the_bound() {
        let base = Duration::from_millis(10);
        let first = next_pause(None, base);
        assert_eq!(first, Duration::from_millis(150));
        assert_eq!(next_pause(Some(first), base), Duration::from_millis(300));
        assert_eq!(
            next_pause(Some(Duration::from_secs(2)), base),
            Duration::from_millis(3000)
        );
    }

    /// A transport that answers from a script (then accepts) and records
    /// what it was asked to send.
    struct Scripted {
        script: Mutex<VecDeque<SendOutcome>>,
        sent: Arc<Mutex<Vec<String>>>,
    }

    impl Transport for Scripted {
        fn send(&self, message: &Message) -> SendOutcome {
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
        let transport = Scripted {
            script: Mutex::new(script.into()),
            sent: sent.clone(),
        };
        let sender = Sender::paced(
            db.clone(),
            Arc::new(config(&[])),
            Box::new(transport),
            pacer,
            Arc::new(crate::metrics::Metrics::new()),
        );
        Rig {
            _dir: dir,
            path,
            sender,
            sent,
            db,
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
        // (Plus the few real milliseconds the step took.)
        assert_eq!(rig.drain(T0 + 1100), vec![Step::Sent, Step::Sent]);
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
        assert_eq!(rig.drain(T0 + 15_100), vec![Step::Sent, Step::Sent]);
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
            .run_blocking(|c| outbox::claim(c, "gone:0", T0, T0 + 30_000, 10))
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
            .run_blocking(move |c| {
                outbox::mark_retry(c, &id, "gone:0", 1, Variant::Template, T0, "late", T0)
            })
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
            .run_blocking(move |c| outbox::unsure::record_proof(c, &p, T0 + 1000))
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
        assert_eq!(rig.drain(T0 + 60_100), vec![Step::Sent, Step::Sent]);
        assert_eq!(rig.sent.lock().unwrap().len(), 3);
    }

    /// SPEC §5 "may be sent a second time": when the second copy's answer
    /// is lost too, the message is dead-lettered, never sent a third time.
    #[test]
    fn a_second_lost_answer_dead_letters_the_message_instead_of_a_third_copy() {
        let rig = rig(vec![unsure(), unsure()]);
        assert_eq!(rig.drain(T0), vec![Step::Unsure]);
        assert_eq!(rig.drain(T0 + 60_100), vec![Step::Unsure]);
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
            .run_blocking(|c| outbox::claim(c, "gone:0", T0, T0 + 30_000, 1))
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
                "SELECT graph_message_id FROM outbox WHERE order_id = ?1 AND kind = 'confirmation'",
                [other],
                |r| r.get(0),
            )
            .unwrap();
        let (p, o) = (proof(&order, &known), order.clone());
        let none = rig
            .db
            .writer
            .run_blocking(move |c| {
                outbox::unsure::record_proof(c, &p, T0 + 1)?;
                // The real one, while the dead sender's lease still holds.
                outbox::unsure::record_proof(c, &proof(&o, "wamid.INFLIGHT"), T0 + 2)
            })
            .unwrap();
        assert_eq!(none, None);
        // The lease runs out: settled by the kept proof, never resent.
        assert_eq!(rig.drain(T0 + 30_000), vec![Step::Sent]);
        assert_eq!(rig.drain(T0 + 24 * HOUR), vec![]);
        assert_eq!(rig.sent.lock().unwrap().len(), sent + 1);
        let id: String = crate::db::open_reader(&rig.path)
            .unwrap()
            .query_row(
                "SELECT graph_message_id FROM outbox WHERE order_id = ?1 AND kind = 'confirmation'",
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
    fn tokens_are_masked_in_texts() {
        let t = InviteToken::generate().as_string();
        let masked =
            crate::logging::mask_uuids(&format!("Token%3A%20{t} end {}", t.to_uppercase()));
        assert!(!masked.contains(&t));
        assert!(!masked.contains(&t.to_uppercase()));
        assert!(masked.contains(&t[..8]));
    }
}
