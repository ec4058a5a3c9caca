//! Tool calls and structured answers: which tools the simulator calls, the ids of the calls, and
//! the JSON it generates from a JSON Schema for the arguments and for `json_schema` answers.
//!
//! Everything is derived from the prompt's fingerprint with xxh3 seeded by it, so the same
//! conversation and tools always get the same calls.

use serde_json::{Map, Number, Value};
use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::answer::word;
use super::wire::compact_json;

/// Deepest nesting the generator follows: deeper objects are `{}`, deeper arrays `[]` and deeper
/// references `null`.
const MAX_DEPTH: u32 = 12;

/// Most elements the generator puts in an array (when `minItems` asks for more than one).
const MAX_ITEMS: u64 = 8;

/// A tool call the simulator answers with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimToolCall {
    /// 16 lowercase hex digits identifying the call; the wire id is `call_<id_hex>` (OpenAI) or
    /// `toolu_<id_hex>` (Anthropic).
    pub id_hex: String,
    /// The tool called.
    pub name: String,
    /// The arguments as compact JSON text (OpenAI's `function.arguments`), keys in the order of
    /// the tool's schema.
    pub arguments: String,
    /// The arguments as a JSON object (Anthropic's `input`).
    pub input: Value,
}

impl SimToolCall {
    /// The call's id on the OpenAI wire: `call_<16 hex>`.
    pub fn openai_id(&self) -> String {
        format!("call_{}", self.id_hex)
    }

    /// The call's id on the Anthropic wire: `toolu_<16 hex>`.
    pub fn anthropic_id(&self) -> String {
        format!("toolu_{}", self.id_hex)
    }
}

/// A tool the request offers the model: its name and the JSON Schema of its arguments.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OfferedTool<'a> {
    /// The tool's name.
    pub(crate) name: &'a str,
    /// The schema of its arguments; none means no arguments.
    pub(crate) schema: Option<&'a Value>,
}

/// The caller's tool choice, in terms both formats share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ToolChoice<'a> {
    /// The model decides (OpenAI `auto`, Anthropic `auto`); the simulator always calls.
    Auto,
    /// A call is required (OpenAI `required`, Anthropic `any`).
    Required,
    /// No calls (`none`).
    None,
    /// This tool must be called.
    Named(&'a str),
}

/// The calls the simulator makes for a prompt with `fingerprint` offered `tools`: the named tool
/// for a named choice; otherwise one tool picked by the fingerprint, and a second, different one
/// when `parallel` and at least two tools are offered. None for [`ToolChoice::None`] or a name
/// not offered.
pub(crate) fn calls(
    fingerprint: u64,
    tools: &[OfferedTool<'_>],
    choice: ToolChoice<'_>,
    parallel: bool,
) -> Vec<SimToolCall> {
    let chosen: Vec<&OfferedTool<'_>> = match choice {
        ToolChoice::None => Vec::new(),
        ToolChoice::Named(name) => tools
            .iter()
            .filter(|tool| tool.name == name)
            .take(1)
            .collect(),
        ToolChoice::Auto | ToolChoice::Required => pick(fingerprint, tools, parallel),
    };
    chosen
        .into_iter()
        .enumerate()
        .map(|(index, tool)| call(fingerprint, index, tool))
        .collect()
}

/// One tool, or two different ones when `parallel`, picked by the fingerprint.
fn pick<'t, 'a>(
    fingerprint: u64,
    tools: &'t [OfferedTool<'a>],
    parallel: bool,
) -> Vec<&'t OfferedTool<'a>> {
    let offered = tools.len() as u64;
    if offered == 0 {
        return Vec::new();
    }
    let first = seeded(fingerprint, "tool 0") % offered;
    let mut picked = vec![first];
    if parallel && offered >= 2 {
        let offset = 1 + seeded(fingerprint, "tool 1") % (offered - 1);
        picked.push((first + offset) % offered);
    }
    picked
        .into_iter()
        .filter_map(|position| tools.get(usize::try_from(position).ok()?))
        .collect()
}

