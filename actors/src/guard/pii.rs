//! Personal data and secrets in text: e-mail addresses, phone numbers, payment cards, IBANs,
//! national ids, IP addresses and API-key-shaped secrets.
//!
//! Detection runs in two passes. The guardrail's [`regex::RegexSet`] of every enabled pattern
//! (together with the other detectors' patterns) looks at the text once; a clean text costs that
//! one pass and nothing else. Only the patterns the set reports are then run on their own
//! ([`PiiDetector::find_selected`]), and each candidate goes through its kind's validator: the Luhn check for
//! cards, the per-country length and mod-97 check for IBANs, the unassigned ranges for US social
//! security numbers, a real parse for IP addresses, a digit count for phones, and character
//! boundaries for all of them. Overlapping matches of different kinds keep the longest (the
//! earliest on a tie).
//!
//! Every pattern matches ASCII only and joins its groups with at most one space, dash or dot, never
//! with a newline; the stream guard relies on that to know how much of a stream's tail could still
//! become a match.

use std::net::{Ipv4Addr, Ipv6Addr};

use regex::Regex;

/// A kind of personal data or secret a guardrail looks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PiiKind {
    /// An e-mail address (`local@domain.tld`).
    Email,
    /// A phone number: international with a leading `+` (8 to 15 digits), North American written
    /// with separators (`(415) 555-0100`, `415-555-0100`), or national with a trunk `0` and
    /// separators (`020 7946 0958`). A bare run of digits is never taken for a phone.
    Phone,
    /// A payment card number: 13 to 19 digits, spaces or dashes allowed between them, starting
    /// with 2 to 6 (the card networks' ranges) and passing the Luhn check.
    PaymentCard,
    /// An IBAN of a country in [`IBAN_LENGTHS`], in capitals, spaces allowed between groups,
    /// of that country's length and passing the mod-97 check.
    Iban,
    /// A national identity number: a US social security number written `AAA-GG-SSSS` or
    /// `AAA GG SSSS` outside the never-assigned ranges (area 000, 666 or 900–999, group 00,
    /// serial 0000), or a UK National Insurance number (`QQ 12 34 56 C`) with a valid prefix.
    NationalId,
    /// An IPv4 address, other than `0.0.0.0`, loopback (`127.0.0.0/8`) and `255.255.255.255`.
    Ipv4,
    /// An IPv6 address, other than `::` and `::1`.
    Ipv6,
    /// A secret shaped like an API key or credential: OpenAI `sk-…` and Anthropic `sk-ant-…`
    /// keys, AWS access key ids (`AKIA…`, `ASIA…`), GitHub tokens (`ghp_…`, `gho_…`, `ghu_…`,
    /// `ghs_…`, `ghr_…`, `github_pat_…`), Slack tokens (`xoxb-…` and the other `xox?-`), Google API
    /// keys (`AIza…`), private keys in PEM (the header, and the whole block through its `END`
    /// line when that is present), JSON web tokens, and `Bearer` tokens.
    Secret,
}

/// How many kinds [`PiiKind::ALL`] lists.
pub const PII_KIND_COUNT: usize = 8;

impl PiiKind {
    /// Every kind, in the order of their indexes.
    pub const ALL: [PiiKind; PII_KIND_COUNT] = [
        PiiKind::Email,
        PiiKind::Phone,
        PiiKind::PaymentCard,
        PiiKind::Iban,
        PiiKind::NationalId,
        PiiKind::Ipv4,
        PiiKind::Ipv6,
        PiiKind::Secret,
    ];

