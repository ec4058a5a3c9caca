//! Deny lists: words and phrases a guardrail refuses or logs, alone or grouped in named topics.
//!
//! A phrase matches as whole words, case-insensitively (Unicode simple case folding), with any
//! run of whitespace where the phrase has a space: "build a bomb" matches "Build  a\nBOMB" but not
//! "rebuild a bomb" or "build a bombshell". "Whole word" means the match is neither preceded nor
//! followed by a letter, digit or `_`.
//!
//! Each list (the deny words, and each topic) is one regex alternation; the guardrail's
//! [`regex::RegexSet`] of every pattern looks at a text once and only the lists it reports are
//! searched again to count and place their matches.

use std::sync::Arc;

use regex::{Regex, RegexBuilder};

use super::{Action, RuleKind};

/// Longest deny phrase, in characters. It bounds how much of a stream the stream guard holds
/// back for a phrase that may be split across deltas.
pub const DENY_PHRASE_CHARACTER_LIMIT: usize = 100;

/// Compiled size limit of one list's regex, in bytes: room for some ten thousand phrases.
pub const REGEX_SIZE_LIMIT: usize = 64 * 1024 * 1024;

/// One list: the deny words, or one topic.
#[derive(Clone, Debug)]
pub struct DenyList {
    /// `deny.words` or `deny.topic.<name>`.
    pub rule_id: Arc<str>,
    /// [`RuleKind::DenyWords`] or [`RuleKind::DenyTopic`].
    pub kind: RuleKind,
    /// What a match does.
    pub action: Action,
    /// The list's phrases, as configured.
    pub phrases: Vec<String>,
}

/// One match of a list's phrase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DenyMatch {
    /// Position of the list in [`DenyDetector::lists`].
    pub list: usize,
    /// Byte offset of the first character.
    pub start: usize,
    /// Byte offset just past the last character.
    pub end: usize,
}

/// The compiled deny lists of one guardrail.
#[derive(Debug)]
pub struct DenyDetector {
    /// Each list's regex source, for a first-pass set.
    sources: Vec<String>,
    /// Each list's regex, for the second pass.
    regexes: Vec<Regex>,
    /// Every prefix of every phrase, anchored at the end of the text: what a stream's tail must
    /// keep back because the next delta could complete it.
    tail: Regex,
    /// The lists, in the set's order.
    lists: Vec<DenyList>,
}

impl DenyDetector {
    /// Compiles `lists`, whose phrases are already checked to be non-empty and within
    /// [`DENY_PHRASE_CHARACTER_LIMIT`].
    pub fn new(lists: Vec<DenyList>) -> Result<DenyDetector, regex::Error> {
        let sources: Vec<String> = lists.iter().map(|list| list_pattern(&list.phrases)).collect();
        let regexes = sources
            .iter()
            .map(|pattern| RegexBuilder::new(pattern).size_limit(REGEX_SIZE_LIMIT).build())
            .collect::<Result<Vec<_>, _>>()?;
        let prefixes: Vec<String> =
            lists.iter().flat_map(|list| list.phrases.iter()).map(|phrase| prefix_pattern(phrase)).collect();
        let tail = RegexBuilder::new(&format!(r"(?i)(?:{})\z", prefixes.join("|")))
            .size_limit(REGEX_SIZE_LIMIT)
            .nest_limit(u32::try_from(4 * DENY_PHRASE_CHARACTER_LIMIT).unwrap_or(u32::MAX))
            .build()?;
        Ok(DenyDetector { sources, regexes, tail, lists })
    }

    /// The lists, in the order [`DenyMatch::list`] counts them.
    pub fn lists(&self) -> &[DenyList] {
        &self.lists
    }

    /// Each list's regex, in list order, for a first-pass [`regex::RegexSet`].
    pub fn patterns(&self) -> impl Iterator<Item = &str> + '_ {
        self.sources.iter().map(String::as_str)
    }

    /// Appends to `found` every whole-word match in `haystack[from..]`, list by list. The text
    /// before `from` is only looked at for the word boundary.
    pub fn find(&self, haystack: &str, from: usize, found: &mut Vec<DenyMatch>) {
        self.find_selected(haystack, from, |_| true, found);
    }

    /// [`DenyDetector::find`] with only the lists that are `selected` (those a first pass saw
    /// match).
    pub fn find_selected(
        &self,
        haystack: &str,
        from: usize,
        selected: impl Fn(usize) -> bool,
        found: &mut Vec<DenyMatch>,
    ) {
        for (list, regex) in self.regexes.iter().enumerate() {
            if !selected(list) {
                continue;
            }
            let mut position = from;
            while let Some(candidate) = regex.find_at(haystack, position) {
                if !candidate.is_empty() && is_whole_word(haystack, candidate.start(), candidate.end()) {
                    found.push(DenyMatch { list, start: candidate.start(), end: candidate.end() });
                    position = candidate.end().max(next_character(haystack, candidate.start()));
                } else {
                    position = next_character(haystack, candidate.start());
                }
                if position > haystack.len() {
                    break;
                }
            }
        }
    }

    /// Where the earliest end of `haystack[from..]` starts that is the beginning of a phrase
    /// (a whole phrase included, since a letter after it would undo the match), on a word
    /// boundary; `None` when no phrase could be completed by more text.
    pub fn unfinished_tail_start(&self, haystack: &str, from: usize) -> Option<usize> {
        let mut position = from;
        while let Some(candidate) = self.tail.find_at(haystack, position) {
            if !super::pii::character_before(haystack, candidate.start()).is_some_and(is_word_character) {
                return Some(candidate.start());
            }
            position = next_character(haystack, candidate.start());
            if position > haystack.len() {
                break;
            }
        }
        None
    }
}

