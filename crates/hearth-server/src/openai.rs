//! OpenAI-compatible Chat Completions (`/ai/v1/chat/completions`): the same
//! `App::generate` as the native run endpoint, in OpenAI's shapes.

use std::convert::Infallible;

use axum::Json;
use std::collections::HashMap;

use axum::extract::{Path, Request, State};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use hearth_runtime::PromptInput;
use hearth_types::textgen::{MessageContent, TextGenerationInput};
use hearth_types::tools::ToolCall;

use hearth_types::openai::{
    AssistantMessage, ChatChoice, ChatCompletion, ChatCompletionChunk, ChatCompletionRequest,
    ChunkChoice, Delta,
};

use crate::error::Failure;
use crate::metering::Admission;
use crate::shaping::{self, ToolStream};
use crate::workers_ai::{StreamItem, collect, stream_items};
use crate::{AppState, body, tag_response};

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub async fn chat_completions(
    State(state): State<AppState>,
    Path(params): Path<HashMap<String, String>>,
    request: Request,
) -> Result<Response, Failure> {
    let bytes = body::read(request.into_body(), state.body_limit()).await?;
    let mut req: ChatCompletionRequest = body::parse_json(&bytes)?;
    let account = params.get("account_id").map(String::as_str).unwrap_or("");
    let mut image = None;
    if req.messages.iter().any(|m| {
        matches!(&m.content, MessageContent::Parts(parts) if parts.iter().any(|p| p.kind != "text"))
    }) {
        // A GGUF model sees the image through its projector, on the same
        // path as text (streaming, tools, JSON mode).
        let mut holder = TextGenerationInput {
            messages: Some(std::mem::take(&mut req.messages)),
            ..TextGenerationInput::default()
        };
        image = crate::images::take_image(&mut holder)?;
        req.messages = holder.messages.unwrap_or_default();
    }
    let valid = req.validate()?;
    let task = state.app.resolve(&valid.model)?.task;
    let admission = Admission::admit(&state, account, &valid.model, &task)?;
    // Terms are accepted on the native endpoint (`prompt: "agree"`).
    crate::metering::agreement(&state, account, &valid.model, None)?;
    let shape = valid.shape;
    // GGUF models on llama.cpp; Hugging Face-layout weights are a candle
    // LLaVA or Llama 3.2 Vision, with or without an image.
    let mut generation = if state.app.resolve(&valid.model)?.is_gguf() {
        state
            .app
            .generate_chat(
                &valid.model,
                PromptInput::Messages(valid.messages),
                &shape,
                valid.params,
                valid.reject_if_busy,
                image.map(crate::images::ChatImage::into_parts),
            )
            .await?
    } else {
        let extras = !shape.offered().is_empty() || shape.response_format.is_some();
        crate::images::vision_generation(
            &state,
            &valid.model,
            image,
            (
                &hearth_types::textgen::PromptSource::Messages(valid.messages),
                false,
            ),
            valid.params,
            extras,
        )
        .await?
    };
    let resolved = generation.resolved.clone();
    let id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
    let created = unix_now();
    let model = valid.model;
    let mut response = if valid.stream {
        let include_usage = valid.include_usage;
        let chunk =
            move |delta: Delta,
                  finish: Option<String>,
                  usage: Option<hearth_types::textgen::Usage>| ChatCompletionChunk {
                id: id.clone(),
                object: "chat.completion.chunk".into(),
                created,
                model: model.clone(),
                choices: if usage.is_some() {
                    Vec::new()
                } else {
                    vec![ChunkChoice {
                        index: 0,
                        delta,
                        finish_reason: finish,
                        logprobs: None,
                    }]
                },
                usage,
            };
        let data = |c: &ChatCompletionChunk| -> Result<Event, Infallible> {
            Ok(Event::default().data(serde_json::to_string(c).unwrap_or_default()))
        };
        let first = data(&chunk(
            Delta {
                role: Some("assistant".into()),
                content: Some(String::new()),
                ..Delta::default()
            },
            None,
            None,
        ));
        let text = |t: String| Delta {
            content: Some(t),
            ..Delta::default()
        };
        let mut tools = ToolStream::new(!shape.offered().is_empty());
        let body = stream_items(generation, state.timeout()).flat_map(move |item| {
            let events: Vec<Result<Event, Infallible>> = match item {
                StreamItem::Text(t) => {
                    let now = tools.push(&t);
                    if now.is_empty() {
                        Vec::new()
                    } else {
                        vec![data(&chunk(text(now), None, None))]
                    }
                }
                StreamItem::End { usage, finish } => {
                    admission.charge_usage(&usage);
                    let (rest, calls) = tools.finish();
                    let mut events = Vec::new();
                    if !rest.is_empty() {
                        events.push(data(&chunk(text(rest), None, None)));
                    }
                    let finish = if calls.is_empty() {
                        finish
                    } else {
                        "tool_calls"
                    };
                    if !calls.is_empty() {
                        let deltas = calls
                            .iter()
                            .enumerate()
                            .map(|(i, c)| {
                                let mut v = c.as_openai();
                                v["index"] = i.into();
                                v
                            })
                            .collect();
                        let delta = Delta {
                            tool_calls: deltas,
                            ..Delta::default()
                        };
                        events.push(data(&chunk(delta, None, None)));
                    }
                    events.push(data(&chunk(Delta::default(), Some(finish.into()), None)));
                    if include_usage {
                        events.push(data(&chunk(Delta::default(), None, Some(usage))));
                    }
                    events.push(Ok(Event::default().data("[DONE]")));
                    events
                }
                StreamItem::Failed => vec![Ok(Event::default().data("[DONE]"))],
            };
            futures::stream::iter(events)
        });
        Sse::new(futures::stream::iter([first]).chain(body)).into_response()
    } else {
        let out = collect(&mut generation, state.timeout())
            .await
            .map_err(Failure)?;
        admission.charge_usage(&out.usage);
        let shaped = shaping::shape(out.text, &shape, out.finish)?;
        let finish = if shaped.calls.is_empty() {
            out.finish
        } else {
            "tool_calls"
        };
        Json(ChatCompletion {
            id,
            object: "chat.completion".into(),
            created,
            model,
            choices: vec![ChatChoice {
                index: 0,
                message: AssistantMessage {
                    role: "assistant".into(),
                    content: match (&shaped.json, shaped.calls.is_empty()) {
                        (Some(json), _) => Some(json.to_string()),
                        (None, false) if shaped.text.is_empty() => None,
                        (None, _) => Some(shaped.text),
                    },
                    tool_calls: shaped.calls.iter().map(ToolCall::as_openai).collect(),
                },
                finish_reason: finish.into(),
                logprobs: None,
            }],
            usage: out.usage,
        })
        .into_response()
    };
    tag_response(&mut response, &resolved);
    Ok(response)
}
