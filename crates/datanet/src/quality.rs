//! Quality heuristics: cheap signals that a row is boilerplate, spam or noise, combined into a
//! 0–100 score with a reason for every deduction so a contributor knows what to fix.

use rustc_hash::FxHashMap as HashMap;
use serde::Serialize;

/// One thing wrong with a row, and how much it cost.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QualityIssue {
    pub code: &'static str,
    pub message: String,
    pub penalty: u8,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QualityReport {
    /// 100 is clean; each issue subtracts its penalty.
    pub score: u8,
    pub issues: Vec<QualityIssue>,
}

/// Limits the heuristics use; a datanet may tune them.
#[derive(Debug, Clone)]
pub struct QualityConfig {
    pub min_chars: usize,
    pub max_chars: usize,
    /// Largest share of lines that may repeat another line.
    pub max_duplicate_line_ratio: f64,
    /// Largest share of all words taken by the most frequent word 3-gram.
    pub max_top_trigram_ratio: f64,
    /// Largest share of characters that are neither letters, digits nor whitespace.
    pub max_symbol_ratio: f64,
    /// Largest share of letters in upper case.
    pub max_uppercase_ratio: f64,
}

impl Default for QualityConfig {
    fn default() -> Self {
        Self {
            min_chars: 20,
            max_chars: 1_000_000,
            max_duplicate_line_ratio: 0.3,
            max_top_trigram_ratio: 0.2,
            max_symbol_ratio: 0.3,
            max_uppercase_ratio: 0.6,
        }
    }
}

/// Scores a normalised row.
pub fn assess(text: &str, cfg: &QualityConfig) -> QualityReport {
    let mut issues = Vec::new();
    let mut flag = |code, message: String, penalty| {
        issues.push(QualityIssue {
            code,
            message,
            penalty,
        })
    };
    let chars = text.chars().count();
    if chars < cfg.min_chars {
        flag(
            "too_short",
            format!("{chars} characters; at least {} are needed", cfg.min_chars),
            60,
        );
    }
    if chars > cfg.max_chars {
        flag(
            "too_long",
            format!("{chars} characters; at most {} are allowed", cfg.max_chars),
            60,
        );
    }

    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if lines.len() >= 4 {
        let mut seen = HashMap::default();
        for l in &lines {
            *seen.entry(*l).or_insert(0usize) += 1;
        }
        let repeated: usize = seen.values().filter(|n| **n > 1).map(|n| n - 1).sum();
        let ratio = repeated as f64 / lines.len() as f64;
        if ratio > cfg.max_duplicate_line_ratio {
            flag(
                "repeated_lines",
                format!("{:.0}% of lines repeat another line", ratio * 100.0),
                30,
            );
        }
    }

    let lowercased = text.to_lowercase();
    let words: Vec<&str> = lowercased.split_whitespace().collect();
    if words.len() >= 12 {
        let mut grams = HashMap::default();
        for w in words.windows(3) {
            *grams.entry(w).or_insert(0usize) += 1;
        }
        let top = grams.values().copied().max().unwrap_or(0);
        let ratio = (top * 3) as f64 / words.len() as f64;
        if top > 2 && ratio > cfg.max_top_trigram_ratio {
            flag(
                "repetitive",
                format!("one phrase makes up {:.0}% of the words", ratio * 100.0),
                30,
            );
        }
    }

    let visible = text.chars().filter(|c| !c.is_whitespace()).count().max(1);
    let symbols = text
        .chars()
        .filter(|c| !c.is_alphanumeric() && !c.is_whitespace())
        .count();
    let symbol_ratio = symbols as f64 / visible as f64;
    if symbol_ratio > cfg.max_symbol_ratio {
        flag(
            "symbols",
            format!("{:.0}% of characters are symbols", symbol_ratio * 100.0),
            20,
        );
    }
    let letters = text.chars().filter(|c| c.is_alphabetic()).count();
    let upper = text.chars().filter(|c| c.is_uppercase()).count();
    if letters >= 20 && upper as f64 / letters as f64 > cfg.max_uppercase_ratio {
        flag(
            "shouting",
            format!(
                "{:.0}% of letters are upper case",
                100.0 * upper as f64 / letters as f64
            ),
            15,
        );
    }

    let penalty: u32 = issues.iter().map(|i| i.penalty as u32).sum();
    QualityReport {
        score: 100u32.saturating_sub(penalty) as u8,
        issues,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(text: &str) -> Vec<&'static str> {
        assess(text, &QualityConfig::default())
            .issues
            .iter()
            .map(|i| i.code)
            .collect()
    }

    #[test]
    fn ordinary_prose_scores_full_marks() {
        let r = assess(
            "The court held that the contract was void because one party lacked capacity to consent.",
            &QualityConfig::default(),
        );
        assert_eq!((r.score, r.issues.len()), (100, 0));
    }

    #[test]
    fn each_defect_is_named() {
        assert_eq!(codes("too short"), vec!["too_short"]);
        assert!(codes(&"buy now cheap pills ".repeat(20)).contains(&"repetitive"));
        assert!(
            codes("same line here\nsame line here\nsame line here\nsame line here\nother")
                .contains(&"repeated_lines")
        );
        assert!(codes("$$$ ### @@@ !!! %%% ^^^ &&& *** ((( ))) abc").contains(&"symbols"));
        assert!(codes("THIS IS ALL SHOUTING AND NOTHING ELSE AT ALL HERE").contains(&"shouting"));
    }

    #[test]
    fn scores_never_go_below_zero() {
        let r = assess(
            "!!!",
            &QualityConfig {
                min_chars: 10,
                ..Default::default()
            },
        );
        assert!(r.score <= 100 - 60);
    }
}
