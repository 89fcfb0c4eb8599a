//! The scheduler loop of one loaded model: continuous batching over llama.cpp
//! sequences.
//!
//! Each step builds one llama.cpp batch from (a) the last sampled token of
//! every sequence that is decoding and (b) prompt chunks of sequences still in
//! prefill, within the batch budget; after `decode`, every sequence whose
//! logits were requested samples its next token. Requests join between steps
//! (a free sequence takes the next queued job) and leave between steps (done,
//! or their reply channel closed because the client went away).
//!
//! A finished sequence keeps its KV cells: the next job placed on it reuses
//! the longest common token prefix (multi-turn chats and shared system
//! prompts skip that part of the prefill).
//!
//! A job with images is prefilled whole when it is placed: mtmd encodes the
//! images and decodes text and image embeddings into its sequence (image
//! embeddings go in batches of their own, some models attend to them
//! non-causally), and its first token is sampled at the next step from the
//! logits kept then. Its cells are never reused (image positions hold no
//! token to compare).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc as std_mpsc;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::{LlamaLoraAdapter, LlamaModel};
use llama_cpp_2::mtmd::{MtmdBitmap, MtmdContext, MtmdContextParams, MtmdInputText};
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use tokio::sync::mpsc;

use super::sampling::Sampler;
use super::{FinishReason, GenEvent, Job, Priority, TextGenError, TextGenOptions};

/// The adapters loaded into a model, by file.
type Adapters = HashMap<PathBuf, LlamaLoraAdapter>;

/// Why a scheduler stopped.
enum Outcome {
    /// Every sender is gone.
    Closed,
    /// A job needs an adapter that is not loaded: loading one takes the
    /// model mutably, so it waits until no sequence runs.
    LoadAdapter(Box<Job>),
}

fn context_params(options: &TextGenOptions) -> LlamaContextParams {
    let n_ctx = options.ctx_per_seq * options.parallel as u32;
    LlamaContextParams::default()
        .with_n_ctx(std::num::NonZeroU32::new(n_ctx))
        .with_n_batch(options.batch)
        .with_n_ubatch(options.batch)
        .with_n_seq_max(options.parallel as u32)
        .with_kv_unified(false)
        .with_n_threads(options.threads as i32)
        .with_n_threads_batch(options.threads as i32)
}

/// Starts the model's scheduler thread, which owns the model: LoRA
/// adapters are loaded into it between scheduler runs.
pub(super) fn spawn(
    model: LlamaModel,
    backend: &'static LlamaBackend,
    options: TextGenOptions,
    projector: Option<PathBuf>,
    mut jobs: mpsc::Receiver<Job>,
) -> Result<(), String> {
    let (ready_tx, ready_rx) = std_mpsc::channel::<Result<(), String>>();
    std::thread::Builder::new()
        .name("hearth-textgen".into())
        .spawn(move || {
            let mut model = model;
            let mut adapters = Adapters::new();
            let mut carried: Option<Job> = None;
            let mut ready = Some(ready_tx);
            let mut mtmd = match projector
                .as_deref()
                .map(|p| load_projector(p, &model, &options))
            {
                Some(Err(reason)) => {
                    let _ = ready.take().map(|tx| tx.send(Err(reason)));
                    return;
                }
                Some(Ok(ctx)) => Some(ctx),
                None => None,
            };
            loop {
                let ctx = match model.new_context(backend, context_params(&options)) {
                    Ok(ctx) => ctx,
                    Err(e) => {
                        let reason = format!("cannot create context: {e}");
                        match ready.take() {
                            Some(tx) => {
                                let _ = tx.send(Err(reason));
                            }
                            None => tracing::error!(%reason, "text generation stopped"),
                        }
                        return;
                    }
                };
                if let Some(tx) = ready.take() {
                    let _ = tx.send(Ok(()));
                }
                let outcome =
                    Scheduler::new(&model, ctx, options.clone(), &mut adapters, mtmd.as_mut())
                        .run(&mut jobs, carried.take());
                match outcome {
                    Outcome::Closed => return,
                    Outcome::LoadAdapter(job) => {
                        let path = job.params.adapter.clone().unwrap_or_default();
                        match model.lora_adapter_init(&path) {
                            Ok(adapter) => {
                                tracing::info!(path = %path.display(), "LoRA adapter loaded");
                                adapters.insert(path, adapter);
                                carried = Some(*job);
                            }
                            Err(e) => {
                                let _ = job.reply.send(GenEvent::Failed(TextGenError::Adapter(
                                    format!("{}: {e}", path.display()),
                                )));
                            }
                        }
                    }
                }
            }
        })
        .map_err(|e| e.to_string())?;
    ready_rx
        .recv()
        .map_err(|_| "scheduler thread exited during start".to_string())?
}