/// Call `index` of the answer, to `tool`.
fn call(fingerprint: u64, index: usize, tool: &OfferedTool<'_>) -> SimToolCall {
    let id_hex = format!("{:016x}", seeded(fingerprint, &format!("call id {index}")));
    let seed = seeded(fingerprint, &format!("arguments {index}"));
    let input = match tool.schema.map(|schema| generate(schema, seed)) {
        Some(input @ Value::Object(_)) => input,
        _ => Value::Object(Map::new()),
    };
    SimToolCall {
        id_hex,
        name: tool.name.to_owned(),
        arguments: compact_json(&input),
        input,
    }
}

/// The value of a `json_schema` answer to a prompt with `fingerprint`.
pub(crate) fn schema_answer(fingerprint: u64, schema: &Value) -> Value {
    generate(schema, seeded(fingerprint, "json schema"))
}

/// A number drawn from `fingerprint` for `label`.
fn seeded(fingerprint: u64, label: &str) -> u64 {
    xxh3_64_with_seed(label.as_bytes(), fingerprint)
}

/// A JSON value following `schema`, drawn from `seed`: every property of an object in the
/// schema's order, a word for a string, a number in the bounds given, the first `enum` value,
/// `const`, one element (or `minItems`) for an array, the first non-null alternative of
/// `anyOf`/`oneOf`/`allOf`, local `$ref`s followed.
pub(crate) fn generate(schema: &Value, seed: u64) -> Value {
    let mut generator = Generator {
        root: schema,
        seed,
        drawn: 0,
    };
    generator.value(schema, 0)
}

/// Walks a schema, drawing a fresh number for every value it makes.
struct Generator<'a> {
    /// The whole schema, for `$ref`s.
    root: &'a Value,
    /// Seeds every draw.
    seed: u64,
    /// Draws so far.
    drawn: u64,
}

