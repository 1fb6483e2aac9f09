//! Webhook signature checks: Standard Webhooks for the generic payment
//! route, the text-keyed HMACs of the gateways (§11, schemes in
//! `crate::gateways`) and Meta's `X-Hub-Signature-256`. Both compare whole MACs in constant time
//! (through `Mac::verify_slice`), never prefixes.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// How far `webhook-timestamp` may be from now, either way.
pub const TOLERANCE_SECS: i64 = 5 * 60;

/// Standard Webhooks secrets (`whsec_<base64>`), decoded once at start. The
/// variable may hold several, separated by spaces, so a secret can be rolled
/// without a window in which valid deliveries are refused: a signature valid
/// under any of them passes. The first one signs.
#[derive(Clone)]
pub struct WebhookSecret(Vec<Vec<u8>>);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(***)")
    }
}

/// Key sizes the Standard Webhooks specification allows (24 to 64 bytes):
/// a shorter key is guessable, a longer one is a pasted mistake.
pub const MIN_KEY_BYTES: usize = 24;
pub const MAX_KEY_BYTES: usize = 64;

impl WebhookSecret {
    pub fn parse(raw: &str) -> Result<WebhookSecret, String> {
        let mut keys = Vec::new();
        for (i, one) in raw.split_whitespace().enumerate() {
            let which = if i == 0 {
                String::new()
            } else {
                format!(" (secret {} of the list)", i + 1)
            };
            let encoded = one.strip_prefix("whsec_").unwrap_or(one);
            let key = BASE64
                .decode(encoded)
                .map_err(|_| format!("must be whsec_ followed by base64{which}"))?;
            if !(MIN_KEY_BYTES..=MAX_KEY_BYTES).contains(&key.len()) {
                return Err(format!(
                    "must decode to {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes, not {}{which}",
                    key.len()
                ));
            }
            keys.push(key);
        }
        if keys.is_empty() {
            return Err("must not be empty".into());
        }
        Ok(WebhookSecret(keys))
    }

    /// `v1,<base64>` for the given message, under the first secret; used by
    /// tests and tooling.
    pub fn sign(&self, id: &str, timestamp: &str, body: &[u8]) -> String {
        let tag = Self::mac(&self.0[0], id, timestamp, body)
            .finalize()
            .into_bytes();
        format!("v1,{}", BASE64.encode(tag))
    }

    fn mac(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// Valid when the timestamp is within tolerance of `now_secs` and any
    /// `v1` entry of the space-separated list carries the right 32-byte MAC
    /// under any of the secrets.
    pub fn verify(
        &self,
        id: &str,
        timestamp: &str,
        signatures: &str,
        body: &[u8],
        now_secs: i64,
    ) -> Result<(), &'static str> {
        let ts: i64 = timestamp
            .trim()
            .parse()
            .map_err(|_| "webhook-timestamp is not a Unix time")?;
        if (now_secs - ts).abs() > TOLERANCE_SECS {
            return Err("webhook-timestamp is more than 5 minutes from now");
        }
        let tags: Vec<Vec<u8>> = signatures
            .split(' ')
            .filter_map(|entry| entry.strip_prefix("v1,"))
            .filter_map(|b64| BASE64.decode(b64).ok())
            .filter(|tag| tag.len() == 32)
            .collect();
        let matched = self.0.iter().any(|key| {
            let mac = Self::mac(key, id, timestamp, body);
            tags.iter().any(|tag| mac.clone().verify_slice(tag).is_ok())
        });
        if matched {
            Ok(())
        } else {
            Err("webhook-signature does not match")
        }
    }
}

/// A gateway's shared secret used as text (Razorpay, Stripe, Cashfree key
/// their HMAC with the secret's characters, not with decoded bytes). Several
/// may be configured, separated by spaces, for rotation.
#[derive(Clone)]
pub struct TextSecrets(Vec<String>);

impl std::fmt::Debug for TextSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TextSecrets(***)")
    }
}

