//! Row ids, one way for every table.

/// Row ids are time-ordered (UUID v7): new rows append to the end of each
/// primary-key index instead of landing on a random page, so a batch of
/// webhooks dirties (and writes to the WAL) a few pages rather than one per
/// row. Invite tokens stay random v4: they are secrets, ids are not.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().hyphenated().to_string()
}