    /// The kind's name in configuration and rule ids (`pii.<name>`).
    pub fn name(self) -> &'static str {
        match self {
            PiiKind::Email => "email",
            PiiKind::Phone => "phone",
            PiiKind::PaymentCard => "payment_card",
            PiiKind::Iban => "iban",
            PiiKind::NationalId => "national_id",
            PiiKind::Ipv4 => "ipv4",
            PiiKind::Ipv6 => "ipv6",
            PiiKind::Secret => "secret",
        }
    }

    /// The kind named `name` (as [`PiiKind::name`] spells it).
    pub fn from_name(name: &str) -> Option<PiiKind> {
        PiiKind::ALL.into_iter().find(|kind| kind.name() == name)
    }

    /// The label of the kind's placeholders: `EMAIL` in `[EMAIL_1]`.
    pub fn placeholder_label(self) -> &'static str {
        match self {
            PiiKind::Email => "EMAIL",
            PiiKind::Phone => "PHONE",
            PiiKind::PaymentCard => "CARD",
            PiiKind::Iban => "IBAN",
            PiiKind::NationalId => "NATIONAL_ID",
            PiiKind::Ipv4 => "IPV4",
            PiiKind::Ipv6 => "IPV6",
            PiiKind::Secret => "SECRET",
        }
    }

    /// Position of the kind in [`PiiKind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for PiiKind {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.name())
    }
}

/// One validated match: its kind and byte range in the text searched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PiiMatch {
    /// What was found.
    pub kind: PiiKind,
    /// Byte offset of the first character.
    pub start: usize,
    /// Byte offset just past the last character.
    pub end: usize,
}

/// Checks a candidate `text[start..end]` and returns the range that is really a match (a
/// validator may shorten it), or `None`.
type Validator = fn(text: &str, start: usize, end: usize) -> Option<(usize, usize)>;

/// One candidate pattern and the validator its candidates go through.
struct PatternSpecification {
    /// The kind it finds.
    kind: PiiKind,
    /// The candidate regex.
    pattern: &'static str,
    /// The check every candidate must pass.
    validator: Validator,
}

/// Every candidate pattern, by kind.
const PATTERNS: &[PatternSpecification] = &[
    PatternSpecification {
        kind: PiiKind::Email,
        pattern: r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
        validator: validate_email,
    },
    PatternSpecification {
        kind: PiiKind::Phone,
        pattern: r"\+[1-9][0-9]{0,2}(?:[ .-]?\(?[0-9]{1,5}\)?){1,6}",
        validator: validate_phone,
    },
    PatternSpecification {
        kind: PiiKind::Phone,
        pattern: r"(?:\+?1[ .-]?)?(?:\([2-9][0-9]{2}\)|[2-9][0-9]{2})[ .-]?[2-9][0-9]{2}[ .-][0-9]{4}",
        validator: validate_phone,
    },
    PatternSpecification {
        kind: PiiKind::Phone,
        pattern: r"0[1-9][0-9]{1,4}[ -][0-9]{3,4}[ -]?[0-9]{3,4}",
        validator: validate_phone,
    },
    PatternSpecification {
        kind: PiiKind::PaymentCard,
        pattern: r"[0-9](?:[ -]?[0-9]){12,18}",
        validator: validate_payment_card,
    },
    PatternSpecification {
        kind: PiiKind::Iban,
        pattern: r"[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30}",
        validator: validate_iban,
    },
    PatternSpecification {
        kind: PiiKind::NationalId,
        pattern: r"[0-9]{3}-[0-9]{2}-[0-9]{4}|[0-9]{3} [0-9]{2} [0-9]{4}",
        validator: validate_us_social_security_number,
    },
    PatternSpecification {
        kind: PiiKind::NationalId,
        pattern: r"[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?[0-9]{2} ?[0-9]{2} ?[0-9]{2} ?[A-D]",
        validator: validate_uk_national_insurance_number,
    },
    PatternSpecification {
        kind: PiiKind::Ipv4,
        pattern: r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}",
        validator: validate_ipv4,
    },
    PatternSpecification {
        kind: PiiKind::Ipv6,
        pattern: r"[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:\.[0-9]{1,3}){0,3}",
        validator: validate_ipv6,
    },
    PatternSpecification {
        kind: PiiKind::Secret,
        pattern: r"sk-[A-Za-z0-9_-]{20,}",
        validator: validate_mixed_case_key,
    },
    PatternSpecification {
        kind: PiiKind::Secret,
        pattern: r"(?:AKIA|ASIA)[0-9A-Z]{16}|AIza[0-9A-Za-z_-]{35}|gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,}",
        validator: validate_delimited,
    },
    PatternSpecification {
        kind: PiiKind::Secret,
        pattern: r"xox[abposr]-[A-Za-z0-9-]{10,}",
        validator: validate_token_with_digit,
    },
    PatternSpecification {
        kind: PiiKind::Secret,
        pattern: r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----(?:(?s:.)*?-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----)?",
        validator: validate_private_key,
    },
    PatternSpecification {
        kind: PiiKind::Secret,
        pattern: r"eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{8,}",
        validator: validate_delimited,
    },
    PatternSpecification {
        kind: PiiKind::Secret,
        pattern: r"[Bb]earer [A-Za-z0-9._~+/-]{20,}=*",
        validator: validate_token_with_digit,
    },
];

