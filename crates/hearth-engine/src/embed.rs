//! Text embeddings: BERT-family encoders (`crate::encoder`) and
//! EmbeddingGemma (`crate::gemma_encoder`) from the Hugging Face layout
//! (`config.json`, `model.safetensors`, `tokenizer.json`) with the
//! sentence-transformers pipeline around them (`modules.json`: pooling,
//! `Dense` projections, normalization).
//!
//! One worker thread per loaded model merges concurrent requests into shared
//! forward passes (dynamic batching): it takes what is queued and, when
//! requests are arriving together, waits at most `max_wait` for more; it sorts
//! the texts by token length so each sub-batch's rows are alike, and answers
//! every request on its own channel.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokenizers::Tokenizer;
use tokio::sync::{mpsc, oneshot};

use crate::encoder::{
    Activation, Dense, Encoder, EncoderError, Precision, TokenEncoder, first_row, split,
};
use crate::gemma_encoder::{GemmaEncoder, is_gemma};

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("cannot load embedding model from {path}: {reason}")]
    Load { path: PathBuf, reason: String },
    #[error("tokenizer: {0}")]
    Tokenize(String),
    #[error("candle: {0}")]
    Compute(String),
    #[error("the request queue is full")]
    QueueFull,
    #[error("the model's worker has stopped")]
    Stopped,
}

fn compute(e: EncoderError) -> EmbedError {
    EmbedError::Compute(e.to_string())
}

/// How token vectors become one sentence vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// Average of the token vectors, padding excluded.
    Mean,
    /// The first (`[CLS]`) token's vector.
    Cls,
}

impl Pooling {
    pub fn as_str(self) -> &'static str {
        match self {
            Pooling::Mean => "mean",
            Pooling::Cls => "cls",
        }
    }
}

#[derive(Debug, Clone)]
pub struct EmbedOptions {
    /// Most texts in one forward pass.
    pub max_batch: usize,
    /// How long the worker waits for more requests before running a batch.
    pub max_wait: Duration,
    /// Requests waiting before new ones are refused.
    pub queue: usize,
    /// How the encoder keeps its matrix weights.
    pub precision: Precision,
}

impl Default for EmbedOptions {
    fn default() -> Self {
        Self {
            max_batch: 32,
            max_wait: Duration::from_millis(2),
            queue: 256,
            precision: Precision::F32,
        }
    }
}

/// Facts about a loaded model.
#[derive(Debug, Clone)]
pub struct EmbedInfo {
    pub dimensions: usize,
    /// Inputs are truncated to this many tokens.
    pub max_tokens: usize,
    /// The pooling the model was trained with (sentence-transformers config).
    pub native_pooling: Pooling,
    /// Whether the model's pipeline ends in L2 normalization.
    pub normalize: bool,
}

/// Vectors for a request, in input order, and the tokens they took.
#[derive(Debug, Clone)]
pub struct Embeddings {
    pub vectors: Vec<Vec<f32>>,
    pub tokens: usize,
}

struct Job {
    texts: Vec<String>,
    pooling: Pooling,
    reply: oneshot::Sender<Result<Embeddings, EmbedError>>,
}

pub struct Embedder {
    jobs: mpsc::Sender<Job>,
    info: EmbedInfo,
    /// The model's tokenizer without truncation, for counting tokens.
    counter: tokenizers::Tokenizer,
}

fn read_json(path: &Path) -> Option<serde_json::Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

