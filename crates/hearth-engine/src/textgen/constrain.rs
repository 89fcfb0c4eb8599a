//! Grammars that hold generation to a shape: JSON mode (any object, or a
//! JSON Schema) and tool calls (`<tool_call>{"name": ..., "arguments": ...}
//! </tool_call>` with the arguments held to the tool's parameters schema).
//! Schemas become GBNF through llama.cpp's own converter, so what a schema
//! can express here is what llama-server supports.

use hearth_types::textgen::Grammar;
use hearth_types::tools::{ResponseFormat, Tool, ToolChoice};
use serde_json::{Value, json};

use super::TextGenError;

/// The text a tool call starts with, in every prompt Hearth writes.
pub const TOOL_CALL_OPEN: &str = "<tool_call>";
pub const TOOL_CALL_CLOSE: &str = "</tool_call>";

fn schema_gbnf(schema: &Value) -> Result<String, TextGenError> {
    llama_cpp_2::json_schema_to_grammar(&schema.to_string())
        .map_err(|e| TextGenError::Schema(e.to_string()))
}

/// llama.cpp's converter holds integer bounds but not number bounds: a
/// bounded number is held to the whole numbers inside its bounds, a subset
/// of what the schema allows, so that answers still validate.
fn hold_number_bounds(schema: &mut Value) {
    match schema {
        Value::Object(obj) => {
            let bounded = ["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"]
                .iter()
                .any(|k| obj.get(*k).is_some_and(Value::is_number));
            if bounded && obj.get("type").and_then(Value::as_str) == Some("number") {
                let get = |k: &str| obj.get(k).and_then(Value::as_f64);
                let lo = get("minimum")
                    .map(f64::ceil)
                    .or_else(|| get("exclusiveMinimum").map(|v| v.floor() + 1.0));
                let hi = get("maximum")
                    .map(f64::floor)
                    .or_else(|| get("exclusiveMaximum").map(|v| v.ceil() - 1.0));
                if lo.zip(hi).is_none_or(|(lo, hi)| lo <= hi) {
                    obj.insert("type".into(), json!("integer"));
                    obj.remove("exclusiveMinimum");
                    obj.remove("exclusiveMaximum");
                    obj.remove("minimum");
                    obj.remove("maximum");
                    if let Some(lo) = lo {
                        obj.insert("minimum".into(), json!(lo as i64));
                    }
                    if let Some(hi) = hi {
                        obj.insert("maximum".into(), json!(hi as i64));
                    }
                }
            }
            for v in obj.values_mut() {
                hold_number_bounds(v);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(hold_number_bounds),
        _ => {}
    }
}

/// The grammar of JSON mode.
pub fn json_mode(format: &ResponseFormat) -> Result<Grammar, TextGenError> {
    let schema = match format {
        ResponseFormat::JsonObject => json!({"type": "object"}),
        ResponseFormat::JsonSchema(s) => {
            let mut s = s.clone();
            hold_number_bounds(&mut s);
            s
        }
    };
    Ok(Grammar {
        gbnf: schema_gbnf(&schema)?,
        trigger: None,
    })
}

/// How a model writes a tool call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolFormat {
    /// `<tool_call>{"name", "arguments"}</tool_call>`, asked for by Hearth's
    /// tool prompt (templates that know no tools).
    HermesPrompt,
    /// The same blocks, asked for by the template itself (Hermes, Qwen).
    HermesTemplate,
    /// A bare `{"name", "parameters"}` object (Llama 3.x templates).
    LlamaJson,
}

/// The grammar of tool calls under `choice`: none for `none`; a lazy one
/// that holds a call once the model opens it for `auto`; one call from the
/// first token for `required` or a named tool.
pub fn tool_calls(
    tools: &[Tool],
    choice: &ToolChoice,
    format: ToolFormat,
) -> Result<Option<Grammar>, TextGenError> {
    let offered: Vec<&Tool> = match choice {
        ToolChoice::None => return Ok(None),
        ToolChoice::Named(name) => tools.iter().filter(|t| &t.name == name).collect(),
        ToolChoice::Auto | ToolChoice::Required => tools.iter().collect(),
    };
    if offered.is_empty() {
        return Ok(None);
    }
    let args_key = match format {
        ToolFormat::LlamaJson => "parameters",
        ToolFormat::HermesPrompt | ToolFormat::HermesTemplate => "arguments",
    };
    let calls: Vec<Value> = offered
        .iter()
        .map(|t| {
            let mut properties = serde_json::Map::new();
            properties.insert("name".into(), json!({"const": t.name}));
            properties.insert(args_key.into(), arguments(&t.parameters));
            json!({
                "type": "object",
                "properties": properties,
                "required": ["name", args_key],
                "additionalProperties": false,
            })
        })
        .collect();
    let schema = if calls.len() == 1 {
        calls.into_iter().next().unwrap_or_default()
    } else {
        json!({"oneOf": calls})
    };
    let call = rename_root(&schema_gbnf(&schema)?, "tool-call-json");
    let (gbnf, opener) = match format {
        ToolFormat::LlamaJson => (format!("root ::= tool-call-json\n{call}"), "{\"name\""),
        ToolFormat::HermesPrompt | ToolFormat::HermesTemplate => (
            format!(
                "root ::= \"{TOOL_CALL_OPEN}\" [\\n]? tool-call-json [\\n]? \"{TOOL_CALL_CLOSE}\"\n{call}"
            ),
            TOOL_CALL_OPEN,
        ),
    };
    Ok(Some(Grammar {
        gbnf,
        trigger: matches!(choice, ToolChoice::Auto).then(|| opener.to_string()),
    }))
}

fn arguments(parameters: &Value) -> Value {
    let mut p = parameters.clone();
    hold_number_bounds(&mut p);
    p
}

/// Renames the converter's `root` rule so that the grammar can sit under
/// another root; rules refer to each other by name, and only the start
/// rule is called `root`.
fn rename_root(gbnf: &str, name: &str) -> String {
    gbnf.lines()
        .map(|line| match line.strip_prefix("root ::=") {
            Some(rest) => format!("{name} ::={rest}"),
            None => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The system text that teaches a model without a tool-aware template to
/// call tools (the Hermes 2 Pro convention, which Qwen and SmolLM2 were
/// trained on).
pub fn tool_system_prompt(tools: &[Tool]) -> String {
    let listed: Vec<String> = tools.iter().map(|t| t.as_openai().to_string()).collect();
    format!(
        "You are a function calling AI model. You may call one or more functions to assist with the user query. \
Here are the available tools:\n<tools>\n{}\n</tools>\n\
For each function call, return a JSON object with the function name and arguments within {TOOL_CALL_OPEN}{TOOL_CALL_CLOSE} tags:\n\
{TOOL_CALL_OPEN}\n{{\"name\": <function-name>, \"arguments\": <args-json-object>}}\n{TOOL_CALL_CLOSE}",
        listed.join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weather() -> Tool {
        Tool {
            name: "get_weather".into(),
            description: "Current weather".into(),
            parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
        }
    }

    #[test]
    fn tool_grammar_is_lazy_only_for_auto() {
        let auto = tool_calls(&[weather()], &ToolChoice::Auto, ToolFormat::HermesPrompt)
            .unwrap()
            .unwrap();
        assert_eq!(auto.trigger.as_deref(), Some(TOOL_CALL_OPEN));
        assert!(
            auto.gbnf.starts_with("root ::= \"<tool_call>\""),
            "{}",
            auto.gbnf
        );
        assert!(auto.gbnf.contains("tool-call-json ::="), "{}", auto.gbnf);
        assert!(!auto.gbnf.lines().skip(1).any(|l| l.starts_with("root ::=")));
        let required = tool_calls(
            &[weather()],
            &ToolChoice::Required,
            ToolFormat::HermesPrompt,
        )
        .unwrap()
        .unwrap();
        assert!(required.trigger.is_none());
        assert!(
            tool_calls(&[weather()], &ToolChoice::None, ToolFormat::HermesPrompt)
                .unwrap()
                .is_none()
        );
        let llama = tool_calls(&[weather()], &ToolChoice::Auto, ToolFormat::LlamaJson)
            .unwrap()
            .unwrap();
        assert_eq!(llama.trigger.as_deref(), Some("{\"name\""));
        assert!(
            llama.gbnf.starts_with("root ::= tool-call-json"),
            "{}",
            llama.gbnf
        );
        assert!(llama.gbnf.contains("parameters"), "{}", llama.gbnf);
    }

    #[test]
    fn json_mode_grammar_comes_from_the_schema() {
        let g = json_mode(&ResponseFormat::JsonSchema(
            json!({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}),
        ))
        .unwrap();
        assert!(g.gbnf.contains("root ::="), "{}", g.gbnf);
        assert!(g.gbnf.contains("\\\"n\\\""), "{}", g.gbnf);
    }

    #[test]
    fn bounded_numbers_become_the_integers_inside_the_bounds() {
        let mut s = json!({"type": "object", "properties": {
            "p": {"type": "number", "minimum": 0, "maximum": 1},
            "q": {"type": "number", "exclusiveMinimum": 0.5, "maximum": 9.5},
            "r": {"type": "number"},
            "s": {"type": "number", "minimum": 0.2, "maximum": 0.8}}});
        hold_number_bounds(&mut s);
        assert_eq!(
            s["properties"]["p"],
            json!({"type": "integer", "minimum": 0, "maximum": 1})
        );
        assert_eq!(
            s["properties"]["q"],
            json!({"type": "integer", "minimum": 1, "maximum": 9})
        );
        assert_eq!(s["properties"]["r"], json!({"type": "number"}));
        // No whole number fits: left for validation to judge.
        assert_eq!(s["properties"]["s"]["type"], "number");
    }

    #[test]
    fn a_schema_the_converter_refuses_is_an_error() {
        let e = json_mode(&ResponseFormat::JsonSchema(
            json!({"$ref": "#/definitions/missing"}),
        ))
        .unwrap_err();
        assert!(matches!(e, TextGenError::Schema(_)), "{e}");
    }
}
