//! Function calling and JSON mode on the wire: `tools` in both forms Workers
//! AI takes (the flat `{name, description, parameters}` and OpenAI's
//! `{type: "function", function: {...}}`), `tool_choice`, `response_format`
//! (the native form whose `json_schema` is the bare schema, and OpenAI's
//! `{name, schema, strict}` wrapper), and the tool calls read back out of a
//! model's text (`<tool_call>{"name": ..., "arguments": ...}</tool_call>`,
//! the Hermes/Qwen convention every tool prompt of Hearth asks for).

use serde_json::{Map, Value, json};

use crate::error::ApiError;

/// One callable function as the model is told about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    pub name: String,
    pub description: String,
    /// A JSON Schema of the arguments object.
    pub parameters: Value,
}

impl Tool {
    /// OpenAI's shape, which tool-aware chat templates iterate over.
    pub fn as_openai(&self) -> Value {
        json!({
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            }
        })
    }
}

/// Whether and which tools the model must call.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum ToolChoice {
    /// The model decides; a call it starts is held to the schema.
    #[default]
    Auto,
    /// Tools are not offered.
    None,
    /// At least one call, to any tool.
    Required,
    /// One call to this tool.
    Named(String),
}

/// JSON mode: what the whole answer must be.
#[derive(Debug, Clone, PartialEq)]
pub enum ResponseFormat {
    /// Any JSON object.
    JsonObject,
    /// JSON valid against this schema.
    JsonSchema(Value),
}

/// What an answer must be besides free text: calls to offered tools, or
/// JSON (JSON mode). Both request surfaces validate into it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OutputShape {
    pub tools: Vec<Tool>,
    pub tool_choice: ToolChoice,
    pub response_format: Option<ResponseFormat>,
}

impl OutputShape {
    /// `tools` and `tool_choice` as a request gives them, checked.
    pub fn with_tools(tools: &[Value], tool_choice: Option<&Value>) -> Result<Self, ApiError> {
        let tools = parse_tools(tools)?;
        let tool_choice = parse_tool_choice(tool_choice, &tools)?;
        Ok(Self {
            tools,
            tool_choice,
            response_format: None,
        })
    }

    /// Adds JSON mode, which cannot be asked for beside callable tools.
    pub fn with_format(mut self, format: Option<ResponseFormat>) -> Result<Self, ApiError> {
        if !self.tools.is_empty() && format.is_some() && self.tool_choice != ToolChoice::None {
            return Err(ApiError::invalid_input(
                "give either `tools` or `response_format`, not both",
            ));
        }
        self.response_format = format;
        Ok(self)
    }

    /// The tools the model is told about (none under `tool_choice: none`).
    pub fn offered(&self) -> &[Tool] {
        if self.tool_choice == ToolChoice::None {
            &[]
        } else {
            &self.tools
        }
    }
}

/// A call the model made.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: Value,
}

impl ToolCall {
    /// Workers AI's legacy shape: `{name, arguments: object}`.
    pub fn as_native(&self) -> Value {
        json!({"name": self.name, "arguments": self.arguments})
    }

    /// OpenAI's shape: `arguments` is a JSON string.
    pub fn as_openai(&self) -> Value {
        json!({
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments.to_string()},
        })
    }
}

