//! LoRA fine-tunes on the real SmolLM2: the test writes a genuine PEFT
//! adapter (rank 8 on the query and value projections of every layer, in
//! `adapter_model.safetensors` + `adapter_config.json`), uploads it through
//! the fine-tunes API, and checks that a greedy prompt answers differently
//! with `lora` while requests without it, running at the same time, answer
//! exactly as before.

use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::support::*;

/// SmolLM2-135M: hidden size 576, 9 query heads and 3 key/value heads of 64.
const LAYERS: usize = 30;
const HIDDEN: usize = 576;
const KV_OUT: usize = 192;
const RANK: usize = 8;

/// A safetensors file of F32 tensors, written by hand (the format is a
/// JSON header and the raw little-endian data).
fn safetensors(tensors: &[(String, Vec<usize>, Vec<f32>)]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, shape, data) in tensors {
        let end = offset + data.len() * 4;
        header.insert(
            name.clone(),
            json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    let mut head = Value::Object(header).to_string().into_bytes();
    while !head.len().is_multiple_of(8) {
        head.push(b' ');
    }
    let mut out = (head.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&head);
    for (_, _, data) in tensors {
        for v in data {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    out
}

/// Rank-8 LoRA weights on q and v of every layer, large enough to move
/// the model's choices.
fn adapter_weights(rank: usize, in_dim: usize) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut random =
        |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-0.5..0.5)).collect() };
    let mut tensors = Vec::new();
    for layer in 0..LAYERS {
        for (module, out) in [("q_proj", HIDDEN), ("v_proj", KV_OUT)] {
            let prefix = format!("base_model.model.model.layers.{layer}.self_attn.{module}");
            tensors.push((
                format!("{prefix}.lora_A.weight"),
                vec![rank, in_dim],
                random(rank * in_dim),
            ));
            tensors.push((
                format!("{prefix}.lora_B.weight"),
                vec![out, rank],
                random(out * rank),
            ));
        }
    }
    safetensors(&tensors)
}

fn adapter_config(rank: usize, model_type: &str) -> Vec<u8> {
    json!({"peft_type": "LORA", "r": rank, "lora_alpha": 16, "model_type": model_type,
           "target_modules": ["q_proj", "v_proj"], "base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct"})
    .to_string()
    .into_bytes()
}

async fn create(name: &str, model: &str) -> (u16, Value) {
    let (status, _, v) = post_json(
        &account_url("/ai/finetunes"),
        &json!({"model": model, "name": name, "description": "test adapter"}),
    )
    .await;
    (status, v)
}

