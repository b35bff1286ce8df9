//! Rows and their schemas: what a contributed record must look like, and the one canonical
//! form that is stored, hashed and exported.
//!
//! A datanet declares one schema on chain (`schema` in `createDatanet`):
//!
//! | code | schema               | JSON fields                                                   |
//! |------|----------------------|---------------------------------------------------------------|
//! | 0    | plain text           | `text`                                                        |
//! | 1    | instruction/response | `instruction`, optional `input`, `response` (or `output`)     |
//! | 2    | chat messages        | `messages`: `[{role: system/user/assistant, content}]`        |
//!
//! The canonical form is compact JSON with the fields in the order above and every string
//! normalised ([`crate::normalize`]); the row hash is BLAKE3 over it. An exported JSONL line
//! *is* the canonical form, so anyone can recompute a row's hash from the export alone.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::normalize::normalize;

/// The shape every row of a datanet must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schema {
    Text,
    InstructionResponse,
    Chat,
}

impl Schema {
    /// The schema with the on-chain code `code`.
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(Schema::Text),
            1 => Some(Schema::InstructionResponse),
            2 => Some(Schema::Chat),
            _ => None,
        }
    }

    pub fn code(self) -> u8 {
        match self {
            Schema::Text => 0,
            Schema::InstructionResponse => 1,
            Schema::Chat => 2,
        }
    }

    /// Parses a schema name as the CLI and API accept it.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "text" | "0" => Some(Schema::Text),
            "instruction" | "instruction-response" | "instruction_response" | "1" => {
                Some(Schema::InstructionResponse)
            }
            "chat" | "2" => Some(Schema::Chat),
            _ => None,
        }
    }
}

impl fmt::Display for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Schema::Text => "text",
            Schema::InstructionResponse => "instruction_response",
            Schema::Chat => "chat",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    System,
    User,
    Assistant,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

/// A row that satisfies its schema, with normalised strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Row {
    Text {
        text: String,
    },
    InstructionResponse {
        instruction: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        input: String,
        response: String,
    },
    Chat {
        messages: Vec<Message>,
    },
}

/// Why a record does not fit the schema; the message names the field and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SchemaError(pub String);

fn schema_error(message: impl Into<String>) -> SchemaError {
    SchemaError(message.into())
}

impl Row {
    /// Validates a record (a JSON object, or a bare string for plain-text datanets) against
    /// `schema` and normalises its strings. Unknown fields are an error, not silently dropped:
    /// a contributor who misspells `response` should hear about it.
    pub fn from_json(schema: Schema, value: Value) -> Result<Row, SchemaError> {
        let mut object = match value {
            Value::Object(object) => object,
            Value::String(text) if schema == Schema::Text => {
                let mut object = Map::new();
                object.insert("text".into(), Value::String(text));
                object
            }
            other => {
                return Err(schema_error(format!(
                    "expected a JSON object for the {schema} schema, found {}",
                    json_kind(&other)
                )));
            }
        };
        let row = match schema {
            Schema::Text => Row::Text {
                text: required_text(&mut object, "text")?,
            },
            Schema::InstructionResponse => {
                let instruction = required_text(&mut object, "instruction")?;
                let input = optional_text(&mut object, "input")?;
                let response = match (
                    object.contains_key("response"),
                    object.contains_key("output"),
                ) {
                    (true, true) => {
                        return Err(schema_error(
                            "both \"response\" and \"output\" are present; keep one",
                        ));
                    }
                    (false, true) => required_text(&mut object, "output")?,
                    _ => required_text(&mut object, "response")?,
                };
                Row::InstructionResponse {
                    instruction,
                    input,
                    response,
                }
            }
            Schema::Chat => Row::Chat {
                messages: messages(&mut object)?,
            },
        };
        if let Some(extra) = object.keys().next() {
            return Err(schema_error(format!(
                "unexpected field \"{extra}\" for the {schema} schema (allowed: {})",
                allowed_fields(schema)
            )));
        }
        Ok(row)
    }

