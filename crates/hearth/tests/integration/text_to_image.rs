//! Text-to-Image through the HTTP API, on tiny random-weight Stable
//! Diffusion pipelines in the diffusers layout (architecture and contract
//! verified, not quality): the Stable Diffusion ids answer raw PNG bodies
//! of the asked size, a seed gives the same bytes, img2img and inpainting
//! take their images the ways Workers AI does, FLUX's id answers base64 in
//! the envelope, and bad inputs name their field.

use base64::Engine;
use serde_json::{Value, json};

use crate::support::*;

fn url(model: &str) -> String {
    format!(
        "{}/client/v4/accounts/{ACCOUNT}/ai/run/{model}",
        media_server().base
    )
}

/// POSTs JSON and returns the status, content type, `x-hearth-model` and
/// the raw body.
async fn draw(model: &str, body: &Value) -> (u16, String, String, Vec<u8>) {
    let resp = client()
        .post(url(model))
        .bearer_auth(TOKEN)
        .json(body)
        .send()
        .await
        .expect("request");
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let (status, content_type, model) = (
        resp.status().as_u16(),
        header("content-type"),
        header("x-hearth-model"),
    );
    let bytes = resp.bytes().await.expect("body").to_vec();
    (status, content_type, model, bytes)
}

fn png_size(png: &[u8]) -> (u32, u32) {
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let at = |i: usize| u32::from_be_bytes([png[i], png[i + 1], png[i + 2], png[i + 3]]);
    (at(16), at(20))
}

/// Width and height from a JPEG's start-of-frame segment.
fn jpeg_size(jpeg: &[u8]) -> (u32, u32) {
    let at = jpeg
        .windows(2)
        .position(|w| w[0] == 0xff && (w[1] == 0xc0 || w[1] == 0xc2))
        .expect("a start-of-frame marker");
    let be = |i: usize| u32::from(u16::from_be_bytes([jpeg[i], jpeg[i + 1]]));
    (be(at + 7), be(at + 5))
}

#[tokio::test]
async fn stable_diffusion_answers_png_of_the_size_asked_and_a_seed_repeats() {
    let body = json!({"prompt": "a red house on the hill", "width": 320, "height": 256,
        "num_steps": 3, "seed": 42, "negative_prompt": "blue"});
    let (status, content_type, model, png) = draw(SD_IMG2IMG, &body).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&png));
    assert_eq!(content_type, "image/png");
    assert_eq!(model, SD_IMG2IMG);
    assert_eq!(png_size(&png), (320, 256));
    let (_, _, _, again) = draw(SD_IMG2IMG, &body).await;
    assert_eq!(again, png, "the same seed must give the same bytes");
    let mut other = body.clone();
    other["seed"] = json!(43);
    let (_, _, _, other) = draw(SD_IMG2IMG, &other).await;
    assert_ne!(other, png);
    // No size: the model's native one (256 for the tiny pipeline).
    let (status, _, _, native) =
        draw(SD_IMG2IMG, &json!({"prompt": "a cat", "num_steps": 1})).await;
    assert_eq!(status, 200);
    assert_eq!(png_size(&native), (256, 256));

    // img2img: the source as a byte array or as base64, the same answer.
    let as_array: Vec<Value> = png.iter().map(|b| json!(b)).collect();
    let img2img = json!({"prompt": "a dog", "image": as_array, "strength": 0.5,
        "num_steps": 4, "seed": 1, "width": 320, "height": 256});
    let (status, _, _, by_array) = draw(SD_IMG2IMG, &img2img).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&by_array));
    let b64 = base64::engine::general_purpose::STANDARD.encode(&png);
    let mut by_b64 = img2img.clone();
    by_b64.as_object_mut().map(|o| o.remove("image"));
    by_b64["image_b64"] = json!(b64);
    let (_, _, _, from_b64) = draw(SD_IMG2IMG, &by_b64).await;
    assert_eq!(from_b64, by_array);
    assert_ne!(by_array, png);
}

