//! One `Config`, read from the environment (after `.env`) once at start and
//! validated before anything else happens; passed around as managed state.

use crate::domain::{AdminZone, Note, Region};
use crate::signature::{TextSecrets, WebhookSecret};
use std::path::PathBuf;
use std::time::Duration;

/// Every variable orderlink reads, and `check`'s warnings about the others.
pub mod lint;

pub const SANDBOX_BUSINESS_NUMBER: &str = "15550100000";
/// A Graph API version Meta serves today (each is served about two years
/// after its release); docs/going-live.md says how to move on.
pub const DEFAULT_API_BASE: &str = "https://graph.facebook.com/v25.0";

#[derive(Clone)]
pub enum Mode {
    /// No `WHATSAPP_TOKEN`: messages are recorded and logged, never sent.
    Sandbox,
    Live {
        token: String,
        phone_number_id: String,
    },
}

#[derive(Clone)]
pub struct Config {
    pub mode: Mode,
    pub api_base: String,
    pub business_number: String,
    pub business_number_is_placeholder: bool,
    pub app_base_url: String,
    pub webhook_secret: Option<WebhookSecret>,
    pub database_path: PathBuf,
    pub template_name: String,
    pub template_lang: String,
    pub confirmation_note: String,
    pub token_ttl: Duration,
    pub send_workers: usize,
    pub max_attempts: u32,
    pub retry_base: Duration,
    pub timeout: Duration,
    /// SPEC §5: how long a send whose answer was lost waits for Meta's
    /// status before it may go again.
    pub unsure_wait: Duration,
    pub invite_template: Option<String>,
    /// `WHATSAPP_LINK_IN`: where the link goes (§5 "One paid message per order").
    pub link_in: LinkIn,
    pub default_region: Option<Region>,
    pub verify_token: Option<String>,
    pub app_secret: Option<Vec<u8>>,
    pub elder_reply_text: Option<String>,
    pub admin_token: Option<String>,
    /// §12: the zone of the page's times and days (`ADMIN_TIME_ZONE`, UTC unset).
    pub admin_time_zone: AdminZone,
    pub max_mps: u32,
    /// §11: Razorpay, Stripe and Cashfree webhook secrets (each route is 404
    /// in live mode without its own).
    pub gateway_secrets: GatewaySecrets,
    /// §11: how long a Razorpay `payment.captured` that names only
    /// Razorpay's own order id waits for its `order.paid`.
    pub razorpay_order_wait: Duration,

    // §14: `GET /metrics` answers only with this Bearer token; 404 unset.
    pub metrics_token: Option<String>,

    // §13: `postgres://…` keeps everything in PostgreSQL; `database_path`
    // is then not used. Holds a password: never printed (see `secrets`).
    pub database_url: Option<String>,
    /// §13: PostgreSQL connections (and database threads) per instance.
    pub database_pool_size: usize,
}

/// `WHATSAPP_LINK_IN`: the link as its own message after the confirmation,
/// as the confirmation template's fourth body parameter, or as its URL
/// button's suffix. The last two make an order one paid message and never
/// meet the 24-hour window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkIn {
    Message,
    Confirmation,
    Button,
}

impl LinkIn {
    pub fn parse(text: &str) -> Option<LinkIn> {
        match text {
            "message" => Some(LinkIn::Message),
            "confirmation" => Some(LinkIn::Confirmation),
            "button" => Some(LinkIn::Button),
            _ => None,
        }
    }

    /// Whether the order gets a link message of its own.
    pub fn sends_link_message(self) -> bool {
        self == LinkIn::Message
    }
}

impl std::fmt::Debug for Config {
    /// Secrets are never printed, not even by `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("sandbox", &self.is_sandbox())
            .field("api_base", &self.api_base)
            .field("database_path", &self.database_path)
            .finish_non_exhaustive()
    }
}

/// Where the values come from; a map in tests, the process environment in
/// the binary.
pub trait Source {
    fn get(&self, name: &str) -> Option<String>;
}

pub struct Environment;

impl Source for Environment {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl<const N: usize> Source for [(&str, &str); N] {
    fn get(&self, name: &str) -> Option<String> {
        self.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    }
}

/// Every problem found, one line each, each naming its variable.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<String>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join("\n"))
    }
}

struct Reader<'a> {
    source: &'a dyn Source,
    errors: Vec<String>,
}