/// IBAN length by country (ISO 3166 code), sorted by country, for the countries of the IBAN
/// registry most often met. An IBAN of a country missing here is not detected.
pub const IBAN_LENGTHS: &[(&str, usize)] = &[
    ("AD", 24),
    ("AE", 23),
    ("AL", 28),
    ("AT", 20),
    ("AZ", 28),
    ("BA", 20),
    ("BE", 16),
    ("BG", 22),
    ("BH", 22),
    ("BR", 29),
    ("CH", 21),
    ("CR", 22),
    ("CY", 28),
    ("CZ", 24),
    ("DE", 22),
    ("DK", 18),
    ("DO", 28),
    ("EE", 20),
    ("EG", 29),
    ("ES", 24),
    ("FI", 18),
    ("FO", 18),
    ("FR", 27),
    ("GB", 22),
    ("GE", 22),
    ("GI", 23),
    ("GL", 18),
    ("GR", 27),
    ("GT", 28),
    ("HR", 21),
    ("HU", 28),
    ("IE", 22),
    ("IL", 23),
    ("IQ", 23),
    ("IS", 26),
    ("IT", 27),
    ("JO", 30),
    ("KW", 30),
    ("KZ", 20),
    ("LB", 28),
    ("LI", 21),
    ("LT", 20),
    ("LU", 20),
    ("LV", 21),
    ("MC", 27),
    ("MD", 24),
    ("ME", 22),
    ("MK", 19),
    ("MR", 27),
    ("MT", 31),
    ("MU", 30),
    ("NL", 18),
    ("NO", 15),
    ("PK", 24),
    ("PL", 28),
    ("PS", 29),
    ("PT", 25),
    ("QA", 29),
    ("RO", 24),
    ("RS", 22),
    ("SA", 24),
    ("SE", 24),
    ("SI", 19),
    ("SK", 24),
    ("SM", 27),
    ("TN", 24),
    ("TR", 26),
    ("UA", 29),
    ("VG", 24),
    ("XK", 20),
];

/// UK National Insurance prefixes that are never allocated.
const UNALLOCATED_NATIONAL_INSURANCE_PREFIXES: &[&str] = &["BG", "GB", "KN", "NK", "NT", "TN", "ZZ"];

/// The compiled patterns of the enabled kinds.
#[derive(Debug)]
pub struct PiiDetector {
    /// The patterns of the enabled kinds, in [`PATTERNS`] order.
    patterns: Vec<CompiledPattern>,
}

/// One pattern of [`PATTERNS`], compiled.
#[derive(Debug)]
struct CompiledPattern {
    /// The kind it finds.
    kind: PiiKind,
    /// The candidate regex's source, for a first-pass set.
    source: &'static str,
    /// The candidate regex.
    regex: Regex,
    /// The check every candidate must pass.
    validator: Validator,
}

impl PiiDetector {
    /// Compiles the patterns of `kinds`.
    pub fn new(kinds: &[PiiKind]) -> Result<PiiDetector, regex::Error> {
        let patterns = PATTERNS
            .iter()
            .filter(|specification| kinds.contains(&specification.kind))
            .map(|specification| {
                Ok(CompiledPattern {
                    kind: specification.kind,
                    source: specification.pattern,
                    regex: Regex::new(specification.pattern)?,
                    validator: specification.validator,
                })
            })
            .collect::<Result<Vec<_>, regex::Error>>()?;
        Ok(PiiDetector { patterns })
    }

    /// The candidate patterns, for a first-pass [`regex::RegexSet`]; [`PiiDetector::find_selected`]
    /// takes their positions.
    pub fn patterns(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.patterns.iter().map(|pattern| pattern.source)
    }

