//! The forwardable wa.me link and the texts built around it. The encoding is
//! exactly JavaScript's `encodeURIComponent`, because that is what the spec
//! (and every browser-side check of it) compares against.

use crate::domain::{InviteToken, OrderId};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Everything but `A-Z a-z 0-9 - _ . ! ~ * ' ( )` is escaped, as
/// `encodeURIComponent` does.
const URI_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

pub fn encode_uri_component(text: &str) -> String {
    utf8_percent_encode(text, URI_COMPONENT).to_string()
}

/// The message the elder sends; the apostrophe is U+2019.
/// The prefilled text's own words, around the order id and the token.
const TEXT_HEAD: &str = "Hi, I\u{2019}m contacting on behalf of order ";
const TEXT_MIDDLE: &str = ". Token: ";

/// Both, encoded once: a redirect answers with this link, and encoding
/// the whole text each time was a tenth of a redirect's own work.
static ENCODED_WORDS: std::sync::LazyLock<(String, String)> = std::sync::LazyLock::new(|| {
    (
        encode_uri_component(TEXT_HEAD),
        encode_uri_component(TEXT_MIDDLE),
    )
});

pub fn prefilled_text(order_id: &OrderId, token: &InviteToken) -> String {
    format!(
        "{TEXT_HEAD}{}{TEXT_MIDDLE}{}",
        order_id.as_str(),
        token.as_string()
    )
}

/// `https://wa.me/{number}?text=` and the prefilled text, encoded as
/// `encodeURIComponent` does. Only the order id needs encoding here: a
/// token is lowercase hex digits and hyphens, which the encoding keeps.
pub fn wa_me_link(business_number: &str, order_id: &OrderId, token: &InviteToken) -> String {
    let (head, middle) = &*ENCODED_WORDS;
    let token = token.as_string();
    let mut link = String::with_capacity(
        40 + business_number.len()
            + head.len()
            + 3 * order_id.as_str().len()
            + middle.len()
            + token.len(),
    );
    link.push_str("https://wa.me/");
    link.push_str(business_number);
    link.push_str("?text=");
    link.push_str(head);
    link.extend(utf8_percent_encode(order_id.as_str(), URI_COMPONENT));
    link.push_str(middle);
    link.push_str(&token);
    link
}

/// The plain chat address, offered when a link has expired.
pub fn wa_me_chat(business_number: &str) -> String {
    format!("https://wa.me/{business_number}")
}

pub fn invite_url(app_base_url: &str, token: &InviteToken) -> String {
    format!(
        "{}/w/invite/{}",
        app_base_url.trim_end_matches('/'),
        token.as_string()
    )
}

pub fn link_message_body(link: &str) -> String {
    format!("Please forward this link to your elder for direct chat: {link}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_matches_encode_uri_component() {
        // Expected values computed with JavaScript's encodeURIComponent.
        assert_eq!(encode_uri_component("Hi, I’m"), "Hi%2C%20I%E2%80%99m");
        assert_eq!(
            encode_uri_component("a-b_c.d!e~f*g'h(i)j"),
            "a-b_c.d!e~f*g'h(i)j"
        );
        assert_eq!(
            encode_uri_component("ORD:1/2 +&=?#"),
            "ORD%3A1%2F2%20%2B%26%3D%3F%23"
        );
        assert_eq!(encode_uri_component("é😀"), "%C3%A9%F0%9F%98%80");
    }

    #[test]
    fn wa_me_link_carries_order_and_token() {
        let order = OrderId::parse("ORD-1042").unwrap();
        let token = InviteToken::parse("3f2b8c1e-9d4a-4e6b-8f0a-1c2d3e4f5a6b").unwrap();
        assert_eq!(
            wa_me_link("919876543210", &order, &token),
            "https://wa.me/919876543210?text=Hi%2C%20I%E2%80%99m%20contacting%20on%20behalf%20of%20order%20ORD-1042.%20Token%3A%203f2b8c1e-9d4a-4e6b-8f0a-1c2d3e4f5a6b"
        );
    }

    proptest::proptest! {
        /// The link built from pre-encoded words is the whole text encoded.
        #[test]
        fn the_link_is_the_whole_prefilled_text_encoded(
            order in "[ -~]{1,40}|\\PC{1,20}", bits in proptest::prelude::any::<u128>(),
        ) {
            let Ok(order) = OrderId::parse(&order) else { return Ok(()) };
            let uuid = uuid::Builder::from_random_bytes(bits.to_le_bytes()).into_uuid();
            let token = InviteToken::parse(&uuid.hyphenated().to_string()).unwrap();
            proptest::prop_assert_eq!(
                wa_me_link("919876543210", &order, &token),
                format!(
                    "https://wa.me/919876543210?text={}",
                    encode_uri_component(&prefilled_text(&order, &token))
                )
            );
        }
    }

    #[test]
    fn invite_url_tolerates_a_trailing_slash() {
        let token = InviteToken::parse("3f2b8c1e-9d4a-4e6b-8f0a-1c2d3e4f5a6b").unwrap();
        assert_eq!(
            invite_url("https://shop.example/", &token),
            "https://shop.example/w/invite/3f2b8c1e-9d4a-4e6b-8f0a-1c2d3e4f5a6b"
        );
    }
}
