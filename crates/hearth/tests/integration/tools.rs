//! Function calling and JSON mode on the real SmolLM2, through both the
//! native run endpoint and the OpenAI-compatible one, streaming and not.
//! Outputs are checked with a JSON Schema validator, not by eye.

use serde_json::{Value, json};

use crate::support::*;

fn weather_parameters() -> Value {
    json!({
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": "City name, e.g. Paris"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}
        },
        "required": ["city"]
    })
}

fn weather_tool_flat() -> Value {
    json!({
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": weather_parameters(),
    })
}

fn weather_tool_openai() -> Value {
    json!({"type": "function", "function": weather_tool_flat()})
}

fn question() -> Value {
    json!([{"role": "user", "content": "What is the weather like in Paris today?"}])
}

fn assert_valid(schema: &Value, instance: &Value) {
    let validator = jsonschema::validator_for(schema).expect("schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{instance} against {schema}: {errors:?}");
}

fn chat_url() -> String {
    account_url("/ai/v1/chat/completions")
}

#[tokio::test]
async fn native_tool_call_in_both_tool_forms_validates_against_the_schema() {
    for tool in [weather_tool_flat(), weather_tool_openai()] {
        let (status, _, v) = post_json(
            &run_url(SMOLLM),
            &json!({"messages": question(), "tools": [tool], "tool_choice": "required",
                    "temperature": 0, "max_tokens": 64}),
        )
        .await;
        assert_eq!(status, 200, "{v}");
        let calls = v["result"]["tool_calls"].as_array().expect("tool_calls");
        assert_eq!(calls.len(), 1, "{v}");
        assert_eq!(calls[0]["name"], "get_weather", "{v}");
        let args = &calls[0]["arguments"];
        assert!(args.is_object(), "native arguments are an object: {v}");
        assert_valid(&weather_parameters(), args);
        assert!(
            args["city"].as_str().unwrap_or("").contains("Paris"),
            "the model was asked about Paris: {v}"
        );
    }
}

#[tokio::test]
async fn native_streamed_tool_call_arrives_whole_in_one_chunk() {
    let resp = client()
        .post(run_url(SMOLLM))
        .bearer_auth(TOKEN)
        .json(
            &json!({"messages": question(), "tools": [weather_tool_flat()],
                      "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
                      "temperature": 0, "max_tokens": 64, "stream": true}),
        )
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    let body = resp.text().await.expect("body");
    let events = sse_data(&body);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{body}");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).expect("chunk json"))
        .collect();
    let with_calls: Vec<&Value> = chunks
        .iter()
        .filter(|c| c.get("tool_calls").is_some())
        .collect();
    assert_eq!(with_calls.len(), 1, "{body}");
    let call = &with_calls[0]["tool_calls"][0];
    assert_eq!(call["name"], "get_weather");
    assert_valid(&weather_parameters(), &call["arguments"]);
    // No piece of the call leaks out as text.
    let text: String = chunks
        .iter()
        .filter_map(|c| c["response"].as_str())
        .collect();
    assert!(!text.contains("tool_call"), "{text:?}");
    assert!(chunks.last().expect("usage chunk")["usage"].is_object());
}

