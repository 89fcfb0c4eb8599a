//! Image classification on the genuine EfficientNet-Lite0 weights (the
//! registry's legacy PyTorch file), through Workers AI's resnet-50 id: the
//! scikit-image sample photos get plausible ImageNet labels, and the three
//! ways an image travels give the same answer.

use base64::Engine;
use serde_json::{Value, json};

use crate::support::*;

fn url(model: &str) -> String {
    format!(
        "{}/client/v4/accounts/{ACCOUNT}/ai/run/{model}",
        media_server().base
    )
}

/// A request to the media server's OpenAI-compatible chat completions.
async fn chat_completion(body: &Value) -> (u16, Value) {
    let url = format!(
        "{}/client/v4/accounts/{ACCOUNT}/ai/v1/chat/completions",
        media_server().base
    );
    let (status, _, v) = post_json(&url, body).await;
    (status, v)
}

fn photo(name: &str) -> Vec<u8> {
    std::fs::read(models_dir().join(format!("test-data/skimage-0.26.0/{name}.png")))
        .expect("scikit-image samples: run scripts/fetch-test-models")
}

async fn post_raw(model: &str, body: Vec<u8>) -> (u16, Value) {
    post_body(&url(model), "image/png", body).await
}

fn labels(v: &Value) -> Vec<String> {
    v["result"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["label"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test]
async fn sample_photos_get_plausible_imagenet_labels() {
    let (status, cat) = post_raw(RESNET, photo("chelsea")).await;
    assert_eq!(status, 200, "{cat}");
    let top = labels(&cat);
    assert_eq!(top.len(), 5, "{cat}");
    assert!(
        top[..3].iter().any(|l| l.contains("cat") || l == "tabby"),
        "{top:?}"
    );
    let scores: Vec<f64> = cat["result"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["score"].as_f64())
        .collect();
    assert!(
        scores.windows(2).all(|w| w[0] >= w[1]) && scores[0] <= 1.0,
        "{scores:?}"
    );

    let (status, coffee) = post_raw(EFFICIENTNET, photo("coffee")).await;
    assert_eq!(status, 200, "{coffee}");
    let top = labels(&coffee);
    assert!(top[0] == "espresso" || top[0] == "cup", "{top:?}");

    // The same photo as a byte array and as base64: the same answer.
    let bytes = photo("chelsea");
    let as_array: Vec<Value> = bytes.iter().map(|b| json!(b)).collect();
    let (status, _, by_array) = post_json(&url(RESNET), &json!({"image": as_array})).await;
    assert_eq!(status, 200, "{by_array}");
    let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
    let (status, _, by_b64) = post_json(&url(RESNET), &json!({"image": b64})).await;
    assert_eq!(status, 200, "{by_b64}");
    assert_eq!(by_array["result"], cat["result"]);
    assert_eq!(by_b64["result"], cat["result"]);
}

#[tokio::test]
async fn what_is_not_an_image_is_refused_naming_image() {
    for (body, needle) in [
        (json!({"image": []}), "`image` is empty"),
        (json!({"image": [1, 2, 300]}), "0-255"),
        (json!({"image": "%%%"}), "base64"),
        (json!({"image": 5}), "`image`"),
        (json!({"picture": [1]}), "`image` is required"),
        (json!({"image": [1, 2, 3, 4]}), "`image`"),
    ] {
        let (status, _, v) = post_json(&url(RESNET), &body).await;
        assert_refused(status, &v, needle);
    }
    let (status, v) = post_raw(RESNET, b"this is text, not a picture".to_vec()).await;
    assert_refused(status, &v, "`image`");
}

/// Object detection's contract on a tiny random-weight DETR (architecture
/// and hub layout verified, not quality): whose classifier favours "cat",
/// so every object query passes the threshold.
#[tokio::test]
async fn detection_answers_boxes_inside_the_image_best_first() {
    let bytes = photo("coffee");
    let (width, height) = image_size(&bytes);
    let (status, v) = post_raw(DETR, bytes.clone()).await;
    assert_eq!(status, 200, "{v}");
    let found = v["result"].as_array().expect("a list of objects");
    assert!(!found.is_empty(), "{v}");
    let mut last = f64::INFINITY;
    for object in found {
        assert_eq!(object["label"], "cat", "{object}");
        let score = object["score"].as_f64().expect("score");
        assert!(score > 0.5 && score <= 1.0 && score <= last, "{object}");
        last = score;
        let b = &object["box"];
        let at = |k: &str| b[k].as_f64().expect("box edge");
        assert!(
            0.0 <= at("xmin") && at("xmin") <= at("xmax") && at("xmax") <= width,
            "{b}"
        );
        assert!(
            0.0 <= at("ymin") && at("ymin") <= at("ymax") && at("ymax") <= height,
            "{b}"
        );
    }
    // The same image as a byte array and as base64: the same objects.
    let as_array: Vec<Value> = bytes.iter().map(|b| json!(b)).collect();
    let (status, _, by_array) = post_json(&url(DETR), &json!({"image": as_array})).await;
    assert_eq!(status, 200, "{by_array}");
    assert_eq!(by_array["result"], v["result"]);
    let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
    let (status, _, by_b64) = post_json(&url(DETR), &json!({"image": b64})).await;
    assert_eq!(status, 200, "{by_b64}");
    assert_eq!(by_b64["result"], v["result"]);

    for (body, needle) in [
        (json!({"image": []}), "`image` is empty"),
        (json!({"picture": [1]}), "`image` is required"),
    ] {
        let (status, _, v) = post_json(&url(DETR), &body).await;
        assert_refused(status, &v, needle);
    }
    let (status, v) = post_raw(DETR, b"not a picture".to_vec()).await;
    assert_refused(status, &v, "`image`");
}

/// The answer came from llama.cpp: `x-hearth-weights` names a GGUF file.
fn assert_served_by_gguf(headers: &reqwest::header::HeaderMap) {
    let weights = headers["x-hearth-weights"].to_str().unwrap_or_default();
    assert!(weights.ends_with(".gguf"), "{weights}");
}

fn image_size(png: &[u8]) -> (f64, f64) {
    // PNG: width and height are the big-endian u32s at bytes 16..24.
    let at = |i: usize| {
        f64::from(u32::from_be_bytes([
            png[i],
            png[i + 1],
            png[i + 2],
            png[i + 3],
        ]))
    };
    (at(16), at(20))
}

/// Image-to-text's contract on a tiny random-weight LLaVA 1.5 (architecture
/// and hub layout verified, not quality).
#[tokio::test]
async fn image_to_text_describes_the_image_the_ways_it_travels() {
    let bytes = photo("chelsea");
    // The raw body: the default prompt, greedy.
    let (status, raw) = post_raw(LLAVA, bytes.clone()).await;
    assert_eq!(status, 200, "{raw}");
    let description = raw["result"]["description"].as_str().expect("description");
    assert!(!description.is_empty(), "{raw}");
    let as_array: Vec<Value> = bytes.iter().map(|b| json!(b)).collect();
    let body = json!({"image": as_array, "prompt": "what is this ?", "max_tokens": 5});
    let (status, _, first) = post_json(&url(LLAVA), &body).await;
    assert_eq!(status, 200, "{first}");
    let words = first["result"]["description"]
        .as_str()
        .unwrap_or_default()
        .split_whitespace()
        .count();
    assert!(words <= 5, "{first}");
    let (_, _, again) = post_json(&url(LLAVA), &body).await;
    assert_eq!(again["result"], first["result"], "greedy is deterministic");
    // Sampling with a seed repeats too.
    let seeded = json!({"image": as_array, "prompt": "a", "temperature": 0.9, "seed": 3,
        "top_k": 20, "max_tokens": 6});
    let (status, _, sampled) = post_json(&url(LLAVA), &seeded).await;
    assert_eq!(status, 200, "{sampled}");
    let (_, _, resampled) = post_json(&url(LLAVA), &seeded).await;
    assert_eq!(resampled["result"], sampled["result"]);

    for (body, needle) in [
        (json!({"prompt": "hi"}), "`image` is required"),
        (json!({"image": as_array, "max_tokens": 0}), "`max_tokens`"),
        (
            json!({"image": as_array, "temperature": 9}),
            "`temperature`",
        ),
        (json!({"image": as_array, "top_k": 1.5}), "`top_k`"),
        (json!({"image": as_array, "prompt": ""}), "`prompt`"),
        (json!({"image": as_array, "raw": "yes"}), "`raw`"),
        (
            json!({"image": as_array, "size": 3}),
            "`size` is not an input",
        ),
        (json!({"image": as_array, "messages": []}), "`messages`"),
        (json!({"image": [137, 80, 78, 71]}), "`image`"),
    ] {
        let (status, _, v) = post_json(&url(LLAVA), &body).await;
        assert_refused(status, &v, needle);
    }
}

/// Image-to-text on llama.cpp's multimodal library: an Image-to-Text id
/// whose weights are a GGUF with its projector beside it (the genuine Gemma
/// 3 270M, a tiny random projector) describes the image, sent with the
/// prompt as one user turn of the model's template.
#[tokio::test]
async fn image_to_text_runs_on_a_gguf_with_its_projector() {
    // Seeded sampling, as in vision chat: greedy, the base model answers a
    // random projector's tokens with blank lines.
    let ask = |name: &str| {
        let b64 = base64::engine::general_purpose::STANDARD.encode(photo(name));
        json!({"image": b64, "prompt": "This picture shows a", "max_tokens": 12,
            "temperature": 1.0, "seed": 5})
    };
    let (status, headers, v) = post_json(&url(UFORM), &ask("chelsea")).await;
    assert_eq!(status, 200, "{v}");
    assert_served_by_gguf(&headers);
    assert_eq!(v["result"].as_object().map(|o| o.len()), Some(1), "{v}");
    let description = v["result"]["description"].as_str().expect("description");
    assert!(!description.trim().is_empty(), "{v}");
    let (_, _, again) = post_json(&url(UFORM), &ask("chelsea")).await;
    assert_eq!(again["result"], v["result"], "seeded sampling repeats");
    let (status, _, other) = post_json(&url(UFORM), &ask("coffee")).await;
    assert_eq!(status, 200, "{other}");
    assert_ne!(other["result"], v["result"], "the image steers the answer");

    // `raw`: the prompt is the whole text, the image before it; the bytes
    // as a number array, `max_tokens` honoured.
    let as_array: Vec<Value> = photo("coffee").iter().map(|b| json!(b)).collect();
    let raw = json!({"image": as_array, "raw": true, "max_tokens": 3,
        "prompt": "<start_of_turn>user\nWhat is it?<end_of_turn>\n<start_of_turn>model\n"});
    let (status, _, v) = post_json(&url(UFORM), &raw).await;
    assert_eq!(status, 200, "{v}");
    assert!(v["result"]["description"].is_string(), "{v}");
    let (status, _, v) = post_json(&url(UFORM), &json!({"image": [1, 2, 3]})).await;
    assert_refused(status, &v, "cannot be decoded");
}

/// Vision chat: a text-generation id whose weights are a LLaVA folder or a
/// Llama 3.2 Vision folder (tiny random ones) takes an image as a `data:`
/// URI part of a message or as the `image` field, and answers in text
/// generation's shape.
#[tokio::test]
async fn vision_chat_takes_an_image_part_or_the_image_field() {
    let bytes = photo("chelsea");
    let uri = format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(&bytes)
    );
    let messages = json!([{"role": "user", "content": [
        {"type": "text", "text": "what is this ?"},
        {"type": "image_url", "image_url": {"url": uri}}]}]);
    let body = json!({"messages": messages, "max_tokens": 4, "temperature": 0});
    // Llama 3.2 Vision's terms are accepted first, image or not.
    let (status, _, v) = post_json(&url(VISION_CHAT), &body).await;
    assert_eq!(status, 403, "{v}");
    assert_eq!(v["errors"][0]["code"], 5016, "{v}");
    let (status, _, v) = post_json(&url(VISION_CHAT), &json!({"prompt": "agree"})).await;
    assert_eq!(status, 200, "{v}");
    // Llama 3.2 Vision's image is one token of its template (begin-of-text,
    // two role headers of three tokens, end-of-turn, four words); LLaVA's
    // is one per patch, four, in `<s> USER: ... ASSISTANT:`.
    for (model, prompt_tokens) in [(VISION_CHAT, 13), (LLAVA_CHAT, 9 + 4)] {
        let (status, _, v) = post_json(&url(model), &body).await;
        assert_eq!(status, 200, "{model}: {v}");
        let response = v["result"]["response"].as_str().expect("response");
        assert!(
            !response.is_empty() && response.split_whitespace().count() <= 4,
            "{model}: {v}"
        );
        assert_eq!(
            v["result"]["usage"]["prompt_tokens"], prompt_tokens,
            "{model}: {v}"
        );
        let (_, _, again) = post_json(&url(model), &body).await;
        assert_eq!(again["result"]["response"], v["result"]["response"]);
    }

    // Llama 3.2 Vision reads the image through its cross-attention layers:
    // another picture changes what seeded sampling draws.
    let seeded = |image: &[u8], seed: u64| {
        let uri = format!(
            "data:image/png;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(image)
        );
        json!({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": uri}},
            {"type": "text", "text": "describe the image ."}]}],
            "max_tokens": 16, "temperature": 1.0, "seed": seed})
    };
    let mut differ = false;
    for seed in [3, 4, 5] {
        let (status, _, cat) = post_json(&url(VISION_CHAT), &seeded(&bytes, seed)).await;
        assert_eq!(status, 200, "{cat}");
        let (_, _, coffee) = post_json(&url(VISION_CHAT), &seeded(&photo("coffee"), seed)).await;
        assert_eq!(cat["result"]["usage"]["prompt_tokens"], 13, "{cat}");
        assert_eq!(coffee["result"]["usage"]["prompt_tokens"], 13, "{coffee}");
        differ |= cat["result"]["response"] != coffee["result"]["response"];
    }
    assert!(differ, "two pictures drew the same words under three seeds");

    // Without an image the same weights chat in text, the cross-attention
    // layers skipped: the template's system turn opens the prompt.
    let (status, _, text) = post_json(
        &url(VISION_CHAT),
        &json!({"prompt": "what is this ?", "max_tokens": 5, "temperature": 0}),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert!(text["result"]["response"].is_string(), "{text}");
    let plain_tokens = text["result"]["usage"]["prompt_tokens"]
        .as_u64()
        .unwrap_or(0);
    assert!(plain_tokens > 13, "{text}");
    let completion = json!({"model": VISION_CHAT, "max_tokens": 3, "temperature": 0,
        "messages": [{"role": "user", "content": "what is this ?"}]});
    let (status, c) = chat_completion(&completion).await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["usage"]["prompt_tokens"], plain_tokens, "{c}");

    // Streamed, the answer comes in pieces that join to the whole one, then
    // the usage and [DONE], as llama.cpp's models stream.
    let body = json!({"messages": messages, "max_tokens": 8, "temperature": 0});
    let (_, _, whole) = post_json(&url(VISION_CHAT), &body).await;
    let chunks = post_stream(&url(VISION_CHAT), &body).await;
    let joined: String = chunks
        .iter()
        .filter_map(|c| c["response"].as_str())
        .collect();
    assert_eq!(joined, whole["result"]["response"].as_str().unwrap_or(""));
    assert!(chunks.len() > 3, "{chunks:?}");
    let usage = &chunks.last().expect("last")["usage"];
    assert_eq!(usage, &whole["result"]["usage"], "{chunks:?}");
    // A bad image is refused before the stream starts.
    let (status, _, v) = post_json(
        &url(VISION_CHAT),
        &json!({"prompt": "what is this ?", "image": [1, 2, 3], "stream": true}),
    )
    .await;
    assert_refused(status, &v, "`image`");

    let as_array: Vec<Value> = bytes.iter().map(|b| json!(b)).collect();
    let (status, _, by_field) = post_json(
        &url(VISION_CHAT),
        &json!({"prompt": "what is this ?", "image": as_array, "max_tokens": 3}),
    )
    .await;
    assert_eq!(status, 200, "{by_field}");
    assert!(by_field["result"]["response"].is_string(), "{by_field}");
    // `raw` skips the template: <|image|> <|begin_of_text|> and four words.
    let (status, _, raw) = post_json(
        &url(VISION_CHAT),
        &json!({"prompt": "what is this ?", "raw": true, "image": as_array, "max_tokens": 3}),
    )
    .await;
    assert_eq!(status, 200, "{raw}");
    assert_eq!(raw["result"]["usage"]["prompt_tokens"], 6, "{raw}");

    let two = json!([{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": uri}},
        {"type": "image_url", "image_url": {"url": uri}}]}]);
    let remote = json!([{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]);
    for (model, body, needle) in [
        (
            VISION_CHAT,
            json!({"messages": two}),
            "one image per request",
        ),
        (VISION_CHAT, json!({"messages": remote}), "data: URI"),
        (
            VISION_CHAT,
            json!({"messages": messages, "tools": [{"name": "f", "description": "d",
                "parameters": {"type": "object", "properties": {}}}]}),
            "`tools`",
        ),
        (SMOLLM, json!({"messages": messages}), "takes text only"),
    ] {
        let (status, _, v) = post_json(&url(model), &body).await;
        assert_refused(status, &v, needle);
    }
}

