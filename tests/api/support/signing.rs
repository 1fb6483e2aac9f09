//! Standard Webhooks signing, as a payment gateway does it, so tests can send
//! webhooks the app must accept (and tamper with them).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// `v1,` + base64(HMAC-SHA256(base64-decode(secret after `whsec_`), "{id}.{ts}.{body}")).
pub fn sign(secret: &str, webhook_id: &str, timestamp: i64, body: &str) -> String {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .expect("secret is base64 after whsec_");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("hmac takes any key length");
    mac.update(format!("{webhook_id}.{timestamp}.{body}").as_bytes());
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("hmac takes any key length");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// Razorpay's `X-Razorpay-Signature`: hex HMAC-SHA256 of the body, keyed with the secret's text.
pub fn razorpay(secret: &str, body: &str) -> String {
    hex::encode(hmac_sha256(secret.as_bytes(), body.as_bytes()))
}

/// Stripe's `Stripe-Signature` value for one secret at time `t`.
pub fn stripe(secret: &str, t: i64, body: &str) -> String {
    format!("t={t},v1={}", stripe_v1(secret, t, body))
}

/// The hex `v1` part alone (to build headers with several).
pub fn stripe_v1(secret: &str, t: i64, body: &str) -> String {
    hex::encode(hmac_sha256(
        secret.as_bytes(),
        format!("{t}.{body}").as_bytes(),
    ))
}

/// Cashfree's `x-webhook-signature`: base64 HMAC-SHA256 of timestamp and body, no separator.
pub fn cashfree(secret: &str, timestamp: &str, body: &str) -> String {
    STANDARD.encode(hmac_sha256(
        secret.as_bytes(),
        format!("{timestamp}{body}").as_bytes(),
    ))
}

pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_helpers_match_the_spec_appendix_vectors() {
        assert_eq!(
            stripe(
                "whsec_test_secret",
                1700000000,
                "{\n  \"id\": \"evt_test_webhook\",\n  \"object\": \"event\"\n}"
            ),
            "t=1700000000,v1=4f1cd7feda9826e746b7d482c4badebb657398df1099e1046364f6196a230150"
        );
        assert_eq!(
            razorpay(
                "test_webhook_secret",
                r#"{"entity":"event","event":"payment.captured","payload":{"payment":{"entity":{"id":"pay_DESlfW9H8K9uqM","amount":100,"currency":"INR","order_id":"order_DESlLckIVRkHWj","contact":"+919876543210","notes":[]}}}}"#
            ),
            "40d29170f8e2f04ae97e1a2699a0b4b141e4af2949d1c952f2086e226970c4e6"
        );
        assert_eq!(
            cashfree(
                "test_client_secret",
                "1746427759733",
                r#"{"data":{"order":{"order_id":"order_OFR_2","order_amount":2.00},"customer_details":{"customer_phone":"9908734801"}},"type":"PAYMENT_SUCCESS_WEBHOOK"}"#
            ),
            "h5uLps6DC3qtbImT4kGXQF1Dt/yRMigJm89rjunfOAQ="
        );
    }

    #[test]
    fn signing_helper_matches_the_spec_appendix_vectors() {
        assert_eq!(
            sign(
                "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
                "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
                1649367553,
                r#"{"email":"test@example.com","username":"test_user"}"#,
            ),
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        );
        assert_eq!(
            sign(
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                r#"{"test": 2432232314}"#,
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }
}