    /// Appends to `found` every validated match in `haystack[from..]`, sorted by start and without
    /// overlaps. The text before `from` is only looked at for the boundaries of a match. `found`
    /// must be empty or hold matches that all end before `from`.
    pub fn find(&self, haystack: &str, from: usize, found: &mut Vec<PiiMatch>) {
        self.find_selected(haystack, from, |_| true, found);
    }

    /// [`PiiDetector::find`] with only the patterns whose position in
    /// [`PiiDetector::patterns`] is `selected` (those a first pass saw match).
    pub fn find_selected(
        &self,
        haystack: &str,
        from: usize,
        selected: impl Fn(usize) -> bool,
        found: &mut Vec<PiiMatch>,
    ) {
        let first_new = found.len();
        for (index, pattern) in self.patterns.iter().enumerate() {
            if !selected(index) {
                continue;
            }
            let mut position = from;
            while position <= haystack.len() {
                let Some(candidate) = pattern.regex.find_at(haystack, position) else { break };
                if let Some((start, end)) = (pattern.validator)(haystack, candidate.start(), candidate.end()) {
                    found.push(PiiMatch { kind: pattern.kind, start, end });
                }
                position = next_search_position(haystack, candidate.start(), candidate.end());
            }
        }
        resolve_overlaps(found, first_new);
    }
}

/// Where to search next after a candidate at `start..end`: its end, or one character further on
/// after an empty candidate.
fn next_search_position(haystack: &str, start: usize, end: usize) -> usize {
    if end > start {
        return end;
    }
    end + haystack[end..].chars().next().map_or(1, char::len_utf8)
}

/// Sorts `found[first_new..]` by start and drops matches that overlap a kept one: the longest
/// of overlapping matches is kept (the earliest on a tie).
fn resolve_overlaps(found: &mut Vec<PiiMatch>, first_new: usize) {
    if found.len() - first_new < 2 {
        return;
    }
    let mut candidates = found.split_off(first_new);
    candidates.sort_by(|left, right| {
        (right.end - right.start).cmp(&(left.end - left.start)).then(left.start.cmp(&right.start))
    });
    for candidate in candidates {
        let overlaps = found[first_new..].iter().any(|kept| candidate.start < kept.end && kept.start < candidate.end);
        if !overlaps {
            found.push(candidate);
        }
    }
    found[first_new..].sort_by_key(|kept| kept.start);
}

/// The character just before byte `index` of `text`.
pub(super) fn character_before(text: &str, index: usize) -> Option<char> {
    text[..index].chars().next_back()
}

/// The character at byte `index` of `text`.
pub(super) fn character_after(text: &str, index: usize) -> Option<char> {
    text[index..].chars().next()
}

/// True when neither the character before `start` nor the one at `end` satisfies `joins`.
fn stands_alone(text: &str, start: usize, end: usize, joins: impl Fn(char) -> bool) -> bool {
    !character_before(text, start).is_some_and(&joins) && !character_after(text, end).is_some_and(&joins)
}

/// True when the character at byte `index` is a separator followed by a digit (`-1`, `.5`),
/// which means the number goes on.
fn number_continues(text: &str, index: usize) -> bool {
    let mut following = text[index..].chars();
    matches!(following.next(), Some('-' | '.' | ' ')) && following.next().is_some_and(|next| next.is_ascii_digit())
}

/// True when the character before byte `index` is a separator preceded by a digit.
fn number_precedes(text: &str, index: usize) -> bool {
    let mut preceding = text[..index].chars().rev();
    matches!(preceding.next(), Some('-' | '.')) && preceding.next().is_some_and(|previous| previous.is_ascii_digit())
}

/// Letters, digits and `_`.
fn is_word_character(character: char) -> bool {
    character.is_alphanumeric() || character == '_'
}

