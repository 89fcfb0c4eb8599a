//! Text generation through the HTTP API on the real SmolLM2 and Gemma 3.

use futures::StreamExt;
use serde_json::{Value, json};

use crate::support::*;

#[tokio::test]
async fn capital_of_france_continues_with_paris() {
    let text = generate(
        SMOLLM,
        json!({"prompt": "The capital of France is", "raw": true, "temperature": 0, "max_tokens": 8}),
    )
    .await;
    assert!(text.contains("Paris"), "{text:?}");
}

#[tokio::test]
async fn greedy_decoding_is_deterministic_and_seeded_sampling_is_reproducible() {
    let greedy =
        json!({"prompt": "Write a haiku about the sea.", "temperature": 0, "max_tokens": 24});
    let a = generate(SMOLLM, greedy.clone()).await;
    let b = generate(SMOLLM, greedy).await;
    assert_eq!(a, b);
    let seeded =
        json!({"prompt": "Name three fruits.", "temperature": 1.0, "seed": 42, "max_tokens": 24});
    let c = generate(SMOLLM, seeded.clone()).await;
    let d = generate(SMOLLM, seeded).await;
    assert_eq!(c, d);
    assert!(!c.is_empty());
}

#[tokio::test]
async fn max_tokens_is_honoured_and_usage_reported() {
    let (status, headers, v) = post_json(
        &run_url(SMOLLM),
        &json!({"prompt": "Tell me a long story about a dragon.", "temperature": 0, "max_tokens": 5}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let usage = &v["result"]["usage"];
    assert_eq!(usage["completion_tokens"], 5, "{v}");
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 5);
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["prompt_tokens"].as_u64().unwrap() + 5
    );
    assert_eq!(v["result"]["tool_calls"], json!([]));
    assert_eq!(v["errors"], json!([]));
    assert!(
        headers["x-hearth-weights"]
            .to_str()
            .unwrap()
            .ends_with("SmolLM2-135M-Instruct.Q4_1.gguf"),
        "{headers:?}"
    );
}

#[tokio::test]
async fn streamed_chunks_concatenate_to_the_non_streamed_text() {
    let body = json!({"messages": [{"role": "system", "content": "You are concise."}, {"role": "user", "content": "What is 2 + 2?"}], "temperature": 0, "max_tokens": 30});
    let whole = generate(SMOLLM, body.clone()).await;
    let chunks = post_stream(&run_url(SMOLLM), &body).await;
    let last = chunks.last().unwrap();
    assert_eq!(last["response"], "");
    assert!(
        last["usage"]["completion_tokens"].as_u64().unwrap() > 0,
        "{last}"
    );
    let joined: String = chunks
        .iter()
        .map(|c| c["response"].as_str().unwrap())
        .collect();
    assert_eq!(joined, whole);
    assert!(
        chunks.len() > 3,
        "expected several token chunks, got {}",
        chunks.len()
    );
}

#[tokio::test]
async fn eight_concurrent_requests_match_sequential_greedy_output() {
    // Raw continuations with one obvious next word: robust to the small
    // numeric differences between llama.cpp's kernels on different CPUs.
    let prompts = [
        ("The capital of France is", "Paris"),
        ("One, two, three, four,", "five"),
        ("Monday, Tuesday, Wednesday,", "Thursday"),
        ("January, February, March,", "April"),
        ("The opposite of hot is", "cold"),
        ("Water freezes at 0 degrees", "Celsius"),
        ("The Eiffel Tower is in", "Paris"),
        ("A, B, C, D,", "E"),
    ];
    let body = |p: &str| json!({"prompt": p, "raw": true, "temperature": 0, "max_tokens": 12});
    let mut sequential = Vec::new();
    for (p, _) in &prompts {
        sequential.push(generate(SMOLLM, body(p)).await);
    }
    let concurrent = futures::future::join_all(prompts.iter().map(|(p, _)| async move {
        let (status, _, v) = post_json(&run_url(SMOLLM), &body(p)).await;
        assert_eq!(status, 200, "{v}");
        assert!(v["result"]["usage"]["completion_tokens"].as_u64().unwrap() <= 12);
        v["result"]["response"].as_str().unwrap().to_string()
    }))
    .await;
    for ((text, (_, word)), seq) in concurrent.iter().zip(&prompts).zip(&sequential) {
        assert!(text.contains(word), "{word:?} missing from {text:?}");
        assert!(seq.contains(word), "{word:?} missing from {seq:?}");
    }
    // Batched llama.cpp kernels may reorder float sums; report how many
    // streams matched their sequential run token for token.
    let same = concurrent
        .iter()
        .zip(&sequential)
        .filter(|(a, b)| a == b)
        .count();
    eprintln!("concurrent == sequential greedy output for {same}/8 prompts");
    assert!(
        same >= 6,
        "only {same}/8 batched outputs equal the sequential ones"
    );
}

