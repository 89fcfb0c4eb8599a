//! GGUF text generation on llama.cpp.
//!
//! A [`TextGenerator`] owns one loaded model. Requests are tokenized on the
//! caller's thread and sent over a bounded channel to the model's scheduler
//! thread ([`scheduler`]), which runs them with continuous batching; text comes
//! back on each request's own channel as [`GenEvent`]s. A model with a
//! multimodal projector beside it ([`projector`]) also takes images.

pub mod constrain;
pub mod lora;
pub mod projector;
pub(crate) mod sampling;
mod scheduler;
pub mod template;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use hearth_types::textgen::{GenerationParams, ValidMessage};
use hearth_types::tools::Tool;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use tokio::sync::mpsc;

use self::template::ChatTemplate;

/// Scheduler sizing for one loaded model.
#[derive(Debug, Clone)]
pub struct TextGenOptions {
    /// CPU threads llama.cpp uses for decode and prefill.
    pub threads: usize,
    /// Sequences decoded together (llama.cpp sequences / KV streams).
    pub parallel: usize,
    /// KV cells per sequence: prompt plus output must fit.
    pub ctx_per_seq: u32,
    /// Largest number of tokens in one llama.cpp batch.
    pub batch: u32,
    /// Requests waiting for a free sequence before new ones get 3040.
    pub queue: usize,
}

