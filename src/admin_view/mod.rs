//! The one read path of the admin views (SPEC §10, §12): the JSON API and the
//! merchant's page both call these queries, so what the page shows and what
//! the API answers cannot drift apart. Plain functions on a `&Connection`;
//! tokens are masked here, before any caller sees a row. One room per view:
//! one order and its timeline, the orders list, the overview's counts, the
//! elders' chats and contacts, the outbox's messages.

pub mod chats;
mod format;
pub mod messages;
pub mod order;
pub mod orders;
pub mod overview;
