//! What `orderlink check` warns about in the first hour: a variable orderlink
//! never reads (most often a typo that silently leaves a default, such as
//! sandbox mode), and tokens or secrets too short to be safe or real.
//! Warnings, not errors: the server still starts with them.

/// Every variable orderlink (or its test harness) reads, besides Rocket's own
/// `ROCKET_*`. The one list to extend when a variable is added.
pub const KNOWN: &[&str] = &[
    // WhatsApp: sending
    "WHATSAPP_TOKEN",
    "WHATSAPP_PHONE_NUMBER_ID",
    "WHATSAPP_BUSINESS_NUMBER_E164",
    "WHATSAPP_API_BASE",
    "WHATSAPP_TEMPLATE_NAME",
    "WHATSAPP_TEMPLATE_LANG",
    "WHATSAPP_INVITE_TEMPLATE",
    "WHATSAPP_MAX_ATTEMPTS",
    "WHATSAPP_RETRY_BASE_MS",
    "WHATSAPP_TIMEOUT_MS",
    "WHATSAPP_MAX_MPS",
    "WHATSAPP_LINK_IN",
    "WHATSAPP_UNSURE_WAIT_MS",
    "SEND_WORKERS",
    // WhatsApp: the elder's chat
    "WHATSAPP_VERIFY_TOKEN",
    "WHATSAPP_APP_SECRET",
    "ELDER_REPLY_TEXT",
    // payments and links
    "PAYMENT_WEBHOOK_SECRET",
    "RAZORPAY_WEBHOOK_SECRET",
    "RAZORPAY_ORDER_WAIT_MS",
    "STRIPE_WEBHOOK_SECRET",
    "CASHFREE_CLIENT_SECRET",
    "APP_BASE_URL",
    "CONFIRMATION_NOTE",
    "TOKEN_TTL_DAYS",
    "PHONE_DEFAULT_REGION",
    // storage
    "DATABASE_PATH",
    "DATABASE_URL",
    "DATABASE_POOL_SIZE",
    // operating it
    "ADMIN_TOKEN",
    "ADMIN_TIME_ZONE",
    "METRICS_TOKEN",
    "RUST_LOG",
    // the test harness (tests/, .ci/)
    "ORDERLINK_TEST_POSTGRES_URL",
    "ORDERLINK_TEST_STORE",
    "ORDERLINK_CHROME",
    "ORDERLINK_CHROMEDRIVER",
];

/// A name with one of these prefixes is meant for orderlink (or a gateway it
/// serves) even when it is far from every known name.
const OURS: &[&str] = &[
    "WHATSAPP_",
    "ORDERLINK_",
    "RAZORPAY_",
    "STRIPE_",
    "CASHFREE_",
    "PAYMENT_",
    "ADMIN_",
    "METRICS_",
    "DATABASE_",
];

/// Below this, a bearer token can be guessed: each guess is one cheap request.
pub const MIN_TOKEN_CHARS: usize = 16;

/// Below this, a gateway secret is not one the gateway generated (Stripe's and
/// Cashfree's are much longer), and as an HMAC key it can be found offline by
/// trying keys against a single signed delivery.
pub const MIN_GATEWAY_SECRET_CHARS: usize = 16;

const TOKENS: &[&str] = &["ADMIN_TOKEN", "METRICS_TOKEN"];
const GATEWAY_SECRETS: &[&str] = &[
    "RAZORPAY_WEBHOOK_SECRET",
    "STRIPE_WEBHOOK_SECRET",
    "CASHFREE_CLIENT_SECRET",
];

/// Edits (insert, delete, replace, swap two neighbours) from `a` to `b`.
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

/// The known name `name` most likely meant (case ignored): the only one
/// holding every word of it (`RAZORPAY_SECRET`, `DATABASE_POOL`), or else the
/// nearest one a typo away (`WHATSAPP_TOKN`).
fn closest(name: &str) -> Option<&'static str> {
    let upper = name.to_ascii_uppercase();
    let words: Vec<&str> = upper.split('_').filter(|w| !w.is_empty()).collect();
    let mut holding = KNOWN.iter().filter(|known| {
        let theirs: Vec<&str> = known.split('_').collect();
        words.len() > 1 && words.iter().all(|w| theirs.contains(w))
    });
    if let (Some(only), None) = (holding.next(), holding.next()) {
        return Some(only);
    }
    let within = (upper.len() / 4).max(2);
    KNOWN
        .iter()
        .map(|known| (distance(&upper, known), *known))
        .filter(|(d, _)| *d <= within)
        .min_by_key(|(d, _)| *d)
        .map(|(_, known)| known)
}

/// One line for a name orderlink does not read but that looks meant for it:
/// it carries one of our prefixes, or it is a typo's distance from a known
/// name. `None` for every other variable of the environment.
pub fn unknown_variable(name: &str) -> Option<String> {
    if KNOWN.contains(&name) || name.starts_with("ROCKET_") {
        return None;
    }
    let ours = OURS
        .iter()
        .any(|p| name.to_ascii_uppercase().starts_with(p));
    match closest(name) {
        Some(known) => Some(format!(
            "{name} is not a variable orderlink reads; did you mean {known}? (until it is renamed, {known} keeps its default)"
        )),
        None if ours => Some(format!(
            "{name} is not a variable orderlink reads (no known name is close; .env.example lists them all)"
        )),
        None => None,
    }
}