/// mtmd's context for the projector at `path` over `model`.
fn load_projector(
    path: &std::path::Path,
    model: &LlamaModel,
    options: &TextGenOptions,
) -> Result<MtmdContext, String> {
    let params = MtmdContextParams {
        use_gpu: false,
        print_timings: false,
        n_threads: options.threads as i32,
        ..MtmdContextParams::default()
    };
    let path_text = path.to_str().ok_or("the projector's path is not UTF-8")?;
    let ctx = MtmdContext::init_from_file(path_text, model, &params)
        .map_err(|e| format!("multimodal projector {}: {e}", path.display()))?;
    if !ctx.support_vision() {
        return Err(format!(
            "multimodal projector {}: it has no vision encoder",
            path.display()
        ));
    }
    Ok(ctx)
}

/// One llama.cpp sequence and the job running on it, if any.
struct Slot {
    id: i32,
    /// Tokens whose KV cells this sequence holds, in position order.
    cached: Vec<i32>,
    /// The adapter those cells were computed with.
    cached_adapter: Option<PathBuf>,
    run: Option<Running>,
}

struct Running {
    job: Job,
    sampler: Sampler,
    /// llama.cpp's grammar sampler when the output is held to a grammar.
    grammar: Option<LlamaSampler>,
    /// Prompt tokens not yet sent to llama.cpp.
    pending: Vec<i32>,
    /// The sampled token to feed at the next step.
    next: Option<i32>,
    /// Index in the current batch whose logits this sequence samples from.
    logits_at: Option<i32>,
    /// Logits kept from a prefill done outside the step (a job with
    /// images), sampled at the next step.
    prefilled: Option<Vec<f32>>,
    generated: u32,
    prompt_tokens: u32,
    text: TextAssembler,
}

struct Scheduler<'m> {
    model: &'m LlamaModel,
    ctx: LlamaContext<'m>,
    options: TextGenOptions,
    slots: Vec<Slot>,
    batch: LlamaBatch<'static>,
    /// Logits after a grammar masked them, reused between steps.
    scratch: Vec<f32>,
    adapters: &'m mut Adapters,
    /// The adapter set on the context now.
    applied: Option<PathBuf>,
    /// The adapter group of the last step, so that groups take turns.
    last_group: Option<Option<PathBuf>>,
    /// A job whose adapter is not loaded yet.
    parked: Option<Job>,
    /// mtmd's context when the model has a multimodal projector.
    mtmd: Option<&'m mut MtmdContext>,
}

impl<'m> Scheduler<'m> {
    fn new(
        model: &'m LlamaModel,
        ctx: LlamaContext<'m>,
        options: TextGenOptions,
        adapters: &'m mut Adapters,
        mtmd: Option<&'m mut MtmdContext>,
    ) -> Self {
        let slots = (0..options.parallel as i32)
            .map(|id| Slot {
                id,
                cached: Vec::new(),
                cached_adapter: None,
                run: None,
            })
            .collect();
        let batch = LlamaBatch::new(options.batch as usize, 1);
        Self {
            model,
            ctx,
            options,
            slots,
            batch,
            scratch: Vec::new(),
            adapters,
            applied: None,
            last_group: None,
            parked: None,
            mtmd,
        }
    }

