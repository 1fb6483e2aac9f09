//! The confirmation's "short note". Meta rejects template parameters with
//! newlines, tabs, other control characters or more than four consecutive
//! spaces, so the note is cleaned before it is stored; a note nobody could
//! see is no note at all, and the configured default goes out instead.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note(String);

impl Note {
    /// Maximum stored length in characters; Meta caps a parameter far above
    /// what a short note needs, and the column holds 1024.
    pub const MAX_CHARS: usize = 500;

    /// Collapses every run of whitespace (newline, tab, spaces, other
    /// Unicode spaces) to one space, drops the other control characters
    /// (Unicode Cc: NUL, BEL, ESC …) and trims; `None` when no visible
    /// character is left (only spaces and zero-width characters).
    pub fn clean(raw: &str) -> Option<Note> {
        let without_controls: String = raw
            .chars()
            .filter(|c| c.is_whitespace() || !c.is_control())
            .collect();
        let cleaned: Vec<&str> = without_controls.split_whitespace().collect();
        if !cleaned.iter().any(|word| word.chars().any(is_visible)) {
            return None;
        }
        let mut text = cleaned.join(" ");
        if text.chars().count() > Self::MAX_CHARS {
            text = text.chars().take(Self::MAX_CHARS).collect();
            text = text.trim_end().to_owned();
        }
        Some(Note(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whether a character leaves a mark on the screen. Whitespace, controls and
/// the characters that render as nothing (Unicode's default-ignorable code
/// points: zero-width space and joiners, word joiner, BOM, direction marks,
/// variation selectors, fillers, tags) do not.
pub fn is_visible(c: char) -> bool {
    !(c.is_whitespace() || c.is_control() || is_default_ignorable(c) || c == '\u{2800}')
}

fn is_default_ignorable(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}'
        | '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}'
        | '\u{3164}'
        | '\u{FE00}'..='\u{FE0F}'
        | '\u{FEFF}'
        | '\u{FFA0}'
        | '\u{FFF0}'..='\u{FFF8}'
        | '\u{1BCA0}'..='\u{1BCA3}'
        | '\u{1D173}'..='\u{1D17A}'
        | '\u{E0000}'..='\u{E0FFF}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitespace_runs_become_single_spaces() {
        let n = Note::clean("  Arrives\nby\t\tFriday     soon \r\n").unwrap();
        assert_eq!(n.as_str(), "Arrives by Friday soon");
    }

    #[test]
    fn blank_notes_count_as_absent() {
        assert!(Note::clean("").is_none());
        assert!(Note::clean(" \n\t ").is_none());
    }

    #[test]
    fn control_characters_are_removed() {
        let n = Note::clean("Arrives\u{0}by\u{7} Friday\u{1b}[31m!\u{7f}").unwrap();
        assert_eq!(n.as_str(), "Arrivesby Friday[31m!");
        assert!(!n.as_str().chars().any(char::is_control));
    }

    #[test]
    fn notes_of_only_invisible_characters_count_as_absent() {
        for raw in [
            "\u{200B}",
            "\u{200B}\u{200C}\u{200D}\u{2060}\u{FEFF}",
            " \u{200B} \u{FEFF}\t\u{200D} ",
            "\u{0}\u{7}\u{1b}",
            "\u{3164}\u{2800}\u{00AD}",
        ] {
            assert_eq!(Note::clean(raw), None, "{raw:?}");
        }
    }

    #[test]
    fn zero_width_joiners_inside_visible_text_are_kept() {
        let family = "\u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467}";
        assert_eq!(Note::clean(family).unwrap().as_str(), family);
    }

    #[test]
    fn long_notes_are_capped() {
        let n = Note::clean(&"é".repeat(2000)).unwrap();
        assert_eq!(n.as_str().chars().count(), Note::MAX_CHARS);
    }
}