/// Lines for tokens and gateway secrets that are set but too short; `get`
/// reads a variable (trimmed, empty as unset). Values are never printed.
pub fn short_secrets(get: impl Fn(&str) -> Option<String>) -> Vec<String> {
    let mut lines = Vec::new();
    for name in TOKENS {
        if let Some(value) = get(name) {
            let n = value.chars().count();
            if n < MIN_TOKEN_CHARS {
                lines.push(format!(
                    "{name} is {n} characters: under {MIN_TOKEN_CHARS} it can be guessed, one request per try; use a random one (openssl rand -hex 24)"
                ));
            }
        }
    }
    for name in GATEWAY_SECRETS {
        let Some(value) = get(name) else { continue };
        // Rotation: several secrets separated by spaces, each judged alone;
        // Stripe's fixed `whsec_` prefix is not secret.
        for (i, secret) in value.split_whitespace().enumerate() {
            let n = secret
                .strip_prefix("whsec_")
                .unwrap_or(secret)
                .chars()
                .count();
            if n < MIN_GATEWAY_SECRET_CHARS {
                let which = if value.split_whitespace().count() > 1 {
                    format!(" (secret {} of the list)", i + 1)
                } else {
                    String::new()
                };
                lines.push(format!(
                    "{name}{which} is {n} characters: too short to be real; a gateway generates longer ones (copy it whole from the dashboard), and a key under {MIN_GATEWAY_SECRET_CHARS} characters can be found by trying keys against one signed delivery"
                ));
            }
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typo_is_named_with_the_variable_it_most_likely_meant() {
        let line = unknown_variable("WHATSAPP_TOKN").expect("a warning");
        assert!(line.contains("did you mean WHATSAPP_TOKEN?"), "{line}");
        for (typo, meant) in [
            ("ADMIN_TOKNE", "ADMIN_TOKEN"),
            ("whatsapp_token", "WHATSAPP_TOKEN"),
            ("APP_BASE_ULR", "APP_BASE_URL"),
            ("RAZORPAY_SECRET", "RAZORPAY_WEBHOOK_SECRET"),
            ("STRIPE_WEBHOOK_SECERT", "STRIPE_WEBHOOK_SECRET"),
            ("DATABASE_POOL", "DATABASE_POOL_SIZE"),
            ("WHATSAPP_LINK", "WHATSAPP_LINK_IN"),
        ] {
            let line = unknown_variable(typo).unwrap_or_default();
            assert!(
                line.contains(&format!("did you mean {meant}?")),
                "{typo}: {line}"
            );
        }
    }

    #[test]
    fn every_known_name_and_the_rest_of_the_environment_pass() {
        for name in KNOWN
            .iter()
            .chain(&["ROCKET_PORT", "ROCKET_CONFIG", "PATH", "HOME", "CI"])
        {
            assert_eq!(unknown_variable(name), None, "{name}");
        }
    }

    #[test]
    fn a_name_with_our_prefix_far_from_every_known_one_is_still_named() {
        let line = unknown_variable("CASHFREE_APP_ID").expect("a warning");
        assert!(
            line.starts_with("CASHFREE_APP_ID is not a variable"),
            "{line}"
        );
        assert!(!line.contains("did you mean"), "{line}");
    }

    #[test]
    fn the_known_list_holds_each_name_once() {
        let mut names = KNOWN.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), KNOWN.len());
    }

    #[test]
    fn short_tokens_and_secrets_are_named_with_their_bound_never_their_value() {
        let env = [
            ("ADMIN_TOKEN", "sh0rt"),
            ("METRICS_TOKEN", "0123456789abcdef"),
            ("RAZORPAY_WEBHOOK_SECRET", "q7z"),
            ("STRIPE_WEBHOOK_SECRET", "whsec_0123456789abcdef whsec_tiny"),
            ("CASHFREE_CLIENT_SECRET", "cfsk_ma_prod_0123456789abcdef"),
        ];
        let get = |n: &str| {
            env.iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.to_string())
        };
        let lines = short_secrets(get);
        assert_eq!(lines.len(), 3, "{lines:#?}");
        assert!(
            lines[0].starts_with("ADMIN_TOKEN is 5 characters: under 16"),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].starts_with("RAZORPAY_WEBHOOK_SECRET is 3 characters"),
            "{}",
            lines[1]
        );
        assert!(
            lines[2].starts_with("STRIPE_WEBHOOK_SECRET (secret 2 of the list) is 4 characters"),
            "{}",
            lines[2]
        );
        for line in &lines {
            assert!(
                !line.contains("sh0rt") && !line.contains("q7z") && !line.contains("tiny"),
                "{line}"
            );
        }
    }
}
