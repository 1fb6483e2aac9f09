//! The invite token: a v4 UUID in its lowercase hyphenated form, the only
//! thing that ties an elder's chat back to an order.

use std::fmt;
use uuid::Uuid;

#[derive(Clone, PartialEq, Eq, Hash)]
pub struct InviteToken(Uuid);

impl InviteToken {
    pub fn generate() -> InviteToken {
        InviteToken(Uuid::new_v4())
    }

    /// Accepts only the canonical hyphenated form (any case), so a path like
    /// `/w/invite/{32 hex digits}` or a braced UUID is a 404, not an alias.
    pub fn parse(raw: &str) -> Option<InviteToken> {
        if raw.len() != 36 {
            return None;
        }
        let uuid = Uuid::try_parse(raw).ok()?;
        (uuid.get_version_num() == 4).then_some(InviteToken(uuid))
    }

    /// The UUID itself (a cache key without the text).
    pub fn uuid(&self) -> Uuid {
        self.0
    }

    /// The stored and linked form: lowercase, hyphenated.
    pub fn as_string(&self) -> String {
        self.0.hyphenated().to_string()
    }

    /// What logs and the admin API may show.
    pub fn masked(&self) -> String {
        mask_token(&self.as_string())
    }

    /// Every UUID-shaped token inside free text, in order of appearance.
    pub fn find_all(text: &str) -> Vec<InviteToken> {
        let bytes = text.as_bytes();
        let mut found = Vec::new();
        let mut i = 0;
        while i + 36 <= bytes.len() {
            if text.is_char_boundary(i) && text.is_char_boundary(i + 36) {
                if let Some(token) = InviteToken::parse(&text[i..i + 36]) {
                    found.push(token);
                    i += 36;
                    continue;
                }
            }
            i += 1;
        }
        found
    }
}

/// Keeps the first eight characters: enough to tell tokens apart in a log,
/// far too few to use one.
pub fn mask_token(token: &str) -> String {
    let head: String = token.chars().take(8).collect();
    format!("{head}…")
}

impl fmt::Display for InviteToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl fmt::Debug for InviteToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InviteToken({})", self.masked())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_lowercase_hyphenated_v4() {
        let t = InviteToken::generate().as_string();
        assert_eq!(t.len(), 36);
        assert_eq!(t, t.to_lowercase());
        assert_eq!(&t[14..15], "4");
        assert!(InviteToken::parse(&t).is_some());
    }

    #[test]
    fn parse_accepts_any_case_and_refuses_other_shapes() {
        let t = "3f2b8c1e-9d4a-4e6b-8f0a-1c2d3e4f5a6b";
        assert_eq!(
            InviteToken::parse(&t.to_uppercase()).unwrap().as_string(),
            t
        );
        for bad in [
            "",
            "not-a-uuid",
            "3f2b8c1e9d4a4e6b8f0a1c2d3e4f5a6b",
            "{3f2b8c1e-9d4a-4e6b-8f0a-1c2d3e4f5a6b}",
            "3f2b8c1e-9d4a-1e6b-8f0a-1c2d3e4f5a6b", // version 1
            "../../../../../../../../etc/passwd/x",
        ] {
            assert!(InviteToken::parse(bad).is_none(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn tokens_are_found_anywhere_in_text() {
        let t = "3f2b8c1e-9d4a-4e6b-8f0a-1c2d3e4f5a6b";
        let text = format!(
            "Hi, I’m contacting on behalf of order X. Token:{}xyz",
            t.to_uppercase()
        );
        let found = InviteToken::find_all(&text);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].as_string(), t);
        assert!(InviteToken::find_all("no token here ✓").is_empty());
    }

    #[test]
    fn display_and_debug_are_masked() {
        let t = InviteToken::generate();
        assert!(!t.to_string().contains(&t.as_string()));
        assert!(!format!("{t:?}").contains(&t.as_string()));
    }
}
