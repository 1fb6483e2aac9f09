//! env_logger behind a filter that masks what must never reach a log:
//! invite tokens (any UUID), phone numbers (runs of 7+ digits) and the
//! configured secrets. It sits under every log line, Rocket's and hyper's
//! included, so a request log of `/w/invite/{token}` cannot leak a token.

use log::{Log, Metadata, Record};
use std::sync::RwLock;

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());
/// Digit runs that are not anybody's phone (the sandbox's placeholder
/// business number) and may be shown whole.
static PUBLIC_NUMBERS: RwLock<Vec<String>> = RwLock::new(Vec::new());

struct Masking {
    inner: env_logger::Logger,
}

/// Installs the logger once. `RUST_LOG` chooses levels; Rocket's own chatter
/// is kept to warnings unless asked for.
pub fn init() {
    let inner = env_logger::Builder::from_env(
        env_logger::Env::default()
            .default_filter_or("info,rocket=warn,hyper=warn,_=warn,refinery_core=warn"),
    )
    .format_timestamp_millis()
    .build();
    let level = inner.filter();
    if log::set_boxed_logger(Box::new(Masking { inner })).is_ok() {
        log::set_max_level(level);
    }
}

/// Lets a number that is nobody's phone appear whole in the log.
pub fn register_public_number(number: &str) {
    if let Ok(mut s) = PUBLIC_NUMBERS.write() {
        s.push(number.to_owned());
    }
}

/// Adds values (tokens, app secrets) to blank wherever they appear.
pub fn register_secrets(secrets: Vec<String>) {
    if let Ok(mut s) = SECRETS.write() {
        s.extend(secrets);
    }
}

impl Log for Masking {
    fn enabled(&self, metadata: &Metadata) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record) {
        if !self.inner.enabled(record.metadata()) {
            return;
        }
        let text = mask(&record.args().to_string());
        self.inner.log(
            &Record::builder()
                .args(format_args!("{text}"))
                .level(record.level())
                .target(record.target())
                .module_path(record.module_path())
                .file(record.file())
                .line(record.line())
                .build(),
        );
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

pub fn mask(text: &str) -> String {
    let mut out = mask_uuids(text);
    out = mask_long_digit_runs(&out);
    if let Ok(secrets) = SECRETS.read() {
        for s in secrets.iter() {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "***");
            }
        }
    }
    out
}

fn is_uuid_at(b: &[u8], i: usize) -> bool {
    if i + 36 > b.len() {
        return false;
    }
    b[i..i + 36].iter().enumerate().all(|(k, c)| match k {
        8 | 13 | 18 | 23 => *c == b'-',
        _ => c.is_ascii_hexdigit(),
    })
}

/// Masks every UUID-shaped run (any case) to its first eight characters.
pub fn mask_uuids(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut copied = 0;
    while i < b.len() {
        if is_uuid_at(b, i) {
            out.push_str(&text[copied..i + 8]);
            out.push('…');
            i += 36;
            copied = i;
        } else {
            i += 1;
        }
    }
    out.push_str(&text[copied..]);
    out
}

/// Phones are 7 to 15 digits (the shortest valid E.164 numbers have 7);
/// anything that long is shown by its last four.
fn mask_long_digit_runs(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut copied = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() {
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            // Only stand-alone runs: digits glued to letters are ids
            // (hex message ids), not phone numbers.
            let glued = |k: usize| b[k].is_ascii_alphabetic();
            let alone = (start == 0 || !glued(start - 1)) && (i == b.len() || !glued(i));
            let public = || {
                PUBLIC_NUMBERS
                    .read()
                    .map(|p| p.iter().any(|n| n.as_str() == &text[start..i]))
                    .unwrap_or(false)
            };
            if i - start >= 7 && alone && !public() {
                out.push_str(&text[copied..start]);
                out.push_str("***");
                out.push_str(&text[i - 4..i]);
                copied = i;
            }
        } else {
            i += 1;
        }
    }
    out.push_str(&text[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_phones_are_masked_anywhere() {
        let line = "GET /w/invite/3f2b8c1e-9d4a-4e6b-8f0a-1c2d3e4f5a6b to 919876543210 ok 200";
        assert_eq!(mask(line), "GET /w/invite/3f2b8c1e… to ***3210 ok 200");
    }

    #[test]
    fn encoded_links_lose_their_token() {
        let line = "text=Token%3A%203F2B8C1E-9D4A-4E6B-8F0A-1C2D3E4F5A6B";
        assert_eq!(mask(line), "text=Token%3A%203F2B8C1E…");
    }

    #[test]
    fn short_numbers_and_plain_text_are_left_alone() {
        assert_eq!(
            mask("took 123456 µs, ORD-1042 ✓"),
            "took 123456 µs, ORD-1042 ✓"
        );
        // The shortest valid E.164 numbers have seven digits.
        assert_eq!(mask("to +2781000"), "to +***1000");
        assert_eq!(
            mask("sandbox-d691d4945a2f45469df88e12340827f"),
            "sandbox-d691d4945a2f45469df88e12340827f"
        );
    }

    #[test]
    fn registered_secrets_are_blanked() {
        register_secrets(vec!["EAAGsecretvalue".into()]);
        assert_eq!(mask("token EAAGsecretvalue here"), "token *** here");
    }
}