impl TextSecrets {
    /// `None` when the value holds no secret at all.
    pub fn parse(raw: &str) -> Option<TextSecrets> {
        let all: Vec<String> = raw.split_whitespace().map(str::to_owned).collect();
        (!all.is_empty()).then_some(TextSecrets(all))
    }

    pub fn all(&self) -> &[String] {
        &self.0
    }

    /// HMAC-SHA256 over `parts` (concatenated) under the first secret.
    pub fn sign(&self, parts: &[&[u8]]) -> [u8; 32] {
        hmac_parts(self.0[0].as_bytes(), parts)
    }

    /// True when `tag` is the HMAC-SHA256 of `parts` under any secret;
    /// whole 32-byte MACs only, compared in constant time.
    pub fn verify(&self, parts: &[&[u8]], tag: &[u8]) -> bool {
        tag.len() == 32
            && self.0.iter().any(|key| {
                let mut mac = HmacSha256::new_from_slice(key.as_bytes())
                    .expect("HMAC takes keys of any length");
                for p in parts {
                    mac.update(p);
                }
                mac.verify_slice(tag).is_ok()
            })
    }
}

/// HMAC-SHA256 of the concatenation of `parts`.
pub fn hmac_parts(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// Meta's `X-Hub-Signature-256: sha256=<hex>` over the raw body.
pub fn verify_meta(app_secret: &[u8], header: &str, body: &[u8]) -> bool {
    let Some(hex_tag) = header.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(tag) = hex::decode(hex_tag) else {
        return false;
    };
    if tag.len() != 32 {
        return false;
    }
    let mut mac = HmacSha256::new_from_slice(app_secret).expect("HMAC takes keys of any length");
    mac.update(body);
    mac.verify_slice(&tag).is_ok()
}

/// `sha256=<hex>` for a body; used by tests and tooling.
pub fn sign_meta(app_secret: &[u8], body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(app_secret).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Equality of two secrets (bearer tokens, verify tokens) in constant time.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    use sha2::Digest;
    // Hashing first makes the comparison independent of the lengths too.
    let (ha, hb) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    ha.ct_eq(&hb).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Vector {
        secret: &'static str,
        id: &'static str,
        ts: &'static str,
        body: &'static str,
        sig: &'static str,
    }

    const VECTORS: [Vector; 2] = [
        Vector {
            secret: "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
            id: "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            ts: "1649367553",
            body: r#"{"email":"test@example.com","username":"test_user"}"#,
            sig: "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=",
        },
        Vector {
            secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            id: "msg_p5jXN8AQM9LWM0D4loKWxJek",
            ts: "1614265330",
            body: r#"{"test": 2432232314}"#,
            sig: "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        },
    ];

    fn check(v: &Vector, sig: &str) -> Result<(), &'static str> {
        let secret = WebhookSecret::parse(v.secret).unwrap();
        let now: i64 = v.ts.parse().unwrap();
        secret.verify(v.id, v.ts, sig, v.body.as_bytes(), now)
    }

    #[test]
    fn spec_vectors_verify_and_sign() {
        for v in &VECTORS {
            assert_eq!(check(v, v.sig), Ok(()));
            let secret = WebhookSecret::parse(v.secret).unwrap();
            assert_eq!(secret.sign(v.id, v.ts, v.body.as_bytes()), v.sig);
        }
    }

    #[test]
    fn tampered_bare_and_truncated_signatures_fail() {
        let v = &VECTORS[1];
        for bad in [
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA=",
            "v1,",
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJE",
            "",
            "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
            "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        ] {
            assert!(check(v, bad).is_err(), "{bad:?} passed");
        }
    }

    #[test]
    fn one_valid_v1_entry_among_others_passes() {
        let v = &VECTORS[1];
        let list = format!("v2,abc v1,AAAA {} v1a,xyz", v.sig);
        assert_eq!(check(v, &list), Ok(()));
    }

    #[test]
    fn an_empty_secret_is_refused() {
        assert!(WebhookSecret::parse("whsec_").is_err());
        assert!(WebhookSecret::parse("").is_err());
        assert!(WebhookSecret::parse("   ").is_err());
        assert!(WebhookSecret::parse("whsec_not base64!").is_err());
    }

    #[test]
    fn keys_must_decode_to_24_to_64_bytes() {
        let err = WebhookSecret::parse("whsec_bm9wZQ==").unwrap_err();
        assert!(err.contains("24 to 64 bytes, not 4"), "{err}");
        let b64 = |n: usize| format!("whsec_{}", BASE64.encode(vec![7u8; n]));
        assert!(WebhookSecret::parse(&b64(23)).is_err());
        assert!(WebhookSecret::parse(&b64(24)).is_ok());
        assert!(WebhookSecret::parse(&b64(64)).is_ok());
        assert!(WebhookSecret::parse(&b64(65)).is_err());
        // One short secret in a rotation list spoils the list, and says which.
        let err = WebhookSecret::parse(&format!("{} whsec_bm9wZQ==", b64(32))).unwrap_err();
        assert!(err.contains("secret 2"), "{err}");
    }

    #[test]
    fn any_secret_of_a_rotation_list_verifies_and_the_first_signs() {
        let v = &VECTORS[1];
        let ts: i64 = v.ts.parse().unwrap();
        let body = v.body.as_bytes();
        for list in [
            format!("{} {}", VECTORS[0].secret, v.secret),
            format!("{}  {}", v.secret, VECTORS[0].secret),
        ] {
            let secret = WebhookSecret::parse(&list).unwrap();
            assert_eq!(secret.verify(v.id, v.ts, v.sig, body, ts), Ok(()));
        }
        let only_other = WebhookSecret::parse(VECTORS[0].secret).unwrap();
        assert!(only_other.verify(v.id, v.ts, v.sig, body, ts).is_err());
        let rotated = WebhookSecret::parse(&format!("{} {}", v.secret, VECTORS[0].secret)).unwrap();
        assert_eq!(rotated.sign(v.id, v.ts, body), v.sig);
    }

    #[test]
    fn text_secrets_verify_whole_macs_under_any_key() {
        let secrets = TextSecrets::parse(" old  new ").unwrap();
        assert_eq!(secrets.all(), ["old", "new"]);
        let tag = hmac_parts(b"new", &[b"12", b"{}"]);
        assert!(secrets.verify(&[b"12{}"], &tag));
        assert!(secrets.verify(&[b"1", b"2{}"], &tag));
        assert!(!secrets.verify(&[b"12{} "], &tag));
        assert!(!secrets.verify(&[b"12{}"], &tag[..31]));
        assert!(!secrets.verify(&[b"12{}"], &[]));
        assert!(TextSecrets::parse("  ").is_none());
    }

    #[test]
    fn timestamps_outside_five_minutes_fail() {
        let v = &VECTORS[1];
        let secret = WebhookSecret::parse(v.secret).unwrap();
        let ts: i64 = v.ts.parse().unwrap();
        let body = v.body.as_bytes();
        assert!(secret.verify(v.id, v.ts, v.sig, body, ts + 300).is_ok());
        assert!(secret.verify(v.id, v.ts, v.sig, body, ts + 301).is_err());
        assert!(secret.verify(v.id, v.ts, v.sig, body, ts - 301).is_err());
        assert!(secret.verify(v.id, "soon", v.sig, body, ts).is_err());
    }

    #[test]
    fn meta_signatures_round_trip_and_reject_tampering() {
        let body = br#"{"object":"whatsapp_business_account"}"#;
        let header = sign_meta(b"app-secret", body);
        assert!(verify_meta(b"app-secret", &header, body));
        assert!(!verify_meta(b"other", &header, body));
        assert!(!verify_meta(b"app-secret", &header, b"{}"));
        assert!(!verify_meta(b"app-secret", "sha256=", body));
        assert!(!verify_meta(b"app-secret", &header[..20], body));
        assert!(!verify_meta(b"app-secret", "", body));
    }

    #[test]
    fn constant_time_comparison_is_exact() {
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "ab"));
        assert!(!constant_time_eq("", "a"));
    }
}