/// Vision chat on llama.cpp's multimodal library: a GGUF model with a
/// projector beside it (Gemma 3's architecture: the genuine 270M language
/// model, a tiny random SigLIP projector) reads the image in its own chat
/// template, on Workers AI's route and the OpenAI-compatible one.
#[tokio::test]
async fn a_gguf_model_with_a_projector_sees_the_image() {
    let uri = |name: &str| {
        format!(
            "data:image/png;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(photo(name))
        )
    };
    // Seeded sampling: the base 270M model answers a random projector's
    // tokens with blank lines when greedy; sampled, the image steers it.
    let ask = |image: &str| {
        json!({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": image}},
            {"type": "text", "text": "This picture shows a"}]}],
            "max_tokens": 12, "temperature": 1.0, "seed": 5})
    };
    let (status, headers, v) = post_json(&url(GEMMA_VISION), &ask(&uri("chelsea"))).await;
    assert_eq!(status, 200, "{v}");
    assert_served_by_gguf(&headers);
    let response = v["result"]["response"].as_str().expect("response");
    assert!(!response.is_empty(), "{v}");
    let with_image = v["result"]["usage"]["prompt_tokens"].as_u64().unwrap_or(0);
    let (_, _, again) = post_json(&url(GEMMA_VISION), &ask(&uri("chelsea"))).await;
    assert_eq!(again["result"], v["result"]);
    let (_, _, other) = post_json(&url(GEMMA_VISION), &ask(&uri("coffee"))).await;
    assert_eq!(other["result"]["usage"], v["result"]["usage"]);
    assert_ne!(
        other["result"]["response"], v["result"]["response"],
        "{other}"
    );

    // The same words without the image: the image's four pooled tokens
    // (and its begin/end markers) are the difference.
    let text_only = json!({"messages": [{"role": "user", "content": "This picture shows a"}],
        "max_tokens": 6, "temperature": 0});
    let (status, _, plain) = post_json(&url(GEMMA), &text_only).await;
    assert_eq!(status, 200, "{plain}");
    let without = plain["result"]["usage"]["prompt_tokens"]
        .as_u64()
        .unwrap_or(0);
    assert!(with_image >= without + 4, "{with_image} vs {without}");

    let completion = json!({"model": GEMMA_VISION, "max_tokens": 5, "temperature": 0,
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "Describe it."},
            {"type": "image_url", "image_url": {"url": uri("chelsea")}}]}]});
    let (status, c) = chat_completion(&completion).await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["object"], "chat.completion");
    assert!(c["choices"][0]["message"]["content"].is_string(), "{c}");

    // The `image` field with a plain prompt: one user turn carrying it.
    let bytes: Vec<Value> = photo("coffee").iter().map(|b| json!(b)).collect();
    let (status, _, by_field) = post_json(
        &url(GEMMA_VISION),
        &json!({"prompt": "This picture shows a", "image": bytes, "max_tokens": 3}),
    )
    .await;
    assert_eq!(status, 200, "{by_field}");
    assert_eq!(
        by_field["result"]["usage"]["prompt_tokens"],
        v["result"]["usage"]["prompt_tokens"]
    );

    // Streamed like any text generation: the chunks join to the answer.
    let mut streamed = ask(&uri("chelsea"));
    streamed["stream"] = json!(true);
    let resp = client()
        .post(url(GEMMA_VISION))
        .bearer_auth(TOKEN)
        .json(&streamed)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.expect("body");
    let frames = sse_data(&text);
    assert_eq!(frames.last().map(String::as_str), Some("[DONE]"), "{text}");
    let joined: String = frames[..frames.len() - 1]
        .iter()
        .filter_map(|f| serde_json::from_str::<Value>(f).ok())
        .filter_map(|c| c["response"].as_str().map(str::to_string))
        .collect();
    assert_eq!(joined, response);

    let broken = json!({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is it?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,aGVsbG8="}}]}]});
    let (status, _, v) = post_json(&url(GEMMA_VISION), &broken).await;
    assert_refused(status, &v, "cannot be decoded");
}
