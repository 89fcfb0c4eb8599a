//! AI Gateway in front of real upstream providers over HTTP: a fault-
//! injecting OpenAI-compatible server the test controls (500s, stalls,
//! held-back stream chunks) and the shared Hearth server as a second
//! provider. Covers retries, timeouts, universal-endpoint fallback, key
//! forwarding, streaming pass-through, custom providers, log filters,
//! bodies, bulk delete, log limits, analytics, the run endpoint's
//! `gateway` option and the cache surviving a restart.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::support::*;

#[derive(Default)]
struct Fault {
    /// Calls per model name.
    calls: Mutex<HashMap<String, u32>>,
    /// `Authorization` of the last call per model name.
    auth: Mutex<HashMap<String, String>>,
    /// Releases the held-back last chunk of a `hold-stream` answer.
    release: tokio::sync::Notify,
}

fn completion(text: &str) -> Value {
    json!({"id": "c1", "object": "chat.completion", "model": "fault",
           "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
           "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}})
}

/// The fault-injecting upstream: the request's `model` says how to behave.
/// `ok`, `fail-N` (500 for the first N calls), `fail` (always 500), `slow`
/// (headers after 3 s), `hold-stream` (an SSE stream whose last chunk
/// waits for the test).
fn fault() -> &'static (String, Arc<Fault>) {
    static FAULT: OnceLock<(String, Arc<Fault>)> = OnceLock::new();
    FAULT.get_or_init(|| {
        let state = Arc::new(Fault::default());
        let shared = Arc::clone(&state);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().expect("runtime");
            rt.block_on(async move {
                let app = axum::Router::new().route(
                    "/v1/chat/completions",
                    axum::routing::post(move |headers: HeaderMap, Json(body): Json<Value>| {
                        let state = Arc::clone(&shared);
                        async move { answer(state, headers, body).await }
                    }),
                );
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                tx.send(listener.local_addr().expect("addr")).expect("addr");
                axum::serve(listener, app).await.expect("serve");
            });
        });
        let addr = rx.recv().expect("fault address");
        (format!("http://{addr}"), state)
    })
}

async fn answer(state: Arc<Fault>, headers: HeaderMap, body: Value) -> Response {
    let model = body["model"].as_str().unwrap_or("").to_string();
    let n = {
        let mut calls = state.calls.lock().unwrap();
        let n = calls.entry(model.clone()).or_default();
        *n += 1;
        *n
    };
    if let Some(a) = headers.get("authorization").and_then(|v| v.to_str().ok()) {
        state
            .auth
            .lock()
            .unwrap()
            .insert(model.clone(), a.to_string());
    }
    let fail = |m: &str| {
        (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": m})),
        )
            .into_response()
    };
    match model.as_str() {
        "fail" => fail("always"),
        m if m.starts_with("fail-") => {
            let failures: u32 = m[5..].parse().unwrap_or(0);
            if n <= failures {
                fail("not yet")
            } else {
                Json(completion("recovered")).into_response()
            }
        }
        "slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            Json(completion("late")).into_response()
        }
        "hold-stream" => {
            let first = futures::stream::iter(vec![Ok::<_, std::convert::Infallible>(
                "data: {\"choices\":[{\"delta\":{\"content\":\"one\"}}]}\n\n".to_string(),
            )]);
            let rest = futures::stream::once(async move {
                state.release.notified().await;
                Ok("data: {\"choices\":[{\"delta\":{\"content\":\"two\"}}],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n".to_string())
            });
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(Body::from_stream(first.chain(rest)))
                .unwrap()
        }
        _ => Json(completion("fine")).into_response(),
    }
}

fn calls(model: &str) -> u32 {
    fault()
        .1
        .calls
        .lock()
        .unwrap()
        .get(model)
        .copied()
        .unwrap_or(0)
}

fn gw_server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| gateway_server(&fault().0, None))
}

fn admin(server: &Server, path: &str) -> String {
    format!("{}/client/v4/accounts/{ACCOUNT}{path}", server.base)
}

