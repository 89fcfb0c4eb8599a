//! AI Gateway in front of a second `hearth serve` *process* acting as an
//! OpenAI-compatible provider: answers and streams pass through, and when
//! that process is killed the gateway answers 502/2008 at once and the
//! universal endpoint falls back to the next step.

mod common;

use common::{ACCOUNT, TOKEN, free_port, models_dir, spawn_server, wait_ready};
use serde_json::{Value, json};

const SMOLLM: &str = "@cf/huggingfacetb/smollm2-135m-instruct";

struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_second_hearth_process_is_a_provider_until_it_dies() {
    let client = reqwest::Client::new();
    let models = models_dir();

    let provider_data = tempfile::tempdir().expect("tempdir");
    let provider_port = free_port();
    let mut provider = Killed(spawn_server(
        provider_data.path(),
        provider_port,
        &[("HEARTH_MODELS_DIR", &models)],
    ));
    let provider_base = format!("http://127.0.0.1:{provider_port}");

    let gateway_data = tempfile::tempdir().expect("tempdir");
    let config = gateway_data.path().join("hearth.toml");
    std::fs::write(
        &config,
        format!(
            "[gateway.providers.hearthb]\nbase_url = \"{provider_base}/client/v4/accounts/{ACCOUNT}/ai/v1\"\napi_key = \"{TOKEN}\"\n"
        ),
    )
    .expect("config");
    let gateway_port = free_port();
    let _gateway = Killed(spawn_server(
        gateway_data.path(),
        gateway_port,
        &[
            ("HEARTH_MODELS_DIR", &models),
            ("HEARTH_CONFIG", config.to_str().expect("utf-8 path")),
        ],
    ));
    let base = format!("http://127.0.0.1:{gateway_port}");
    wait_ready(&client, &provider_base).await;
    wait_ready(&client, &base).await;

    let created = client
        .post(format!(
            "{base}/client/v4/accounts/{ACCOUNT}/ai-gateway/gateways"
        ))
        .bearer_auth(TOKEN)
        .json(
            &json!({"id": "front", "cache_invalidate_on_update": false, "cache_ttl": 0,
                      "collect_logs": true, "rate_limiting_interval": 0, "rate_limiting_limit": 0}),
        )
        .send()
        .await
        .expect("create gateway");
    assert_eq!(created.status(), 200);

    let question = json!([{"role": "user", "content": "Name the capital of France."}]);
    let compat = format!("{base}/v1/{ACCOUNT}/front/compat/chat/completions");
    let resp = client
        .post(&compat)
        .bearer_auth(TOKEN)
        .json(
            &json!({"model": format!("hearthb/{SMOLLM}"), "messages": question,
                      "max_tokens": 12, "temperature": 0}),
        )
        .send()
        .await
        .expect("compat call");
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.expect("json");
    let answer = v["choices"][0]["message"]["content"].as_str().unwrap_or("");
    assert!(answer.contains("Paris"), "{v}");

    // A stream from the other process arrives as server-sent events.
    let native = format!("{base}/v1/{ACCOUNT}/front/hearthb/chat/completions");
    let resp = client
        .post(&native)
        .bearer_auth(TOKEN)
        .json(
            &json!({"model": SMOLLM, "messages": question, "max_tokens": 12,
                      "temperature": 0, "stream": true}),
        )
        .send()
        .await
        .expect("stream call");
    assert_eq!(resp.status(), 200);
    let body = resp.text().await.expect("stream body");
    let events = body.matches("data: ").count();
    assert!(events >= 4, "{body}");
    assert!(body.trim_end().ends_with("data: [DONE]"), "{body}");

    // The provider process dies: a clear 502/2008, then the universal
    // endpoint's second step (this Hearth's own engine) answers.
    provider.0.kill().expect("kill provider");
    provider.0.wait().expect("reap provider");
    let resp = client
        .post(&compat)
        .bearer_auth(TOKEN)
        .json(&json!({"model": format!("hearthb/{SMOLLM}"), "messages": question, "max_tokens": 4}))
        .send()
        .await
        .expect("call to a dead provider");
    assert_eq!(resp.status(), 502);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v["errors"][0]["code"], 2008, "{v}");

    let steps = json!([
        {"provider": "hearthb", "endpoint": "chat/completions",
         "headers": {"content-type": "application/json"},
         "query": {"model": SMOLLM, "messages": question, "max_tokens": 8, "temperature": 0}},
        {"provider": "workers-ai", "endpoint": SMOLLM,
         "headers": {"content-type": "application/json"},
         "query": {"messages": question, "max_tokens": 8, "temperature": 0}}
    ]);
    let resp = client
        .post(format!("{base}/v1/{ACCOUNT}/front"))
        .bearer_auth(TOKEN)
        .json(&steps)
        .send()
        .await
        .expect("universal call");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()
            .get("cf-aig-step")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let v: Value = resp.json().await.expect("json");
    assert!(
        v["result"]["response"]
            .as_str()
            .is_some_and(|r| r.contains("Paris")),
        "{v}"
    );
}