#[tokio::test]
async fn inpainting_lcm_and_flux_contracts() {
    let (_, _, _, source) = draw(
        SD_IMG2IMG,
        &json!({"prompt": "a hill", "num_steps": 2, "seed": 5}),
    )
    .await;
    let bytes = |png: &[u8]| -> Vec<Value> { png.iter().map(|b| json!(b)).collect() };
    let inpaint = json!({"prompt": "a cat", "image": bytes(&source), "mask": bytes(&source),
        "num_steps": 2, "seed": 9});
    let (status, content_type, _, png) = draw(SD_INPAINTING, &inpaint).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&png));
    assert_eq!(content_type, "image/png");
    assert_eq!(png_size(&png), (256, 256));
    let (status, _, _, refusal) = draw(SD_INPAINTING, &json!({"prompt": "a cat"})).await;
    let refusal: Value = serde_json::from_slice(&refusal).expect("json");
    assert_refused(status, &refusal, "`mask`");

    let (status, _, _, lcm) = draw(
        DREAMSHAPER_LCM,
        &json!({"prompt": "a cat", "num_steps": 4, "guidance": 1.5, "seed": 3}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(png_size(&lcm), (256, 256));

    let (status, _, _, lightning) = draw(
        SDXL_LIGHTNING,
        &json!({"prompt": "a cat", "num_steps": 2, "guidance": 0, "seed": 3}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(png_size(&lightning), (256, 256));
    // SDXL base: guided, with a negative prompt, a size of its own; the
    // seed repeats the bytes.
    let xl = json!({"prompt": "a red house", "negative_prompt": "a dog", "num_steps": 3,
        "guidance": 5, "seed": 11, "width": 320, "height": 256});
    let (status, content_type, _, first) = draw(SDXL_BASE, &xl).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&first));
    assert_eq!(content_type, "image/png");
    assert_eq!(png_size(&first), (320, 256));
    assert_eq!(draw(SDXL_BASE, &xl).await.3, first);
    assert_ne!(
        draw(
            SDXL_BASE,
            &json!({"prompt": "a red house", "num_steps": 3,
        "guidance": 5, "seed": 11, "width": 320, "height": 256})
        )
        .await
        .3,
        first
    );

    // FLUX: base64 JPEG of the model's native size (128 for the tiny one).
    let (status, headers, v) = post_json(&url(FLUX), &json!({"prompt": "a cat", "steps": 2})).await;
    assert_eq!(status, 200, "{v}");
    assert!(headers["content-type"].to_str().unwrap().contains("json"));
    let jpeg = base64::engine::general_purpose::STANDARD
        .decode(v["result"]["image"].as_str().expect("base64 image"))
        .expect("base64");
    assert_eq!(&jpeg[..2], b"\xff\xd8", "a JPEG");
    assert_eq!(jpeg_size(&jpeg), (128, 128));
    for (body, needle) in [
        (json!({"prompt": "a cat", "steps": 9}), "`steps`"),
        (json!({"prompt": "a cat", "width": 512}), "`width`"),
        (json!({"prompt": "x".repeat(2049)}), "`prompt`"),
    ] {
        let (status, _, v) = post_json(&url(FLUX), &body).await;
        assert_refused(status, &v, needle);
    }
}

#[tokio::test]
async fn bad_text_to_image_inputs_name_the_field() {
    for (body, needle) in [
        (json!({}), "`prompt` is required"),
        (json!({"prompt": " "}), "`prompt`"),
        (json!({"prompt": 5}), "`prompt`"),
        (json!({"prompt": "a", "width": 100}), "`width`"),
        (json!({"prompt": "a", "height": 4096}), "`height`"),
        (
            json!({"prompt": "a", "width": 300}),
            "`width` must be a multiple of 8",
        ),
        (json!({"prompt": "a", "num_steps": 21}), "`num_steps`"),
        (json!({"prompt": "a", "num_steps": 2.5}), "`num_steps`"),
        (json!({"prompt": "a", "strength": 2}), "`strength`"),
        (json!({"prompt": "a", "guidance": "high"}), "`guidance`"),
        (json!({"prompt": "a", "seed": -1}), "`seed`"),
        (
            json!({"prompt": "a", "steps": 4}),
            "`steps` is not an input",
        ),
        (json!({"prompt": "a", "image": "%%%"}), "base64"),
        (json!({"prompt": "a", "image": [1, 2, 3]}), "`image`"),
        (json!({"prompt": "a", "mask": [1, 2, 3]}), "`mask`"),
    ] {
        let (status, _, v) = post_json(&url(SD_IMG2IMG), &body).await;
        assert_refused(status, &v, needle);
    }
}
