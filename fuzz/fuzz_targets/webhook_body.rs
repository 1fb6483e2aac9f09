//! Feeds arbitrary bytes to the payment webhook's body parser, with and
//! without a default region, and checks what it accepts is well-formed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orderlink::domain::{EventKind, PaymentEvent, Region};

fuzz_target!(|body: &[u8]| {
    for region in [None, Region::parse("IN").ok()] {
        if let Ok(event) = PaymentEvent::parse(body, region) {
            assert!(!event.event_id.is_empty());
            if let EventKind::PaymentSucceeded(p) = event.kind {
                assert!(!p.order_id.as_str().is_empty() && p.order_id.as_str().len() <= 64);
                assert!(p.amount.minor_units() >= 0);
                let shown = p.amount.display();
                assert!(shown.starts_with(p.amount.currency_code()));
                if let Ok(phone) = p.phone {
                    assert!(phone.digits().bytes().all(|b| b.is_ascii_digit()));
                }
                if let Some(note) = p.note {
                    assert!(!note.as_str().contains(['\n', '\t']));
                }
            }
        }
    }
});