impl Embedder {
    /// Load a model folder in the Hugging Face layout and start its worker.
    pub fn load(dir: &Path, options: EmbedOptions) -> Result<Self, EmbedError> {
        let load_err = |reason: String| crate::hf::load_error(dir, reason);
        let (_, raw_config): (serde_json::Value, serde_json::Value) = crate::hf::read_config(dir)?;
        let vb = crate::hf::weights(dir)?;
        let model: Box<dyn TokenEncoder> = if is_gemma(&raw_config) {
            Box::new(
                GemmaEncoder::load(&vb, &raw_config, options.precision)
                    .map_err(|e| load_err(e.to_string()))?,
            )
        } else {
            Box::new(
                Encoder::load(&vb, &raw_config, options.precision)
                    .map_err(|e| load_err(e.to_string()))?,
            )
        };
        let max_positions = model.max_tokens();
        let max_tokens = read_json(&dir.join("sentence_bert_config.json"))
            .and_then(|v| v["max_seq_length"].as_u64())
            .map_or(max_positions, |m| m as usize)
            .min(max_positions);
        let modules = read_json(&dir.join("modules.json"));
        let modules = modules
            .as_ref()
            .and_then(|m| m.as_array())
            .map_or(&[][..], Vec::as_slice);
        // The folders of the pipeline's modules of one kind, in order.
        let modules_of = |kind: &'static str| {
            modules
                .iter()
                .filter(move |m| m["type"].as_str().is_some_and(|t| t.ends_with(kind)))
                .map(|m| dir.join(m["path"].as_str().unwrap_or("")))
        };
        let pooling_cfg = read_json(
            &modules_of("Pooling")
                .next()
                .unwrap_or_else(|| dir.join("1_Pooling"))
                .join("config.json"),
        );
        let native_pooling = match pooling_cfg {
            // sentence-transformers before 6 wrote one flag per mode, 6 one name.
            Some(p)
                if p["pooling_mode_cls_token"].as_bool() == Some(true)
                    || p["pooling_mode"].as_str() == Some("cls") =>
            {
                Pooling::Cls
            }
            _ => Pooling::Mean,
        };
        let normalize = modules_of("Normalize").next().is_some();
        let mut projections = Vec::new();
        let mut dimensions = model.hidden();
        for path in modules_of("Dense") {
            let dense = Projection::load(&path, dimensions)
                .map_err(|e| load_err(format!("{}: {e}", path.display())))?;
            dimensions = dense.outputs;
            projections.push(dense);
        }
        let tokenizer = crate::hf::tokenizer(dir, max_tokens)?;
        let mut counter = tokenizer.clone();
        counter
            .with_truncation(None)
            .map_err(|e| load_err(e.to_string()))?;
        let info = EmbedInfo {
            dimensions,
            max_tokens,
            native_pooling,
            normalize,
        };
        let (jobs, rx) = mpsc::channel(options.queue.max(1));
        let worker = Worker {
            model,
            projections,
            tokenizer: Arc::new(tokenizer),
            normalize,
            options,
        };
        std::thread::Builder::new()
            .name("hearth-embed".into())
            .spawn(move || worker.run(rx))
            .map_err(|e| load_err(e.to_string()))?;
        Ok(Self {
            jobs,
            info,
            counter,
        })
    }

    pub fn info(&self) -> &EmbedInfo {
        &self.info
    }

    /// Tokens of `text` for this model, special tokens excluded (how
    /// chunks are measured).
    pub fn count_tokens(&self, text: &str) -> usize {
        self.counter
            .encode(text, false)
            .map_or(text.len() / 4, |e| e.len())
    }

    /// Embed `texts`; merged with concurrent requests into shared batches.
    pub async fn embed(
        &self,
        texts: Vec<String>,
        pooling: Pooling,
    ) -> Result<Embeddings, EmbedError> {
        let (reply, rx) = oneshot::channel();
        self.jobs
            .try_send(Job {
                texts,
                pooling,
                reply,
            })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => EmbedError::QueueFull,
                mpsc::error::TrySendError::Closed(_) => EmbedError::Stopped,
            })?;
        rx.await.map_err(|_| EmbedError::Stopped)?
    }
}

/// A sentence-transformers `Dense` module: a projection of the pooled
/// vector (EmbeddingGemma maps 768 -> 3072 -> 768 with two of them).
struct Projection {
    dense: Dense,
    activation: Option<Activation>,
    outputs: usize,
}

impl Projection {
    fn load(dir: &Path, inputs: usize) -> Result<Self, String> {
        let config = read_json(&dir.join("config.json")).ok_or("no readable config.json")?;
        let features = |key: &str| config[key].as_u64().map(|v| v as usize);
        let (Some(declared), Some(outputs)) = (features("in_features"), features("out_features"))
        else {
            return Err("config.json lacks in_features/out_features".into());
        };
        if declared != inputs {
            return Err(format!(
                "in_features {declared} does not follow the previous module's {inputs} values"
            ));
        }
        let name = config["activation_function"]
            .as_str()
            .unwrap_or("torch.nn.modules.activation.Tanh");
        let activation = match name.rsplit('.').next().unwrap_or(name) {
            "Identity" => None,
            "Tanh" => Some(Activation::Tanh),
            "ReLU" => Some(Activation::Relu),
            "GELU" => Some(Activation::Gelu),
            _ => return Err(format!("unsupported activation_function `{name}`")),
        };
        let vb = crate::hf::weights(dir).map_err(|e| e.to_string())?;
        let dense = Dense::load(&vb.pp("linear"), inputs, outputs).map_err(|e| e.to_string())?;
        Ok(Self {
            dense,
            activation,
            outputs,
        })
    }

