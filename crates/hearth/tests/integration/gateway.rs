//! AI Gateway admin routes over HTTP: paging, isolation between accounts,
//! field checks.

use serde_json::{Value, json};

use crate::support::*;

fn settings(id: &str) -> Value {
    json!({"id": id, "cache_invalidate_on_update": false, "cache_ttl": 60, "collect_logs": true,
           "rate_limiting_interval": null, "rate_limiting_limit": null, "dlp": {"enabled": false, "action": "FLAG", "profiles": []}})
}

#[tokio::test]
async fn gateways_page_round_trip_unknown_settings_and_stay_in_their_account() {
    for i in 0..3 {
        let (status, _, v) = post_json(
            &account_url("/ai-gateway/gateways"),
            &settings(&format!("page-gw-{i}")),
        )
        .await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(
            v["result"]["dlp"]["action"], "FLAG",
            "settings Hearth does not act on round-trip"
        );
    }
    let resp = client()
        .get(account_url(
            "/ai-gateway/gateways?search=page-gw&per_page=2&page=2",
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["result_info"]["total_count"], 3, "{v}");
    assert_eq!(v["result"].as_array().unwrap().len(), 1);
    assert_eq!(v["result"][0]["id"], "page-gw-2");

    let other = client()
        .get(format!(
            "{}/client/v4/accounts/{OTHER_ACCOUNT}/ai-gateway/gateways/page-gw-0",
            server().base
        ))
        .bearer_auth(OTHER_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
    let v: Value = other.json().await.unwrap();
    assert_eq!(v["errors"][0]["code"], 1004);

    let mut bad = settings("page-gw-bad");
    bad["cache_ttl"] = json!("soon");
    let (status, _, v) = post_json(&account_url("/ai-gateway/gateways"), &bad).await;
    assert_eq!(
        (status, v["errors"][0]["code"].as_u64()),
        (400, Some(1002)),
        "{v}"
    );
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("`cache_ttl`")
    );
    let resp = client()
        .put(account_url("/ai-gateway/gateways/nope"))
        .bearer_auth(TOKEN)
        .json(&settings("nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
}

fn data_url(gateway: &str, rest: &str) -> String {
    format!("{}/v1/{ACCOUNT}/{gateway}/{rest}", server().base)
}

async fn send(
    url: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut req = client().post(url).bearer_auth(TOKEN).json(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.text().await.expect("body"))
}

fn header<'a>(h: &'a reqwest::header::HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn data_plane_caches_logs_and_authenticates() {
    let mut gw = settings("data-gw");
    gw["cache_ttl"] = json!(120);
    let (status, _, v) = post_json(&account_url("/ai-gateway/gateways"), &gw).await;
    assert_eq!(status, 200, "{v}");
    let url = data_url("data-gw", &format!("workers-ai/{SMOLLM}"));
    let body = json!({"prompt": "The capital of France is", "raw": true, "max_tokens": 4, "temperature": 0});

    let (status, h1, first) = send(&url, &body, &[("cf-aig-metadata", r#"{"user":"a"}"#)]).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(header(&h1, "cf-aig-cache-status"), Some("MISS"));
    assert!(first.contains("Paris"), "{first}");
    let miss_log = header(&h1, "cf-aig-log-id").expect("log id").to_string();
    assert_eq!(miss_log.len(), 26);

    // Same request, other metadata: metadata is not part of the key.
    let (_, h2, second) = send(&url, &body, &[("cf-aig-metadata", r#"{"user":"b"}"#)]).await;
    assert_eq!(header(&h2, "cf-aig-cache-status"), Some("HIT"));
    assert_eq!(first, second);
    let hit_log = header(&h2, "cf-aig-log-id").expect("log id").to_string();
    let (_, h3, _) = send(&url, &body, &[("cf-aig-skip-cache", "true")]).await;
    assert_eq!(header(&h3, "cf-aig-cache-status"), Some("MISS"));
    let (_, h4, _) = send(&url, &body, &[("cf-aig-cache-key", "k1")]).await;
    assert_eq!(header(&h4, "cf-aig-cache-status"), Some("MISS"));
    let other = json!({"prompt": "Something else entirely", "max_tokens": 2});
    let (_, h5, _) = send(&url, &other, &[("cf-aig-cache-key", "k1")]).await;
    assert_eq!(
        header(&h5, "cf-aig-cache-status"),
        Some("HIT"),
        "a custom key replaces the body"
    );
    let (status, _, e) = send(&url, &body, &[("cf-aig-cache-ttl", "soon")]).await;
    assert_eq!(status, 400, "{e}");
    assert!(e.contains("cf-aig-cache-ttl"));

    // Streams pass through, uncached.
    let (status, hs, sse) = send(
        &url,
        &json!({"prompt": "Hi", "max_tokens": 3, "stream": true}),
        &[],
    )
    .await;
    assert_eq!(status, 200);
    assert!(header(&hs, "cf-aig-cache-status").is_none());
    assert!(sse.contains("data: [DONE]"), "{sse}");

    // The OpenAI-compatible path with provider/model names.
    let compat = data_url("data-gw", "compat/chat/completions");
    let (status, _, chat) = send(
        &compat,
        &json!({"model": format!("workers-ai/{SMOLLM}"), "messages": [{"role": "user", "content": "Name the capital of France."}], "max_tokens": 16, "temperature": 0}),
        &[],
    )
    .await;
    assert_eq!(status, 200, "{chat}");
    assert!(chat.contains("Paris"), "{chat}");
    let (status, _, e) = send(
        &compat,
        &json!({"model": "openai/gpt-4o", "messages": []}),
        &[],
    )
    .await;
    assert_eq!(status, 400);
    assert!(e.contains("1002"), "{e}");
    let (status, _, e) = send(
        &data_url("no-such-gw", &format!("workers-ai/{SMOLLM}")),
        &body,
        &[],
    )
    .await;
    assert_eq!(status, 404, "{e}");

    // Logs arrive (written in the background) with the request's facts.
    let mut entry = Value::Null;
    for _ in 0..200 {
        let resp = client()
            .get(account_url(&format!(
                "/ai-gateway/gateways/data-gw/logs/{hit_log}"
            )))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        if resp.status() == 200 {
            entry = resp.json::<Value>().await.unwrap()["result"].clone();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(entry["cached"], true, "{entry}");
    assert_eq!(entry["provider"], "workers-ai");
    assert_eq!(entry["model"], SMOLLM);
    assert_eq!(entry["metadata"], r#"{"user":"b"}"#);
    assert!(entry["tokens_in"].as_u64().unwrap() > 0);
    let resp = client()
        .get(account_url(
            "/ai-gateway/gateways/data-gw/logs?per_page=50&order_by_direction=asc",
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let logs: Value = resp.json().await.unwrap();
    assert!(
        logs["result_info"]["total_count"].as_u64().unwrap() >= 2,
        "{logs}"
    );
    assert_eq!(
        logs["result"][0]["id"],
        miss_log.as_str(),
        "oldest first when asked"
    );

    // A gateway with authentication wants cf-aig-authorization.
    let mut auth = settings("auth-gw");
    auth["authentication"] = json!(true);
    let (status, _, v) = post_json(&account_url("/ai-gateway/gateways"), &auth).await;
    assert_eq!(status, 200, "{v}");
    let auth_url = data_url("auth-gw", &format!("workers-ai/{SMOLLM}"));
    let (status, _, _) = send(&auth_url, &body, &[]).await;
    assert_eq!(status, 401);
    let bearer = format!("Bearer {TOKEN}");
    let (status, _, _) = send(&auth_url, &body, &[("cf-aig-authorization", &bearer)]).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn gateway_rate_limit_answers_429_past_the_limit() {
    let mut gw = settings("limited-gw");
    gw["rate_limiting_limit"] = json!(2);
    gw["rate_limiting_interval"] = json!(3600);
    gw["rate_limiting_technique"] = json!("sliding");
    let (status, _, v) = post_json(&account_url("/ai-gateway/gateways"), &gw).await;
    assert_eq!(status, 200, "{v}");
    let url = data_url("limited-gw", &format!("workers-ai/{BGE_ALIAS}"));
    let body = json!({"text": "rate limited"});
    assert_eq!(send(&url, &body, &[]).await.0, 200);
    assert_eq!(send(&url, &body, &[]).await.0, 200);
    let (status, _, e) = send(&url, &body, &[]).await;
    assert_eq!(status, 429, "{e}");
    assert!(e.contains("limited-gw"), "{e}");
}

#[tokio::test]
async fn identical_concurrent_requests_share_one_upstream_call() {
    let mut gw = settings("coalesce-gw");
    gw["cache_ttl"] = json!(600);
    let (status, _, v) = post_json(&account_url("/ai-gateway/gateways"), &gw).await;
    assert_eq!(status, 200, "{v}");
    let url = data_url("coalesce-gw", &format!("workers-ai/{SMOLLM}"));
    let body = json!({"prompt": "Tell me about the ocean.", "max_tokens": 16, "temperature": 0});
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let (url, body) = (url.clone(), body.clone());
            tokio::spawn(async move { send(&url, &body, &[]).await })
        })
        .collect();
    let mut statuses = Vec::new();
    let mut bodies = std::collections::HashSet::new();
    for c in calls {
        let (status, h, text) = c.await.unwrap();
        assert_eq!(status, 200, "{text}");
        statuses.push(header(&h, "cf-aig-cache-status").unwrap_or("").to_string());
        bodies.insert(text);
    }
    assert_eq!(
        statuses.iter().filter(|s| *s == "MISS").count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| *s == "HIT").count(),
        9,
        "{statuses:?}"
    );
    assert_eq!(bodies.len(), 1, "every caller gets the one answer");
}

/// The data plane keeps gateway settings in memory; an update or a delete
/// through the API must reach the very next request.
#[tokio::test]
async fn gateway_updates_and_deletes_reach_the_next_request() {
    let (status, _, v) = post_json(
        &account_url("/ai-gateway/gateways"),
        &settings("changing-gw"),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let url = data_url("changing-gw", &format!("workers-ai/{BGE_ALIAS}"));
    let body = json!({"text": "settings change"});
    assert_eq!(send(&url, &body, &[]).await.0, 200);
    let mut locked = settings("changing-gw");
    locked["authentication"] = json!(true);
    let resp = client()
        .put(account_url("/ai-gateway/gateways/changing-gw"))
        .bearer_auth(TOKEN)
        .json(&locked)
        .send()
        .await
        .expect("update");
    assert_eq!(resp.status(), 200);
    assert_eq!(send(&url, &body, &[]).await.0, 401, "the update is seen");
    let resp = client()
        .delete(account_url("/ai-gateway/gateways/changing-gw"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("delete");
    assert_eq!(resp.status(), 200);
    let bearer = format!("Bearer {TOKEN}");
    let (status, _, e) = send(&url, &body, &[("cf-aig-authorization", &bearer)]).await;
    assert_eq!(status, 404, "the delete is seen: {e}");
}