    /// A plain-text row from a text or Markdown document.
    pub fn text(text: &str) -> Result<Row, SchemaError> {
        let text = normalize(text);
        if text.is_empty() {
            return Err(schema_error("the text is empty"));
        }
        Ok(Row::Text { text })
    }

    pub fn schema(&self) -> Schema {
        match self {
            Row::Text { .. } => Schema::Text,
            Row::InstructionResponse { .. } => Schema::InstructionResponse,
            Row::Chat { .. } => Schema::Chat,
        }
    }

    /// The stored, hashed and exported form: compact JSON, fields in schema order.
    pub fn canonical(&self) -> String {
        serde_json::to_string(self).expect("rows always serialise")
    }

    /// The row's prose, fields joined by blank lines: what dedup, PII scan and quality see.
    pub fn text_content(&self) -> Cow<'_, str> {
        match self {
            Row::Text { text } => Cow::Borrowed(text),
            Row::InstructionResponse {
                instruction,
                input,
                response,
            } => Cow::Owned(
                [instruction, input, response]
                    .into_iter()
                    .filter(|s| !s.is_empty())
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join("\n\n"),
            ),
            Row::Chat { messages } => Cow::Owned(
                messages
                    .iter()
                    .map(|m| m.content.as_str())
                    .collect::<Vec<_>>()
                    .join("\n\n"),
            ),
        }
    }

    /// Applies `edit` to every string field (used for PII redaction), renormalising after.
    pub fn map_strings(&self, mut edit: impl FnMut(&str) -> String) -> Row {
        let mut apply = |s: &str| normalize(&edit(s));
        match self {
            Row::Text { text } => Row::Text { text: apply(text) },
            Row::InstructionResponse {
                instruction,
                input,
                response,
            } => Row::InstructionResponse {
                instruction: apply(instruction),
                input: apply(input),
                response: apply(response),
            },
            Row::Chat { messages } => Row::Chat {
                messages: messages
                    .iter()
                    .map(|m| Message {
                        role: m.role,
                        content: apply(&m.content),
                    })
                    .collect(),
            },
        }
    }
}

fn allowed_fields(schema: Schema) -> &'static str {
    match schema {
        Schema::Text => "text",
        Schema::InstructionResponse => "instruction, input, response (or output)",
        Schema::Chat => "messages",
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn required_text(object: &mut Map<String, Value>, field: &str) -> Result<String, SchemaError> {
    match object.remove(field) {
        None => Err(schema_error(format!("missing field \"{field}\""))),
        Some(Value::String(s)) => {
            let s = normalize(&s);
            if s.is_empty() {
                Err(schema_error(format!("field \"{field}\" is empty")))
            } else {
                Ok(s)
            }
        }
        Some(other) => Err(schema_error(format!(
            "field \"{field}\" must be a string, found {}",
            json_kind(&other)
        ))),
    }
}

fn optional_text(object: &mut Map<String, Value>, field: &str) -> Result<String, SchemaError> {
    match object.remove(field) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(normalize(&s)),
        Some(other) => Err(schema_error(format!(
            "field \"{field}\" must be a string, found {}",
            json_kind(&other)
        ))),
    }
}

