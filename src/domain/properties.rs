//! Property tests for everything that parses hostile input: no panic, no
//! garbage accepted, and whatever is accepted keeps its meaning.

use super::*;
use proptest::prelude::*;

const CURRENCIES: [&str; 6] = ["INR", "USD", "JPY", "KWD", "EUR", "CLF"];

fn order_id_strategy() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._:/-]{1,64}"
}

/// Text that tries hard to break things: quotes, SQL, HTML, emoji, RTL,
/// control characters and whitespace runs.
fn nasty_text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            Just("'; DROP TABLE orders; --".to_string()),
            Just("\"quoted\" \\ back\\slash".to_string()),
            Just("<script>alert(1)</script>&amp;".to_string()),
            Just("😀👍🏽 family 👨‍👩‍👧".to_string()),
            Just("\u{202e}مرحبا بالعالم\u{202c} שלום".to_string()),
            Just("\n\t  \r\n".to_string()),
            "\\PC{0,12}",
        ],
        0..6,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    // A fixed seed keeps CI reproducible; the cargo fuzz target is where
    // open-ended exploration happens (and PROPTEST_CASES raises the count).
    #![proptest_config(ProptestConfig {
        cases: 512,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x0_0D3E_71AC),
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_event_parser_never_panics_on_bytes(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = PaymentEvent::parse(&body, None);
    }

    #[test]
    fn the_event_parser_never_panics_on_json_like_text(body in "\\{\"id\":\"[a-z0-9]{0,4}\",\"type\":\"payment_succeeded\",\"data\":\\{\\PC{0,200}\\}\\}") {
        let _ = PaymentEvent::parse(body.as_bytes(), Some(Region::parse("IN").unwrap()));
    }

    #[test]
    fn valid_events_round_trip(
        order in order_id_strategy(),
        amount in 0i64..=i64::MAX,
        currency in prop::sample::select(&CURRENCIES[..]),
        note in nasty_text(),
    ) {
        let body = serde_json::json!({
            "id": "evt_1", "type": "payment_succeeded",
            "data": {"order_id": order, "payment_id": "pay_1", "amount": amount,
                     "currency": currency, "customer_phone": "+91 98765 43210", "note": note}
        }).to_string();
        let event = PaymentEvent::parse(body.as_bytes(), None).unwrap();
        let EventKind::PaymentSucceeded(p) = event.kind else { panic!("not a payment") };
        prop_assert_eq!(p.order_id.as_str(), order.as_str());
        prop_assert_eq!(p.amount.minor_units(), amount);
        prop_assert_eq!(p.amount.currency_code(), currency);
        prop_assert_eq!(p.note, Note::clean(&note));
    }

    #[test]
    fn order_ids_are_accepted_exactly_when_they_fit_the_alphabet(raw in "\\PC{0,70}") {
        let fits = !raw.is_empty() && raw.len() <= 64
            && raw.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:/".contains(c));
        prop_assert_eq!(OrderId::parse(&raw).is_ok(), fits);
    }

    #[test]
    fn accepted_phones_are_e164_digits_and_stable(raw in "[+]?[0-9 ()+.-]{0,20}|\\PC{0,20}") {
        if let Ok(phone) = PhoneE164::parse(&raw, None) {
            let d = phone.digits();
            // E.164 allows as few as 7 digits (e.g. +290 for Saint Helena,
            // +683 for Niue, four-digit subscriber numbers).
            prop_assert!(d.len() >= 7 && d.len() <= 15, "{}", d);
            prop_assert!(d.bytes().all(|b| b.is_ascii_digit()));
            prop_assert!(!d.starts_with('0'));
            let again = PhoneE164::parse(&format!("+{d}"), None).unwrap();
            prop_assert_eq!(again.digits(), d);
        }
    }

    #[test]
    fn amounts_display_with_the_currencys_digits(
        amount in 0i64..=i64::MAX,
        currency in prop::sample::select(&CURRENCIES[..]),
    ) {
        let m = Money::new(amount, currency).unwrap();
        let shown = m.display();
        let (code, number) = shown.split_once(' ').unwrap();
        prop_assert_eq!(code, currency);
        let digits: String = number.chars().filter(char::is_ascii_digit).collect();
        prop_assert_eq!(digits.trim_start_matches('0').to_string(), amount.to_string().trim_start_matches('0').to_string());
        let minor = number.split_once('.').map(|(_, f)| f.len()).unwrap_or(0);
        let expected = match currency { "JPY" => 0, "KWD" => 3, "CLF" => 4, _ => 2 };
        prop_assert_eq!(minor, expected);
    }

    #[test]
    fn cleaned_notes_hold_no_whitespace_runs(raw in nasty_text()) {
        if let Some(note) = Note::clean(&raw) {
            let s = note.as_str();
            prop_assert!(!s.is_empty());
            prop_assert!(!s.contains(['\n', '\t', '\r']));
            prop_assert!(!s.contains("  "));
            prop_assert_eq!(s.trim(), s);
            let visible = |t: &str| t.chars().filter(|c| !c.is_whitespace()).collect::<String>();
            if raw.chars().count() < Note::MAX_CHARS {
                prop_assert_eq!(visible(s), visible(&raw));
            }
        } else {
            prop_assert!(raw.trim().is_empty());
        }
    }

    #[test]
    fn cleaned_notes_hold_no_control_character_and_something_visible(
        raw in prop::collection::vec(
            prop_oneof![
                "\\PC{0,6}",
                "[\u{0}-\u{1f}\u{7f}-\u{9f}]{1,3}",
                prop::sample::select(vec!["\u{200B}", "\u{200C}", "\u{200D}", "\u{2060}", "\u{FEFF}", " ", "\u{a0}"])
                    .prop_map(str::to_owned),
            ],
            0..8,
        ).prop_map(|parts| parts.concat())
    ) {
        let visible = raw.chars().any(super::note::is_visible);
        match Note::clean(&raw) {
            Some(note) => {
                prop_assert!(visible, "{raw:?} has nothing visible but gave {note:?}");
                prop_assert!(!note.as_str().chars().any(char::is_control), "{note:?}");
                prop_assert!(note.as_str().chars().any(super::note::is_visible));
            }
            None => prop_assert!(!visible, "{raw:?} has visible characters"),
        }
    }

    #[test]
    fn a_key_repeated_in_any_object_at_any_depth_is_invalid(
        path in prop::collection::vec(("[a-z]{1,6}", any::<bool>()), 0..5),
        dup in "[a-z_]{1,10}",
        first in any::<i64>(),
        second in "[a-z]{0,5}",
        at_top in any::<bool>(),
    ) {
        // The innermost object holds the key twice; each step outwards wraps
        // it in an object, or in an array inside an object.
        let mut inner = format!("{{\"{dup}\":{first},\"{dup}\":\"{second}\"}}");
        for (name, array) in path.iter().rev() {
            inner = if *array {
                format!("{{\"{name}\":[1,{inner}]}}")
            } else {
                format!("{{\"{name}\":{inner}}}")
            };
        }
        let fields = "\"order_id\":\"ORD-1\",\"payment_id\":\"p\",\"amount\":1,\"currency\":\"INR\"";
        let body = if at_top {
            format!("{{\"id\":\"e\",\"type\":\"payment_succeeded\",\"data\":{{{fields}}},\"x\":{inner}}}")
        } else {
            format!("{{\"id\":\"e\",\"type\":\"payment_succeeded\",\"data\":{{{fields},\"x\":{inner}}}}}")
        };
        prop_assert!(
            matches!(PaymentEvent::parse(body.as_bytes(), None), Err(EventError::Invalid(_))),
            "{}", body
        );
        // Without the repetition the same body is a payment.
        let once = body.replacen(&format!("\"{dup}\":{first},"), "", 1);
        prop_assert!(PaymentEvent::parse(once.as_bytes(), None).is_ok(), "{}", once);
    }

    #[test]
    fn token_parsing_never_panics_and_canonicalises(raw in "\\PC{0,40}") {
        if let Some(t) = InviteToken::parse(&raw) {
            prop_assert_eq!(t.as_string(), raw.to_lowercase());
        }
        let _ = InviteToken::find_all(&raw);
    }

    #[test]
    fn generated_tokens_are_found_inside_any_text(prefix in nasty_text(), suffix in nasty_text()) {
        let t = InviteToken::generate();
        let text = format!("{prefix}{}{suffix}", t.as_string().to_uppercase());
        prop_assert!(InviteToken::find_all(&text).contains(&t));
    }
}