/// Function names as OpenAI allows them.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `tools` in either accepted form, each field checked by name.
pub fn parse_tools(tools: &[Value]) -> Result<Vec<Tool>, ApiError> {
    if tools.len() > 128 {
        return Err(ApiError::invalid_input(format!(
            "`tools` holds at most 128 functions, got {}",
            tools.len()
        )));
    }
    tools
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let Some(obj) = t.as_object() else {
                return Err(ApiError::invalid_input(format!(
                    "`tools[{i}]` must be an object"
                )));
            };
            let (func, at) = match obj.get("type") {
                Some(Value::String(kind)) if kind == "function" => match obj.get("function") {
                    Some(Value::Object(f)) => (f, format!("tools[{i}].function")),
                    _ => {
                        return Err(ApiError::invalid_input(format!(
                            "`tools[{i}].function` must be an object with `name` and `parameters`"
                        )));
                    }
                },
                Some(other) => {
                    return Err(ApiError::invalid_input(format!(
                        "`tools[{i}].type` must be \"function\", got {other}"
                    )));
                }
                None => (obj, format!("tools[{i}]")),
            };
            let name = match func.get("name") {
                Some(Value::String(n)) if valid_name(n) => n.clone(),
                Some(Value::String(n)) => {
                    return Err(ApiError::invalid_input(format!(
                        "`{at}.name` must be 1 to 64 letters, digits, `_` or `-`, got `{n}`"
                    )));
                }
                _ => {
                    return Err(ApiError::invalid_input(format!(
                        "`{at}.name` is required (a string)"
                    )));
                }
            };
            let description = match func.get("description") {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(d)) => d.clone(),
                Some(_) => {
                    return Err(ApiError::invalid_input(format!(
                        "`{at}.description` must be a string"
                    )));
                }
            };
            let parameters = match func.get("parameters") {
                None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
                Some(p @ Value::Object(_)) => p.clone(),
                Some(_) => {
                    return Err(ApiError::invalid_input(format!(
                        "`{at}.parameters` must be a JSON Schema object"
                    )));
                }
            };
            Ok(Tool {
                name,
                description,
                parameters,
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .and_then(|tools| {
            for (i, t) in tools.iter().enumerate() {
                if tools[..i].iter().any(|u| u.name == t.name) {
                    return Err(ApiError::invalid_input(format!(
                        "`tools` names `{}` twice",
                        t.name
                    )));
                }
            }
            Ok(tools)
        })
}

/// `tool_choice`: `"auto"`, `"none"`, `"required"` (or `"any"`), or
/// `{type: "function", function: {name}}`; the named tool must be offered.
pub fn parse_tool_choice(choice: Option<&Value>, tools: &[Tool]) -> Result<ToolChoice, ApiError> {
    let choice = match choice {
        None | Some(Value::Null) => return Ok(ToolChoice::Auto),
        Some(Value::String(s)) => match s.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" | "any" => ToolChoice::Required,
            other => {
                return Err(ApiError::invalid_input(format!(
                    "`tool_choice` must be \"auto\", \"none\", \"required\" or {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}, got \"{other}\""
                )));
            }
        },
        Some(Value::Object(o)) => {
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .or_else(|| o.get("name"))
                .and_then(Value::as_str);
            match name {
                Some(n) => ToolChoice::Named(n.to_string()),
                None => {
                    return Err(ApiError::invalid_input(
                        "`tool_choice.function.name` is required when `tool_choice` is an object",
                    ));
                }
            }
        }
        Some(_) => {
            return Err(ApiError::invalid_input(
                "`tool_choice` must be a string or an object",
            ));
        }
    };
    match &choice {
        ToolChoice::Required | ToolChoice::Named(_) if tools.is_empty() => Err(
            ApiError::invalid_input("`tool_choice` asks for a tool call but `tools` is empty"),
        ),
        ToolChoice::Named(n) if !tools.iter().any(|t| &t.name == n) => {
            Err(ApiError::invalid_input(format!(
                "`tool_choice` names `{n}`, which is not in `tools`"
            )))
        }
        _ => Ok(choice),
    }
}

