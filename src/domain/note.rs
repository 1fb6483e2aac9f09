//! The confirmation's "short note". Meta rejects template parameters with
//! newlines, tabs or more than four consecutive spaces, so the note is
//! cleaned before it is stored.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note(String);

impl Note {
    /// Maximum stored length in characters; Meta caps a parameter far above
    /// what a short note needs, and the column holds 1024.
    pub const MAX_CHARS: usize = 500;

    /// Collapses every run of whitespace (newline, tab, spaces, other
    /// Unicode spaces) to one space and trims; `None` when nothing is left.
    pub fn clean(raw: &str) -> Option<Note> {
        let cleaned: Vec<&str> = raw.split_whitespace().collect();
        if cleaned.is_empty() {
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
    fn long_notes_are_capped() {
        let n = Note::clean(&"é".repeat(2000)).unwrap();
        assert_eq!(n.as_str().chars().count(), Note::MAX_CHARS);
    }
}
