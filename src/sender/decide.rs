//! What an attempt means for its row (SPEC §5): the retry, 24-hour,
//! pair-rate, dead-letter and unsure rules as pure functions of the row,
//! Meta's answer, the configuration and the time, and the backoffs and
//! pauses they wait. No storage, no clock: the sender's step feeds them.

use super::link::no_invite_template;
use crate::config::Config;
use crate::outbox::{Due, Kind, Recipient, Variant};
use crate::whatsapp::{SendOutcome, BSUID_REFUSED, OUTSIDE_WINDOW, PAIR_RATE_LIMIT};
use rand::Rng;
use std::time::Duration;

/// The longest one backoff waits, however many attempts came before.
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

/// The pause after a configuration fault: the first one, or the previous
/// one doubled up to the bound.
pub fn next_pause(previous: Option<Duration>, base: Duration) -> Duration {
    let (first, max) = pause_bounds(base);
    previous.map_or(first, |p| (p * 2).min(max).max(first))
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

/// A factor in [0.5, 1] from the row and attempt (FNV-1a).
fn jitter(id: &str, attempts: u32) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes().chain(attempts.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    0.5 + 0.5 * ((h >> 11) as f64 / (1u64 << 53) as f64)
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
    use crate::sender::testing::{config, due, rejected, transient, unsure};
    use crate::whatsapp::CONFIG_FAULT_CODES;

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
}