/// E-mail addresses: at most 254 characters with a local part of at most 64, not glued to more
/// address characters.
fn validate_email(text: &str, start: usize, end: usize) -> Option<(usize, usize)> {
    let address = &text[start..end];
    let local_length = address.find('@')?;
    let joins_before = |character: char| character.is_ascii_alphanumeric() || "._%+-".contains(character);
    let joins_after = |character: char| character.is_ascii_alphanumeric() || character == '-' || character == '_';
    let valid = address.len() <= 254
        && local_length <= 64
        && !address.starts_with('.')
        && !character_before(text, start).is_some_and(joins_before)
        && !character_after(text, end).is_some_and(joins_after);
    valid.then_some((start, end))
}

/// Phones: 8 to 15 digits after a `+`, 10 or 11 otherwise, not part of a longer number.
fn validate_phone(text: &str, start: usize, end: usize) -> Option<(usize, usize)> {
    let digits = text[start..end].bytes().filter(u8::is_ascii_digit).count();
    let international = text[start..].starts_with('+');
    let digit_count_fits = if international { (8..=15).contains(&digits) } else { (10..=11).contains(&digits) };
    let joins_before = |character: char| is_word_character(character) || "+-./".contains(character);
    let valid = digit_count_fits
        && !character_before(text, start).is_some_and(joins_before)
        && !character_after(text, end).is_some_and(is_word_character)
        && !number_continues(text, end);
    valid.then_some((start, end))
}

/// Payment cards: 13 to 19 digits starting with 2 to 6, passing the Luhn check, not part of a
/// longer number.
fn validate_payment_card(text: &str, start: usize, end: usize) -> Option<(usize, usize)> {
    let candidate = &text[start..end];
    let digits = candidate.bytes().filter(u8::is_ascii_digit).count();
    let valid = (13..=19).contains(&digits)
        && matches!(candidate.as_bytes().first(), Some(b'2'..=b'6'))
        && passes_luhn(candidate)
        && stands_alone(text, start, end, is_word_character)
        && !number_precedes(text, start)
        && !number_continues(text, end);
    valid.then_some((start, end))
}

/// The Luhn checksum over the digits of `number` (other characters are skipped).
pub fn passes_luhn(number: &str) -> bool {
    let mut sum = 0_u32;
    for (position, digit) in
        number.bytes().rev().filter(u8::is_ascii_digit).map(|byte| u32::from(byte - b'0')).enumerate()
    {
        sum += if position % 2 == 1 {
            let doubled = digit * 2;
            if doubled > 9 { doubled - 9 } else { doubled }
        } else {
            digit
        };
    }
    sum.is_multiple_of(10)
}

/// IBANs: a known country, cut to that country's length, passing mod-97, not glued to more
/// letters or digits.
fn validate_iban(text: &str, start: usize, end: usize) -> Option<(usize, usize)> {
    let candidate = &text[start..end];
    let country = candidate.get(..2)?;
    let expected_length = IBAN_LENGTHS
        .binary_search_by(|(known, _)| (*known).cmp(country))
        .ok()
        .and_then(|position| IBAN_LENGTHS.get(position))
        .map(|(_, length)| *length)?;
    let mut significant = 0;
    let mut cut = None;
    for (offset, character) in candidate.char_indices() {
        if character != ' ' {
            significant += 1;
            if significant == expected_length {
                cut = Some(start + offset + character.len_utf8());
                break;
            }
        }
    }
    let end = cut?;
    let iban = &text[start..end];
    let valid =
        iban_checksum_is_valid(iban) && stands_alone(text, start, end, |character| character.is_ascii_alphanumeric());
    valid.then_some((start, end))
}

/// The ISO 13616 mod-97 check of `iban` (spaces are skipped): the first four characters moved
/// to the end, letters as 10 to 35, the number modulo 97 must be 1.
pub fn iban_checksum_is_valid(iban: &str) -> bool {
    let compact: Vec<u8> = iban.bytes().filter(|byte| *byte != b' ').collect();
    if compact.len() < 5 {
        return false;
    }
    let (head, tail) = compact.split_at(4);
    let mut remainder = 0_u32;
    for byte in tail.iter().chain(head) {
        remainder = match byte {
            b'0'..=b'9' => (remainder * 10 + u32::from(byte - b'0')) % 97,
            b'A'..=b'Z' => (remainder * 100 + u32::from(byte - b'A') + 10) % 97,
            _ => return false,
        };
    }
    remainder == 1
}

