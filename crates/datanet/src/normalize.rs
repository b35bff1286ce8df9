//! Text normalisation before hashing and dedup, so that the same content always has the same
//! address: Unicode NFC, one line-ending convention, no invisible characters, no surrounding
//! whitespace. Inner spacing is kept (it matters in code and tables).

use unicode_normalization::UnicodeNormalization;

/// Characters that change bytes but not what a reader sees.
fn invisible(c: char) -> bool {
    matches!(
        c,
        '\u{200B}' | '\u{200C}' | '\u{200D}' | '\u{2060}' | '\u{FEFF}'
    ) || (c.is_control() && c != '\n' && c != '\t')
}

/// The normalised form of a row's text.
pub fn normalize(text: &str) -> String {
    let unified = if text.contains('\r') {
        text.replace("\r\n", "\n").replace('\r', "\n")
    } else {
        text.to_owned()
    };
    // ASCII is already NFC and has no zero-width characters: only controls need dropping.
    // Most rows are ASCII, and composing them is the pipeline's most expensive no-op.
    let cleaned: String = if unified.is_ascii() {
        if unified.chars().any(invisible) {
            unified.chars().filter(|c| !invisible(*c)).collect()
        } else {
            unified
        }
    } else {
        unified.nfc().filter(|c| !invisible(*c)).collect()
    };
    let trimmed_lines: Vec<&str> = cleaned.lines().map(str::trim_end).collect();
    trimmed_lines.join("\n").trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composed_and_decomposed_accents_normalise_alike() {
        assert_eq!(normalize("caf\u{0065}\u{0301}"), normalize("caf\u{00e9}"));
    }

    #[test]
    fn line_endings_invisible_characters_and_outer_space_go() {
        assert_eq!(
            normalize("\u{FEFF}  a\r\nb \t\r\nc\u{200B}d\u{0007}  \n"),
            "a\nb\ncd"
        );
    }

    #[test]
    fn inner_indentation_is_kept() {
        assert_eq!(normalize("fn f() {\n    x\n}"), "fn f() {\n    x\n}");
    }
}