/// `response_format`. `openai` selects the wrapper form of `json_schema`
/// (`{name, schema, strict}`); the native endpoint takes the bare schema,
/// and also accepts the wrapper when it is unmistakable (a `schema` object
/// beside a `name`).
pub fn parse_response_format(
    format: Option<&Value>,
    openai: bool,
) -> Result<Option<ResponseFormat>, ApiError> {
    let Some(format) = format.filter(|f| !f.is_null()) else {
        return Ok(None);
    };
    let Some(obj) = format.as_object() else {
        return Err(ApiError::invalid_input(
            "`response_format` must be an object with a `type`",
        ));
    };
    match obj.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(ResponseFormat::JsonObject)),
        Some("json_schema") => {
            let schema = match obj.get("json_schema") {
                Some(Value::Object(inner)) => {
                    let wrapped = inner.get("schema").filter(|s| s.is_object());
                    match wrapped {
                        Some(s) if openai || inner.contains_key("name") => s.clone(),
                        _ if openai => {
                            return Err(ApiError::invalid_input(
                                "`response_format.json_schema.schema` is required (a JSON Schema object)",
                            ));
                        }
                        _ => Value::Object(inner.clone()),
                    }
                }
                _ => {
                    return Err(ApiError::invalid_input(
                        "`response_format.json_schema` is required (a JSON Schema object)",
                    ));
                }
            };
            Ok(Some(ResponseFormat::JsonSchema(schema)))
        }
        Some(other) => Err(ApiError::invalid_input(format!(
            "`response_format.type` must be \"json_object\", \"json_schema\" or \"text\", got \"{other}\""
        ))),
        None => Err(ApiError::invalid_input(
            "`response_format.type` is required",
        )),
    }
}

/// The arguments of a parsed call: an object (a JSON string is decoded).
fn arguments_of(obj: &Map<String, Value>) -> Option<Value> {
    match obj.get("arguments").or_else(|| obj.get("parameters")) {
        Some(Value::String(s)) => serde_json::from_str::<Value>(s)
            .ok()
            .filter(Value::is_object),
        Some(v @ Value::Object(_)) => Some(v.clone()),
        None => Some(json!({})),
        Some(_) => None,
    }
}

fn call_from(v: &Value, n: usize) -> Option<ToolCall> {
    let obj = v.as_object()?;
    let name = obj.get("name")?.as_str()?.to_string();
    Some(ToolCall {
        id: call_id(n),
        name,
        arguments: arguments_of(obj)?,
    })
}

/// Ids of calls: nine alphanumerics, the form Mistral-style templates want.
fn call_id(n: usize) -> String {
    format!("call{:05}", n + 1)
}

