//! Types that can only hold valid values; everything past the HTTP edge
//! works with these instead of raw strings.

mod bsuid;
mod money;
mod note;
mod order_id;
mod payment_event;
mod phone;
#[cfg(test)]
mod properties;
mod time_zone;
mod token;

pub use bsuid::Bsuid;
pub use money::Money;
pub use note::Note;
pub use order_id::OrderId;
pub use payment_event::{
    reject_duplicate_keys, EventError, EventKind, Payment, PaymentEvent, PAYMENT_SUCCEEDED,
};
pub use phone::{mask_digits, PhoneE164, Region};
pub use time_zone::AdminZone;
pub use token::{mask_token, InviteToken};
