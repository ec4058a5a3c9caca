//! Request pieces both wire formats share: message content given as a string or as blocks, and
//! checks both formats make on tool names and JSON Schemas.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde_json::Value;

/// Message content: a string, a list of content blocks (OpenAI's parts, Anthropic's blocks), or
/// absent (`null`).
///
/// Only `text` blocks carry the text the fingerprint hashes; the other blocks are kept for the
/// checks and the tool turns of each format.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) enum Content {
    /// `null` or missing.
    #[default]
    Empty,
    /// A plain string.
    Text(String),
    /// The blocks, in order.
    Blocks(Vec<Block>),
}

/// One content block (OpenAI calls them parts). Every field but `type` is optional here; each
/// format checks the ones its block types require.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub(crate) struct Block {
    /// The block's `type`: `text`, `image_url`, `image`, `tool_use`, `tool_result`, ...
    #[serde(rename = "type", default)]
    pub(crate) kind: String,
    /// The text of a `text` block.
    #[serde(default)]
    pub(crate) text: Option<String>,
    /// OpenAI's `image_url` part: `{"url": ..., "detail"?: ...}`.
    #[serde(default)]
    pub(crate) image_url: Option<Value>,
    /// Anthropic's `image` (or `document`) source: `{"type": "base64" | "url" | "file", ...}`.
    #[serde(default)]
    pub(crate) source: Option<Value>,
    /// The id of an Anthropic `tool_use` block.
    #[serde(default)]
    pub(crate) id: Option<String>,
    /// The tool named by an Anthropic `tool_use` block.
    #[serde(default)]
    pub(crate) name: Option<String>,
    /// The input of an Anthropic `tool_use` block.
    #[serde(default)]
    pub(crate) input: Option<Value>,
    /// The `tool_use` an Anthropic `tool_result` block answers.
    #[serde(default)]
    pub(crate) tool_use_id: Option<String>,
    /// The content of an Anthropic `tool_result` block: a string or blocks.
    #[serde(default)]
    pub(crate) content: Option<Content>,
    /// Whether an Anthropic `tool_result` reports a failure.
    #[serde(default)]
    pub(crate) is_error: Option<bool>,
}

impl Block {
    /// The text of a `text` block; `None` for any other block.
    pub(crate) fn text_part(&self) -> Option<&str> {
        if self.kind == "text" {
            self.text.as_deref()
        } else {
            None
        }
    }
}

impl Content {
    /// The text pieces whose concatenation is the content: the string, or the texts of the
    /// `text` blocks.
    pub(crate) fn parts(&self) -> impl Iterator<Item = &str> {
        let (single, blocks): (Option<&str>, &[Block]) = match self {
            Self::Empty => (None, &[]),
            Self::Text(text) => (Some(text.as_str()), &[]),
            Self::Blocks(blocks) => (None, blocks.as_slice()),
        };
        single
            .into_iter()
            .chain(blocks.iter().filter_map(Block::text_part))
    }

    /// The blocks, none for a string or `null`.
    pub(crate) fn blocks(&self) -> &[Block] {
        match self {
            Self::Blocks(blocks) => blocks,
            Self::Empty | Self::Text(_) => &[],
        }
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
        let mut all = Vec::with_capacity(blocks.size_hint().unwrap_or(1));
        while let Some(block) = blocks.next_element::<Block>()? {
            all.push(block);
        }
        Ok(Content::Blocks(all))
    }
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

/// Longest tool name both providers accept.
const MAX_TOOL_NAME: usize = 64;

/// Whether `name` is a tool name both providers accept: 1 to 64 ASCII letters, digits, `_` or
/// `-`.
pub(crate) fn valid_tool_name(name: &str) -> bool {
    (1..=MAX_TOOL_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-')
}

/// The canonical text of a tool call's arguments: compact JSON, keys in the order given.
pub(crate) fn compact_json(value: &Value) -> String {
    serde_json::to_string(value).unwrap_or_default()
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
    fn tool_blocks_keep_their_fields() -> anyhow::Result<()> {
        let content: Content = serde_json::from_str(
            r#"[{"type":"tool_result","tool_use_id":"t1","is_error":true,
                 "content":[{"type":"text","text":"18C"}]},
                {"type":"tool_use","id":"t2","name":"f","input":{"a":1}}]"#,
        )?;
        let blocks = content.blocks();
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0].tool_use_id.as_deref(), Some("t1"));
        assert_eq!(blocks[0].is_error, Some(true));
        let inner: Vec<&str> = blocks[0].content.iter().flat_map(Content::parts).collect();
        assert_eq!(inner, ["18C"]);
        assert_eq!(blocks[1].input, Some(serde_json::json!({"a": 1})));
        assert_eq!(
            content.parts().count(),
            0,
            "tool blocks carry no text of their own"
        );
        Ok(())
    }

    #[test]
    fn stop_is_one_string_or_many() -> anyhow::Result<()> {
        assert_eq!(serde_json::from_str::<OneOrMany>(r#""x""#)?.len(), 1);
        assert_eq!(serde_json::from_str::<OneOrMany>(r#"["x","y"]"#)?.len(), 2);
        Ok(())
    }

    #[test]
    fn tool_names_follow_the_providers_pattern() {
        assert!(valid_tool_name("get_weather-2"));
        assert!(!valid_tool_name(""));
        assert!(!valid_tool_name("has space"));
        assert!(!valid_tool_name(&"x".repeat(65)));
    }
}