    fn run(mut self, jobs: &mut mpsc::Receiver<Job>, carried: Option<Job>) -> Outcome {
        if let Some(job) = carried {
            self.admit(job);
        }
        loop {
            if self.parked.as_ref().is_some_and(|j| j.reply.is_closed()) {
                self.parked = None;
            }
            let idle = self.slots.iter().all(|s| s.run.is_none());
            if let Some(job) = self.parked.take() {
                if idle {
                    return Outcome::LoadAdapter(Box::new(job));
                }
                // No new work joins until the adapter is loaded.
                self.parked = Some(job);
            } else {
                if idle {
                    match jobs.blocking_recv() {
                        Some(job) => self.admit(job),
                        None => return Outcome::Closed,
                    }
                }
                while self.parked.is_none() && self.slots.iter().any(|s| s.run.is_none()) {
                    match jobs.try_recv() {
                        Ok(job) => self.admit(job),
                        Err(_) => break,
                    }
                }
            }
            self.drop_cancelled();
            self.step();
        }
    }

    /// Place a job on the free sequence sharing the longest prefix with it.
    fn admit(&mut self, job: Job) {
        if job.reply.is_closed() {
            return;
        }
        if let Some(path) = &job.params.adapter
            && !self.adapters.contains_key(path)
        {
            self.parked = Some(job);
            return;
        }
        let Some(slot_index) = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.run.is_none())
            .max_by_key(|(_, s)| reusable(s, &job))
            .map(|(i, _)| i)
        else {
            return;
        };
        let grammar = match &job.params.grammar {
            None => None,
            Some(g) => {
                let made = match &g.trigger {
                    None => LlamaSampler::grammar(self.model, &g.gbnf, "root"),
                    Some(t) => LlamaSampler::grammar_lazy(self.model, &g.gbnf, "root", [t], &[]),
                };
                match made {
                    Ok(s) => Some(s),
                    Err(e) => {
                        let _ = job
                            .reply
                            .send(GenEvent::Failed(TextGenError::Grammar(e.to_string())));
                        return;
                    }
                }
            }
        };
        if job.media.is_some() {
            self.admit_media(slot_index, job, grammar);
            return;
        }
        let slot = &mut self.slots[slot_index];
        // At least one prompt token must be decoded to get logits.
        let mut keep = reusable(slot, &job).min(job.prompt.len() - 1);
        slot.cached_adapter = job.params.adapter.clone();
        let removed = self
            .ctx
            .clear_kv_cache_seq(Some(slot.id as u32), Some(keep as u32), None)
            .unwrap_or(false);
        // Sliding-window caches may have dropped early cells, or refuse a
        // partial removal: then start the sequence from scratch.
        if !removed || (keep > 0 && self.ctx.kv_cache_seq_pos_min(slot.id) > 0) {
            let _ = self
                .ctx
                .clear_kv_cache_seq(Some(slot.id as u32), None, None);
            keep = 0;
        }
        slot.cached.truncate(keep);
        let sampler = Sampler::new(&job.params, &job.prompt);
        let prompt_tokens = job.prompt.len() as u32;
        let stops = job.params.stop.clone();
        slot.run = Some(Running {
            pending: job.prompt[keep..].to_vec(),
            job,
            sampler,
            grammar,
            next: None,
            logits_at: None,
            prefilled: None,
            generated: 0,
            prompt_tokens,
            text: TextAssembler::new(stops),
        });
    }

    /// Places a job with images on `slot_index`: tokenized around its
    /// images and prefilled whole now.
    fn admit_media(&mut self, slot_index: usize, mut job: Job, grammar: Option<LlamaSampler>) {
        let fail = |job: &Job, e: TextGenError| {
            let _ = job.reply.send(GenEvent::Failed(e));
        };
        let (Some(mtmd), Some(media)) = (self.mtmd.as_deref_mut(), job.media.take()) else {
            fail(
                &job,
                TextGenError::NoVision("this model has no multimodal projector".into()),
            );
            return;
        };
        let mut bitmaps = Vec::with_capacity(media.images.len());
        for (i, bytes) in media.images.iter().enumerate() {
            match MtmdBitmap::from_buffer(mtmd, bytes, false) {
                Ok(bitmap) => bitmaps.push(bitmap),
                Err(e) => {
                    let what = if media.images.len() == 1 {
                        "the image".to_string()
                    } else {
                        format!("image {}", i + 1)
                    };
                    fail(
                        &job,
                        TextGenError::BadImage(format!("{what} cannot be decoded: {e}")),
                    );
                    return;
                }
            }
        }
        let refs: Vec<&MtmdBitmap> = bitmaps.iter().collect();
        let input = MtmdInputText {
            text: media.text,
            add_special: media.add_special,
            parse_special: true,
        };
        let chunks = match mtmd.tokenize(input, &refs) {
            Ok(chunks) => chunks,
            Err(e) => {
                fail(
                    &job,
                    TextGenError::BadImage(format!("the images could not be prepared: {e}")),
                );
                return;
            }
        };
        let context = self.options.ctx_per_seq;
        let positions = usize::try_from(chunks.total_positions()).unwrap_or(usize::MAX);
        if positions >= context as usize {
            fail(
                &job,
                TextGenError::ContextExceeded {
                    prompt_tokens: chunks.total_tokens(),
                    context,
                },
            );
            return;
        }
        let text_tokens: Vec<i32> = (0..chunks.len())
            .filter_map(|i| chunks.get(i))
            .filter_map(|c| {
                c.text_tokens()
                    .map(|t| t.iter().map(|t| t.0).collect::<Vec<_>>())
            })
            .flatten()
            .collect();
        let slot = &mut self.slots[slot_index];
        let _ = self
            .ctx
            .clear_kv_cache_seq(Some(slot.id as u32), None, None);
        slot.cached.clear();
        slot.cached_adapter = job.params.adapter.clone();
        let n_past = match chunks.eval_chunks(
            mtmd,
            &mut self.ctx,
            0,
            slot.id,
            self.options.batch as i32,
            true,
        ) {
            Ok(n) => usize::try_from(n).unwrap_or(0),
            Err(e) => {
                let _ = self
                    .ctx
                    .clear_kv_cache_seq(Some(slot.id as u32), None, None);
                fail(
                    &job,
                    TextGenError::Decode(format!("prompt with images: {e}")),
                );
                return;
            }
        };
        // Image positions hold no token: a sentinel no prompt matches.
        slot.cached = vec![-1; n_past];
        let logits = self.ctx.get_logits_ith(-1).to_vec();
        job.params.max_tokens = job
            .params
            .max_tokens
            .min(context.saturating_sub(n_past as u32));
        let sampler = Sampler::new(&job.params, &text_tokens);
        let stops = job.params.stop.clone();
        slot.run = Some(Running {
            pending: Vec::new(),
            job,
            sampler,
            grammar,
            next: None,
            logits_at: None,
            prefilled: Some(logits),
            generated: 0,
            prompt_tokens: chunks.total_tokens() as u32,
            text: TextAssembler::new(stops),
        });
    }

    fn drop_cancelled(&mut self) {
        for slot in &mut self.slots {
            if slot.run.as_ref().is_some_and(|r| r.job.reply.is_closed()) {
                tracing::debug!(seq = slot.id, "client went away; sequence freed");
                slot.run = None;
            }
        }
    }

    fn step(&mut self) {
        self.batch.clear();
        let budget = self.options.batch as usize;
        let mut used = 0usize;
        // Background sequences wait while any interactive one runs.
        let interactive = self.slots.iter().any(|s| {
            s.run
                .as_ref()
                .is_some_and(|r| r.job.priority == Priority::Interactive)
        });
        // llama.cpp applies adapters to the whole context: sequences with
        // different adapters take turns, one group per step.
        let group = self.next_group(interactive);
        if let Err(e) = self.apply(group.as_ref()) {
            tracing::error!(error = %e, "LoRA adapter could not be set");
            for slot in &mut self.slots {
                if slot
                    .run
                    .as_ref()
                    .is_some_and(|r| r.job.params.adapter == group)
                    && let Some(run) = slot.run.take()
                {
                    let _ = run
                        .job
                        .reply
                        .send(GenEvent::Failed(TextGenError::Adapter(e.clone())));
                }
            }
            return;
        }
        self.last_group = Some(group.clone());
        let sits_out = |run: &Running| {
            (interactive && run.job.priority == Priority::Background)
                || run.job.params.adapter != group
        };
        // Decoding sequences first: one token each keeps their latency flat.
        for slot in &mut self.slots {
            let Some(run) = slot.run.as_mut() else {
                continue;
            };
            run.logits_at = None;
            if sits_out(run) {
                continue;
            }
            if let Some(token) = run.next.take() {
                let pos = slot.cached.len() as i32;
                if self
                    .batch
                    .add(LlamaToken(token), pos, &[slot.id], true)
                    .is_err()
                {
                    run.next = Some(token);
                    continue;
                }
                slot.cached.push(token);
                run.logits_at = Some(used as i32);
                used += 1;
            }
        }
        // Then prompt chunks, as much as the batch budget allows.
        for slot in &mut self.slots {
            let Some(run) = slot.run.as_mut() else {
                continue;
            };
            if run.pending.is_empty() || used >= budget || sits_out(run) {
                continue;
            }
            let take = run.pending.len().min(budget - used);
            let finishes = take == run.pending.len();
            for (i, &token) in run.pending[..take].iter().enumerate() {
                let last = finishes && i + 1 == take;
                let pos = slot.cached.len() as i32;
                if self
                    .batch
                    .add(LlamaToken(token), pos, &[slot.id], last)
                    .is_err()
                {
                    break;
                }
                slot.cached.push(token);
                if last {
                    run.logits_at = Some(used as i32);
                }
                used += 1;
            }
            run.pending.drain(..take);
        }
        let prefilled = self
            .slots
            .iter()
            .any(|s| s.run.as_ref().is_some_and(|r| r.prefilled.is_some()));
        if used == 0 && !prefilled {
            return;
        }
        if used > 0
            && let Err(e) = self.ctx.decode(&mut self.batch)
        {
            tracing::error!(error = %e, "llama.cpp decode failed; failing the batch");
            for slot in &mut self.slots {
                if let Some(run) = slot.run.take() {
                    let _ = run
                        .job
                        .reply
                        .send(GenEvent::Failed(TextGenError::Decode(e.to_string())));
                }
                let _ = self
                    .ctx
                    .clear_kv_cache_seq(Some(slot.id as u32), None, None);
                slot.cached.clear();
            }
            return;
        }
        let vocab = self.model.vocab();
        for slot in &mut self.slots {
            let Some(run) = slot.run.as_mut() else {
                continue;
            };
            let kept = run.prefilled.take();
            let logits: &[f32] = match (&kept, run.logits_at) {
                (Some(kept), _) => kept,
                (None, Some(at)) => self.ctx.get_logits_ith(at),
                (None, None) => continue,
            };
            let token = match run.grammar.as_mut() {
                None => run.sampler.sample(logits),
                Some(grammar) => constrained(grammar, &mut run.sampler, logits, &mut self.scratch),
            };
            run.sampler.accept(token);
            // An end-of-generation token ends the sequence here; llama.cpp's
            // grammar aborts the process when handed one it did not allow.
            if !vocab.is_eog(LlamaToken(token))
                && let Some(grammar) = run.grammar.as_mut()
                && let Err(e) = grammar.try_accept(LlamaToken(token))
            {
                let _ = run
                    .job
                    .reply
                    .send(GenEvent::Failed(TextGenError::Grammar(e.to_string())));
                slot.run = None;
                continue;
            }
            run.generated += 1;
            let finish = if !run.job.params.ignore_eos && vocab.is_eog(LlamaToken(token)) {
                Some(FinishReason::Stop)
            } else {
                let piece = vocab.token_to_piece(LlamaToken(token), false, None);
                let (text, stopped) = run.text.push(&piece);
                if !text.is_empty() {
                    let _ = run.job.reply.send(GenEvent::Text(text));
                }
                if stopped {
                    Some(FinishReason::Stop)
                } else if run.generated >= run.job.params.max_tokens
                    || slot.cached.len() + 1 >= self.options.ctx_per_seq as usize
                {
                    Some(FinishReason::Length)
                } else {
                    run.next = Some(token);
                    None
                }
            };
            if let Some(reason) = finish {
                let rest = run.text.flush();
                if !rest.is_empty() {
                    let _ = run.job.reply.send(GenEvent::Text(rest));
                }
                let completion_tokens = if reason == FinishReason::Stop && !run.text.stopped() {
                    // The end-of-generation token is not part of the answer.
                    run.generated - 1
                } else {
                    run.generated
                };
                let _ = run.job.reply.send(GenEvent::Done {
                    reason,
                    prompt_tokens: run.prompt_tokens,
                    completion_tokens,
                });
                slot.run = None;
            }
        }
    }
}

