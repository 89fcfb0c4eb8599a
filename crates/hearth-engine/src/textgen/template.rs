//! Chat templates: the Jinja template inside the GGUF (`tokenizer.chat_template`)
//! rendered with minijinja and Hugging Face's Python-compatible methods, or
//! Gemma's turn format where the GGUF carries none.

use hearth_types::textgen::ValidMessage;
use hearth_types::tools::Tool;
use minijinja::value::Serde;
use minijinja::{Environment, Error, ErrorKind, Value, context};

use super::constrain::{TOOL_CALL_CLOSE, TOOL_CALL_OPEN, ToolFormat, tool_system_prompt};

/// Gemma's `<start_of_turn>` format (Gemma has no system role: a system message
/// is prepended to the first user turn, as Google's own template does).
pub const GEMMA_TEMPLATE: &str = "{{ bos_token }}\
{%- if messages[0]['role'] == 'system' -%}\
{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}\
{%- set loop_messages = messages[1:] -%}\
{%- else -%}\
{%- set first_user_prefix = '' -%}\
{%- set loop_messages = messages -%}\
{%- endif -%}\
{%- for message in loop_messages -%}\
{%- if message['role'] == 'assistant' -%}{%- set role = 'model' -%}{%- else -%}{%- set role = 'user' -%}{%- endif -%}\
{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') + (message['content'] | trim) + '<end_of_turn>\n' }}\
{%- endfor -%}\
{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}";

pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
    /// Where the template came from, for logs and `hearth models list`.
    pub origin: &'static str,
    /// How the model is asked to call tools: by the template itself
    /// (Hermes/Qwen `<tool_call>` blocks, Llama 3.x bare JSON), or by
    /// Hearth's tool prompt in the system turn.
    tool_format: ToolFormat,
}

#[derive(Debug, thiserror::Error)]
#[error("chat template: {0}")]
pub struct TemplateError(String);

fn raise_exception(message: String) -> Result<String, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

impl ChatTemplate {
    pub fn new(
        source: Option<String>,
        bos_token: String,
        eos_token: String,
    ) -> Result<Self, TemplateError> {
        let (source, origin) = match source {
            Some(s) if !s.trim().is_empty() => (s, "gguf"),
            _ => (GEMMA_TEMPLATE.to_string(), "builtin-gemma"),
        };
        let tool_format = if !source.contains("tools") {
            ToolFormat::HermesPrompt
        } else if source.contains(TOOL_CALL_OPEN) {
            ToolFormat::HermesTemplate
        } else if source.contains("\"parameters\"") || source.contains("python_tag") {
            ToolFormat::LlamaJson
        } else {
            ToolFormat::HermesPrompt
        };
        let mut env = Environment::new();
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_template_owned("chat", source)
            .map_err(|e| TemplateError(e.to_string()))?;
        Ok(Self {
            env,
            bos_token,
            eos_token,
            origin,
            tool_format,
        })
    }

    /// How the model this template belongs to calls tools.
    pub fn tool_format(&self) -> ToolFormat {
        self.tool_format
    }

    /// The prompt text for `messages` offering `tools`, ending with the
    /// assistant's turn opener.
    pub fn render(
        &self,
        messages: &[ValidMessage],
        tools: &[Tool],
    ) -> Result<String, TemplateError> {
        let tmpl = self
            .env
            .get_template("chat")
            .map_err(|e| TemplateError(e.to_string()))?;
        let rewritten;
        let (messages, listed) = if self.tool_format != ToolFormat::HermesPrompt {
            let listed: Vec<serde_json::Value> = tools.iter().map(Tool::as_openai).collect();
            (messages, (!listed.is_empty()).then_some(listed))
        } else {
            rewritten = tools_in_text(messages, tools);
            (rewritten.as_slice(), None)
        };
        tmpl.render(context! {
            messages => Value::from(Serde(messages)),
            tools => Value::from(Serde(listed)),
            add_generation_prompt => true,
            bos_token => self.bos_token.as_str(),
            eos_token => self.eos_token.as_str(),
        })
        .map_err(|e| TemplateError(e.to_string()))
    }
}