fn messages(object: &mut Map<String, Value>) -> Result<Vec<Message>, SchemaError> {
    let list = match object.remove("messages") {
        None => return Err(schema_error("missing field \"messages\"")),
        Some(Value::Array(list)) => list,
        Some(other) => {
            return Err(schema_error(format!(
                "field \"messages\" must be an array, found {}",
                json_kind(&other)
            )));
        }
    };
    let mut out = Vec::with_capacity(list.len());
    for (i, item) in list.into_iter().enumerate() {
        let Value::Object(mut message) = item else {
            return Err(schema_error(format!("messages[{i}] must be an object")));
        };
        let role = match message.remove("role") {
            Some(Value::String(role)) => match role.as_str() {
                "system" => Role::System,
                "user" => Role::User,
                "assistant" => Role::Assistant,
                other => {
                    return Err(schema_error(format!(
                        "messages[{i}].role is \"{other}\"; use system, user or assistant"
                    )));
                }
            },
            _ => {
                return Err(schema_error(format!(
                    "messages[{i}] needs a string \"role\""
                )));
            }
        };
        let content = required_text(&mut message, "content")
            .map_err(|e| schema_error(format!("messages[{i}]: {e}")))?;
        if let Some(extra) = message.keys().next() {
            return Err(schema_error(format!(
                "messages[{i}] has unexpected field \"{extra}\" (allowed: role, content)"
            )));
        }
        out.push(Message { role, content });
    }
    if !out.iter().any(|m| m.role == Role::User) || !out.iter().any(|m| m.role == Role::Assistant) {
        return Err(schema_error(
            "a chat needs at least one user and one assistant message",
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_form_orders_fields_and_normalises_strings() {
        let row = Row::from_json(
            Schema::InstructionResponse,
            json!({"response": " Paris \r\n", "instruction": "Capital of France?"}),
        )
        .unwrap();
        assert_eq!(
            row.canonical(),
            r#"{"instruction":"Capital of France?","response":"Paris"}"#
        );
        let again: Row = serde_json::from_str(&row.canonical()).unwrap();
        assert_eq!(again, row);
    }

    #[test]
    fn output_is_accepted_for_response_but_not_both() {
        let a = Row::from_json(
            Schema::InstructionResponse,
            json!({"instruction": "q", "output": "a"}),
        )
        .unwrap();
        let b = Row::from_json(
            Schema::InstructionResponse,
            json!({"instruction": "q", "response": "a"}),
        )
        .unwrap();
        assert_eq!(a, b);
        let both = Row::from_json(
            Schema::InstructionResponse,
            json!({"instruction": "q", "response": "a", "output": "b"}),
        );
        assert!(both.unwrap_err().0.contains("keep one"));
    }

    #[test]
    fn schema_errors_name_the_field() {
        let cases = [
            (
                Schema::Text,
                json!({"txt": "hello"}),
                "missing field \"text\"",
            ),
            (
                Schema::Text,
                json!({"text": 5}),
                "must be a string, found a number",
            ),
            (
                Schema::Text,
                json!({"text": "hi", "extra": 1}),
                "unexpected field \"extra\"",
            ),
            (Schema::Text, json!([1, 2]), "expected a JSON object"),
            (
                Schema::Chat,
                json!({"messages": [{"role": "user", "content": "hi"}]}),
                "at least one user and one assistant",
            ),
            (
                Schema::Chat,
                json!({"messages": [{"role": "robot", "content": "hi"}]}),
                "messages[0].role is \"robot\"",
            ),
            (
                Schema::InstructionResponse,
                json!({"instruction": "  "}),
                "field \"instruction\" is empty",
            ),
        ];
        for (schema, value, expected) in cases {
            let err = Row::from_json(schema, value.clone()).unwrap_err();
            assert!(err.0.contains(expected), "{value}: {err}");
        }
    }

    #[test]
    fn chat_rows_round_trip_and_expose_their_text() {
        let row = Row::from_json(
            Schema::Chat,
            json!({"messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "2+2?"},
                {"role": "assistant", "content": "4"}
            ]}),
        )
        .unwrap();
        assert_eq!(row.text_content(), "Be brief.\n\n2+2?\n\n4");
        let back: Row = serde_json::from_str(&row.canonical()).unwrap();
        assert_eq!(back, row);
        assert_eq!(back.schema(), Schema::Chat);
    }

    #[test]
    fn bare_strings_are_text_rows() {
        let row = Row::from_json(Schema::Text, json!("  hello world ")).unwrap();
        assert_eq!(row.canonical(), r#"{"text":"hello world"}"#);
    }
}
