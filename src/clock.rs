//! The wall clock in one place: every stored time is milliseconds since the
//! Unix epoch, and code that must be testable without sleeping (the
//! sender's step) takes the time as an argument instead of reading it here.

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