#[tokio::test]
async fn follow_up_turn_with_the_tool_result_gives_a_text_answer() {
    let messages = json!([
        {"role": "user", "content": "What is the weather like in Paris today?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "call00001", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "call00001",
         "content": "{\"temperature_c\": 21, \"sky\": \"sunny\"}"}
    ]);
    let (status, _, v) = post_json(
        &run_url(SMOLLM),
        &json!({"messages": messages, "tools": [weather_tool_openai()], "tool_choice": "none",
                "temperature": 0, "max_tokens": 48}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["result"]["tool_calls"], json!([]), "{v}");
    let text = v["result"]["response"].as_str().expect("text answer");
    assert!(!text.trim().is_empty(), "{v}");
}

#[tokio::test]
async fn openai_endpoint_returns_openai_tool_calls_streaming_and_not() {
    let body = json!({"model": SMOLLM, "messages": question(), "tools": [weather_tool_openai()],
                      "tool_choice": "required", "temperature": 0, "max_tokens": 64});
    let (status, _, v) = post_json(&chat_url(), &body).await;
    assert_eq!(status, 200, "{v}");
    let choice = &v["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{v}");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert!(call["id"].as_str().is_some_and(|id| !id.is_empty()));
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value = serde_json::from_str(
        call["function"]["arguments"]
            .as_str()
            .expect("string arguments"),
    )
    .expect("arguments parse");
    assert_valid(&weather_parameters(), &args);

    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let resp = client()
        .post(chat_url())
        .bearer_auth(TOKEN)
        .json(&streamed)
        .send()
        .await
        .expect("request");
    let text = resp.text().await.expect("body");
    let chunks: Vec<Value> = sse_data(&text)
        .iter()
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).expect("chunk"))
        .collect();
    let delta_calls: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"].get("tool_calls"))
        .collect();
    assert_eq!(delta_calls.len(), 1, "{text}");
    assert_eq!(delta_calls[0][0]["index"], 0);
    assert_eq!(delta_calls[0][0]["function"]["name"], "get_weather");
    let finish: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0].get("finish_reason"))
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finish, vec![&json!("tool_calls")], "{text}");
}

/// Five schemas (nested objects, enums, arrays, required fields, numbers
/// with bounds) x ten prompts, sampled at temperature 0.9: every answer
/// parses and validates.
#[tokio::test]
async fn json_mode_answers_validate_against_their_schemas() {
    let schemas = [
        json!({"type": "object", "properties": {
            "name": {"type": "string", "maxLength": 30},
            "age": {"type": "integer", "minimum": 0, "maximum": 120}},
            "required": ["name", "age"]}),
        json!({"type": "object", "properties": {
            "sentiment": {"type": "string", "enum": ["positive", "negative", "neutral"]},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1}},
            "required": ["sentiment", "confidence"]}),
        json!({"type": "object", "properties": {
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 16},
                     "minItems": 1, "maxItems": 4}},
            "required": ["tags"]}),
        json!({"type": "object", "properties": {
            "city": {"type": "object", "properties": {
                "name": {"type": "string", "maxLength": 24},
                "country": {"type": "string", "maxLength": 24},
                "location": {"type": "object", "properties": {
                    "lat": {"type": "number"}, "lon": {"type": "number"}},
                    "required": ["lat", "lon"]}},
                "required": ["name", "country", "location"]}},
            "required": ["city"]}),
        json!({"type": "object", "properties": {
            "done": {"type": "boolean"},
            "steps": {"type": "array", "maxItems": 3, "items": {"type": "object", "properties": {
                "n": {"type": "integer", "minimum": 1, "maximum": 9},
                "kind": {"enum": ["read", "write"]}}, "required": ["n", "kind"]}}},
            "required": ["done", "steps"]}),
    ];
    let prompts = [
        "Describe a person.",
        "Tell me about the weather.",
        "What did you think of the film?",
        "Give me some facts about Paris.",
        "Plan my day.",
        "Summarise: the cat sat on the mat.",
        "List a few colours.",
        "Who wrote Hamlet?",
        "Review this restaurant: great food, slow service.",
        "Describe a city you like.",
    ];
    let mut requests = Vec::new();
    for (s, schema) in schemas.iter().enumerate() {
        for (p, prompt) in prompts.iter().enumerate() {
            let body = json!({
                "messages": [{"role": "user", "content": format!("{prompt} Answer in JSON.")}],
                "response_format": {"type": "json_schema", "json_schema": schema},
                "temperature": 0.9, "seed": (s * 10 + p) as u64 + 1, "max_tokens": 200,
            });
            requests.push(async move {
                let (status, _, v) = post_json(&run_url(SMOLLM), &body).await;
                (schema, status, v)
            });
        }
    }
    let results = futures::future::join_all(requests).await;
    assert_eq!(results.len(), 50);
    for (schema, status, v) in results {
        assert_eq!(status, 200, "{v}");
        let response = &v["result"]["response"];
        assert!(response.is_object(), "JSON mode answers an object: {v}");
        assert_valid(schema, response);
    }
}