impl Generator<'_> {
    /// The next number.
    fn draw(&mut self) -> u64 {
        let number = xxh3_64_with_seed(&self.drawn.to_le_bytes(), self.seed);
        self.drawn += 1;
        number
    }

    /// A value for `schema` at nesting `depth`.
    fn value(&mut self, schema: &Value, depth: u32) -> Value {
        let fields = match schema {
            Value::Object(fields) => fields,
            Value::Bool(false) => return Value::Null,
            _ => return self.string(),
        };
        if let Some(reference) = fields.get("$ref").and_then(Value::as_str) {
            let target = reference
                .strip_prefix('#')
                .and_then(|pointer| self.root.pointer(pointer));
            return match target {
                Some(target) if depth < MAX_DEPTH => self.value(target, depth + 1),
                _ => Value::Null,
            };
        }
        if let Some(constant) = fields.get("const") {
            return constant.clone();
        }
        if let Some(first) = fields
            .get("enum")
            .and_then(Value::as_array)
            .and_then(|values| values.first())
        {
            return first.clone();
        }
        for combinator in ["anyOf", "oneOf", "allOf"] {
            if let Some(alternatives) = fields.get(combinator).and_then(Value::as_array) {
                let chosen = alternatives
                    .iter()
                    .find(|alternative| !is_null_schema(alternative))
                    .or_else(|| alternatives.first());
                if let Some(chosen) = chosen {
                    return if depth < MAX_DEPTH {
                        self.value(chosen, depth + 1)
                    } else {
                        Value::Null
                    };
                }
            }
        }
        match type_of(fields) {
            "object" => self.object(fields, depth),
            "array" => self.array(fields, depth),
            "integer" => self.integer(fields),
            "number" => self.number(fields),
            "boolean" => Value::Bool(self.draw() & 1 == 0),
            "null" => Value::Null,
            _ => self.string(),
        }
    }

    /// Every property, in order.
    fn object(&mut self, fields: &Map<String, Value>, depth: u32) -> Value {
        let mut object = Map::new();
        if depth >= MAX_DEPTH {
            return Value::Object(object);
        }
        if let Some(Value::Object(properties)) = fields.get("properties") {
            for (name, property) in properties {
                let value = self.value(property, depth + 1);
                object.insert(name.clone(), value);
            }
        }
        Value::Object(object)
    }

    /// One element of `items` (or `minItems` of them, at most [`MAX_ITEMS`]), or one per
    /// `prefixItems` schema.
    fn array(&mut self, fields: &Map<String, Value>, depth: u32) -> Value {
        if depth >= MAX_DEPTH || fields.get("maxItems").and_then(Value::as_u64) == Some(0) {
            return Value::Array(Vec::new());
        }
        let tuple = fields
            .get("prefixItems")
            .or_else(|| fields.get("items").filter(|items| items.is_array()))
            .and_then(Value::as_array);
        if let Some(schemas) = tuple {
            return Value::Array(
                schemas
                    .iter()
                    .map(|schema| self.value(schema, depth + 1))
                    .collect(),
            );
        }
        let wanted = fields
            .get("minItems")
            .and_then(Value::as_u64)
            .unwrap_or(1)
            .clamp(1, MAX_ITEMS);
        let items = fields.get("items");
        let elements = (0..wanted)
            .map(|_| match items {
                Some(items) => self.value(items, depth + 1),
                None => self.string(),
            })
            .collect();
        Value::Array(elements)
    }

    /// A word.
    fn string(&mut self) -> Value {
        Value::String(word(self.draw()).to_owned())
    }

    /// An integer within `minimum`/`maximum` (0 to 99 without bounds).
    fn integer(&mut self, fields: &Map<String, Value>) -> Value {
        let bound = |name: &str| fields.get(name).and_then(Value::as_f64);
        let low = bound("minimum")
            .map(f64::ceil)
            .or_else(|| bound("exclusiveMinimum").map(|value| value.floor() + 1.0))
            .map(float_to_i64);
        let high = bound("maximum")
            .map(f64::floor)
            .or_else(|| bound("exclusiveMaximum").map(|value| value.ceil() - 1.0))
            .map(float_to_i64);
        let low = match (low, high) {
            (Some(low), _) => low,
            (None, Some(high)) => high.saturating_sub(99),
            (None, None) => 0,
        };
        let high = high.unwrap_or(low.saturating_add(99)).max(low);
        let span = u64::try_from(i128::from(high) - i128::from(low) + 1).unwrap_or(u64::MAX);
        let offset = i64::try_from(self.draw() % span.max(1)).unwrap_or(0);
        Value::Number(Number::from(low.saturating_add(offset)))
    }

    /// A number with two decimals within `minimum`/`maximum` (0 to 99.99 without bounds).
    fn number(&mut self, fields: &Map<String, Value>) -> Value {
        let bound = |name: &str| fields.get(name).and_then(Value::as_f64);
        let low = bound("minimum").or_else(|| bound("exclusiveMinimum"));
        let high = bound("maximum").or_else(|| bound("exclusiveMaximum"));
        let low = match (low, high) {
            (Some(low), _) => low,
            (None, Some(high)) => high - 100.0,
            (None, None) => 0.0,
        };
        let high = high.unwrap_or(low + 100.0).max(low);
        let fraction = (self.draw() % 10_000) as f64 / 10_000.0;
        let value = ((low + fraction * (high - low)) * 100.0).round() / 100.0;
        Number::from_f64(value.clamp(low, high)).map_or(Value::Null, Value::Number)
    }
}

/// An `f64` bound as an integer, saturating.
fn float_to_i64(value: f64) -> i64 {
    value as i64
}

/// The type a schema describes: `type` (the first non-null of a list), else `object` for
/// `properties`, `array` for `items`, else empty.
fn type_of(fields: &Map<String, Value>) -> &str {
    match fields.get("type") {
        Some(Value::String(kind)) => kind,
        Some(Value::Array(kinds)) => kinds
            .iter()
            .filter_map(Value::as_str)
            .find(|kind| *kind != "null")
            .or_else(|| kinds.iter().find_map(Value::as_str))
            .unwrap_or(""),
        _ if fields.contains_key("properties") => "object",
        _ if fields.contains_key("items") || fields.contains_key("prefixItems") => "array",
        _ => "",
    }
}