#[tokio::test]
async fn gemma_3_generates_with_its_builtin_turn_format() {
    let text = generate(
        GEMMA,
        json!({"prompt": "The capital of France is", "raw": true, "temperature": 0, "max_tokens": 12}),
    )
    .await;
    assert!(!text.trim().is_empty());
    let chat = generate(
        GEMMA,
        json!({"messages": [{"role": "user", "content": "Say hello."}], "temperature": 0, "max_tokens": 12}),
    )
    .await;
    assert!(!chat.trim().is_empty(), "{chat:?}");
}

#[tokio::test]
async fn an_alias_serves_a_cloudflare_id_and_says_which_weights() {
    let (status, headers, v) = post_json(
        &run_url(ALIASED),
        &json!({"prompt": "The capital of France is", "raw": true, "temperature": 0, "max_tokens": 8}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert!(v["result"]["response"].as_str().unwrap().contains("Paris"));
    assert_eq!(headers["x-hearth-model"], ALIASED);
    assert!(
        headers["x-hearth-weights"]
            .to_str()
            .unwrap()
            .contains("SmolLM2")
    );
}

#[tokio::test]
async fn openai_chat_completions_streaming_and_not() {
    let url = account_url("/ai/v1/chat/completions");
    let body = json!({"model": SMOLLM, "messages": [{"role": "user", "content": "Name the capital of France."}], "temperature": 0, "max_tokens": 20});
    let (status, _, v) = post_json(&url, &body).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "chat.completion");
    let content = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(content.contains("Paris"), "{content}");
    assert!(v["usage"]["completion_tokens"].as_u64().unwrap() <= 20);

    let mut streamed = body;
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let text = client()
        .post(&url)
        .bearer_auth(TOKEN)
        .json(&streamed)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let frames = sse_data(&text);
    assert_eq!(frames.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = frames[..frames.len() - 1]
        .iter()
        .map(|f| serde_json::from_str(f).unwrap())
        .collect();
    let joined: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(joined, content);
    assert!(
        chunks
            .iter()
            .any(|c| c["choices"][0]["finish_reason"].is_string())
    );
    assert!(
        chunks.last().unwrap()["usage"]["total_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );
}

#[tokio::test]
async fn stop_sequences_end_generation_before_the_stop_text() {
    let url = account_url("/ai/v1/chat/completions");
    let body = json!({"model": SMOLLM, "messages": [{"role": "user", "content": "Count from 1 to 10 separated by commas."}], "temperature": 0, "max_tokens": 40, "stop": ["5"]});
    let (status, _, v) = post_json(&url, &body).await;
    assert_eq!(status, 200, "{v}");
    let content = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(!content.contains('5'), "{content}");
    assert!(content.contains('4'), "{content}");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn reject_if_busy_answers_3040_and_disconnects_free_their_sequences() {
    let url = account_url("/ai/v1/chat/completions");
    // Fill every sequence with long generations and hold the streams open.
    let mut held = Vec::new();
    for i in 0..8 {
        let body = json!({"model": GEMMA, "messages": [{"role": "user", "content": format!("Story {i}: write a very long story.")}], "max_tokens": 900, "ignore_eos": true, "stream": true});
        let resp = client()
            .post(&url)
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let mut stream = resp.bytes_stream();
        // The first content chunk proves the sequence is running.
        let mut seen = String::new();
        while !seen.contains("\"content\":\"") || seen.matches("data:").count() < 2 {
            seen.push_str(&String::from_utf8_lossy(
                &stream.next().await.unwrap().unwrap(),
            ));
        }
        held.push(stream);
    }
    let busy = json!({"model": GEMMA, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "options": {"rejectIfBusy": true}});
    let (status, _, v) = post_json(&url, &busy).await;
    assert_eq!(status, 429, "{v}");
    assert_eq!(v["errors"][0]["code"], 3040, "{v}");
    assert_eq!(v["success"], false);

    drop(held);
    // Disconnected clients free their sequences at the scheduler's next step.
    let mut freed = false;
    for _ in 0..100 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let (status, _, _) = post_json(&url, &busy).await;
        if status == 200 {
            freed = true;
            break;
        }
    }
    assert!(
        freed,
        "sequences were not freed after the clients went away"
    );
}

#[tokio::test]
async fn a_request_past_its_time_limit_gets_3007() {
    // About 1,000 tokens cannot be generated within the one-second limit on
    // any CPU this runs on; the answer is Cloudflare's timeout.
    let url = format!(
        "{}/client/v4/accounts/{ACCOUNT}/ai/v1/chat/completions",
        impatient_server().base
    );
    let body = json!({"model": SMOLLM, "messages": [{"role": "user", "content": "Write a very long story."}], "max_tokens": 1000, "ignore_eos": true});
    let (status, _, v) = post_json(&url, &body).await;
    assert_eq!(status, 408, "{v}");
    assert_eq!(v["errors"][0]["code"], 3007, "{v}");
}