/// Samples under a grammar. The unconstrained choice is tried first and
/// kept when the grammar allows it (most steps, and far cheaper than masking
/// the whole vocabulary); otherwise every token the grammar forbids is
/// masked and the draw repeated.
fn constrained(
    grammar: &mut LlamaSampler,
    sampler: &mut Sampler,
    logits: &[f32],
    scratch: &mut Vec<f32>,
) -> i32 {
    let first = sampler.sample(logits);
    let mut one = LlamaTokenDataArray::new(
        vec![LlamaTokenData::new(
            LlamaToken(first),
            logits[first as usize],
            0.0,
        )],
        false,
    );
    grammar.apply(&mut one);
    if one.data[0].logit().is_finite() {
        return first;
    }
    let mut all = LlamaTokenDataArray::from_iter(
        logits
            .iter()
            .enumerate()
            .map(|(i, &l)| LlamaTokenData::new(LlamaToken(i as i32), l, 0.0)),
        false,
    );
    grammar.apply(&mut all);
    scratch.clear();
    scratch.resize(logits.len(), f32::NEG_INFINITY);
    for d in &all.data {
        if let Some(slot) = scratch.get_mut(d.id().0 as usize) {
            *slot = d.logit();
        }
    }
    sampler.sample(scratch)
}

impl Scheduler<'_> {
    /// The adapter group that runs this step: the only one, or the next
    /// after the last step's, so that every group advances.
    fn next_group(&self, interactive: bool) -> Option<PathBuf> {
        let mut groups: Vec<&Option<PathBuf>> = self
            .slots
            .iter()
            .filter_map(|s| s.run.as_ref())
            .filter(|r| !(interactive && r.job.priority == Priority::Background))
            .map(|r| &r.job.params.adapter)
            .collect();
        groups.sort();
        groups.dedup();
        match groups.as_slice() {
            [] => None,
            [only] => (*only).clone(),
            many => {
                let after = self.last_group.as_ref();
                many.iter()
                    .find(|g| after.is_none_or(|last| **g > last))
                    .or(many.first())
                    .and_then(|g| (*g).clone())
            }
        }
    }

    /// Sets `group`'s adapter on the context (or none) when it changes.
    fn apply(&mut self, group: Option<&PathBuf>) -> Result<(), String> {
        if self.applied.as_ref() == group {
            return Ok(());
        }
        match group {
            Some(path) => {
                let adapter = self
                    .adapters
                    .get_mut(path)
                    .ok_or_else(|| format!("{} is not loaded", path.display()))?;
                self.ctx
                    .lora_adapter_set(adapter, 1.0)
                    .map_err(|e| e.to_string())?;
            }
            None => {
                if let Some(adapter) = self.applied.as_ref().and_then(|p| self.adapters.get_mut(p))
                {
                    self.ctx
                        .lora_adapter_remove(adapter)
                        .map_err(|e| e.to_string())?;
                }
            }
        }
        self.applied = group.cloned();
        Ok(())
    }
}