/// Uploads one asset as the SDK does: multipart `file_name` and `file`.
async fn upload(id: &str, file_name: &str, bytes: Vec<u8>) -> (u16, Value) {
    let boundary = "hearthboundary7e3f";
    let mut body = Vec::new();
    body.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file_name\"\r\n\r\n{file_name}\r\n").as_bytes(),
    );
    body.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{file_name}\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes(),
    );
    body.extend_from_slice(&bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let resp = client()
        .post(account_url(&format!("/ai/finetunes/{id}/finetune-assets")))
        .bearer_auth(TOKEN)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .expect("upload");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn run(body: Value) -> (u16, Value) {
    let (status, _, v) = post_json(&run_url(SMOLLM), &body).await;
    (status, v)
}

fn prompt(lora: Option<&str>) -> Value {
    let mut body = json!({"prompt": "The three primary colours are", "raw": true,
                          "temperature": 0, "max_tokens": 12});
    if let Some(l) = lora {
        body["lora"] = json!(l);
    }
    body
}

#[tokio::test]
async fn an_uploaded_adapter_changes_its_requests_and_only_those() {
    let (status, baseline) = run(prompt(None)).await;
    assert_eq!(status, 200, "{baseline}");
    let baseline = baseline["result"]["response"].clone();

    let (status, ft) = create("colours-lora", SMOLLM).await;
    assert_eq!(status, 200, "{ft}");
    let id = ft["result"]["id"].as_str().expect("id").to_string();
    assert_eq!(ft["result"]["model"], SMOLLM);
    // Before its files are in, the fine-tune cannot be used.
    let (status, v) = run(prompt(Some("colours-lora"))).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["errors"][0]["code"], 3039, "{v}");

    let (status, v) = upload(&id, "adapter_config.json", adapter_config(RANK, "llama")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["result"]["success"], true);
    let (status, v) = upload(
        &id,
        "adapter_model.safetensors",
        adapter_weights(RANK, HIDDEN),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    // Assets are never replaced.
    let (status, v) = upload(&id, "adapter_config.json", adapter_config(RANK, "llama")).await;
    assert_eq!(status, 400, "{v}");

    let listed = client()
        .get(account_url("/ai/finetunes"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("list")
        .json::<Value>()
        .await
        .expect("json");
    assert!(
        listed["result"]
            .as_array()
            .expect("list")
            .iter()
            .any(|f| f["id"] == id.as_str() && f["name"] == "colours-lora"),
        "{listed}"
    );

    // With and without the adapter at the same time, by name and by id.
    let mut calls = Vec::new();
    for i in 0..6 {
        let lora = match i % 3 {
            0 => Some("colours-lora".to_string()),
            1 => Some(id.clone()),
            _ => None,
        };
        calls.push(tokio::spawn(async move {
            let (status, v) = run(prompt(lora.as_deref())).await;
            (lora.is_some(), status, v)
        }));
    }
    let mut adapted = Vec::new();
    for call in calls {
        let (with_lora, status, v) = call.await.expect("task");
        assert_eq!(status, 200, "{v}");
        let response = v["result"]["response"].clone();
        if with_lora {
            adapted.push(response);
        } else {
            assert_eq!(response, baseline, "requests without lora are unaffected");
        }
    }
    assert_eq!(adapted.len(), 4);
    for response in &adapted {
        assert_ne!(*response, baseline, "the adapter changes the answer");
    }
    // Run alone, the adapted answer is as repeatable as any greedy one (in
    // a shared batch the adapter's near-tied logits may round differently).
    let (_, a) = run(prompt(Some("colours-lora"))).await;
    let (_, b) = run(prompt(Some(&id))).await;
    assert_eq!(a["result"]["response"], b["result"]["response"]);
    let (status, v) = run(prompt(None)).await;
    assert_eq!(status, 200);
    assert_eq!(v["result"]["response"], baseline, "and after");
}

#[tokio::test]
async fn bad_adapters_and_unknown_fine_tunes_get_clear_errors() {
    // The rank of the tensors is not the config's; made for another
    // architecture; shapes of another model: the weights are refused.
    for (name, config, weights, needle) in [
        (
            "wrong-rank",
            adapter_config(4, "llama"),
            adapter_weights(RANK, HIDDEN),
            "rank",
        ),
        (
            "wrong-base",
            adapter_config(RANK, "gemma"),
            adapter_weights(RANK, HIDDEN),
            "model_type",
        ),
        (
            "wrong-shape",
            adapter_config(RANK, "llama"),
            adapter_weights(RANK, 512),
            "base model",
        ),
    ] {
        let (_, ft) = create(name, SMOLLM).await;
        let id = ft["result"]["id"].as_str().expect("id").to_string();
        let (status, v) = upload(&id, "adapter_config.json", config).await;
        assert_eq!(status, 200, "{v}");
        let (status, v) = upload(&id, "adapter_model.safetensors", weights).await;
        assert_eq!(status, 400, "{name}: {v}");
        let message = v["errors"][0]["message"].as_str().unwrap_or("");
        assert!(message.contains(needle), "{name}: {message}");
    }
    let (_, ft) = create("config-rules", SMOLLM).await;
    let id = ft["result"]["id"].as_str().expect("id").to_string();

    // Config rules, file names, size.
    let (status, v) = upload(&id, "adapter_config.json", adapter_config(64, "llama")).await;
    assert_eq!(status, 400, "{v}");
    let (status, v) = upload(&id, "weights.bin", vec![0; 8]).await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("`file_name`"),
        "{v}"
    );
    let (status, v) = upload(&id, "adapter_config.json", vec![b' '; 2 << 20]).await;
    assert_eq!(status, 400, "{v}");

    // Unknown fine-tune, duplicate name, a model that takes no adapters.
    let (status, v) = run(prompt(Some("no-such-lora"))).await;
    assert_eq!(status, 404, "{v}");
    let (status, v) = create("wrong-rank", SMOLLM).await;
    assert_eq!(status, 400, "{v}");
    let (status, v) = create("embedder", MINILM).await;
    assert_eq!(status, 405, "{v}");
    assert_eq!(v["errors"][0]["code"], 5005, "{v}");
}
