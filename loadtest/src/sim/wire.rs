//! Request pieces both wire formats share: message content given as a string or as blocks.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};

/// Message content: a string, a list of content blocks, or absent (`null`).
///
/// Only `text` blocks carry text; other blocks (images, tool calls) are accepted and ignored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) enum Content {
    /// `null` or missing.
    #[default]
    Empty,
    /// A plain string.
    Text(String),
    /// The texts of the `text` blocks, in order.
    Blocks(Vec<String>),
}

impl Content {
    /// The text pieces whose concatenation is the content.
    pub(crate) fn parts(&self) -> impl Iterator<Item = &str> {
        let (single, blocks): (Option<&str>, &[String]) = match self {
            Self::Empty => (None, &[]),
            Self::Text(text) => (Some(text.as_str()), &[]),
            Self::Blocks(blocks) => (None, blocks.as_slice()),
        };
        single.into_iter().chain(blocks.iter().map(String::as_str))
    }
}

impl<'de> Deserialize<'de> for Content {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ContentVisitor)
    }
}

/// Reads [`Content`] without serde's buffering of untagged enums.
struct ContentVisitor;

impl<'de> Visitor<'de> for ContentVisitor {
    type Value = Content;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a string or a list of content blocks")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Content, E> {
        Ok(Content::Text(text.to_owned()))
    }

    fn visit_string<E: de::Error>(self, text: String) -> Result<Content, E> {
        Ok(Content::Text(text))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Content, E> {
        Ok(Content::Empty)
    }

    fn visit_none<E: de::Error>(self) -> Result<Content, E> {
        Ok(Content::Empty)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Content, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut blocks: A) -> Result<Content, A::Error> {
        let mut texts = Vec::with_capacity(blocks.size_hint().unwrap_or(1));
        while let Some(block) = blocks.next_element::<ContentBlock>()? {
            if let (BlockKind::Text, Some(text)) = (block.kind, block.text) {
                texts.push(text);
            }
        }
        Ok(Content::Blocks(texts))
    }
}

/// One content block; only its type and text matter here.
#[derive(Deserialize)]
struct ContentBlock {
    /// The block's `type`.
    #[serde(rename = "type")]
    kind: BlockKind,
    /// The text of a `text` block.
    #[serde(default)]
    text: Option<String>,
}

/// The kinds of content block the simulator tells apart.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum BlockKind {
    /// A text block.
    Text,
    /// Any other block.
    #[serde(other)]
    Other,
}

/// A value given as one string or a list of strings, such as OpenAI's `stop`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub(crate) enum OneOrMany {
    /// A single string.
    One(String),
    /// A list of strings.
    Many(Vec<String>),
}

impl OneOrMany {
    /// Number of strings given.
    pub(crate) fn len(&self) -> usize {
        match self {
            Self::One(_) => 1,
            Self::Many(many) => many.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(json: &str) -> anyhow::Result<Vec<String>> {
        let content: Content = serde_json::from_str(json)?;
        Ok(content.parts().map(str::to_owned).collect())
    }

    #[test]
    fn content_is_a_string_blocks_or_null() -> anyhow::Result<()> {
        assert_eq!(parts(r#""hello""#)?, vec!["hello"]);
        assert_eq!(parts("null")?, Vec::<String>::new());
        let blocks = r#"[{"type":"text","text":"a "},{"type":"image_url","image_url":{"url":"x"}},
                         {"type":"text","text":"b","cache_control":{"type":"ephemeral"}}]"#;
        assert_eq!(parts(blocks)?, vec!["a ", "b"]);
        assert!(serde_json::from_str::<Content>("42").is_err());
        Ok(())
    }

    #[test]
    fn stop_is_one_string_or_many() -> anyhow::Result<()> {
        assert_eq!(serde_json::from_str::<OneOrMany>(r#""x""#)?.len(), 1);
        assert_eq!(serde_json::from_str::<OneOrMany>(r#"["x","y"]"#)?.len(), 2);
        Ok(())
    }
}