async fn create_gateway(server: &Server, id: &str, extra: Value) {
    let mut body = json!({"id": id, "cache_invalidate_on_update": false, "cache_ttl": null, "collect_logs": true,
                          "rate_limiting_interval": null, "rate_limiting_limit": null});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let (status, _, v) = post_json(&admin(server, "/ai-gateway/gateways"), &body).await;
    assert_eq!(status, 200, "{v}");
}

async fn send(
    url: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut req = client().post(url).json(body);
    let mut has_auth = false;
    for (k, v) in headers {
        has_auth |= k.eq_ignore_ascii_case("authorization") || *k == "cf-aig-authorization";
        req = req.header(*k, *v);
    }
    if !has_auth {
        req = req.bearer_auth(TOKEN);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("body");
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Lists a gateway's logs (with extra query), waiting for `at_least` entries:
/// the writer stores them in the background.
async fn logs(server: &Server, gateway: &str, query: &str, at_least: u64) -> Value {
    for _ in 0..100 {
        let v: Value = client()
            .get(admin(
                server,
                &format!("/ai-gateway/gateways/{gateway}/logs?per_page=50{query}"),
            ))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["result_info"]["total_count"].as_u64().unwrap_or(0) >= at_least {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("fewer than {at_least} logs in {gateway} for {query:?}");
}

fn header<'a>(h: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

#[tokio::test]
async fn upstream_providers_retry_time_out_fall_back_and_forward_keys() {
    let s = gw_server();
    create_gateway(s, "up", json!({})).await;
    let compat = format!("{}/v1/{ACCOUNT}/up/compat/chat/completions", s.base);
    let native = format!("{}/v1/{ACCOUNT}/up/fault/chat/completions", s.base);
    let msg = json!([{"role": "user", "content": "hi"}]);

    // A second Hearth as an OpenAI-compatible provider, priced by the config table.
    let (status, h, v) = send(
        &compat,
        &json!({"model": format!("hearth2/{SMOLLM}"), "messages": [{"role": "user", "content": "What is the capital of France?"}], "max_tokens": 8, "temperature": 0}),
        &[],
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert!(v["choices"][0]["message"]["content"].is_string(), "{v}");
    assert_eq!(header(&h, "cf-aig-step"), "0");
    let log_id = header(&h, "cf-aig-log-id").to_string();
    let entry = logs(
        s,
        "up",
        "&filters.key=provider&filters.operator=eq&filters.value=hearth2",
        1,
    )
    .await;
    let entry = &entry["result"][0];
    assert_eq!(entry["id"], log_id.as_str());
    assert_eq!(entry["model"], SMOLLM);
    let (tin, tout) = (
        entry["tokens_in"].as_f64().unwrap(),
        entry["tokens_out"].as_f64().unwrap(),
    );
    assert!(tin > 0.0 && tout > 0.0, "{entry}");
    let cost = entry["cost"].as_f64().unwrap();
    assert!(
        (cost - (tin * 1.0 + tout * 2.0) / 1e6).abs() < 1e-12,
        "{entry}"
    );

    // Retries: two 500s then success within three attempts.
    let (status, _, v) = send(
        &native,
        &json!({"model": "fail-2", "messages": msg}),
        &[
            ("cf-aig-max-attempts", "3"),
            ("cf-aig-retry-delay", "10"),
            ("cf-aig-backoff", "exponential"),
        ],
    )
    .await;
    assert_eq!(
        (status, v["choices"][0]["message"]["content"].as_str()),
        (200, Some("recovered")),
        "{v}"
    );
    assert_eq!(calls("fail-2"), 3);
    // Too few attempts: the provider's last 500 comes back as it was.
    let (status, _, v) = send(
        &native,
        &json!({"model": "fail-5", "messages": msg}),
        &[("cf-aig-max-attempts", "2")],
    )
    .await;
    assert_eq!((status, v["error"].as_str()), (500, Some("not yet")), "{v}");
    assert_eq!(calls("fail-5"), 2);

    // No first byte within the timeout: 504 2007, named.
    let (status, _, v) = send(
        &native,
        &json!({"model": "slow", "messages": msg}),
        &[("cf-aig-request-timeout", "200")],
    )
    .await;
    assert_eq!(
        (status, v["errors"][0]["code"].as_u64()),
        (504, Some(2007)),
        "{v}"
    );

    // Universal: step 0 times out, step 1 fails with a 500, step 2 answers.
    let universal = format!("{}/v1/{ACCOUNT}/up", s.base);
    let steps = json!([
        {"provider": "fault", "endpoint": "chat/completions", "query": {"model": "slow", "messages": msg}, "config": {"requestTimeout": 200}},
        {"provider": "fault", "endpoint": "chat/completions", "query": {"model": "fail", "messages": msg}},
        {"provider": "workers-ai", "endpoint": SMOLLM, "query": {"prompt": "The capital of France is", "max_tokens": 4}},
    ]);
    let (status, h, v) = send(&universal, &steps, &[]).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(header(&h, "cf-aig-step"), "2");
    assert!(v["result"]["response"].is_string(), "{v}");
    let failed = logs(s, "up", "&filters.key=success&filters.operator=eq&filters.value=false&filters.key=model&filters.operator=eq&filters.value=fail", 1).await;
    assert_eq!(failed["result"][0]["step"], 1);
    assert_eq!(failed["result"][0]["request_type"], "universal");
    // A typo in a fallback is reported before anything runs.
    let (status, _, v) = send(&universal, &json!([{"provider": "fault", "endpoint": "chat/completions", "query": {}}, {"provider": "nope", "endpoint": "x", "query": {}}]), &[]).await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("`nope`"),
        "{v}"
    );

    // Keys: Hearth's token in Authorization never leaves; the config key is
    // sent. With the token in cf-aig-authorization, Authorization is the
    // provider's key and is forwarded.
    send(&native, &json!({"model": "key-a", "messages": msg}), &[]).await;
    assert_eq!(fault().1.auth.lock().unwrap()["key-a"], "Bearer cfg-key");
    let aig = format!("Bearer {TOKEN}");
    send(
        &native,
        &json!({"model": "key-b", "messages": msg}),
        &[
            ("cf-aig-authorization", &aig),
            ("authorization", "Bearer sk-caller"),
        ],
    )
    .await;
    assert_eq!(fault().1.auth.lock().unwrap()["key-b"], "Bearer sk-caller");
    // Without any Hearth token: 401.
    let (status, _, _) = send(
        &native,
        &json!({"model": "key-c", "messages": msg}),
        &[("authorization", "Bearer sk-caller")],
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(calls("key-c"), 0);
}

#[tokio::test]
async fn streams_pass_through_chunk_by_chunk() {
    let s = gw_server();
    create_gateway(s, "streamy", json!({})).await;
    let resp = client()
        .post(format!(
            "{}/v1/{ACCOUNT}/streamy/fault/chat/completions",
            s.base
        ))
        .bearer_auth(TOKEN)
        .json(&json!({"model": "hold-stream", "stream": true, "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let log_id = header(resp.headers(), "cf-aig-log-id").to_string();
    let mut body = resp.bytes_stream();
    // The first chunk arrives while the upstream still holds the last one:
    // nothing waits for the end of the answer.
    let first = tokio::time::timeout(Duration::from_secs(20), body.next())
        .await
        .expect("the first chunk came through before the stream ended")
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&first).contains("one"));
    fault().1.release.notify_one();
    let mut rest = Vec::new();
    while let Some(chunk) = body.next().await {
        rest.extend_from_slice(&chunk.unwrap());
    }
    assert!(String::from_utf8_lossy(&rest).contains("[DONE]"));
    // The log is written when the stream ends, with the stream's usage and body.
    let v = logs(s, "streamy", "", 1).await;
    assert_eq!(v["result"][0]["id"], log_id.as_str());
    assert_eq!(
        (
            v["result"][0]["tokens_in"].as_u64(),
            v["result"][0]["tokens_out"].as_u64()
        ),
        (Some(4), Some(2))
    );
    let body = client()
        .get(admin(
            s,
            &format!("/ai-gateway/gateways/streamy/logs/{log_id}/response"),
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains("one") && body.contains("[DONE]"), "{body}");
}

#[tokio::test]
async fn custom_providers_logs_limits_analytics_and_run_option() {
    let s = gw_server();
    create_gateway(
        s,
        "ops",
        json!({"log_management": 4, "log_management_strategy": "DELETE_OLDEST"}),
    )
    .await;
    // A custom provider over the API, usable once enabled.
    let (status, _, v) = post_json(
        &admin(s, "/ai-gateway/custom-providers"),
        &json!({"name": "Acme", "slug": "acme", "base_url": format!("{}/v1", fault().0)}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let id = v["result"]["id"].as_str().unwrap().to_string();
    let url = format!("{}/v1/{ACCOUNT}/ops/custom-acme/chat/completions", s.base);
    let (status, _, v) = send(&url, &json!({"model": "ok", "messages": []}), &[]).await;
    assert_eq!(
        (status, v["errors"][0]["code"].as_u64()),
        (400, Some(1002)),
        "{v}"
    );
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("enable")
    );
    let resp = client()
        .patch(admin(s, &format!("/ai-gateway/custom-providers/{id}")))
        .bearer_auth(TOKEN)
        .json(&json!({"enable": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (status, _, v) = send(
        &url,
        &json!({"model": "ok", "messages": []}),
        &[
            ("cf-aig-custom-cost", r#"{"total_cost": 0.5}"#),
            ("cf-aig-event-id", "ev-1"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{v}");
    // Updating the provider leaves its cached answers behind (through a
    // gateway of its own: `ops` keeps only four log entries).
    create_gateway(s, "ops-cache", json!({})).await;
    let cache_url = format!(
        "{}/v1/{ACCOUNT}/ops-cache/custom-acme/chat/completions",
        s.base
    );
    let cached = json!({"model": "ok", "messages": [{"role": "user", "content": "cache me"}]});
    let ttl = [("cf-aig-cache-ttl", "600")];
    let status_of = |h: &reqwest::header::HeaderMap| header(h, "cf-aig-cache-status").to_string();
    let (_, h, _) = send(&cache_url, &cached, &ttl).await;
    assert_eq!(status_of(&h), "MISS");
    let (_, h, _) = send(&cache_url, &cached, &ttl).await;
    assert_eq!(status_of(&h), "HIT");
    // `modified_at` has millisecond resolution: make sure it moves.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let resp = client()
        .patch(admin(s, &format!("/ai-gateway/custom-providers/{id}")))
        .bearer_auth(TOKEN)
        .json(&json!({"name": "Acme Renamed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (_, h, _) = send(&cache_url, &cached, &ttl).await;
    assert_eq!(status_of(&h), "MISS", "the update invalidated the entry");
    let (status, _, v) = post_json(
        &admin(s, "/ai-gateway/custom-providers"),
        &json!({"name": "Again", "slug": "acme", "base_url": "http://x"}),
    )
    .await;
    assert_eq!(
        (status, v["errors"][0]["code"].as_u64()),
        (409, Some(1003)),
        "{v}"
    );

    // The run endpoint's `gateway` option goes through the gateway (log id, cache).
    let body = json!({"prompt": "Hello", "max_tokens": 3, "gateway": {"id": "ops", "cacheTtl": 120, "metadata": {"user": "u1"}}});
    let (status, h, v) = post_json(&admin(s, &format!("/ai/run/{SMOLLM}")), &body).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(header(&h, "cf-aig-cache-status"), "MISS");
    assert!(!header(&h, "cf-aig-log-id").is_empty());
    let (_, h, again) = post_json(&admin(s, &format!("/ai/run/{SMOLLM}")), &body).await;
    assert_eq!(header(&h, "cf-aig-cache-status"), "HIT");
    assert_eq!(again["result"], v["result"]);
    let (status, _, v) = post_json(
        &admin(s, &format!("/ai/run/{SMOLLM}")),
        &json!({"prompt": "x", "gateway": {"id": "ops", "cacheTtl": 5}}),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("cf-aig-cache-ttl"),
        "{v}"
    );

    // Filters over the logs written so far (custom cost, event id, metadata).
    let v = logs(
        s,
        "ops",
        "&filters.key=event_id&filters.operator=eq&filters.value=ev-1",
        1,
    )
    .await;
    assert_eq!(v["result"][0]["cost"], 0.5);
    assert_eq!(v["result"][0]["custom_cost"], true);
    assert_eq!(v["result"][0]["provider"], "custom-acme");
    let v = logs(s, "ops", "&filters.key=metadata.value&filters.operator=eq&filters.value=u1&filters.key=cached&filters.operator=eq&filters.value=true", 1).await;
    assert_eq!(v["result_info"]["total_count"], 1, "{v}");
    let req = client()
        .get(admin(
            s,
            &format!(
                "/ai-gateway/gateways/ops/logs/{}/request",
                v["result"][0]["id"].as_str().unwrap()
            ),
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(
        req["prompt"], "Hello",
        "the request body as sent, without the gateway option"
    );

    // Analytics per provider.
    let a: Value = client()
        .get(admin(
            s,
            "/ai-gateway/gateways/ops/analytics?group_by=provider&bucket=day",
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        a["result"]["totals"]["requests"].as_u64().unwrap() >= 3,
        "{a}"
    );
    assert!(
        a["result"]["totals"]["cached"].as_u64().unwrap() >= 1,
        "{a}"
    );
    assert!(
        a["result"]["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["provider"] == "custom-acme"),
        "{a}"
    );

    // log_management 4 with DELETE_OLDEST: the oldest make room.
    for _ in 0..4 {
        send(&url, &json!({"model": "ok", "messages": []}), &[]).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let v = logs(s, "ops", "", 1).await;
    assert!(
        v["result_info"]["total_count"].as_u64().unwrap() <= 4,
        "{v}"
    );

    // Bulk delete by filter.
    let resp = client()
        .delete(admin(s, "/ai-gateway/gateways/ops/logs?filters.key=provider&filters.operator=eq&filters.value=custom-acme"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = client()
        .get(admin(s, "/ai-gateway/gateways/ops/logs?filters.key=provider&filters.operator=eq&filters.value=custom-acme"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["result_info"]["total_count"], 0, "{v}");
    let resp = client()
        .get(admin(
            s,
            "/ai-gateway/gateways/ops/logs?filters.key=colour&filters.value=x",
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn cached_responses_survive_a_restart() {
    let first = gateway_server(&fault().0, None);
    create_gateway(&first, "keep", json!({"cache_ttl": 600})).await;
    let url = format!("{}/v1/{ACCOUNT}/keep/fault/chat/completions", first.base);
    let body = json!({"model": "cache-me", "messages": []});
    let (_, h, v) = send(&url, &body, &[]).await;
    assert_eq!(header(&h, "cf-aig-cache-status"), "MISS", "{v}");
    // The disk copy is written in the background; wait for it.
    let store = hearth_store::Store::open(&first.data_dir().join("hearth.db")).unwrap();
    for _ in 0..100 {
        if !store.cache_load(0, 1 << 30).unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let second = gateway_server(&fault().0, Some(first.data_dir()));
    let url = format!("{}/v1/{ACCOUNT}/keep/fault/chat/completions", second.base);
    let (status, h, again) = send(&url, &body, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(header(&h, "cf-aig-cache-status"), "HIT");
    assert_eq!(again, v);
    assert_eq!(
        calls("cache-me"),
        1,
        "the restarted server answered from its disk copy"
    );
}
