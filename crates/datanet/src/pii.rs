//! Scanning a row for personal data and secrets, and redacting what is found.
//!
//! Rows contributed to a datanet end up in training sets that many parties can read, so e-mail
//! addresses, phone numbers, card numbers, IBANs, IP addresses and leaked credentials must be
//! flagged (to reject the row) or replaced by a placeholder (to keep the rest of it).
//!
//! Precision matters as much as recall: a scanner that flags every long number or every dotted
//! version string makes curators ignore it. So patterns are only candidates, and each kind has
//! a check that real data passes and noise rarely does: the Luhn check digit for cards, the
//! mod-97 check for IBANs, octets ≤ 255 for IPv4, a full parse for IPv6, a digit count and a
//! grouping for phone numbers, and fixed vendor prefixes or high entropy for secrets.
//!
//! When candidates of different kinds overlap, the more specific kind wins (a secret over an
//! e-mail, a card over a phone number), so the result is a sorted list of non-overlapping
//! byte ranges that [`redact`] can replace in one pass.

use std::collections::BTreeMap;
use std::net::Ipv6Addr;
use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

/// What kind of personal data or secret a match is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PiiKind {
    Email,
    Phone,
    CreditCard,
    Iban,
    IpAddress,
    ApiKeyOrSecret,
}

impl PiiKind {
    /// The text that replaces a match of this kind in [`redact`].
    pub fn placeholder(self) -> &'static str {
        match self {
            PiiKind::Email => "[EMAIL]",
            PiiKind::Phone => "[PHONE]",
            PiiKind::CreditCard => "[CARD]",
            PiiKind::Iban => "[IBAN]",
            PiiKind::IpAddress => "[IP]",
            PiiKind::ApiKeyOrSecret => "[SECRET]",
        }
    }

    /// Which kind wins when two candidates overlap: lower first. Secrets contain digits and
    /// `@`-free tokens that other patterns could claim; e-mails can contain digit runs; cards
    /// and IBANs are checksummed, so they are trusted over the loosely shaped phone numbers.
    fn precedence(self) -> u8 {
        match self {
            PiiKind::ApiKeyOrSecret => 0,
            PiiKind::Email => 1,
            PiiKind::Iban => 2,
            PiiKind::CreditCard => 3,
            PiiKind::IpAddress => 4,
            PiiKind::Phone => 5,
        }
    }
}

/// One finding: `text[start..end]` (byte offsets, on char boundaries) is of kind `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PiiMatch {
    pub kind: PiiKind,
    pub start: usize,
    pub end: usize,
}

static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\b[a-z0-9][a-z0-9._%+-]*@[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*\.[a-z]{2,24}\b",
    )
    .expect("valid e-mail pattern")
});

/// Vendor formats whose prefix alone makes them near-certain secrets.
static VENDOR_SECRET: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        // AWS access key ids (long-term and temporary).
        r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
        // GitHub personal, OAuth, user-to-server, server-to-server and refresh tokens.
        r"|\bgh[pousr]_[A-Za-z0-9]{36,255}\b",
        r"|\bgithub_pat_[A-Za-z0-9_]{22,255}\b",
        // Slack bot, user, app and refresh tokens.
        r"|\bxox[abposr]-[A-Za-z0-9-]{10,}",
        // OpenAI-style and Stripe secret keys.
        r"|\bsk-(?:proj-|live-|test-)?[A-Za-z0-9_-]{20,}",
        r"|\b[rs]k_(?:live|test)_[A-Za-z0-9]{16,}",
        // A PEM private key, with its body when the END line is there.
        r"|-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----(?:(?s:.*?)-----END [A-Z0-9 ]*PRIVATE KEY-----)?",
    ))
    .expect("valid vendor secret pattern")
});

/// `api_key = VALUE` and similar assignments; only the value (group 1) is the secret, and only
/// when it looks random (see [`looks_random`]).
static ASSIGNED_SECRET: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?i)\b(?:api[_-]?key|api[_-]?secret|secret[_-]?key|client[_-]?secret|access[_-]?token|auth[_-]?token|bearer)["']?\s*[:=]?\s*["']?([A-Za-z0-9_\-+/.=]{16,})"#,
    )
    .expect("valid assigned secret pattern")
});

