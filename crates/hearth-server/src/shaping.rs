//! A generation's text turned into the answer its request asked for: tool
//! calls read out of the text, JSON mode's value, and, for streams, a filter
//! that passes text through until a tool call opens and holds the call back
//! until it is complete (a half-written call is of no use to a client).

use hearth_engine::textgen::constrain::TOOL_CALL_OPEN;
use hearth_types::ApiError;
use hearth_types::tools::{OutputShape, ResponseFormat, ToolCall, extract_tool_calls};
use serde_json::Value;

/// An answer after shaping.
pub(crate) struct Shaped {
    pub text: String,
    pub calls: Vec<ToolCall>,
    /// JSON mode's value (the text parsed).
    pub json: Option<Value>,
}

/// Shapes a whole answer; JSON mode answers that do not parse (cut short by
/// `max_tokens`) are Workers AI's "JSON Mode couldn't be met".
pub(crate) fn shape(text: String, shape: &OutputShape, finish: &str) -> Result<Shaped, ApiError> {
    if shape.response_format.is_some() {
        return match serde_json::from_str::<Value>(text.trim()) {
            Ok(json) => {
                if let Some(ResponseFormat::JsonSchema(schema)) = &shape.response_format {
                    breaks_schema(schema, &json)?;
                }
                Ok(Shaped {
                    text,
                    calls: Vec::new(),
                    json: Some(json),
                })
            }
            Err(e) => Err(ApiError::invalid_input(format!(
                "JSON Mode couldn't be met: the answer is not complete JSON ({e}){}",
                if finish == "length" {
                    "; it was cut at `max_tokens`, raise it"
                } else {
                    ""
                }
            ))),
        };
    }
    if shape.offered().is_empty() {
        return Ok(Shaped {
            text,
            calls: Vec::new(),
            json: None,
        });
    }
    let (text, calls) = extract_tool_calls(&text);
    Ok(Shaped {
        text,
        calls,
        json: None,
    })
}

/// The grammar holds what llama.cpp's converter can express; keywords
/// beyond it (`multipleOf`, `uniqueItems`, fractional bounds, ...) are
/// checked here, so an answer that does not validate is an error, never a
/// success.
fn breaks_schema(schema: &Value, answer: &Value) -> Result<(), ApiError> {
    let validator = jsonschema::validator_for(schema).map_err(|e| {
        ApiError::invalid_input(format!(
            "JSON Mode couldn't be met: `response_format.json_schema` is not a valid JSON Schema ({e})"
        ))
    })?;
    match validator.iter_errors(answer).next() {
        None => Ok(()),
        Some(e) => Err(ApiError::invalid_input(format!(
            "JSON Mode couldn't be met: the answer breaks the schema at `{}`: {e}",
            e.instance_path()
        ))),
    }
}

/// Streamed text with tool calls held back.
pub(crate) struct ToolStream {
    active: bool,
    held: String,
    holding: bool,
    emitted_any: bool,
}

impl ToolStream {
    /// `active` when the request offered tools; otherwise text passes as is.
    pub fn new(active: bool) -> Self {
        Self {
            active,
            held: String::new(),
            holding: false,
            emitted_any: false,
        }
    }

    /// Adds a piece of the answer; returns the text to send now.
    pub fn push(&mut self, piece: &str) -> String {
        if !self.active {
            return piece.to_string();
        }
        self.held.push_str(piece);
        if self.holding {
            return String::new();
        }
        // A whole answer that is one JSON object may be a Llama-style call.
        if !self.emitted_any && self.held.trim_start().starts_with('{') {
            self.holding = true;
            return String::new();
        }
        let cut = match self.held.find(TOOL_CALL_OPEN) {
            Some(at) => {
                self.holding = true;
                at
            }
            None => self.held.len() - partial_open(&self.held),
        };
        let out: String = self.held.drain(..cut).collect();
        if !out.trim().is_empty() {
            self.emitted_any = true;
        }
        out
    }

    /// At the end: the text still held and the calls in it.
    pub fn finish(&mut self) -> (String, Vec<ToolCall>) {
        let held = std::mem::take(&mut self.held);
        if !self.holding {
            return (held, Vec::new());
        }
        extract_tool_calls(&held)
    }
}

/// Length of the longest suffix of `text` that could still become `<tool_call>`.
fn partial_open(text: &str) -> usize {
    (1..TOOL_CALL_OPEN.len())
        .rev()
        .find(|&n| text.ends_with(&TOOL_CALL_OPEN[..n]))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_before_a_call_streams_and_the_call_is_held() {
        let mut s = ToolStream::new(true);
        let mut sent = String::new();
        for piece in [
            "Checking",
            " now <tool",
            "_call>{\"name\": \"f\", ",
            "\"arguments\": {}}</tool_call>",
        ] {
            sent.push_str(&s.push(piece));
        }
        assert_eq!(sent, "Checking now ");
        let (rest, calls) = s.finish();
        assert_eq!(rest, "");
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].name, "f");
    }

    #[test]
    fn a_lone_angle_bracket_is_released() {
        let mut s = ToolStream::new(true);
        assert_eq!(s.push("a <"), "a ");
        assert_eq!(s.push("b"), "<b");
        let (rest, calls) = s.finish();
        assert!(rest.is_empty() && calls.is_empty());
    }
}