/// Whether `schema` only allows `null`.
fn is_null_schema(schema: &Value) -> bool {
    schema.get("type").and_then(Value::as_str) == Some("null")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tool<'a>(name: &'a str, schema: &'a Value) -> OfferedTool<'a> {
        OfferedTool {
            name,
            schema: Some(schema),
        }
    }

    #[test]
    fn every_property_is_generated_in_order_with_its_type() {
        let schema = json!({
            "type": "object",
            "properties": {
                "zeta": { "type": "string" },
                "count": { "type": "integer", "minimum": 5, "maximum": 7 },
                "ratio": { "type": "number" },
                "flag": { "type": "boolean" },
                "unit": { "type": "string", "enum": ["celsius", "fahrenheit"] },
                "nested": { "type": "object", "properties": { "inner": { "type": ["string", "null"] } } },
                "list": { "type": "array", "items": { "type": "integer" } },
                "alpha": { "const": 3 }
            }
        });
        let value = generate(&schema, 42);
        let keys: Vec<&String> = value
            .as_object()
            .map(|o| o.keys().collect())
            .unwrap_or_default();
        assert_eq!(
            keys,
            [
                "zeta", "count", "ratio", "flag", "unit", "nested", "list", "alpha"
            ]
        );
        assert!(value["zeta"].is_string());
        assert!((5..=7).contains(&value["count"].as_i64().unwrap_or(-1)));
        assert!(value["ratio"].is_number());
        assert!(value["flag"].is_boolean());
        assert_eq!(value["unit"], "celsius");
        assert!(value["nested"]["inner"].is_string());
        assert_eq!(value["list"].as_array().map(Vec::len), Some(1));
        assert!(value["list"][0].is_i64());
        assert_eq!(value["alpha"], 3);
        assert_eq!(generate(&schema, 42), value, "deterministic");
    }

    #[test]
    fn references_and_alternatives_are_followed_and_recursion_ends() {
        let schema = json!({
            "$defs": { "node": { "type": "object", "properties": {
                "name": { "type": "string" },
                "children": { "type": "array", "items": { "$ref": "#/$defs/node" } }
            } } },
            "anyOf": [{ "type": "null" }, { "$ref": "#/$defs/node" }]
        });
        let value = generate(&schema, 7);
        assert!(value["name"].is_string());
        assert!(value["children"][0]["name"].is_string());
        assert_eq!(generate(&json!({ "$ref": "#" }), 1), Value::Null);
    }

    #[test]
    fn a_named_choice_calls_that_tool_once() {
        let schema = json!({ "type": "object", "properties": { "city": { "type": "string" } } });
        let tools = [tool("a", &schema), tool("b", &schema), tool("c", &schema)];
        let calls = calls(9, &tools, ToolChoice::Named("b"), true);
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].name, "b");
        assert!(calls[0].input["city"].is_string());
        assert_eq!(calls[0].arguments, compact_json(&calls[0].input));
        assert!(super::calls(9, &tools, ToolChoice::Named("zz"), true).is_empty());
        assert!(super::calls(9, &tools, ToolChoice::None, true).is_empty());
    }

    #[test]
    fn parallel_calls_pick_two_different_tools() {
        let schema = json!({ "type": "object" });
        let tools = [tool("a", &schema), tool("b", &schema), tool("c", &schema)];
        for fingerprint in 0..64 {
            let parallel = calls(fingerprint, &tools, ToolChoice::Auto, true);
            assert_eq!(parallel.len(), 2);
            assert_ne!(parallel[0].name, parallel[1].name);
            assert_ne!(parallel[0].id_hex, parallel[1].id_hex);
            assert_eq!(parallel[0].id_hex.len(), 16);
            let single = calls(fingerprint, &tools, ToolChoice::Required, false);
            assert_eq!(single.len(), 1);
            assert_eq!(single[0], parallel[0]);
        }
        let one = [tool("only", &schema)];
        assert_eq!(calls(3, &one, ToolChoice::Auto, true).len(), 1);
    }

    #[test]
    fn arguments_are_an_object_even_without_or_with_a_bad_schema() {
        let not_object = json!({ "type": "string" });
        let tools = [
            OfferedTool {
                name: "none",
                schema: None,
            },
            tool("string", &not_object),
        ];
        for call in calls(1, &tools, ToolChoice::Auto, true) {
            assert_eq!(call.arguments, "{}");
        }
    }
}