/// 13–19 digits, single spaces or dashes allowed between them.
static CARD: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b\d(?:[ -]?\d){12,18}\b").expect("valid card pattern"));

/// Country code, two check digits, then up to 30 alphanumerics, optionally in groups.
static IBAN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b").expect("valid IBAN pattern")
});

static IPV4: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b").expect("valid IPv4 pattern")
});

/// Runs of hex digits and at least two colons; [`Ipv6Addr`] decides.
static IPV6: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[0-9A-Fa-f]*(?::[0-9A-Fa-f]*){2,}").expect("valid IPv6 pattern"));

/// Maximal runs of digits and phone separators; [`plausible_phone`] decides.
static PHONE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\+?\(?\d[\d ().-]*\d").expect("valid phone pattern"));

static DATE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{4}")
        .expect("valid date pattern")
});

/// Finds personal data and secrets in `text`: sorted by position, never overlapping.
pub fn scan(text: &str) -> Vec<PiiMatch> {
    let mut candidates = Vec::new();
    let mut add = |kind: PiiKind, start: usize, end: usize| {
        candidates.push(PiiMatch { kind, start, end });
    };

    for found in VENDOR_SECRET.find_iter(text) {
        add(PiiKind::ApiKeyOrSecret, found.start(), found.end());
    }
    for captures in ASSIGNED_SECRET.captures_iter(text) {
        let value = captures.get(1).expect("group 1 always participates");
        if looks_random(value.as_str()) {
            add(PiiKind::ApiKeyOrSecret, value.start(), value.end());
        }
    }
    for found in EMAIL.find_iter(text) {
        add(PiiKind::Email, found.start(), found.end());
    }
    for found in IBAN.find_iter(text) {
        if let Some(length) = longest_valid_iban_prefix(found.as_str()) {
            add(PiiKind::Iban, found.start(), found.start() + length);
        }
    }
    for found in CARD.find_iter(text) {
        // "+4915123456789" is an international phone number, whatever its check digit says.
        let after_plus = text[..found.start()].ends_with('+');
        if !after_plus && plausible_card(found.as_str()) {
            add(PiiKind::CreditCard, found.start(), found.end());
        }
    }
    for found in IPV4.find_iter(text) {
        if valid_ipv4(text, found.start(), found.end()) {
            add(PiiKind::IpAddress, found.start(), found.end());
        }
    }
    for found in IPV6.find_iter(text) {
        if valid_ipv6(text, found.start(), found.end()) {
            add(PiiKind::IpAddress, found.start(), found.end());
        }
    }
    for found in PHONE.find_iter(text) {
        if plausible_phone(text, found.start(), found.end()) {
            add(PiiKind::Phone, found.start(), found.end());
        }
    }

    resolve_overlaps(candidates)
}

/// `text` with every match replaced by its kind's placeholder (`[EMAIL]`, `[PHONE]`, `[CARD]`,
/// `[IBAN]`, `[IP]`, `[SECRET]`).
///
/// Meant for the output of [`scan`] on the same text; matches that are out of bounds, not on
/// char boundaries, or overlap an earlier match are skipped rather than trusted.
pub fn redact(text: &str, matches: &[PiiMatch]) -> String {
    let mut ordered: Vec<&PiiMatch> = matches.iter().collect();
    ordered.sort_by_key(|found| (found.start, found.end));
    let mut redacted = String::with_capacity(text.len());
    let mut copied_up_to = 0;
    for found in ordered {
        let usable = found.start >= copied_up_to
            && found.start <= found.end
            && text.is_char_boundary(found.start)
            && text.is_char_boundary(found.end)
            && found.end <= text.len();
        if !usable {
            continue;
        }
        redacted.push_str(&text[copied_up_to..found.start]);
        redacted.push_str(found.kind.placeholder());
        copied_up_to = found.end;
    }
    redacted.push_str(&text[copied_up_to..]);
    redacted
}

