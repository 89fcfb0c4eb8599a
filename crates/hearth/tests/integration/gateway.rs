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
