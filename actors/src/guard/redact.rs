//! Placeholders for redacted values, and putting the values back into the answer.
//!
//! A prompt's redacted value becomes a typed, numbered placeholder: `[EMAIL_1]`, `[PHONE_2]`,
//! `[CARD_1]`. Numbers count per kind from 1 in the order the values appear across the request's
//! texts; the same value (byte for byte) gets the same placeholder wherever it appears. A number
//! whose placeholder already appears literally in one of the request's texts is skipped, so a
//! placeholder never stands for two things (this also keeps the placeholders of two guardrails
//! applied one after the other apart).
//!
//! # Restoring
//! [`Redactions::restore`] replaces, in the answer, exactly the placeholders issued for this
//! request: the bracketed label, underscore and number, same case, nothing inside the brackets
//! added or left out. Anything else that looks like a placeholder stays as it is — a number that
//! was not issued (`[EMAIL_9]`), another case (`[email_1]`), a bare label (`EMAIL_1`), and the
//! answer-side markers (`[EMAIL_REDACTED]`). A restored value is inserted as it was (JSON-escaped
//! in a tool call's arguments, [`Redactions::json_escaped`]) and is not looked at again.

use std::borrow::Cow;

use super::pii::{PII_KIND_COUNT, PiiKind};

/// One redacted value and its placeholder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redaction {
    /// What the value was.
    pub kind: PiiKind,
    /// The placeholder that replaced it, brackets included (`[EMAIL_1]`).
    pub placeholder: String,
    /// The value as it was in the prompt.
    pub original: String,
}

/// The placeholders issued for one request, to put the values back into its answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Redactions {
    /// Every placeholder issued, in the order issued.
    entries: Vec<Redaction>,
    /// The last number issued per kind.
    last_number: [u32; PII_KIND_COUNT],
}

/// The marker that replaces a value found in an answer, which is never put back: `[EMAIL_REDACTED]`.
pub fn answer_marker(kind: PiiKind) -> &'static str {
    match kind {
        PiiKind::Email => "[EMAIL_REDACTED]",
        PiiKind::Phone => "[PHONE_REDACTED]",
        PiiKind::PaymentCard => "[CARD_REDACTED]",
        PiiKind::Iban => "[IBAN_REDACTED]",
        PiiKind::NationalId => "[NATIONAL_ID_REDACTED]",
        PiiKind::Ipv4 => "[IPV4_REDACTED]",
        PiiKind::Ipv6 => "[IPV6_REDACTED]",
        PiiKind::Secret => "[SECRET_REDACTED]",
    }
}