/// Keeps, among overlapping candidates, the one of the most specific kind (longer first among
/// equals), and returns the survivors sorted by position.
fn resolve_overlaps(mut candidates: Vec<PiiMatch>) -> Vec<PiiMatch> {
    candidates.sort_by_key(|found| {
        (
            found.kind.precedence(),
            std::cmp::Reverse(found.end - found.start),
            found.start,
        )
    });
    // Accepted matches by start. They never overlap, so the one with the greatest start before
    // a candidate's end is the only one that can overlap it.
    let mut accepted: BTreeMap<usize, PiiMatch> = BTreeMap::new();
    for candidate in candidates {
        if candidate.start == candidate.end {
            continue;
        }
        let overlaps = accepted
            .range(..candidate.end)
            .next_back()
            .is_some_and(|(_, earlier)| earlier.end > candidate.start);
        if !overlaps {
            accepted.insert(candidate.start, candidate);
        }
    }
    accepted.into_values().collect()
}

/// Whether an assigned value is random enough to be a key rather than a word or a path:
/// letters and digits mixed, and at least 3.5 bits of Shannon entropy per character.
fn looks_random(value: &str) -> bool {
    let has_digit = value.bytes().any(|byte| byte.is_ascii_digit());
    let has_letter = value.bytes().any(|byte| byte.is_ascii_alphabetic());
    has_digit && has_letter && shannon_entropy_bits(value) >= 3.5
}

fn shannon_entropy_bits(value: &str) -> f64 {
    let mut counts = [0u32; 256];
    for byte in value.bytes() {
        counts[usize::from(byte)] += 1;
    }
    let total = value.len() as f64;
    counts
        .iter()
        .filter(|&&count| count > 0)
        .map(|&count| {
            let share = f64::from(count) / total;
            -share * share.log2()
        })
        .sum()
}

/// Digits of a card candidate pass Luhn and start like a payment card (2–6: Mastercard, Amex,
/// Visa, Discover, …), which excludes all-zero and most accidental digit runs.
fn plausible_card(candidate: &str) -> bool {
    let digits: Vec<u32> = candidate.chars().filter_map(|c| c.to_digit(10)).collect();
    matches!(digits.first(), Some(2..=6)) && luhn_valid(&digits)
}