/// US social security numbers: outside the never-assigned ranges, not part of a longer number.
fn validate_us_social_security_number(text: &str, start: usize, end: usize) -> Option<(usize, usize)> {
    let digits: Vec<u32> =
        text[start..end].bytes().filter(u8::is_ascii_digit).map(|byte| u32::from(byte - b'0')).collect();
    let [a1, a2, a3, g1, g2, s1, s2, s3, s4] = digits[..] else { return None };
    let area = a1 * 100 + a2 * 10 + a3;
    let group = g1 * 10 + g2;
    let serial = s1 * 1000 + s2 * 100 + s3 * 10 + s4;
    let assignable = area != 0 && area != 666 && area < 900 && group != 0 && serial != 0;
    let valid = assignable
        && stands_alone(text, start, end, is_word_character)
        && !number_precedes(text, start)
        && !number_continues(text, end);
    valid.then_some((start, end))
}

/// UK National Insurance numbers: an allocated prefix, not glued to more letters or digits.
fn validate_uk_national_insurance_number(text: &str, start: usize, end: usize) -> Option<(usize, usize)> {
    let prefix = text.get(start..start + 2)?;
    let valid =
        !UNALLOCATED_NATIONAL_INSURANCE_PREFIXES.contains(&prefix) && stands_alone(text, start, end, is_word_character);
    valid.then_some((start, end))
}

/// IPv4 addresses: four octets of 0–255 without leading zeros, not part of a longer dotted run
/// (a version string such as `1.2.3.4.5`), not unspecified, loopback or broadcast.
fn validate_ipv4(text: &str, start: usize, end: usize) -> Option<(usize, usize)> {
    let address: Ipv4Addr = text[start..end].parse().ok()?;
    let valid = !address.is_unspecified()
        && !address.is_loopback()
        && !address.is_broadcast()
        && stands_alone(text, start, end, is_word_character)
        && character_before(text, start) != Some('.')
        && !number_precedes(text, start)
        && !number_continues(text, end);
    valid.then_some((start, end))
}

/// IPv6 addresses: what the standard parser accepts, not glued to more address characters, not
/// unspecified or loopback.
fn validate_ipv6(text: &str, start: usize, end: usize) -> Option<(usize, usize)> {
    let address: Ipv6Addr = text[start..end].parse().ok()?;
    let joins = |character: char| is_word_character(character) || character == ':' || character == '.';
    let valid = !address.is_unspecified() && !address.is_loopback() && stands_alone(text, start, end, joins);
    valid.then_some((start, end))
}

/// `sk-` keys: the part after the prefix mixes capitals, small letters and digits (so that
/// hyphenated words such as `sk-learn-…` are left alone), not glued to a word before.
fn validate_mixed_case_key(text: &str, start: usize, end: usize) -> Option<(usize, usize)> {
    let body = &text[start + 3..end];
    let mixed = body.bytes().any(|byte| byte.is_ascii_uppercase())
        && body.bytes().any(|byte| byte.is_ascii_lowercase())
        && body.bytes().any(|byte| byte.is_ascii_digit());
    let valid = mixed
        && !character_before(text, start).is_some_and(|character| is_word_character(character) || character == '-');
    valid.then_some((start, end))
}

/// Fixed-prefix keys: not glued to letters or digits on either side.
fn validate_delimited(text: &str, start: usize, end: usize) -> Option<(usize, usize)> {
    stands_alone(text, start, end, is_word_character).then_some((start, end))
}

/// Slack and `Bearer` tokens: the token has a digit (so that a long word after "bearer" is left
/// alone), not glued to a word before.
fn validate_token_with_digit(text: &str, start: usize, end: usize) -> Option<(usize, usize)> {
    let has_digit = text[start..end].bytes().any(|byte| byte.is_ascii_digit());
    let valid = has_digit && !character_before(text, start).is_some_and(is_word_character);
    valid.then_some((start, end))
}

/// Private keys: always a secret.
fn validate_private_key(_text: &str, start: usize, end: usize) -> Option<(usize, usize)> {
    Some((start, end))
}

#[cfg(test)]
mod tests;