/// Prompt tokens of `job` whose KV cells `slot` already holds (cells made
/// with another adapter do not count).
fn reusable(slot: &Slot, job: &Job) -> usize {
    if slot.cached_adapter != job.params.adapter {
        return 0;
    }
    common_prefix(&slot.cached, &job.prompt)
}

fn common_prefix(a: &[i32], b: &[i32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Turns token bytes into whole UTF-8 text and applies stop strings, holding
/// back the tail that could still become a stop string.
struct TextAssembler {
    bytes: Vec<u8>,
    text: String,
    emitted: usize,
    stops: Vec<String>,
    stopped: bool,
}

impl TextAssembler {
    fn new(stops: Vec<String>) -> Self {
        Self {
            bytes: Vec::new(),
            text: String::new(),
            emitted: 0,
            stops,
            stopped: false,
        }
    }

    fn stopped(&self) -> bool {
        self.stopped
    }

    /// Add token bytes; returns text that is safe to emit and whether a stop
    /// string was hit.
    fn push(&mut self, piece: &[u8]) -> (String, bool) {
        self.bytes.extend_from_slice(piece);
        loop {
            match std::str::from_utf8(&self.bytes) {
                Ok(s) => {
                    self.text.push_str(s);
                    self.bytes.clear();
                    break;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // Safe: the prefix up to `valid_up_to` is valid UTF-8.
                    self.text
                        .push_str(&String::from_utf8_lossy(&self.bytes[..valid]));
                    match e.error_len() {
                        // An incomplete character at the end: wait for more bytes.
                        None => {
                            self.bytes.drain(..valid);
                            break;
                        }
                        Some(bad) => {
                            self.text.push('\u{FFFD}');
                            self.bytes.drain(..valid + bad);
                        }
                    }
                }
            }
        }
        if !self.stops.is_empty() {
            let search_from = self
                .emitted
                .saturating_sub(self.stops.iter().map(String::len).max().unwrap_or(0));
            let search_from = floor_char_boundary(&self.text, search_from);
            if let Some(at) = self
                .stops
                .iter()
                .filter_map(|s| {
                    self.text[search_from..]
                        .find(s.as_str())
                        .map(|i| i + search_from)
                })
                .min()
            {
                let out = self.text[self.emitted..at.max(self.emitted)].to_string();
                self.emitted = self.text.len();
                self.text.truncate(at);
                self.stopped = true;
                return (out, true);
            }
        }
        let hold = self.holdback();
        let end = floor_char_boundary(&self.text, self.text.len() - hold).max(self.emitted);
        let out = self.text[self.emitted..end].to_string();
        self.emitted = end;
        (out, false)
    }

    /// Length of the longest text suffix that is a proper prefix of a stop string.
    fn holdback(&self) -> usize {
        self.stops
            .iter()
            .map(|stop| {
                (1..stop.len())
                    .rev()
                    .find(|&n| stop.is_char_boundary(n) && self.text.ends_with(&stop[..n]))
                    .unwrap_or(0)
            })
            .max()
            .unwrap_or(0)
    }

    fn flush(&mut self) -> String {
        if self.stopped {
            return String::new();
        }
        if !self.bytes.is_empty() {
            self.text.push_str(&String::from_utf8_lossy(&self.bytes));
            self.bytes.clear();
        }
        let out = self.text[self.emitted..].to_string();
        self.emitted = self.text.len();
        out
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_utf8_is_held_until_complete() {
        let mut t = TextAssembler::new(vec![]);
        let e = "é".as_bytes();
        assert_eq!(t.push(&e[..1]).0, "");
        assert_eq!(t.push(&e[1..]).0, "é");
    }

    #[test]
    fn stop_string_across_tokens_is_cut() {
        let mut t = TextAssembler::new(vec!["END".into()]);
        let mut out = String::new();
        for piece in ["Hello E", "N", "D more"] {
            let (s, stopped) = t.push(piece.as_bytes());
            out.push_str(&s);
            if stopped {
                break;
            }
        }
        out.push_str(&t.flush());
        assert_eq!(out, "Hello ");
        assert!(t.stopped());
    }
}