fn luhn_valid(digits: &[u32]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(position, &digit)| {
            if !position.is_multiple_of(2) {
                let doubled = digit * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                digit
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// The regex may run on into a following upper-case word ("… 32 AND"), so trailing groups are
/// dropped until the rest passes mod-97; returns the byte length of the valid prefix.
fn longest_valid_iban_prefix(candidate: &str) -> Option<usize> {
    let mut end = candidate.len();
    loop {
        let prefix = &candidate[..end];
        if iban_valid(prefix) {
            return Some(end);
        }
        end = prefix.rfind(' ')?;
    }
}

/// ISO 13616: 15–34 characters, and the number formed by moving the first four characters to
/// the end and replacing letters by 10–35 is 1 modulo 97.
fn iban_valid(candidate: &str) -> bool {
    let compact: Vec<u8> = candidate.bytes().filter(|&byte| byte != b' ').collect();
    if !(15..=34).contains(&compact.len()) {
        return false;
    }
    let (head, tail) = compact.split_at(4);
    let mut remainder = 0u32;
    for &byte in tail.iter().chain(head) {
        let value = match byte {
            b'0'..=b'9' => u32::from(byte - b'0'),
            b'A'..=b'Z' => u32::from(byte - b'A') + 10,
            _ => return false,
        };
        let scale = if value >= 10 { 100 } else { 10 };
        remainder = (remainder * scale + value) % 97;
    }
    remainder == 1
}

/// Octets ≤ 255, and not part of a longer dotted number such as a version `1.2.3.4.5`.
fn valid_ipv4(text: &str, start: usize, end: usize) -> bool {
    let bytes = text.as_bytes();
    let dotted_number_before =
        start >= 2 && bytes[start - 1] == b'.' && bytes[start - 2].is_ascii_digit();
    let dotted_number_after =
        bytes.get(end) == Some(&b'.') && bytes.get(end + 1).is_some_and(u8::is_ascii_digit);
    !dotted_number_before
        && !dotted_number_after
        && text[start..end]
            .split('.')
            .all(|octet| octet.parse::<u16>().is_ok_and(|value| value <= 255))
}

/// A standalone token that parses as IPv6 and has a decimal digit, which rules out `::` and
/// hex-only words around colons in code (`std::fmt`, `add::dead`).
fn valid_ipv6(text: &str, start: usize, end: usize) -> bool {
    let candidate = &text[start..end];
    let glued_before = text[..start]
        .chars()
        .next_back()
        .is_some_and(|c| c.is_alphanumeric() || c == '_');
    let glued_after = text[end..]
        .chars()
        .next()
        .is_some_and(|c| c.is_alphanumeric() || c == '_');
    // "::ffff:192" of "::ffff:192.0.2.1": the IPv4 scan reports the address part.
    let dotted_after =
        text[end..].starts_with('.') && text[end + 1..].starts_with(|c: char| c.is_ascii_digit());
    !glued_before
        && !dotted_after
        && !glued_after
        && candidate.bytes().any(|byte| byte.is_ascii_digit())
        && candidate.parse::<Ipv6Addr>().is_ok()
}

/// A phone number has 9–15 digits (E.164 allows at most 15) and either starts with a `+`
/// country code or is split into groups, 12 digits at most: `+44 20 7946 0958`,
/// `(555) 123-4567`, `06.12.34.56.78`. A bare digit run is an id, not a phone number; dates,
/// versions and IPv4 shapes are excluded explicitly.
fn plausible_phone(text: &str, start: usize, end: usize) -> bool {
    let candidate = &text[start..end];
    let glued_before = text[..start]
        .chars()
        .next_back()
        .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.' || c == '-');
    let glued_after = text[end..]
        .chars()
        .next()
        .is_some_and(|c| c.is_alphanumeric() || c == '_');
    if glued_before || glued_after {
        return false;
    }
    let digit_count = candidate.bytes().filter(u8::is_ascii_digit).count();
    if !(9..=15).contains(&digit_count) || DATE.is_match(candidate) {
        return false;
    }
    // Separators between groups are short: "-", " ", ") ", not "  ---  ".
    let separator_runs_short = candidate
        .split(|c: char| c.is_ascii_digit())
        .all(|separator| separator.len() <= 2);
    if !separator_runs_short {
        return false;
    }
    let groups: Vec<&str> = candidate
        .split(|c: char| !c.is_ascii_digit())
        .filter(|group| !group.is_empty())
        .collect();
    if candidate.starts_with('+') {
        return true;
    }
    // National numbers (no country code) have at most 12 digits even with a trunk prefix;
    // longer grouped runs are account, card or reference numbers.
    if digit_count > 12 {
        return false;
    }
    // After a possible one-digit trunk or country prefix ("1 (555) …"), every group has at
    // least two digits; versions such as "10.0.19041.1234" do not.
    let groups_plausible = groups.len() >= 2 && groups[1..].iter().all(|group| group.len() >= 2);
    // Dots alone separate phone groups only in short groups ("555.123.4567"), not in decimals
    // ("3.14159265358") or IPv4-shaped numbers.
    let dots_only = candidate.contains('.') && !candidate.contains([' ', '-', '(', ')']);
    let dotted_plausible = !dots_only
        || (groups.len() >= 3
            && groups.iter().all(|group| group.len() <= 4)
            && !(groups.len() == 4 && groups.iter().all(|group| group.len() <= 3)));
    groups_plausible && dotted_plausible
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn kinds(text: &str) -> Vec<PiiKind> {
        scan(text).into_iter().map(|found| found.kind).collect()
    }

    fn found_texts(text: &str) -> Vec<(PiiKind, &str)> {
        scan(text)
            .into_iter()
            .map(|found| (found.kind, &text[found.start..found.end]))
            .collect()
    }

    #[test]
    fn emails_are_found() {
        assert_eq!(
            found_texts("write to jane.doe+news@example.co.uk today"),
            [(PiiKind::Email, "jane.doe+news@example.co.uk")]
        );
    }

    #[test]
    fn at_signs_without_a_domain_are_not_emails() {
        assert!(scan("meet me @ noon, or ping @alice on chat, user@localhost").is_empty());
    }

    #[test]
    fn phone_numbers_in_common_formats_are_found() {
        for phone in [
            "+44 20 7946 0958",
            "+1-555-123-4567",
            "(555) 123-4567",
            "555-123-4567",
            "06.12.34.56.78",
            "+4915123456789",
        ] {
            let text = format!("call {phone} now");
            assert_eq!(found_texts(&text), [(PiiKind::Phone, phone)], "{phone}");
        }
    }

    #[test]
    fn dates_versions_and_bare_numbers_are_not_phones() {
        for text in [
            "released on 2024-01-15 as version 1.2.3",
            "on 15/01/2024 we shipped 10.0.19041.1234",
            "order number 123456789012",
            "pi is 3.14159265358",
            "between 2019 and 2024",
        ] {
            assert!(scan(text).is_empty(), "{text}: {:?}", scan(text));
        }
    }

    #[test]
    fn card_numbers_passing_luhn_are_found() {
        assert_eq!(
            found_texts("card 4111 1111 1111 1111 exp 12/29"),
            [(PiiKind::CreditCard, "4111 1111 1111 1111")]
        );
        assert_eq!(kinds("amex 3782-822463-10005"), [PiiKind::CreditCard]);
        assert_eq!(kinds("5555555555554444"), [PiiKind::CreditCard]);
    }

    #[test]
    fn card_numbers_failing_luhn_are_not_found() {
        assert!(scan("card 4111 1111 1111 1112 exp 12/29").is_empty());
        assert!(scan("5555555555554445").is_empty());
        // Passes Luhn but no payment card starts with 0.
        assert!(scan("0000 0000 0000 0000").is_empty());
    }

    #[test]
    fn ibans_passing_mod_97_are_found() {
        assert_eq!(
            found_texts("pay to GB82 WEST 1234 5698 7654 32 please"),
            [(PiiKind::Iban, "GB82 WEST 1234 5698 7654 32")]
        );
        assert_eq!(
            found_texts("IBAN DE89370400440532013000 AND MORE"),
            [(PiiKind::Iban, "DE89370400440532013000")]
        );
        assert_eq!(
            found_texts("GB82 WEST 1234 5698 7654 32 AND THEN"),
            [(PiiKind::Iban, "GB82 WEST 1234 5698 7654 32")]
        );
    }

    #[test]
    fn ibans_failing_mod_97_are_not_found() {
        assert!(scan("pay to GB82 WEST 1234 5698 7654 33 please").is_empty());
        assert!(scan("pay to GB28 WEST 1234 5698 7654 32 please").is_empty());
    }

    #[test]
    fn ip_addresses_are_found() {
        assert_eq!(
            found_texts("from 192.168.0.1 and 2001:db8::8a2e:370:7334 and ::1."),
            [
                (PiiKind::IpAddress, "192.168.0.1"),
                (PiiKind::IpAddress, "2001:db8::8a2e:370:7334"),
                (PiiKind::IpAddress, "::1"),
            ]
        );
        assert_eq!(kinds("fe80::1ff:fe23:4567:890a"), [PiiKind::IpAddress]);
    }

    #[test]
    fn invalid_ips_times_and_code_paths_are_not_found() {
        for text in [
            "999.1.1.1",
            "version 1.2.3.4.5",
            "at 12:30:45 sharp",
            "use std::fmt::Display; a::b",
            "mac 00:1a:2b:3c:4d:5e",
        ] {
            assert!(scan(text).is_empty(), "{text}: {:?}", scan(text));
        }
    }

    #[test]
    fn vendor_secrets_are_found() {
        for secret in [
            "AKIAIOSFODNN7EXAMPLE",
            "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
            "xoxb-123456789012-abcdefghijkl",
            "sk-proj-Abc123Def456Ghi789Jkl012",
            "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
        ] {
            let text = format!("token: {secret} end");
            assert_eq!(
                found_texts(&text),
                [(PiiKind::ApiKeyOrSecret, secret)],
                "{secret}"
            );
        }
    }

    #[test]
    fn private_key_blocks_are_found_whole() {
        let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA0Z3VS5JJcds3xfn\n\
                   -----END RSA PRIVATE KEY-----";
        let text = format!("key:\n{pem}\nthanks");
        assert_eq!(found_texts(&text), [(PiiKind::ApiKeyOrSecret, pem)]);
        assert_eq!(
            kinds("-----BEGIN OPENSSH PRIVATE KEY----- (truncated)"),
            [PiiKind::ApiKeyOrSecret]
        );
    }

    #[test]
    fn assigned_high_entropy_values_are_secrets() {
        assert_eq!(
            found_texts("API_KEY=\"q8Zr2Lx0Vb7Nw4Tc9Kp1\""),
            [(PiiKind::ApiKeyOrSecret, "q8Zr2Lx0Vb7Nw4Tc9Kp1")]
        );
        assert_eq!(
            kinds("client_secret: 4f9a8c7e2b1d0a3f6e5c"),
            [PiiKind::ApiKeyOrSecret]
        );
    }

    #[test]
    fn ordinary_words_and_low_entropy_values_are_not_secrets() {
        for text in [
            "api_key=your_api_key_goes_here",
            "the secret key to success is patience",
            "access_token = aaaaaaaaaaaaaaaa1111",
            "skip the sk- prefix, ask kindly, AKIA is a name",
            "-----BEGIN PUBLIC KEY-----",
        ] {
            assert!(scan(text).is_empty(), "{text}: {:?}", scan(text));
        }
    }

    #[test]
    fn overlapping_candidates_keep_the_more_specific_kind() {
        // The card's digits also look like a (too long) phone number, the e-mail's local part
        // like digits; each appears once, under its own kind.
        let text = "4111-1111-1111-1111 or 5551234567@example.com";
        assert_eq!(kinds(text), [PiiKind::CreditCard, PiiKind::Email]);
    }

    #[test]
    fn redact_replaces_each_match_with_its_placeholder() {
        let text = "Mail jane@example.com or call +44 20 7946 0958; card 4111 1111 1111 1111, \
                    IBAN GB82 WEST 1234 5698 7654 32, host 10.0.0.7, key AKIAIOSFODNN7EXAMPLE.";
        assert_eq!(
            redact(text, &scan(text)),
            "Mail [EMAIL] or call [PHONE]; card [CARD], IBAN [IBAN], host [IP], key [SECRET]."
        );
    }

    #[test]
    fn redact_skips_matches_it_cannot_apply() {
        let text = "héllo";
        let bogus = [
            PiiMatch {
                kind: PiiKind::Email,
                start: 0,
                end: 2,
            }, // inside "é"
            PiiMatch {
                kind: PiiKind::Phone,
                start: 3,
                end: 99,
            },
        ];
        assert_eq!(redact(text, &bogus), text);
        assert_eq!(redact("no pii here", &scan("no pii here")), "no pii here");
    }

    fn assert_well_formed(text: &str, matches: &[PiiMatch]) {
        let mut previous_end = 0;
        for found in matches {
            assert!(found.start < found.end, "{found:?}");
            assert!(found.end <= text.len(), "{found:?}");
            assert!(
                found.start >= previous_end,
                "overlap or unsorted at {found:?}"
            );
            assert!(text.is_char_boundary(found.start) && text.is_char_boundary(found.end));
            previous_end = found.end;
        }
    }

    proptest! {
        #[test]
        fn scan_returns_sorted_in_bounds_non_overlapping_ranges(text in any::<String>()) {
            assert_well_formed(&text, &scan(&text));
        }

        #[test]
        fn scan_handles_pii_shaped_noise(
            text in "[0-9A-Za-z@.:+()_= /-]{0,120}|[0-9 .:-]{0,60}é[0-9A-F ]{0,60}"
        ) {
            let matches = scan(&text);
            assert_well_formed(&text, &matches);
            let redacted = redact(&text, &matches);
            prop_assert!(matches.is_empty() || redacted != text);
        }
    }
}