    fn apply(&self, x: &[f32]) -> Vec<f32> {
        let mut y = self.dense.apply(x);
        if let Some(activation) = self.activation {
            crate::encoder::activate(&mut y, activation);
        }
        y
    }
}

struct Worker {
    model: Box<dyn TokenEncoder>,
    /// `Dense` modules applied after pooling, in order.
    projections: Vec<Projection>,
    tokenizer: Arc<Tokenizer>,
    normalize: bool,
    options: EmbedOptions,
}

/// One text of one job, tokenized.
struct Item {
    job: usize,
    index: usize,
    ids: Vec<u32>,
    pooling: Pooling,
}

impl Worker {
    fn run(self, mut rx: mpsc::Receiver<Job>) {
        while let Some(first) = rx.blocking_recv() {
            let mut jobs = vec![first];
            let mut count = jobs[0].texts.len();
            let deadline = Instant::now() + self.options.max_wait;
            while count < self.options.max_batch {
                match rx.try_recv() {
                    Ok(job) => {
                        count += job.texts.len();
                        jobs.push(job);
                    }
                    // Wait for companions only when requests are arriving
                    // together; a lone request runs at once.
                    Err(mpsc::error::TryRecvError::Empty)
                        if jobs.len() > 1 && Instant::now() < deadline =>
                    {
                        std::thread::sleep(Duration::from_micros(200));
                    }
                    Err(_) => break,
                }
            }
            self.serve(jobs);
        }
    }

    fn serve(&self, jobs: Vec<Job>) {
        let mut results: Vec<Result<Embeddings, EmbedError>> = jobs
            .iter()
            .map(|j| {
                Ok(Embeddings {
                    vectors: vec![Vec::new(); j.texts.len()],
                    tokens: 0,
                })
            })
            .collect();
        let mut items = Vec::new();
        for (job_index, job) in jobs.iter().enumerate() {
            if job.reply.is_closed() {
                continue;
            }
            for (index, text) in job.texts.iter().enumerate() {
                match self.tokenizer.encode(text.as_str(), true) {
                    Ok(enc) => items.push(Item {
                        job: job_index,
                        index,
                        ids: enc.get_ids().to_vec(),
                        pooling: job.pooling,
                    }),
                    Err(e) => results[job_index] = Err(EmbedError::Tokenize(e.to_string())),
                }
            }
        }
        // Similar lengths together: each sub-batch pads to its own longest text.
        items.sort_by_key(|it| it.ids.len());
        for chunk in items.chunks(self.options.max_batch.max(1)) {
            match self.forward(chunk) {
                Ok(vectors) => {
                    for (item, vector) in chunk.iter().zip(vectors) {
                        if let Ok(out) = &mut results[item.job] {
                            out.tokens += item.ids.len();
                            out.vectors[item.index] = vector;
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "embedding batch failed");
                    for item in chunk {
                        results[item.job] = Err(EmbedError::Compute(e.to_string()));
                    }
                }
            }
        }
        for (job, result) in jobs.into_iter().zip(results) {
            let _ = job.reply.send(result);
        }
    }

    fn forward(&self, chunk: &[Item]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let sequences: Vec<&[u32]> = chunk.iter().map(|i| i.ids.as_slice()).collect();
        let hidden = self.model.forward(&sequences).map_err(compute)?;
        let width = self.model.hidden();
        Ok(chunk
            .iter()
            .zip(split(&hidden, width, &sequences))
            .map(|(item, rows)| {
                let mut v = match item.pooling {
                    Pooling::Cls => first_row(rows, width),
                    Pooling::Mean => {
                        let mut mean = vec![0f32; width];
                        for row in rows.chunks_exact(width) {
                            mean.iter_mut().zip(row).for_each(|(m, x)| *m += x);
                        }
                        let n = item.ids.len().max(1) as f32;
                        mean.iter_mut().for_each(|m| *m /= n);
                        mean
                    }
                };
                for projection in &self.projections {
                    v = projection.apply(&v);
                }
                if self.normalize {
                    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
                    v.iter_mut().for_each(|x| *x /= norm);
                }
                v
            })
            .collect())
    }
}