/// Splits a model's answer into its text and its tool calls: every
/// `<tool_call>...</tool_call>` block whose JSON names a function is a call;
/// a whole answer that is one `{"name", "arguments"|"parameters"}` object
/// (the Llama 3.x convention) is one too. Blocks that do not parse stay text.
pub fn extract_tool_calls(text: &str) -> (String, Vec<ToolCall>) {
    const OPEN: &str = "<tool_call>";
    const CLOSE: &str = "</tool_call>";
    let mut calls = Vec::new();
    let mut rest = String::new();
    let mut at = 0;
    while let Some(start) = text[at..].find(OPEN).map(|i| i + at) {
        let body_start = start + OPEN.len();
        let (body, next) = match text[body_start..].find(CLOSE) {
            Some(end) => (
                &text[body_start..body_start + end],
                body_start + end + CLOSE.len(),
            ),
            None => (&text[body_start..], text.len()),
        };
        match serde_json::from_str::<Value>(body.trim())
            .ok()
            .and_then(|v| call_from(&v, calls.len()))
        {
            Some(call) => {
                rest.push_str(&text[at..start]);
                calls.push(call);
            }
            None => rest.push_str(&text[at..next]),
        }
        at = next;
    }
    rest.push_str(&text[at..]);
    if calls.is_empty() {
        let trimmed = text.trim();
        if trimmed.starts_with('{')
            && let Ok(v) = serde_json::from_str::<Value>(trimmed)
            && v.get("name").is_some_and(Value::is_string)
            && (v.get("arguments").is_some() || v.get("parameters").is_some())
            && let Some(call) = call_from(&v, 0)
        {
            return (String::new(), vec![call]);
        }
    }
    (rest.trim().to_string(), calls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_tool_forms_parse_to_the_same_tool() {
        let params = json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]});
        let flat = json!({"name": "get_weather", "description": "Weather", "parameters": params});
        let openai = json!({"type": "function", "function": flat.clone()});
        let a = parse_tools(&[flat]).unwrap();
        let b = parse_tools(&[openai]).unwrap();
        assert_eq!(a, b);
        assert_eq!(a[0].name, "get_weather");
    }

    #[test]
    fn bad_tools_name_the_field() {
        let e = parse_tools(&[json!({"type": "function", "function": {"description": "x"}})])
            .unwrap_err();
        assert!(
            e.message.contains("`tools[0].function.name`"),
            "{}",
            e.message
        );
        let e = parse_tools(&[json!({"name": "a b"})]).unwrap_err();
        assert!(e.message.contains("`tools[0].name`"), "{}", e.message);
        let e = parse_tools(&[json!({"name": "f", "parameters": "x"})]).unwrap_err();
        assert!(e.message.contains("`tools[0].parameters`"), "{}", e.message);
        let e = parse_tools(&[json!({"name": "f"}), json!({"name": "f"})]).unwrap_err();
        assert!(e.message.contains("twice"), "{}", e.message);
    }

    #[test]
    fn tool_choice_forms() {
        let tools = parse_tools(&[json!({"name": "f"})]).unwrap();
        assert_eq!(parse_tool_choice(None, &tools).unwrap(), ToolChoice::Auto);
        assert_eq!(
            parse_tool_choice(Some(&json!("required")), &tools).unwrap(),
            ToolChoice::Required
        );
        assert_eq!(
            parse_tool_choice(
                Some(&json!({"type": "function", "function": {"name": "f"}})),
                &tools
            )
            .unwrap(),
            ToolChoice::Named("f".into())
        );
        assert!(parse_tool_choice(Some(&json!({"function": {"name": "g"}})), &tools).is_err());
        assert!(parse_tool_choice(Some(&json!("sometimes")), &tools).is_err());
        assert!(parse_tool_choice(Some(&json!("required")), &[]).is_err());
    }

    #[test]
    fn response_format_native_and_openai() {
        let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
        let native = json!({"type": "json_schema", "json_schema": schema});
        assert_eq!(
            parse_response_format(Some(&native), false).unwrap(),
            Some(ResponseFormat::JsonSchema(schema.clone()))
        );
        let wrapped = json!({"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": true}});
        assert_eq!(
            parse_response_format(Some(&wrapped), true).unwrap(),
            Some(ResponseFormat::JsonSchema(schema.clone()))
        );
        assert!(parse_response_format(Some(&native), true).is_err());
        assert_eq!(
            parse_response_format(Some(&json!({"type": "json_object"})), false).unwrap(),
            Some(ResponseFormat::JsonObject)
        );
        assert_eq!(
            parse_response_format(Some(&json!({"type": "text"})), true).unwrap(),
            None
        );
        let e = parse_response_format(Some(&json!({"type": "yaml"})), false).unwrap_err();
        assert!(
            e.message.contains("`response_format.type`"),
            "{}",
            e.message
        );
    }

    #[test]
    fn calls_are_read_out_of_text() {
        let (text, calls) = extract_tool_calls(
            "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>",
        );
        assert_eq!(text, "Let me check.");
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].name, "get_weather");
        assert_eq!(calls[0].arguments, json!({"city": "Paris"}));
        assert_eq!(calls[0].id.len(), 9);
        let (_, calls) = extract_tool_calls("{\"name\": \"f\", \"parameters\": {\"x\": 1}}");
        assert_eq!(calls[0].arguments, json!({"x": 1}));
        let (text, calls) = extract_tool_calls("<tool_call>not json</tool_call> hi");
        assert!(calls.is_empty());
        assert!(text.contains("not json"));
        let (_, calls) = extract_tool_calls(
            "<tool_call>{\"name\": \"a\", \"arguments\": \"{\\\"k\\\": 2}\"}</tool_call><tool_call>{\"name\": \"b\", \"arguments\": {}}</tool_call>",
        );
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].arguments, json!({"k": 2}));
        assert_eq!(calls[1].id, "call00002");
    }
}
