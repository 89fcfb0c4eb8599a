//! Malformed requests each get the exact envelope, code and status, and the
//! server stays up.

use serde_json::{Value, json};

use crate::support::*;

enum Body {
    None,
    Raw(&'static str),
    Json(Value),
    Big(usize),
}

struct Case {
    name: &'static str,
    method: &'static str,
    path: String,
    token: Option<&'static str>,
    body: Body,
    status: u16,
    code: u64,
    /// A word the message must contain (usually the field's name).
    mentions: &'static str,
}

fn case(name: &'static str, body: Value, code: u64, mentions: &'static str) -> Case {
    Case {
        name,
        method: "POST",
        path: format!("/client/v4/accounts/{ACCOUNT}/ai/run/{SMOLLM}"),
        token: Some(TOKEN),
        body: Body::Json(body),
        status: if code == 5021 || code == 5006 || code == 5007 {
            400
        } else {
            0
        },
        code,
        mentions,
    }
}

fn cases() -> Vec<Case> {
    let run = |model: &str| format!("/client/v4/accounts/{ACCOUNT}/ai/run/{model}");
    let chat = format!("/client/v4/accounts/{ACCOUNT}/ai/v1/chat/completions");
    let long_prompt = "word ".repeat(3000);
    let mut v = vec![
        case(
            "prompt of the wrong type",
            json!({"prompt": 42}),
            5006,
            "prompt",
        ),
        case("empty prompt", json!({"prompt": ""}), 5006, "prompt"),
        case(
            "both prompt and messages",
            json!({"prompt": "a", "messages": [{"role": "user", "content": "b"}]}),
            5006,
            "not both",
        ),
        case(
            "neither prompt nor messages",
            json!({"temperature": 0.5}),
            5006,
            "required",
        ),
        case(
            "unknown field",
            json!({"prompt": "a", "temprature": 0.5}),
            5006,
            "temprature",
        ),
        case(
            "max_tokens zero",
            json!({"prompt": "a", "max_tokens": 0}),
            5006,
            "max_tokens",
        ),
        case(
            "max_tokens as a string",
            json!({"prompt": "a", "max_tokens": "ten"}),
            5006,
            "max_tokens",
        ),
        case(
            "temperature above 5",
            json!({"prompt": "a", "temperature": 6}),
            5006,
            "temperature",
        ),
        case(
            "top_k zero",
            json!({"prompt": "a", "top_k": 0}),
            5006,
            "top_k",
        ),
        case(
            "top_k above 50",
            json!({"prompt": "a", "top_k": 51}),
            5006,
            "top_k",
        ),
        case(
            "top_p above 2",
            json!({"prompt": "a", "top_p": 3}),
            5006,
            "top_p",
        ),
        case(
            "negative seed",
            json!({"prompt": "a", "seed": -1}),
            5006,
            "seed",
        ),
        case(
            "repetition_penalty above 2",
            json!({"prompt": "a", "repetition_penalty": 3}),
            5006,
            "repetition_penalty",
        ),
        case(
            "frequency_penalty below -2",
            json!({"prompt": "a", "frequency_penalty": -3}),
            5006,
            "frequency_penalty",
        ),
        case(
            "presence_penalty above 2",
            json!({"prompt": "a", "presence_penalty": 2.5}),
            5006,
            "presence_penalty",
        ),
        case(
            "stream of the wrong type",
            json!({"prompt": "a", "stream": "yes"}),
            5006,
            "stream",
        ),
        case(
            "raw of the wrong type",
            json!({"prompt": "a", "raw": 1}),
            5006,
            "raw",
        ),
        case("empty messages", json!({"messages": []}), 5006, "messages"),
        case(
            "message with an unknown role",
            json!({"messages": [{"role": "robot", "content": "hi"}]}),
            5006,
            "messages[0].role",
        ),
        case(
            "message content of the wrong type",
            json!({"messages": [{"role": "user", "content": 7}]}),
            5006,
            "messages",
        ),
        case(
            "messages not an array",
            json!({"messages": "hi"}),
            5006,
            "messages",
        ),
        case(
            "prompt longer than the context",
            json!({"prompt": long_prompt}),
            5021,
            "context",
        ),
    ];
    v.extend([
        Case { name: "unknown model", method: "POST", path: run("@cf/nobody/no-such-model"), token: Some(TOKEN), body: Body::Json(json!({"prompt": "a"})), status: 400, code: 5007, mentions: "no-such-model" },
        Case { name: "catalog model whose weights are absent", method: "POST", path: run("@cf/meta/llama-3.2-1b-instruct"), token: Some(TOKEN), body: Body::Json(json!({"prompt": "a"})), status: 503, code: 9001, mentions: "hearth models pull" },
        Case { name: "missing body", method: "POST", path: run(SMOLLM), token: Some(TOKEN), body: Body::None, status: 400, code: 3003, mentions: "body" },
        Case { name: "invalid JSON", method: "POST", path: run(SMOLLM), token: Some(TOKEN), body: Body::Raw("{\"prompt\": "), status: 400, code: 5006, mentions: "JSON" },
        Case { name: "JSON array body", method: "POST", path: run(SMOLLM), token: Some(TOKEN), body: Body::Raw("[1, 2]"), status: 400, code: 5006, mentions: "object" },
        Case { name: "oversized body", method: "POST", path: run(SMOLLM), token: Some(TOKEN), body: Body::Big(BODY_LIMIT + 10), status: 413, code: 3006, mentions: "limit" },
        Case { name: "no token", method: "POST", path: run(SMOLLM), token: None, body: Body::Json(json!({"prompt": "a"})), status: 401, code: 10000, mentions: "Authentication" },
        Case { name: "wrong token", method: "POST", path: run(SMOLLM), token: Some("not-a-real-token"), body: Body::Json(json!({"prompt": "a"})), status: 401, code: 10000, mentions: "Authentication" },
        Case { name: "unknown account", method: "POST", path: format!("/client/v4/accounts/{}/ai/run/{SMOLLM}", "a".repeat(32)), token: Some(TOKEN), body: Body::Json(json!({"prompt": "a"})), status: 404, code: 7003, mentions: "route" },
        Case { name: "malformed account id", method: "POST", path: format!("/client/v4/accounts/not-an-account/ai/run/{SMOLLM}"), token: Some(TOKEN), body: Body::Json(json!({"prompt": "a"})), status: 404, code: 7003, mentions: "route" },
        Case { name: "another account's token", method: "POST", path: format!("/client/v4/accounts/{OTHER_ACCOUNT}/ai/run/{SMOLLM}"), token: Some(TOKEN), body: Body::Json(json!({"prompt": "a"})), status: 403, code: 10000, mentions: "Authentication" },
        Case { name: "wrong method on run", method: "GET", path: run(SMOLLM), token: Some(TOKEN), body: Body::None, status: 405, code: 7001, mentions: "GET" },
        Case { name: "no such route", method: "GET", path: format!("/client/v4/accounts/{ACCOUNT}/ai/nothing-here"), token: Some(TOKEN), body: Body::None, status: 404, code: 7003, mentions: "route" },
        Case { name: "no OpenAI models list (as on Cloudflare)", method: "GET", path: format!("/client/v4/accounts/{ACCOUNT}/ai/v1/models"), token: Some(TOKEN), body: Body::None, status: 404, code: 7003, mentions: "route" },
        Case { name: "schema without model", method: "GET", path: format!("/client/v4/accounts/{ACCOUNT}/ai/models/schema"), token: Some(TOKEN), body: Body::None, status: 400, code: 5006, mentions: "model" },
        Case { name: "schema of an unknown model", method: "GET", path: format!("/client/v4/accounts/{ACCOUNT}/ai/models/schema?model=@cf/x/y"), token: Some(TOKEN), body: Body::None, status: 400, code: 5007, mentions: "@cf/x/y" },
        Case { name: "search with a bad page", method: "GET", path: format!("/client/v4/accounts/{ACCOUNT}/ai/models/search?page=zero"), token: Some(TOKEN), body: Body::None, status: 400, code: 5006, mentions: "page" },
        Case { name: "chat without model", method: "POST", path: chat.clone(), token: Some(TOKEN), body: Body::Json(json!({"messages": [{"role": "user", "content": "hi"}]})), status: 400, code: 5006, mentions: "model" },
        Case { name: "chat with an unknown model", method: "POST", path: chat.clone(), token: Some(TOKEN), body: Body::Json(json!({"model": "@cf/x/y", "messages": [{"role": "user", "content": "hi"}]})), status: 400, code: 5007, mentions: "@cf/x/y" },
        Case { name: "chat without messages", method: "POST", path: chat.clone(), token: Some(TOKEN), body: Body::Json(json!({"model": SMOLLM})), status: 400, code: 5006, mentions: "messages" },
        Case { name: "chat with n = 2", method: "POST", path: chat.clone(), token: Some(TOKEN), body: Body::Json(json!({"model": SMOLLM, "n": 2, "messages": [{"role": "user", "content": "hi"}]})), status: 400, code: 5006, mentions: "`n`" },
        Case { name: "chat temperature of the wrong type", method: "POST", path: chat, token: Some(TOKEN), body: Body::Json(json!({"model": SMOLLM, "temperature": "hot", "messages": [{"role": "user", "content": "hi"}]})), status: 400, code: 5006, mentions: "temperature" },
        Case { name: "task this build does not serve", method: "POST", path: run("@cf/microsoft/resnet-50"), token: Some(TOKEN), body: Body::Json(json!({"image": [1, 2, 3]})), status: 503, code: 9001, mentions: "resnet-50" },
        Case { name: "alias across tasks is refused", method: "POST", path: run("@cf/meta/llama-3.2-3b-instruct"), token: Some(TOKEN), body: Body::Json(json!({"prompt": "hi"})), status: 503, code: 9001, mentions: "Text Embeddings" },
    ]);
    v
}

#[tokio::test]
async fn malformed_requests_get_the_exact_envelope_code_and_status() {
    let all = cases();
    assert!(all.len() >= 25, "{}", all.len());
    for c in all {
        let url = format!("{}{}", server().base, c.path);
        let mut req = match c.method {
            "GET" => client().get(&url),
            _ => client().post(&url),
        };
        if let Some(t) = c.token {
            req = req.bearer_auth(t);
        }
        req = match c.body {
            Body::None => req,
            Body::Raw(s) => req.header("content-type", "application/json").body(s),
            Body::Json(v) => req.json(&v),
            Body::Big(n) => req
                .header("content-type", "application/json")
                .body(format!("{{\"prompt\": \"{}\"}}", "x".repeat(n))),
        };
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", c.name));
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{}: not an envelope: {text}", c.name));
        let want_status = if c.status == 0 { 400 } else { c.status };
        assert_eq!(status, want_status, "{}: {v}", c.name);
        assert_eq!(v["success"], false, "{}: {v}", c.name);
        assert_eq!(v["result"], Value::Null, "{}: {v}", c.name);
        assert_eq!(v["messages"], json!([]), "{}: {v}", c.name);
        assert_eq!(v["errors"][0]["code"], c.code, "{}: {v}", c.name);
        let message = v["errors"][0]["message"].as_str().unwrap();
        assert!(
            message.contains(c.mentions),
            "{}: message {message:?} lacks {:?}",
            c.name,
            c.mentions
        );
    }
    // The server is still up and still answers correctly.
    let health = client()
        .get(format!("{}/health", server().base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let text = generate(SMOLLM, json!({"prompt": "The capital of France is", "raw": true, "temperature": 0, "max_tokens": 6})).await;
    assert!(text.contains("Paris"));
}

#[tokio::test]
async fn catalog_endpoints_answer_in_cloudflare_shapes() {
    let url = account_url("/ai/models/search?task=Text%20Generation&per_page=5&page=1");
    let v: Value = client()
        .get(&url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["success"], true);
    assert_eq!(v["result"].as_array().unwrap().len(), 5);
    assert_eq!(v["result_info"]["per_page"], 5);
    assert!(v["result_info"]["total_count"].as_u64().unwrap() > 50);
    let first = &v["result"][0];
    assert_eq!(first["task"]["name"], "Text Generation");
    assert_eq!(first["task"]["id"], "c329a1f9-323d-4e91-b2aa-582dd4188d34");
    assert!(first["properties"].is_array());

    let url = account_url("/ai/models/search?search=smollm2");
    let v: Value = client()
        .get(&url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let found = &v["result"][0];
    assert_eq!(found["name"], SMOLLM);
    assert_eq!(found["hearth"]["status"], "installed");
    assert_eq!(found["hearth"]["servable"], true);

    let url = account_url(&format!(
        "/ai/models/search?search={}",
        "llama-3.1-8b-instruct"
    ));
    let v: Value = client()
        .get(&url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let aliased = v["result"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == ALIASED)
        .unwrap();
    assert_eq!(aliased["hearth"]["status"], "aliased");
    assert_eq!(aliased["hearth"]["alias_of"], SMOLLM);

    let url = account_url(&format!("/ai/models/schema?model={SMOLLM}"));
    let v: Value = client()
        .get(&url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["result"]["input"]["oneOf"][0]["title"], "Prompt");
    assert_eq!(
        v["result"]["output"]["oneOf"][1]["contentType"],
        "text/event-stream"
    );

    for path in ["/ai/tasks/search", "/ai/authors/search"] {
        let v: Value = client()
            .get(account_url(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(v["result"].as_array().unwrap().len() > 5, "{path}: {v}");
    }
}