/// Function calling for templates that know nothing of it: the tool list
/// goes into the system turn, earlier calls become `<tool_call>` text in
/// the assistant's turns and tool results `<tool_response>` user turns
/// (every template knows the user role; not all know `tool`).
fn tools_in_text(messages: &[ValidMessage], tools: &[Tool]) -> Vec<ValidMessage> {
    let mut out: Vec<ValidMessage> = messages
        .iter()
        .map(|m| {
            let mut m = m.clone();
            if let Some(calls) = m.tool_calls.take() {
                for call in calls {
                    let func = call.get("function").unwrap_or(&call);
                    let field = |k: &str| func.get(k).map(|v| v.to_string());
                    // Name first, as the tool prompt shows it.
                    let text = format!(
                        "{{\"name\": {}, \"arguments\": {}}}",
                        field("name").unwrap_or_else(|| "null".into()),
                        field("arguments").unwrap_or_else(|| "{}".into())
                    );
                    if !m.content.is_empty() {
                        m.content.push('\n');
                    }
                    m.content
                        .push_str(&format!("{TOOL_CALL_OPEN}\n{text}\n{TOOL_CALL_CLOSE}"));
                }
            }
            if m.role == "tool" {
                m.role = "user".into();
                m.content = format!("<tool_response>\n{}\n</tool_response>", m.content);
                m.tool_call_id = None;
            }
            m
        })
        .collect();
    if !tools.is_empty() {
        let prompt = tool_system_prompt(tools);
        match out.first_mut() {
            Some(first) if first.role == "system" => {
                first.content = format!("{}\n\n{prompt}", first.content);
            }
            _ => out.insert(0, ValidMessage::new("system", prompt)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(role: &str, content: &str) -> ValidMessage {
        ValidMessage::new(role, content)
    }

    #[test]
    fn gemma_builtin_folds_system_into_first_user_turn() {
        let t = ChatTemplate::new(None, "<bos>".into(), "<eos>".into()).unwrap();
        let out = t
            .render(&[msg("system", "Be brief."), msg("user", "Hi")], &[])
            .unwrap();
        assert_eq!(
            out,
            "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"
        );
    }

    #[test]
    fn tools_go_into_the_system_turn_of_a_template_without_tool_support() {
        let src = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
        let t = ChatTemplate::new(Some(src.into()), String::new(), String::new()).unwrap();
        let tool = Tool {
            name: "get_weather".into(),
            description: "Weather".into(),
            parameters: serde_json::json!({"type": "object"}),
        };
        let mut call = msg("assistant", "");
        call.tool_calls = Some(vec![serde_json::json!(
            {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
        )]);
        let mut result = msg("tool", "21C");
        result.tool_call_id = Some("call00001".into());
        let out = t
            .render(&[msg("user", "Weather?"), call, result], &[tool])
            .unwrap();
        assert!(
            out.starts_with("<|im_start|>system\nYou are a function calling AI model."),
            "{out}"
        );
        assert!(out.contains("\"name\":\"get_weather\""), "{out}");
        assert!(out.contains("<|im_start|>assistant\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\":\"Paris\"}}\n</tool_call><|im_end|>"), "{out}");
        assert!(
            out.contains("<|im_start|>user\n<tool_response>\n21C\n</tool_response><|im_end|>"),
            "{out}"
        );
    }

    #[test]
    fn a_tool_aware_template_gets_the_tools_itself() {
        let src = "{% if tools %}TOOLS:{% for t in tools %}{{ t.function.name }}{% endfor %}<tool_call>\n{% endif %}{% for message in messages %}{{ message['role'] }}:{{ message['content'] }}\n{% endfor %}";
        let t = ChatTemplate::new(Some(src.into()), String::new(), String::new()).unwrap();
        let tool = Tool {
            name: "get_weather".into(),
            description: String::new(),
            parameters: serde_json::json!({"type": "object"}),
        };
        let out = t.render(&[msg("user", "Hi")], &[tool]).unwrap();
        assert_eq!(out, "TOOLS:get_weather<tool_call>\nuser:Hi\n");
    }

    #[test]
    fn the_tool_format_follows_the_template() {
        let make = |src: &str| {
            ChatTemplate::new(Some(src.into()), String::new(), String::new())
                .unwrap()
                .tool_format()
        };
        assert_eq!(make("{{ messages }}"), ToolFormat::HermesPrompt);
        assert_eq!(
            make("{% if tools %}<tool_call>{% endif %}{{ messages }}"),
            ToolFormat::HermesTemplate
        );
        assert_eq!(
            make(
                "{% if tools %}{\"name\": function name, \"parameters\": ...}{% endif %}<|python_tag|>"
            ),
            ToolFormat::LlamaJson
        );
    }

    #[test]
    fn chatml_template_with_python_methods_renders() {
        let src = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'].strip() + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
        let t = ChatTemplate::new(Some(src.into()), String::new(), String::new()).unwrap();
        let out = t.render(&[msg("user", " Hi ")], &[]).unwrap();
        assert_eq!(
            out,
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }
}
