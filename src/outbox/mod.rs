//! The durable outbox: plain functions on a `&Connection`. A message exists
//! here before anyone tries to send it, and its row records every outcome,
//! so a restart resumes exactly where the last process stopped.
//!
//! Its rooms: `row` (the vocabulary a row is written in), `queue` (queued,
//! claimed, sent, retried, dead), `follow_up` (what an outcome sets off),
//! `delivery` (Meta's statuses), `window` (the customer's 24-hour window
//! and the link's way), `unsure` (sends whose answer was lost). They name
//! each other directly; this file only gathers their names.

mod delivery;
mod follow_up;
mod queue;
pub mod row;
pub mod unsure;
mod window;
pub use delivery::{
    apply_pending, apply_status, may_requeue, move_reply_slots, prune_pending, status_lock,
    Pricing, StatusUpdate,
};
pub use queue::{
    claim, depth, due_now_where_error, enqueue, enqueue_order, mark_dead, mark_retry, mark_sent,
    next_due_at, release, requeue, Due, Requeue,
};
pub(crate) use row::text_enum;
pub use row::{
    DeliveryState, Kind, LinkVia, Recipient, Status, Variant, CANCELLED, CONFIRMATION, DEAD,
    ELDER_REPLY, LINK, QUEUED, SENDING, SENT, WAITING,
};
pub use window::{last_customer_message_at, retry_to_phone, window_open, LINK_WINDOW_MS};