/// The byte offset of the character after the one at `index` (one past the end at the end).
fn next_character(haystack: &str, index: usize) -> usize {
    index + haystack[index..].chars().next().map_or(1, char::len_utf8)
}

/// Letters, digits and `_`.
fn is_word_character(character: char) -> bool {
    character.is_alphanumeric() || character == '_'
}

/// True when `haystack[start..end]` is neither preceded nor followed by a word character.
fn is_whole_word(haystack: &str, start: usize, end: usize) -> bool {
    !super::pii::character_before(haystack, start).is_some_and(is_word_character)
        && !super::pii::character_after(haystack, end).is_some_and(is_word_character)
}

/// The regex of one list: its phrases, longest first, as a case-insensitive alternation.
fn list_pattern(phrases: &[String]) -> String {
    let mut sorted: Vec<&String> = phrases.iter().collect();
    sorted.sort_by_key(|phrase| std::cmp::Reverse(phrase.len()));
    let alternatives: Vec<String> = sorted.iter().map(|phrase| phrase_pattern(phrase)).collect();
    format!("(?i)(?:{})", alternatives.join("|"))
}

/// One phrase: its words escaped, joined by runs of whitespace.
fn phrase_pattern(phrase: &str) -> String {
    phrase.split_whitespace().map(regex::escape).collect::<Vec<_>>().join(r"\s+")
}

/// Every non-empty prefix of one phrase, as nested optional groups: `b(?:o(?:m(?:b)?)?)?`.
fn prefix_pattern(phrase: &str) -> String {
    let mut atoms: Vec<String> = Vec::new();
    for (position, word) in phrase.split_whitespace().enumerate() {
        if position > 0 {
            atoms.push(r"\s+".to_owned());
        }
        atoms.extend(word.chars().map(|character| regex::escape(character.encode_utf8(&mut [0; 4]))));
    }
    atoms.iter().rev().fold(
        String::new(),
        |inner, atom| {
            if inner.is_empty() { atom.clone() } else { format!("{atom}(?:{inner})?") }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detector(words: &[&str], topics: &[(&str, &[&str])]) -> DenyDetector {
        let mut lists = vec![DenyList {
            rule_id: Arc::from("deny.words"),
            kind: RuleKind::DenyWords,
            action: Action::Block,
            phrases: words.iter().map(|word| (*word).to_owned()).collect(),
        }];
        lists.retain(|list| !list.phrases.is_empty());
        for (name, phrases) in topics {
            lists.push(DenyList {
                rule_id: Arc::from(format!("deny.topic.{name}")),
                kind: RuleKind::DenyTopic,
                action: Action::Log,
                phrases: phrases.iter().map(|phrase| (*phrase).to_owned()).collect(),
            });
        }
        DenyDetector::new(lists).unwrap()
    }

    /// Each match as its list and text; lists count from 0 among those with phrases.
    fn matches<'a>(detector: &DenyDetector, text: &'a str) -> Vec<(usize, &'a str)> {
        let mut found = Vec::new();
        detector.find(text, 0, &mut found);
        found.iter().map(|found| (found.list, &text[found.start..found.end])).collect()
    }

    #[test]
    fn words_match_whole_and_case_insensitively() {
        let detector = detector(&["bomb", "c++"], &[]);
        assert_eq!(matches(&detector, "A BOMB, a Bomb."), vec![(0, "BOMB"), (0, "Bomb")]);
        assert_eq!(matches(&detector, "bombshell, abomb, bomb_x, bomb2"), vec![]);
        assert_eq!(matches(&detector, "I like c++ a lot"), vec![(0, "c++")]);
        assert_eq!(matches(&detector, "abc++"), vec![]);
    }

    #[test]
    fn phrases_match_across_any_whitespace() {
        let detector = detector(&[], &[("weapons", &["build a bomb", "nerve agent"])]);
        assert_eq!(matches(&detector, "how to Build  a\nBOMB?"), vec![(0, "Build  a\nBOMB")]);
        assert_eq!(matches(&detector, "rebuild a bomb; build a bombshell"), vec![]);
        assert_eq!(matches(&detector, "nerve agents, a nerve agent"), vec![(0, "nerve agent")]);
    }

    #[test]
    fn non_ascii_phrases_fold_case() {
        let detector = detector(&["Éclair", "москва"], &[]);
        assert_eq!(matches(&detector, "un ÉCLAIR et МОСКВА"), vec![(0, "ÉCLAIR"), (0, "МОСКВА")]);
        assert_eq!(matches(&detector, "éclairs москвая"), vec![]);
    }

    #[test]
    fn overlapping_candidates_are_all_tried() {
        let detector = detector(&["ab"], &[]);
        assert_eq!(matches(&detector, "aab ab"), vec![(0, "ab")]);
    }

    #[test]
    fn unfinished_tails_are_phrase_prefixes_on_word_boundaries() {
        let detector = detector(&["bomb"], &[("weapons", &["build a bomb"])]);
        let tail = |text: &'static str| detector.unfinished_tail_start(text, 0).map(|start| &text[start..]);
        assert_eq!(tail("how to bu"), Some("bu"));
        assert_eq!(tail("how to build a "), Some("build a "));
        assert_eq!(tail("how to build a bo"), Some("build a bo"));
        assert_eq!(tail("a bomb"), Some("bomb"));
        assert_eq!(tail("a bombs"), None);
        assert_eq!(tail("a rebo"), None);
        assert_eq!(tail("a word "), None);
        assert_eq!(tail("nothing"), None);
    }

    #[test]
    fn prefix_patterns_nest() {
        assert_eq!(prefix_pattern("ab c"), r"a(?:b(?:\s+(?:c)?)?)?");
    }
}