#[tokio::test]
async fn json_object_mode_on_both_endpoints() {
    let (status, _, v) = post_json(
        &run_url(SMOLLM),
        &json!({"prompt": "What is the name of a dog called Rex? Answer as JSON with one key, \"name\".",
                "response_format": {"type": "json_object"}, "temperature": 0, "max_tokens": 300}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert!(v["result"]["response"].is_object(), "{v}");

    let schema = json!({"type": "object", "properties": {"answer": {"type": "string", "maxLength": 40}},
                        "required": ["answer"], "additionalProperties": false});
    let (status, _, v) = post_json(
        &chat_url(),
        &json!({"model": SMOLLM, "messages": [{"role": "user", "content": "What is 2+2?"}],
                "response_format": {"type": "json_schema",
                                    "json_schema": {"name": "answer", "schema": schema, "strict": true}},
                "temperature": 0, "max_tokens": 60}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let content = v["choices"][0]["message"]["content"]
        .as_str()
        .expect("content string");
    let parsed: Value = serde_json::from_str(content).expect("content is JSON");
    assert_valid(&schema, &parsed);
}

#[tokio::test]
async fn bad_tool_and_json_mode_inputs_get_errors_naming_the_field() {
    let cases = [
        (
            json!({"messages": question(), "tools": [{"type": "function", "function": {"description": "x"}}]}),
            "`tools[0].function.name`",
        ),
        (
            json!({"messages": question(), "tools": [weather_tool_flat()], "tool_choice": {"type": "function", "function": {"name": "get_time"}}}),
            "`tool_choice`",
        ),
        (
            json!({"messages": question(), "response_format": {"type": "json_object"}, "stream": true}),
            "`stream`",
        ),
        (
            json!({"messages": question(), "response_format": {"type": "xml"}}),
            "`response_format.type`",
        ),
        (
            json!({"messages": question(), "response_format": {"type": "json_schema",
                   "json_schema": {"$ref": "#/definitions/nowhere"}}}),
            "JSON Mode couldn't be met",
        ),
        (
            json!({"prompt": "hi", "raw": true, "tools": [weather_tool_flat()]}),
            "`raw: true`",
        ),
    ];
    for (body, needle) in cases {
        let (status, _, v) = post_json(&run_url(SMOLLM), &body).await;
        assert_eq!(status, 400, "{body} -> {v}");
        assert_eq!(v["success"], false);
        assert_eq!(v["errors"][0]["code"], 5006, "{v}");
        let message = v["errors"][0]["message"].as_str().unwrap_or("");
        assert!(message.contains(needle), "{needle} not in {message}");
    }
}

/// A JSON answer cut off by `max_tokens` cannot be JSON: Workers AI's error,
/// not a broken object.
#[tokio::test]
async fn json_mode_cut_short_is_an_error_not_half_an_object() {
    let (status, _, v) = post_json(
        &run_url(SMOLLM),
        &json!({"messages": [{"role": "user", "content": "Describe Paris in detail."}],
                "response_format": {"type": "json_schema", "json_schema":
                    {"type": "object", "properties": {"text": {"type": "string", "minLength": 200}},
                     "required": ["text"]}},
                "temperature": 0, "max_tokens": 8}),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    let message = v["errors"][0]["message"].as_str().unwrap_or("");
    assert!(message.contains("JSON Mode couldn't be met"), "{message}");
    assert!(message.contains("max_tokens"), "{message}");
}

/// Gemma 3's GGUF carries no tool-aware template: Hearth's tool prompt goes
/// into its first user turn and the call is still held to the schema.
#[tokio::test]
async fn gemma_calls_a_tool_through_hearths_tool_prompt() {
    let (status, _, v) = post_json(
        &run_url(GEMMA),
        &json!({"messages": question(), "tools": [weather_tool_openai()], "tool_choice": "required",
                "temperature": 0, "max_tokens": 64}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let call = &v["result"]["tool_calls"][0];
    assert_eq!(call["name"], "get_weather", "{v}");
    assert_valid(&weather_parameters(), &call["arguments"]);
}