impl Default for TextGenOptions {
    fn default() -> Self {
        Self {
            threads: std::thread::available_parallelism().map_or(2, usize::from),
            parallel: 8,
            ctx_per_seq: 2048,
            batch: 512,
            queue: 64,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TextGenError {
    #[error("cannot load model {path}: {reason}")]
    Load { path: PathBuf, reason: String },
    #[error("chat template: {0}")]
    Template(String),
    #[error("prompt has {prompt_tokens} tokens; this model's context holds {context} per sequence")]
    ContextExceeded { prompt_tokens: usize, context: u32 },
    #[error("the model is busy")]
    Busy,
    #[error("the request queue is full")]
    QueueFull,
    #[error("the model's scheduler has stopped")]
    Stopped,
    #[error("llama.cpp decode failed: {0}")]
    Decode(String),
    /// A candle model that failed while it generated.
    #[error("generation failed: {0}")]
    Compute(String),
    /// A JSON Schema that llama.cpp's converter cannot turn into a grammar.
    #[error("JSON Mode couldn't be met: the schema is not supported ({0})")]
    Schema(String),
    /// A grammar llama.cpp refused, or a token it could not follow.
    #[error("constrained decoding failed: {0}")]
    Grammar(String),
    /// A LoRA adapter llama.cpp could not load or apply.
    #[error("LoRA adapter: {0}")]
    Adapter(String),
    /// Images sent to a model without a multimodal projector.
    #[error("{0}")]
    NoVision(String),
    /// An image llama.cpp's multimodal library could not decode or encode.
    #[error("{0}")]
    BadImage(String),
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// End-of-generation token or a stop string.
    Stop,
    /// `max_tokens` or the end of the sequence's context.
    Length,
}

impl FinishReason {
    pub fn as_openai(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// What the scheduler sends back for one request.
#[derive(Debug)]
pub enum GenEvent {
    /// A piece of text (whole UTF-8 characters only).
    Text(String),
    Done {
        reason: FinishReason,
        prompt_tokens: u32,
        completion_tokens: u32,
    },
    Failed(TextGenError),
}

/// Who waits for a generation. Background work (Batch API items) holds its
/// sequence but sits out every step in which an interactive sequence runs,
/// so interactive latency stays what it is without the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Priority {
    #[default]
    Interactive,
    Background,
}

/// Receiver side of one generation. Dropping it cancels the request and frees
/// its sequence at the scheduler's next step.
pub struct GenerationStream {
    rx: mpsc::UnboundedReceiver<GenEvent>,
}

impl GenerationStream {
    /// A stream fed by another producer than the scheduler (the candle
    /// vision models), and the sender that feeds it.
    pub fn channel() -> (mpsc::UnboundedSender<GenEvent>, Self) {
        let (tx, rx) = mpsc::unbounded_channel();
        (tx, Self { rx })
    }

    pub async fn next(&mut self) -> Option<GenEvent> {
        self.rx.recv().await
    }

    pub fn blocking_next(&mut self) -> Option<GenEvent> {
        self.rx.blocking_recv()
    }

    /// The whole generation, once it ends: its text and final counts. A
    /// stream that closes without its last event reads as a stopped
    /// scheduler.
    pub async fn collect(&mut self) -> Result<Collected, TextGenError> {
        let mut text = String::new();
        while let Some(event) = self.next().await {
            match event {
                GenEvent::Text(piece) => text.push_str(&piece),
                GenEvent::Done {
                    reason,
                    prompt_tokens,
                    completion_tokens,
                } => {
                    return Ok(Collected {
                        text,
                        reason,
                        prompt_tokens,
                        completion_tokens,
                    });
                }
                GenEvent::Failed(e) => return Err(e),
            }
        }
        Err(TextGenError::Stopped)
    }
}

/// A generation read to its end (see [`GenerationStream::collect`]).
#[derive(Debug)]
pub struct Collected {
    pub text: String,
    pub reason: FinishReason,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
}

/// Counts a request from submission until the scheduler drops it.
struct LoadGuard(Arc<AtomicUsize>);

impl Drop for LoadGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A prompt with images: mtmd tokenizes it on the scheduler thread, where
/// its context lives.
struct Media {
    /// The rendered prompt, with the media marker where each image goes.
    text: String,
    /// Encoded images (PNG, JPEG, ...), in marker order.
    images: Vec<Vec<u8>>,
    /// Whether tokenizing adds the model's BOS (the rendered text may
    /// already begin with it).
    add_special: bool,
}

struct Job {
    /// Empty for a job with `media`.
    prompt: Vec<i32>,
    media: Option<Media>,
    params: GenerationParams,
    priority: Priority,
    reply: mpsc::UnboundedSender<GenEvent>,
    _load: LoadGuard,
}

/// The process-wide llama.cpp backend (it may be initialised once only).
fn backend() -> Result<&'static LlamaBackend, String> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            let b = LlamaBackend::init().map_err(|e| e.to_string())?;
            // Silences llama.cpp, ggml and mtmd alike (`void_logs` leaves
            // mtmd's model-loading report on stderr).
            llama_cpp_2::send_logs_to_tracing(
                llama_cpp_2::LogOptions::default().with_logs_enabled(false),
            );
            Ok(b)
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// A loaded GGUF model with its scheduler.
pub struct TextGenerator {
    /// The model's vocabulary, for tokenizing on callers' threads; the
    /// weights belong to the scheduler thread, which loads adapters into
    /// them.
    vocab_model: LlamaModel,
    jobs: mpsc::Sender<Job>,
    load: Arc<AtomicUsize>,
    template: ChatTemplate,
    options: TextGenOptions,
    path: PathBuf,
    /// The multimodal projector loaded beside the model, if any.
    projector: Option<PathBuf>,
}

impl TextGenerator {
    /// Load a GGUF file and start its scheduler thread.
    pub fn load(path: &Path, mut options: TextGenOptions) -> Result<Self, TextGenError> {
        let load_err = |reason: String| TextGenError::Load {
            path: path.to_path_buf(),
            reason,
        };
        let backend = backend().map_err(load_err)?;
        let model = LlamaModel::load_from_file(backend, path, &LlamaModelParams::default())
            .map_err(|e| load_err(e.to_string()))?;
        let vocab_model = LlamaModel::load_from_file(
            backend,
            path,
            &LlamaModelParams::default().with_vocab_only(true),
        )
        .map_err(|e| load_err(e.to_string()))?;
        options.ctx_per_seq = options.ctx_per_seq.min(model.n_ctx_train().max(64));
        options.parallel = options.parallel.max(1);
        let vocab = vocab_model.vocab();
        let piece = |t| String::from_utf8_lossy(&vocab.token_to_piece(t, true, None)).into_owned();
        let template = ChatTemplate::new(
            vocab_model.meta_val_str("tokenizer.chat_template").ok(),
            piece(vocab.bos()),
            piece(vocab.eos()),
        )
        .map_err(|e| TextGenError::Template(e.to_string()))?;
        let (jobs, rx) = mpsc::channel(options.queue.max(1));
        let projector = projector::projector_for(path);
        scheduler::spawn(model, backend, options.clone(), projector.clone(), rx)
            .map_err(load_err)?;
        tracing::info!(
            path = %path.display(),
            template = template.origin,
            parallel = options.parallel,
            ctx_per_seq = options.ctx_per_seq,
            projector = ?projector,
            "text generation model loaded"
        );
        Ok(Self {
            vocab_model,
            jobs,
            load: Arc::new(AtomicUsize::new(0)),
            template,
            options,
            path: path.to_path_buf(),
            projector,
        })
    }

    /// The multimodal projector that lets this model see images.
    pub fn projector(&self) -> Option<&Path> {
        self.projector.as_deref()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn options(&self) -> &TextGenOptions {
        &self.options
    }

    /// How this model writes tool calls (from its chat template).
    pub fn tool_format(&self) -> constrain::ToolFormat {
        self.template.tool_format()
    }

    /// Apply the model's chat template to `messages`, offering `tools`.
    pub fn render_chat(
        &self,
        messages: &[ValidMessage],
        tools: &[Tool],
    ) -> Result<String, TextGenError> {
        self.template
            .render(messages, tools)
            .map_err(|e| TextGenError::Template(e.to_string()))
    }

    /// Tokenize a prompt; special-token text (`<|im_start|>`) becomes special
    /// tokens, and BOS is added once where the model wants it.
    pub fn tokenize(&self, text: &str) -> Vec<i32> {
        let vocab = self.vocab_model.vocab();
        let mut tokens: Vec<i32> = vocab
            .tokenize(text.as_bytes(), false, true)
            .into_iter()
            .map(|t| t.0)
            .collect();
        if self.lacks_bos(tokens.first().copied()) {
            tokens.insert(0, vocab.bos().0);
        }
        tokens
    }

    /// Whether a prompt whose first token is `first` needs the model's BOS
    /// put before it: the model wants one and the text did not start with it.
    fn lacks_bos(&self, first: Option<i32>) -> bool {
        let vocab = self.vocab_model.vocab();
        vocab.should_add_bos() && first != Some(vocab.bos().0)
    }

    /// Requests queued or running.
    pub fn load_now(&self) -> usize {
        self.load.load(Ordering::Acquire)
    }

    /// Queue an interactive generation. Fails at once when the prompt cannot
    /// fit, the queue is full, or (`reject_if_busy`) every sequence is taken.
    pub fn submit(
        &self,
        prompt: Vec<i32>,
        params: GenerationParams,
        reject_if_busy: bool,
    ) -> Result<GenerationStream, TextGenError> {
        self.submit_with(prompt, params, reject_if_busy, Priority::Interactive)
    }

    /// [`TextGenerator::submit`] with an explicit priority.
    pub fn submit_with(
        &self,
        prompt: Vec<i32>,
        mut params: GenerationParams,
        reject_if_busy: bool,
        priority: Priority,
    ) -> Result<GenerationStream, TextGenError> {
        let context = self.options.ctx_per_seq;
        if prompt.is_empty() || prompt.len() >= context as usize {
            return Err(TextGenError::ContextExceeded {
                prompt_tokens: prompt.len(),
                context,
            });
        }
        // Output beyond the sequence's context cannot be produced; clamp as
        // llama-server does and report `length` when it is reached.
        let room = context - prompt.len() as u32;
        params.max_tokens = params.max_tokens.min(room);
        self.enqueue(prompt, None, params, priority, reject_if_busy)
    }

    /// Queue an interactive generation whose prompt holds images: `text`
    /// carries [`projector::media_marker`] once per image, in order. The
    /// prompt's length is known only once mtmd has tokenized it on the
    /// scheduler thread, so a prompt too long for the context fails there.
    pub fn submit_media(
        &self,
        text: String,
        images: Vec<Vec<u8>>,
        params: GenerationParams,
        reject_if_busy: bool,
    ) -> Result<GenerationStream, TextGenError> {
        if self.projector.is_none() {
            return Err(TextGenError::NoVision(format!(
                "{} takes text only: no multimodal projector (mmproj*.gguf) is beside it",
                self.path.display()
            )));
        }
        let marker = projector::media_marker();
        let marked = text.matches(marker).count();
        if marked != images.len() {
            return Err(TextGenError::BadImage(format!(
                "the prompt marks {marked} images and {} were given",
                images.len()
            )));
        }
        // mtmd tokenizes the text between markers piece by piece: the first
        // piece decides whether the prompt already opens with BOS.
        let opening = text.split(marker).next().unwrap_or_default();
        let first = self
            .vocab_model
            .vocab()
            .tokenize(opening.as_bytes(), false, true)
            .first()
            .map(|t| t.0);
        let add_special = self.lacks_bos(first);
        let media = Media {
            text,
            images,
            add_special,
        };
        self.enqueue(
            Vec::new(),
            Some(media),
            params,
            Priority::Interactive,
            reject_if_busy,
        )
    }

    /// Count the request in the load before it is queued, so that
    /// `reject_if_busy` sees requests still waiting for the scheduler too.
    fn enqueue(
        &self,
        prompt: Vec<i32>,
        media: Option<Media>,
        params: GenerationParams,
        priority: Priority,
        reject_if_busy: bool,
    ) -> Result<GenerationStream, TextGenError> {
        let before = self.load.fetch_add(1, Ordering::AcqRel);
        let guard = LoadGuard(Arc::clone(&self.load));
        if reject_if_busy && before >= self.options.parallel {
            return Err(TextGenError::Busy);
        }
        let (reply, rx) = mpsc::unbounded_channel();
        let job = Job {
            prompt,
            media,
            params,
            priority,
            reply,
            _load: guard,
        };
        self.jobs.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => TextGenError::QueueFull,
            mpsc::error::TrySendError::Closed(_) => TextGenError::Stopped,
        })?;
        Ok(GenerationStream { rx })
    }
}