impl Reader<'_> {
    /// Empty counts as unset, so `ADMIN_TOKEN=` in a `.env` disables admin.
    fn opt(&self, name: &str) -> Option<String> {
        self.source
            .get(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    fn text(&self, name: &str, default: &str) -> String {
        self.opt(name).unwrap_or_else(|| default.to_owned())
    }

    fn number<T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy>(
        &mut self,
        name: &str,
        default: T,
        min: T,
        max: T,
    ) -> T {
        match self.opt(name) {
            None => default,
            Some(raw) => match raw.parse::<T>() {
                Ok(v) if v >= min && v <= max => v,
                _ => {
                    self.errors.push(format!(
                        "{name} must be a whole number from {min} to {max}, got `{raw}`"
                    ));
                    default
                }
            },
        }
    }

    fn fail(&mut self, line: String) {
        self.errors.push(line);
    }
}

fn is_digits(s: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

fn is_http_url(s: &str) -> bool {
    (s.starts_with("http://") || s.starts_with("https://"))
        && s.len() > "https://".len()
        && !s.contains(char::is_whitespace)
}

/// Where this machine's server is reached when APP_BASE_URL is unset: the
/// port it listens on, so invite links work on a changed ROCKET_PORT too.
/// An unreadable port is Rocket's to refuse; 8000 is Rocket's default.
pub fn default_app_base_url(rocket_port: Option<&str>) -> String {
    let port = rocket_port
        .and_then(|p| p.trim().parse::<u16>().ok())
        .unwrap_or(8000);
    format!("http://localhost:{port}")
}

impl Config {
    pub fn from_env() -> Result<Config, ConfigErrors> {
        Config::from_source(&Environment)
    }

    pub fn from_source(source: &dyn Source) -> Result<Config, ConfigErrors> {
        let mut r = Reader {
            source,
            errors: Vec::new(),
        };
        let live_token = r.opt("WHATSAPP_TOKEN");
        let live = live_token.is_some();
        let need = |r: &mut Reader, name: &str| -> Option<String> {
            let v = r.opt(name);
            if v.is_none() && live {
                r.fail(format!(
                    "{name} is required in live mode (WHATSAPP_TOKEN is set)"
                ));
            }
            v
        };

        let phone_number_id = need(&mut r, "WHATSAPP_PHONE_NUMBER_ID");
        if let Some(id) = &phone_number_id {
            if !is_digits(id, 1, 32) {
                r.fail(
                    "WHATSAPP_PHONE_NUMBER_ID must be the numeric id from Meta's API Setup page"
                        .into(),
                );
            }
        }
        let business = need(&mut r, "WHATSAPP_BUSINESS_NUMBER_E164");
        if let Some(b) = &business {
            if !is_digits(b, 6, 15) {
                r.fail("WHATSAPP_BUSINESS_NUMBER_E164 must be digits only, with country code and no + (e.g. 919876543210)".into());
            }
        }
        // Optional on its own: live mode needs at least one payment source
        // (checked with the gateway secrets below).
        let secret = r.opt("PAYMENT_WEBHOOK_SECRET");
        let secret_is_set = secret.is_some();
        let webhook_secret = secret.and_then(|s| match WebhookSecret::parse(&s) {
            Ok(secret) => Some(secret),
            Err(why) => {
                r.fail(format!("PAYMENT_WEBHOOK_SECRET {why} (whsec_…)"));
                None
            }
        });
        let app_secret = need(&mut r, "WHATSAPP_APP_SECRET").map(String::into_bytes);

        let api_base = r.text("WHATSAPP_API_BASE", DEFAULT_API_BASE);
        if !is_http_url(&api_base) {
            r.fail("WHATSAPP_API_BASE must be an http(s) URL".into());
        }
        let app_base_url = r.text(
            "APP_BASE_URL",
            &default_app_base_url(r.opt("ROCKET_PORT").as_deref()),
        );
        if !is_http_url(&app_base_url) {
            r.fail("APP_BASE_URL must be an http(s) URL such as https://shop.example".into());
        }
        let template_name = r.text("WHATSAPP_TEMPLATE_NAME", "order_confirmed");
        let template_lang = r.text("WHATSAPP_TEMPLATE_LANG", "en");
        let invite_template = r.opt("WHATSAPP_INVITE_TEMPLATE");
        for (name, value) in [
            ("WHATSAPP_TEMPLATE_NAME", Some(&template_name)),
            ("WHATSAPP_INVITE_TEMPLATE", invite_template.as_ref()),
        ] {
            if let Some(v) = value {
                if !v
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                {
                    r.fail(format!(
                        "{name} must be a template name: lowercase letters, digits and _"
                    ));
                }
            }
        }
        let link_in = match r.opt("WHATSAPP_LINK_IN") {
            None => LinkIn::Message,
            Some(text) => LinkIn::parse(&text).unwrap_or_else(|| {
                r.fail(
                    "WHATSAPP_LINK_IN must be message, confirmation or button (docs/going-live.md)"
                        .into(),
                );
                LinkIn::Message
            }),
        };
        if !template_lang
            .bytes()
            .all(|b| b.is_ascii_alphabetic() || b == b'_')
        {
            r.fail("WHATSAPP_TEMPLATE_LANG must be a language code such as en or en_US".into());
        }
        let default_region = r.opt("PHONE_DEFAULT_REGION").and_then(|code| {
            Region::parse(&code)
                .map_err(|why| r.fail(format!("PHONE_DEFAULT_REGION: {why}")))
                .ok()
        });

        let ttl_days: u64 = r.number("TOKEN_TTL_DAYS", 90, 0, 3650);
        let send_workers: usize = r.number("SEND_WORKERS", 4, 1, 256);
        let max_attempts: u32 = r.number("WHATSAPP_MAX_ATTEMPTS", 8, 1, 100);
        let retry_base_ms: u64 = r.number("WHATSAPP_RETRY_BASE_MS", 1000, 1, 3_600_000);
        let timeout_ms: u64 = r.number("WHATSAPP_TIMEOUT_MS", 10_000, 1, 600_000);
        let unsure_wait_ms: u64 = r.number("WHATSAPP_UNSURE_WAIT_MS", 60_000, 1, 604_800_000);
        let max_mps: u32 = r.number("WHATSAPP_MAX_MPS", 80, 1, 1_000_000);
        let razorpay_order_wait_ms: u64 = r.number("RAZORPAY_ORDER_WAIT_MS", 15_000, 0, 3_600_000);

        // The default note goes into the same template parameter as an
        // event's note: the same cleaning, and it must say something.
        let confirmation_note = match r.opt("CONFIRMATION_NOTE") {
            None => "Thank you for shopping with us!".to_owned(),
            Some(raw) => match Note::clean(&raw) {
                Some(note) => note.as_str().to_owned(),
                None => {
                    r.fail("CONFIRMATION_NOTE has no visible character".into());
                    String::new()
                }
            },
        };

        // §11: the gateways' secrets, and at least one payment source.
        let (gateway_secrets, gateway_errors) = GatewaySecrets::read(|n| r.opt(n));
        r.errors.extend(gateway_errors);
        if live && !secret_is_set && !gateway_secrets.any() {
            r.fail("PAYMENT_WEBHOOK_SECRET is required in live mode unless a gateway secret is set (RAZORPAY_WEBHOOK_SECRET, STRIPE_WEBHOOK_SECRET or CASHFREE_CLIENT_SECRET): no payment could reach orderlink".into());
        }

        // §13: only PostgreSQL is another store; anything else is a typo
        // that must not silently fall back to the SQLite file.
        let database_url = r.opt("DATABASE_URL");
        if let Some(url) = &database_url {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                r.fail("DATABASE_URL must start with postgres:// or postgresql:// (unset it to keep the SQLite file at DATABASE_PATH)".into());
            } else if let Err(why) = crate::pg_tls::parse(url) {
                // A mistyped sslmode must not quietly weaken TLS.
                r.fail(why);
            }
        }
        let database_pool_size: usize = r.number(
            "DATABASE_POOL_SIZE",
            crate::db::pool::PG_CONNECTIONS,
            1,
            1000,
        );

        let admin_time_zone = match r.opt("ADMIN_TIME_ZONE") {
            None => AdminZone::default(),
            Some(name) => AdminZone::parse(&name).unwrap_or_else(|why| {
                r.fail(format!("ADMIN_TIME_ZONE: {why}"));
                AdminZone::default()
            }),
        };

        let config = Config {
            mode: match (live_token, phone_number_id) {
                (Some(token), Some(phone_number_id)) => Mode::Live {
                    token,
                    phone_number_id,
                },
                _ => Mode::Sandbox,
            },
            api_base: api_base.trim_end_matches('/').to_owned(),
            business_number_is_placeholder: business.is_none(),
            business_number: business.unwrap_or_else(|| SANDBOX_BUSINESS_NUMBER.to_owned()),
            app_base_url: app_base_url.trim_end_matches('/').to_owned(),
            webhook_secret,
            database_path: PathBuf::from(r.text("DATABASE_PATH", "data/orderlink.db")),
            template_name,
            template_lang,
            confirmation_note,
            token_ttl: Duration::from_secs(ttl_days * 86_400),
            send_workers,
            max_attempts,
            retry_base: Duration::from_millis(retry_base_ms),
            timeout: Duration::from_millis(timeout_ms),
            unsure_wait: Duration::from_millis(unsure_wait_ms),
            invite_template,
            link_in,
            default_region,
            verify_token: r.opt("WHATSAPP_VERIFY_TOKEN"),
            app_secret,
            elder_reply_text: r.opt("ELDER_REPLY_TEXT"),
            admin_token: r.opt("ADMIN_TOKEN"),
            admin_time_zone,
            max_mps,
            gateway_secrets,
            razorpay_order_wait: Duration::from_millis(razorpay_order_wait_ms),
            metrics_token: r.opt("METRICS_TOKEN"),
            database_url,
            database_pool_size,
        };
        if r.errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors(r.errors))
        }
    }

    pub fn is_sandbox(&self) -> bool {
        matches!(self.mode, Mode::Sandbox)
    }

    /// Every secret value, so the log filter can blank them wherever they
    /// might appear.
    pub fn secrets(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Mode::Live { token, .. } = &self.mode {
            out.push(token.clone());
        }
        if let Some(s) = &self.app_secret {
            out.push(String::from_utf8_lossy(s).into_owned());
        }
        if let Some(s) = &self.admin_token {
            out.push(s.clone());
        }
        if let Some(s) = &self.verify_token {
            out.push(s.clone());
        }
        out.extend(self.gateway_secrets.texts());
        if let Some(s) = &self.metrics_token {
            out.push(s.clone());
        }
        if let Some(p) = self.database_url.as_deref().and_then(crate::pg::password) {
            out.push(p);
        }
        out.retain(|s| s.len() >= 4);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_base_url_defaults_to_the_port_rocket_listens_on() {
        let moved = Config::from_source(&[("ROCKET_PORT", "9000")]).unwrap();
        assert_eq!(moved.app_base_url, "http://localhost:9000");
        assert_eq!(
            Config::from_source(&[]).unwrap().app_base_url,
            "http://localhost:8000"
        );
        let set = [
            ("ROCKET_PORT", "9000"),
            ("APP_BASE_URL", "https://shop.example"),
        ];
        assert_eq!(
            Config::from_source(&set).unwrap().app_base_url,
            "https://shop.example"
        );
    }

    #[test]
    fn no_configuration_at_all_is_sandbox_mode() {
        let c = Config::from_source(&[]).unwrap();
        assert!(c.is_sandbox());
        assert_eq!(c.business_number, SANDBOX_BUSINESS_NUMBER);
        assert!(c.business_number_is_placeholder);
        assert_eq!(c.database_path, PathBuf::from("data/orderlink.db"));
        assert_eq!(c.send_workers, 4);
        assert_eq!(c.database_pool_size, 8);
        assert_eq!(c.max_mps, 80);
        assert!(c.webhook_secret.is_none());
    }

    #[test]
    fn link_in_is_one_of_three_words_and_the_default_graph_version_is_served_today() {
        let c = Config::from_source(&[]).unwrap();
        assert_eq!(c.link_in, LinkIn::Message);
        assert_eq!(c.api_base, "https://graph.facebook.com/v25.0");
        for (text, want) in [
            ("message", LinkIn::Message),
            ("confirmation", LinkIn::Confirmation),
            ("button", LinkIn::Button),
        ] {
            let c = Config::from_source(&[("WHATSAPP_LINK_IN", text)]).unwrap();
            assert_eq!(c.link_in, want);
        }
        for bad in ["Button", "template", "url"] {
            let err = Config::from_source(&[("WHATSAPP_LINK_IN", bad)]).unwrap_err();
            assert!(err.to_string().contains("WHATSAPP_LINK_IN"), "{err}");
        }
    }

    #[test]
    fn admin_time_zone_is_an_iana_name_and_defaults_to_utc() {
        let c = Config::from_source(&[]).unwrap();
        assert_eq!(c.admin_time_zone.name(), "UTC");
        let c = Config::from_source(&[("ADMIN_TIME_ZONE", "Asia/Kolkata")]).unwrap();
        assert_eq!(c.admin_time_zone.name(), "Asia/Kolkata");
        let err = Config::from_source(&[("ADMIN_TIME_ZONE", "India/Mumbai")]).unwrap_err();
        assert!(
            err.to_string()
                .contains("ADMIN_TIME_ZONE: \"India/Mumbai\" is not a time zone"),
            "{err}"
        );
    }

    #[test]
    fn live_mode_names_each_missing_variable() {
        let err = Config::from_source(&[("WHATSAPP_TOKEN", "EAAG")]).unwrap_err();
        let text = err.to_string();
        for name in [
            "WHATSAPP_PHONE_NUMBER_ID",
            "WHATSAPP_BUSINESS_NUMBER_E164",
            "PAYMENT_WEBHOOK_SECRET",
            "WHATSAPP_APP_SECRET",
        ] {
            assert!(text.contains(name), "{name} not named in {text}");
        }
        assert!(!text.contains("EAAG"));
    }

    #[test]
    fn malformed_values_are_refused() {
        let err = Config::from_source(&[
            ("WHATSAPP_TOKEN", "EAAG"),
            ("WHATSAPP_PHONE_NUMBER_ID", "1065"),
            ("WHATSAPP_BUSINESS_NUMBER_E164", "+91 98765"),
            ("PAYMENT_WEBHOOK_SECRET", "whsec_%%%"),
            ("WHATSAPP_APP_SECRET", "s3cret"),
            ("SEND_WORKERS", "zero"),
        ])
        .unwrap_err();
        assert_eq!(err.0.len(), 3, "{err}");
    }

    const LIVE: [(&str, &str); 4] = [
        ("WHATSAPP_TOKEN", "EAAG"),
        ("WHATSAPP_PHONE_NUMBER_ID", "1065"),
        ("WHATSAPP_BUSINESS_NUMBER_E164", "919876543210"),
        ("WHATSAPP_APP_SECRET", "s3cret"),
    ];

    fn live_with<const N: usize>(
        extra: [(&'static str, &'static str); N],
    ) -> Result<Config, ConfigErrors> {
        let all: Vec<(&str, &str)> = LIVE.iter().chain(extra.iter()).copied().collect();
        struct Pairs(Vec<(&'static str, &'static str)>);
        impl Source for Pairs {
            fn get(&self, name: &str) -> Option<String> {
                self.0
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        }
        Config::from_source(&Pairs(all))
    }

    #[test]
    fn a_short_payment_secret_is_refused_and_named() {
        let err = live_with([("PAYMENT_WEBHOOK_SECRET", "whsec_bm9wZQ==")]).unwrap_err();
        assert_eq!(err.0.len(), 1, "{err}");
        assert!(err.0[0].contains("PAYMENT_WEBHOOK_SECRET") && err.0[0].contains("24 to 64 bytes"));
        assert!(
            !err.0[0].contains("bm9wZQ"),
            "the secret itself is never shown"
        );
    }

    #[test]
    fn a_rotation_list_of_payment_secrets_loads() {
        let c = live_with([(
            "PAYMENT_WEBHOOK_SECRET",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
        )])
        .unwrap();
        assert!(c.webhook_secret.is_some());
    }

    #[test]
    fn live_mode_needs_one_payment_source_of_any_kind() {
        let err = live_with([]).unwrap_err();
        assert_eq!(err.0.len(), 1, "{err}");
        assert!(
            err.0[0].contains("PAYMENT_WEBHOOK_SECRET")
                && err.0[0].contains("RAZORPAY_WEBHOOK_SECRET")
        );
        for gateway in [
            ("RAZORPAY_WEBHOOK_SECRET", "rzp secret"),
            ("STRIPE_WEBHOOK_SECRET", "whsec_abc"),
            ("CASHFREE_CLIENT_SECRET", "cfsk_ma_test"),
        ] {
            let c = live_with([gateway]).unwrap();
            assert!(c.webhook_secret.is_none());
            assert!(c.gateway_secrets.any());
            assert!(c.secrets().iter().any(|s| gateway.1.contains(s.as_str())));
        }
        let err = live_with([("STRIPE_WEBHOOK_SECRET", "sk_live_x")]).unwrap_err();
        assert_eq!(err.0.len(), 1, "{err}");
        assert!(err.0[0].contains("STRIPE_WEBHOOK_SECRET"));
    }

    #[test]
    fn the_default_note_is_cleaned_like_any_note() {
        let c = Config::from_source(&[("CONFIRMATION_NOTE", "Thanks!\u{7}\n  See you")]).unwrap();
        assert_eq!(c.confirmation_note, "Thanks! See you");
        let err = Config::from_source(&[("CONFIRMATION_NOTE", "\u{200B}\u{FEFF}")]).unwrap_err();
        assert!(err.to_string().contains("CONFIRMATION_NOTE"), "{err}");
    }

    #[test]
    fn complete_live_configuration_loads() {
        let c = Config::from_source(&[
            ("WHATSAPP_TOKEN", "EAAG"),
            ("WHATSAPP_PHONE_NUMBER_ID", "1065"),
            ("WHATSAPP_BUSINESS_NUMBER_E164", "919876543210"),
            (
                "PAYMENT_WEBHOOK_SECRET",
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            ),
            ("WHATSAPP_APP_SECRET", "s3cret"),
            ("ADMIN_TOKEN", ""),
        ])
        .unwrap();
        assert!(!c.is_sandbox());
        assert!(c.admin_token.is_none());
    }
}

/// The gateways' secrets, each a space-separated list (rotation). Grouped
/// so the configuration holds them as one field.
#[derive(Clone, Debug, Default)]
pub struct GatewaySecrets {
    pub razorpay: Option<TextSecrets>,
    pub stripe: Option<TextSecrets>,
    pub cashfree: Option<TextSecrets>,
}

pub const RAZORPAY_SECRET_VAR: &str = "RAZORPAY_WEBHOOK_SECRET";
pub const STRIPE_SECRET_VAR: &str = "STRIPE_WEBHOOK_SECRET";
pub const CASHFREE_SECRET_VAR: &str = "CASHFREE_CLIENT_SECRET";

impl GatewaySecrets {
    /// Reads the three variables through `get` (which treats empty as
    /// unset); returns the problems found, one line each.
    pub fn read(get: impl Fn(&str) -> Option<String>) -> (GatewaySecrets, Vec<String>) {
        let mut errors = Vec::new();
        let razorpay = get(RAZORPAY_SECRET_VAR).and_then(|v| TextSecrets::parse(&v));
        let cashfree = get(CASHFREE_SECRET_VAR).and_then(|v| TextSecrets::parse(&v));
        let stripe = get(STRIPE_SECRET_VAR).and_then(|v| TextSecrets::parse(&v));
        if let Some(s) = &stripe {
            if let Some(i) = s
                .all()
                .iter()
                .position(|one| !one.starts_with("whsec_") || one.len() <= "whsec_".len())
            {
                errors.push(format!(
                    "{STRIPE_SECRET_VAR} must be the endpoint's signing secret from Stripe's dashboard, whsec_… (secret {} of the list is not)",
                    i + 1
                ));
            }
        }
        (
            GatewaySecrets {
                razorpay,
                stripe,
                cashfree,
            },
            errors,
        )
    }

    pub fn any(&self) -> bool {
        self.razorpay.is_some() || self.stripe.is_some() || self.cashfree.is_some()
    }

    /// Every secret, for the log filter.
    pub fn texts(&self) -> Vec<String> {
        [&self.razorpay, &self.stripe, &self.cashfree]
            .into_iter()
            .flatten()
            .flat_map(|s| s.all().iter().cloned())
            .collect()
    }
}

#[cfg(test)]
mod gateway_secrets_tests {
    use super::*;

    #[test]
    fn gateway_secrets_are_read_as_rotation_lists() {
        let (s, errors) = GatewaySecrets::read(|name| match name {
            RAZORPAY_SECRET_VAR => Some("old new".into()),
            STRIPE_SECRET_VAR => Some("whsec_a whsec_b".into()),
            _ => None,
        });
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(s.razorpay.unwrap().all(), ["old", "new"]);
        assert_eq!(s.stripe.unwrap().all().len(), 2);
        assert!(s.cashfree.is_none());
    }

    #[test]
    fn a_stripe_secret_without_whsec_is_named() {
        let (_, errors) = GatewaySecrets::read(|name| {
            (name == STRIPE_SECRET_VAR).then(|| "whsec_a sk_live_oops".into())
        });
        assert_eq!(errors.len(), 1);
        assert!(errors[0].contains(STRIPE_SECRET_VAR) && errors[0].contains("secret 2"));
        assert!(!errors[0].contains("sk_live_oops"));
    }
}