impl Redactions {
    /// True when no value was redacted.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many placeholders were issued.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The placeholders issued, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Redaction> {
        self.entries.iter()
    }

    /// The same placeholders with each value escaped as inside a JSON string, to restore them
    /// into a tool call's arguments (a value with a quote, a backslash or a line break would
    /// otherwise break the JSON).
    pub fn json_escaped(&self) -> Redactions {
        let entries = self
            .entries
            .iter()
            .map(|entry| {
                let quoted = serde_json::Value::String(entry.original.clone()).to_string();
                Redaction { original: quoted[1..quoted.len() - 1].to_owned(), ..entry.clone() }
            })
            .collect();
        Redactions { entries, last_number: self.last_number }
    }

    /// Adds the placeholders of another guardrail applied to the same request after this one.
    pub fn extend(&mut self, later: Redactions) {
        for (mine, theirs) in self.last_number.iter_mut().zip(later.last_number) {
            *mine = (*mine).max(theirs);
        }
        self.entries.extend(later.entries);
    }

    /// `text` with every placeholder issued here replaced by its value (see the module's doc);
    /// borrowed when there was none.
    pub fn restore<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if self.entries.is_empty() || !text.contains('[') {
            return Cow::Borrowed(text);
        }
        let mut restored = String::new();
        let mut copied_up_to = 0;
        let mut position = 0;
        while let Some((start, end, index)) = self.next_placeholder(text, position) {
            restored.push_str(&text[copied_up_to..start]);
            restored.push_str(&self.entries[index].original);
            copied_up_to = end;
            position = end;
        }
        if copied_up_to == 0 {
            return Cow::Borrowed(text);
        }
        restored.push_str(&text[copied_up_to..]);
        Cow::Owned(restored)
    }

    /// The first issued placeholder in `text[from..]`: its range and its position in
    /// [`Redactions::get`]'s numbering.
    pub(super) fn next_placeholder(&self, text: &str, from: usize) -> Option<(usize, usize, usize)> {
        let mut position = from;
        while let Some(offset) = text[position..].find('[') {
            let start = position + offset;
            if let Some(length) = text[start..].find(']') {
                let candidate = &text[start..=start + length];
                if let Some(index) = self.entries.iter().position(|entry| entry.placeholder == candidate) {
                    return Some((start, start + length + 1, index));
                }
            }
            position = start + 1;
        }
        None
    }

    /// The redaction at `index`, in the order issued.
    pub fn get(&self, index: usize) -> Option<&Redaction> {
        self.entries.get(index)
    }

    /// True when `tail` (which starts with `[`) is the beginning of an issued placeholder but not
    /// all of it: more text could complete it.
    pub(super) fn could_complete_placeholder(&self, tail: &str) -> bool {
        self.entries.iter().any(|entry| entry.placeholder.len() > tail.len() && entry.placeholder.starts_with(tail))
    }

    /// The placeholder of `value`: the one it already has, or a new one of `kind` for which
    /// `appears_in_request` is false.
    pub(super) fn placeholder_for(
        &mut self,
        kind: PiiKind,
        value: &str,
        appears_in_request: impl Fn(&str) -> bool,
    ) -> &str {
        let existing = self.entries.iter().position(|entry| entry.kind == kind && entry.original == value);
        let position = match existing {
            Some(position) => position,
            None => {
                let placeholder = loop {
                    let number = &mut self.last_number[kind.index()];
                    *number += 1;
                    let candidate = format!("[{}_{}]", kind.placeholder_label(), number);
                    if !appears_in_request(&candidate) {
                        break candidate;
                    }
                };
                self.entries.push(Redaction { kind, placeholder, original: value.to_owned() });
                self.entries.len() - 1
            }
        };
        &self.entries[position].placeholder
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `placeholder` appears in one of `texts`.
    fn in_texts<'a>(texts: &'a [&'a str]) -> impl Fn(&str) -> bool + 'a {
        move |placeholder| texts.iter().any(|text| text.contains(placeholder))
    }

    #[test]
    fn same_value_same_placeholder_and_numbers_per_kind() {
        let mut redactions = Redactions::default();
        let texts = ["a@x.io and b@x.io"];
        assert_eq!(redactions.placeholder_for(PiiKind::Email, "a@x.io", in_texts(&texts)), "[EMAIL_1]");
        assert_eq!(redactions.placeholder_for(PiiKind::Phone, "+1 415 555 0100", in_texts(&texts)), "[PHONE_1]");
        assert_eq!(redactions.placeholder_for(PiiKind::Email, "b@x.io", in_texts(&texts)), "[EMAIL_2]");
        assert_eq!(redactions.placeholder_for(PiiKind::Email, "a@x.io", in_texts(&texts)), "[EMAIL_1]");
        assert_eq!(redactions.len(), 3);
    }

    #[test]
    fn placeholders_already_in_the_texts_are_skipped() {
        let mut redactions = Redactions::default();
        let texts = ["keep [EMAIL_1] and [EMAIL_2] as they are", "mail a@x.io"];
        assert_eq!(redactions.placeholder_for(PiiKind::Email, "a@x.io", in_texts(&texts)), "[EMAIL_3]");
        assert_eq!(redactions.restore("[EMAIL_1] [EMAIL_3]"), "[EMAIL_1] a@x.io");
    }

    #[test]
    fn only_issued_placeholders_are_restored() {
        let mut redactions = Redactions::default();
        redactions.placeholder_for(PiiKind::Email, "a@x.io", |_| false);
        redactions.placeholder_for(PiiKind::PaymentCard, "4111 1111 1111 1111", |_| false);
        let answer = "[EMAIL_1], [[EMAIL_1]], [EMAIL_2], [email_1], EMAIL_1, [ EMAIL_1 ], [EMAIL_REDACTED], [CARD_1]";
        assert_eq!(
            redactions.restore(answer),
            "a@x.io, [a@x.io], [EMAIL_2], [email_1], EMAIL_1, [ EMAIL_1 ], [EMAIL_REDACTED], 4111 1111 1111 1111"
        );
    }

    #[test]
    fn restoring_without_placeholders_borrows() {
        let mut redactions = Redactions::default();
        assert!(matches!(redactions.restore("[EMAIL_1]"), Cow::Borrowed(_)));
        redactions.placeholder_for(PiiKind::Email, "a@x.io", |_| false);
        assert!(matches!(redactions.restore("no [placeholder] here"), Cow::Borrowed(_)));
    }

    #[test]
    fn restored_values_are_not_restored_again() {
        let mut redactions = Redactions::default();
        redactions.placeholder_for(PiiKind::Secret, "[SECRET_1]x", |_| false);
        assert_eq!(redactions.restore("[SECRET_1]"), "[SECRET_1]x");
    }

    #[test]
    fn prefixes_of_placeholders_could_be_completed() {
        let mut redactions = Redactions::default();
        redactions.placeholder_for(PiiKind::NationalId, "123-45-6789", |_| false);
        assert!(redactions.could_complete_placeholder("[NAT"));
        assert!(redactions.could_complete_placeholder("[NATIONAL_ID_1"));
        assert!(!redactions.could_complete_placeholder("[NATIONAL_ID_1]"));
        assert!(!redactions.could_complete_placeholder("[EMA"));
    }

    #[test]
    fn extending_keeps_numbers_apart() {
        let mut first = Redactions::default();
        first.placeholder_for(PiiKind::Email, "a@x.io", |_| false);
        let mut second = Redactions::default();
        second.placeholder_for(PiiKind::Email, "b@x.io", in_texts(&["[EMAIL_1]"]));
        first.extend(second);
        assert_eq!(first.restore("[EMAIL_1] [EMAIL_2]"), "a@x.io b@x.io");
        assert_eq!(first.placeholder_for(PiiKind::Email, "c@x.io", |_| false), "[EMAIL_3]");
    }
}
