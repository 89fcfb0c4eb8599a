//! Neurons, the free plan's daily allocation and per-minute rate limits,
//! over HTTP, on a server with its own ledger and a hand-moved clock.

use serde_json::{Value, json};

use crate::support::*;
use hearth_runtime::metering::Clock;

fn url(path: &str) -> String {
    format!(
        "{}/client/v4/accounts/{ACCOUNT}{path}",
        metered_server().server.base
    )
}

async fn usage() -> Value {
    let resp = client()
        .get(url("/ai/usage"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("usage");
    assert_eq!(resp.status(), 200);
    resp.json::<Value>().await.expect("json")["result"].clone()
}

fn row<'a>(report: &'a Value, model: &str) -> Option<&'a Value> {
    report["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["model"] == model)
}

// One test drives the whole sequence: the steps share one ledger and clock.
#[tokio::test]
async fn neurons_allocation_and_rate_limits() {
    let m = metered_server();

    // 1. Neurons = catalog price x counted tokens, for the id that was asked for.
    let (status, _, v) = post_json(
        &url(&format!("/ai/run/{ALIASED}")),
        &json!({"prompt": "The capital of France is", "raw": true, "max_tokens": 4, "temperature": 0}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let (pt, ct) = (
        v["result"]["usage"]["prompt_tokens"].as_f64().unwrap(),
        v["result"]["usage"]["completion_tokens"].as_f64().unwrap(),
    );
    let report = usage().await;
    let llama = row(&report, ALIASED).expect("a ledger row for the requested id");
    let expected = 25608.0 * pt / 1e6 + 75147.0 * ct / 1e6;
    assert!(
        (llama["neurons"].as_f64().unwrap() - expected).abs() < 1e-9,
        "{llama} vs {expected}"
    );
    assert_eq!(llama["requests"], 1);
    assert_eq!(llama["input_tokens"].as_f64().unwrap(), pt);
    assert_eq!(report["plan"], "free");
    assert_eq!(report["today"]["day"], "2026-11-28");

    let (status, _, e) = post_json(
        &url(&format!("/ai/run/{BGE_ALIAS}")),
        &json!({"text": ["one", "two three"]}),
    )
    .await;
    assert_eq!(status, 200, "{e}");
    let report = usage().await;
    let bge = row(&report, BGE_ALIAS).expect("embedding row");
    let tokens = bge["input_tokens"].as_f64().unwrap();
    assert!(tokens >= 3.0);
    assert!(
        (bge["neurons"].as_f64().unwrap() - 1841.0 * tokens / 1e6).abs() < 1e-9,
        "{bge}"
    );

    // 2. 100 concurrent embedding requests against 60 a minute: exactly 60 pass
    //    (the one above already took one of this minute's 60).
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            tokio::spawn(async move {
                post_json(
                    &url(&format!("/ai/run/{BGE_ALIAS}")),
                    &json!({"text": format!("sentence {i}")}),
                )
                .await
            })
        })
        .collect();
    let mut ok = 0;
    let mut limited = 0;
    for t in tasks {
        let (status, _, v) = t.await.unwrap();
        match status {
            200 => ok += 1,
            429 => {
                assert_eq!(v["errors"][0]["code"], 3040, "{v}");
                assert!(
                    v["errors"][0]["message"]
                        .as_str()
                        .unwrap()
                        .contains("60 requests per minute")
                );
                limited += 1;
            }
            other => panic!("unexpected {other}: {v}"),
        }
    }
    assert_eq!((ok, limited), (59, 41));
    m.clock.advance(60_000);
    let (status, _, _) = post_json(
        &url(&format!("/ai/run/{BGE_ALIAS}")),
        &json!({"text": "next minute"}),
    )
    .await;
    assert_eq!(status, 200);

    // 3. The free allocation: push today's ledger to the brink, then over.
    let used = usage().await["today"]["neurons"].as_f64().unwrap();
    m.app
        .meter()
        .store()
        .charge(&hearth_store::Charge {
            account: ACCOUNT,
            model: "@cf/test/seed",
            task: "Text Generation",
            day: "2026-11-28",
            time_ms: m.clock.now_ms(),
            duration_ms: 0,
            input_tokens: 0,
            output_tokens: 0,
            neurons: 9_999.9 - used,
        })
        .expect("seed the ledger");
    let (status, _, v) = post_json(
        &url(&format!("/ai/run/{ALIASED}")),
        &json!({"prompt": "Hello", "max_tokens": 4}),
    )
    .await;
    assert_eq!(status, 200, "still under 10,000: {v}");
    let (status, _, v) = post_json(
        &url(&format!("/ai/run/{ALIASED}")),
        &json!({"prompt": "Hello"}),
    )
    .await;
    assert_eq!(
        (status, v["errors"][0]["code"].as_u64()),
        (429, Some(3036)),
        "{v}"
    );
    let report = usage().await;
    assert!(report["today"]["free_neurons_left"].as_f64().unwrap() == 0.0);
    assert!(report["totals"]["cloudflare_usd"].as_f64().unwrap() > 0.0);
    // Another account (unlimited by default) is not affected.
    let other = client()
        .post(format!(
            "{}/client/v4/accounts/{OTHER_ACCOUNT}/ai/run/{BGE_ALIAS}",
            m.server.base
        ))
        .bearer_auth(OTHER_TOKEN)
        .json(&json!({"text": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200);
    // 00:00 UTC: the allocation is back.
    m.clock.set(1_795_910_400_000); // 2026-11-29T00:00:00Z
    let (status, _, v) = post_json(
        &url(&format!("/ai/run/{ALIASED}")),
        &json!({"prompt": "Hello", "max_tokens": 2}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let report = usage().await;
    assert_eq!(report["today"]["day"], "2026-11-29");
    assert!(report["today"]["neurons"].as_f64().unwrap() < 10.0);
}

#[tokio::test]
async fn model_terms_must_be_accepted_once_per_account() {
    let (status, _, v) = post_json(
        &run_url(TERMS_LLM),
        &json!({"prompt": "Hello", "max_tokens": 2}),
    )
    .await;
    assert_eq!(
        (status, v["errors"][0]["code"].as_u64()),
        (403, Some(5016)),
        "{v}"
    );
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("agree"),
        "{v}"
    );
    let (status, _, v) = post_json(&run_url(TERMS_LLM), &json!({"prompt": "agree"})).await;
    assert_eq!(status, 200, "{v}");
    assert!(
        v["result"]["response"]
            .as_str()
            .unwrap()
            .contains("agreeing"),
        "{v}"
    );
    let (status, _, v) = post_json(
        &run_url(TERMS_LLM),
        &json!({"prompt": "The capital of France is", "raw": true, "max_tokens": 3}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    // Acceptance is per account.
    let other = client()
        .post(format!(
            "{}/client/v4/accounts/{OTHER_ACCOUNT}/ai/run/{TERMS_LLM}",
            server().base
        ))
        .bearer_auth(OTHER_TOKEN)
        .json(&json!({"prompt": "Hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 403);
}

#[tokio::test]
async fn analytics_has_one_point_per_request() {
    let (status, _, _) = post_json(&run_url(BGE_ALIAS), &json!({"text": "analytics point"})).await;
    assert_eq!(status, 200);
    let resp = client()
        .get(account_url("/ai/analytics?limit=500"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let v: Value = resp.json().await.unwrap();
    let points = v["result"].as_array().expect("points");
    let p = points
        .iter()
        .find(|p| p["model"] == BGE_ALIAS)
        .expect("a point for the embedding request");
    assert_eq!(p["task"], "Text Embeddings");
    assert!(p["input_tokens"].as_u64().unwrap() > 0 && p["duration_ms"].as_i64().unwrap() >= 0);
    let resp = client()
        .get(account_url("/ai/analytics?limit=0"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
}
