//! Retrieval for every AI Search surface: the options a request may give
//! (over the instance's settings), the vector arm (embed, Vectorize query),
//! the keyword arm (BM25 over the instance's FTS5 index), their fusion, and
//! the chunks with their text, file and scores.

use std::collections::HashMap;

use hearth_search::retrieve::{
    Fusion, Hit, KeywordTokenizer, MatchMode, fts_query, fuse, keyword_score,
};
use hearth_search::source::folder_of;
use hearth_store::SearchChunkRow;
use hearth_types::ApiError;
use hearth_types::vectorize::ReturnMetadata;
use hearth_vector::{Filter, QueryOptions};
use serde_json::{Map, Value, json};

use super::{DEFAULT_EMBEDDING_MODEL, bad, index_name, internal, number};
use crate::AppState;
use crate::error::Failure;

/// Which rankings a search uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetrievalType {
    Vector,
    Keyword,
    Hybrid,
}

impl RetrievalType {
    fn parse(name: &str) -> Option<Self> {
        match name {
            "vector" => Some(Self::Vector),
            "keyword" => Some(Self::Keyword),
            "hybrid" => Some(Self::Hybrid),
            _ => None,
        }
    }
}

/// How an instance indexes, from its settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexMethod {
    pub vector: bool,
    pub keyword: bool,
}

impl IndexMethod {
    pub fn of(settings: &Map<String, Value>) -> Self {
        let method = settings.get("index_method");
        let flag = |k: &str, default: bool| {
            method
                .and_then(|m| m.get(k))
                .and_then(Value::as_bool)
                .unwrap_or(default)
        };
        Self {
            vector: flag("vector", true),
            keyword: flag("keyword", false),
        }
    }

    fn default_retrieval(self) -> RetrievalType {
        match (self.vector, self.keyword) {
            (true, true) => RetrievalType::Hybrid,
            (false, true) => RetrievalType::Keyword,
            _ => RetrievalType::Vector,
        }
    }
}

/// The keyword tokenizer an instance was created with.
pub fn tokenizer_of(settings: &Map<String, Value>) -> KeywordTokenizer {
    settings
        .get("indexing_options")
        .and_then(|o| o.get("keyword_tokenizer"))
        .and_then(Value::as_str)
        .and_then(KeywordTokenizer::parse)
        .unwrap_or(KeywordTokenizer::Porter)
}

/// What one search asks for, settled against the instance's settings.
#[derive(Debug, Clone)]
pub struct Retrieval {
    pub kind: RetrievalType,
    pub max_results: usize,
    pub threshold: f32,
    pub filter: Option<Filter>,
    pub fusion: Fusion,
    pub match_mode: MatchMode,
    /// Reorder the results with a cross-encoder, dropping those it scores
    /// under its own threshold.
    pub rerank: Option<Rerank>,
}

/// The reranking step's model and threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct Rerank {
    pub model: String,
    pub threshold: f32,
}

/// The reranker when neither the request nor the instance names one.
pub const DEFAULT_RERANKING_MODEL: &str = "@cf/baai/bge-reranker-base";

impl Rerank {
    /// From the instance's `reranking` / `reranking_model` and the
    /// request's `reranking` object (`enabled`, `model`, `match_threshold`).
    pub fn from_request(
        settings: &Map<String, Value>,
        request: Option<&Value>,
        path: &str,
    ) -> Result<Option<Self>, Failure> {
        let request = match request {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(o)) => o.clone(),
            Some(_) => return Err(bad(format!("`{path}reranking` must be an object"))),
        };
        let enabled = match request.get("enabled") {
            None | Some(Value::Null) => settings
                .get("reranking")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(bad(format!("`{path}reranking.enabled` must be a boolean"))),
        };
        if !enabled {
            return Ok(None);
        }
        let model = match request.get("model") {
            Some(Value::String(m)) if !m.is_empty() => m.clone(),
            None | Some(Value::Null) | Some(Value::String(_)) => settings
                .get("reranking_model")
                .and_then(Value::as_str)
                .filter(|m| !m.is_empty())
                .unwrap_or(DEFAULT_RERANKING_MODEL)
                .to_string(),
            Some(_) => return Err(bad(format!("`{path}reranking.model` must be a string"))),
        };
        let threshold = number(&request, "match_threshold", 0.4, 0.0, 1.0).map_err(|_| {
            bad(format!(
                "`{path}reranking.match_threshold` must be a number from 0 to 1"
            ))
        })? as f32;
        Ok(Some(Self { model, threshold }))
    }
}

fn choice<T>(
    obj: &Map<String, Value>,
    key: &str,
    path: &str,
    parse: fn(&str) -> Option<T>,
    allowed: &str,
) -> Result<Option<T>, Failure> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => parse(s)
            .map(Some)
            .ok_or_else(|| bad(format!("`{path}{key}` must be one of {allowed}, got `{s}`"))),
        Some(other) => Err(bad(format!(
            "`{path}{key}` must be one of {allowed}, got {other}"
        ))),
    }
}

impl Retrieval {
    /// `retrieval` is the request's `ai_search_options.retrieval` (or the
    /// legacy fields mapped onto it); `path` names it in errors.
    pub fn from_request(
        settings: &Map<String, Value>,
        retrieval: &Map<String, Value>,
        path: &str,
    ) -> Result<Self, Failure> {
        let method = IndexMethod::of(settings);
        let kind = choice(
            retrieval,
            "retrieval_type",
            path,
            RetrievalType::parse,
            "vector, keyword, hybrid",
        )?
        .unwrap_or(method.default_retrieval());
        let needs_vector = kind != RetrievalType::Keyword;
        let needs_keyword = kind != RetrievalType::Vector;
        if (needs_vector && !method.vector) || (needs_keyword && !method.keyword) {
            return Err(bad(format!(
                "`{path}retrieval_type`: this instance indexes with {} only; enable the other with `index_method` on the instance",
                if method.vector { "vectors" } else { "keywords" }
            )));
        }
        let max_results = number(
            retrieval,
            "max_num_results",
            number(settings, "max_num_results", 10.0, 1.0, 50.0)?,
            1.0,
            50.0,
        )? as usize;
        let threshold = number(
            retrieval,
            "match_threshold",
            number(settings, "score_threshold", 0.4, 0.0, 1.0)?,
            0.0,
            1.0,
        )? as f32;
        let filter = match retrieval.get("filters") {
            None | Some(Value::Null) => None,
            Some(f) => Some(Filter::parse(f).map_err(|e| bad(format!("`{path}filters`: {e}")))?),
        };
        let instance_options = settings
            .get("retrieval_options")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let fusion = match choice(retrieval, "fusion_method", path, Fusion::parse, "rrf, max")? {
            Some(f) => f,
            None => choice(settings, "fusion_method", "", Fusion::parse, "rrf, max")?
                .unwrap_or(Fusion::Rrf),
        };
        let match_mode = match choice(
            retrieval,
            "keyword_match_mode",
            path,
            MatchMode::parse,
            "and, or",
        )? {
            Some(m) => m,
            None => choice(
                &instance_options,
                "keyword_match_mode",
                "retrieval_options.",
                MatchMode::parse,
                "and, or",
            )?
            .unwrap_or(MatchMode::And),
        };
        Ok(Self {
            kind,
            max_results,
            threshold,
            filter,
            fusion,
            match_mode,
            rerank: Rerank::from_request(settings, None, path)?,
        })
    }
}

/// A retrieved chunk with its file and how it scored.
#[derive(Debug, Clone)]
pub struct Found {
    pub chunk: SearchChunkRow,
    pub score: f32,
    /// Seconds, as stored in the chunk's metadata.
    pub timestamp: i64,
    pub folder: String,
    /// Everything stored with the chunk: folder, filename, timestamp and
    /// the item's custom metadata.
    pub metadata: Map<String, Value>,
    pub vector: Option<(usize, f32)>,
    pub keyword: Option<(usize, f32)>,
    pub fusion: Option<Fusion>,
    pub reranking: Option<f32>,
}

impl Found {
    /// The v2 API's chunk object.
    pub fn v2(&self) -> Value {
        let mut chunk = json!({
            "id": self.chunk.id,
            "type": "text",
            "score": self.score,
            "text": self.chunk.text,
            "item": {
                "key": self.chunk.key,
                "timestamp": self.timestamp,
                "metadata": self.metadata,
            },
        });
        let mut details = Map::new();
        if let Some((rank, score)) = self.vector {
            details.insert("vector_score".into(), json!(score));
            details.insert("vector_rank".into(), json!(rank));
        }
        if let Some((rank, score)) = self.keyword {
            details.insert("keyword_score".into(), json!(score));
            details.insert("keyword_rank".into(), json!(rank));
        }
        if let Some(f) = self.fusion {
            details.insert("fusion_method".into(), json!(f.name()));
        }
        if let Some(score) = self.reranking {
            details.insert("reranking_score".into(), json!(score));
        }
        chunk["scoring_details"] = Value::Object(details);
        chunk
    }
}

/// Runs a search over an instance. Each arm drops what scores under the
/// threshold before fusion; the fused score is the one returned.
pub async fn retrieve(
    state: &AppState,
    account: &str,
    instance: &str,
    settings: &Map<String, Value>,
    query: &str,
    r: &Retrieval,
) -> Result<Vec<Found>, Failure> {
    let store = state.app.meter().store();
    // Each arm brings its own best `max_num_results` to fusion. Deeper
    // arms let a chunk that both rank low outvote one arm's clear first
    // (bench/RESULTS.md: recall@5 on the Python FAQ fell from 0.953 to
    // 0.923 at 20 per arm).
    let depth = r.max_results;
    let mut vector_hits = Vec::new();
    let mut meta: HashMap<String, Map<String, Value>> = HashMap::new();
    if r.kind != RetrievalType::Keyword {
        let model = settings
            .get("embedding_model")
            .and_then(Value::as_str)
            .unwrap_or(DEFAULT_EMBEDDING_MODEL)
            .to_string();
        let (embedder, _) = state.app.embedder(&model).await?;
        let vector = embedder
            .embed(vec![query.to_string()], embedder.info().native_pooling)
            .await
            .map_err(|e| ApiError::from(hearth_runtime::AppError::from(e)))?
            .vectors
            .into_iter()
            .next()
            .ok_or_else(|| internal("no query vector"))?;
        let index = state
            .app
            .vectorize()
            .and_then(|v| v.get(account, &index_name(instance)))
            .map_err(ApiError::from)?;
        let matches = index.query(
            &vector,
            &QueryOptions {
                top_k: depth,
                namespace: None,
                filter: r.filter.clone(),
                return_values: false,
                return_metadata: ReturnMetadata::All,
                ef: index.default_ef().max(depth),
            },
        );
        for m in matches {
            // AI Search scores run from 0 to 1: cosine similarity below 0
            // (the opposite direction) counts as none.
            let score = m.score.max(0.0);
            if score < r.threshold {
                continue;
            }
            meta.insert(m.id.clone(), m.metadata.unwrap_or_default());
            vector_hits.push(Hit { id: m.id, score });
        }
    }
    let mut keyword_hits = Vec::new();
    let mut texts: HashMap<String, SearchChunkRow> = HashMap::new();
    if r.kind != RetrievalType::Vector
        && let Some(fts) = fts_query(query, tokenizer_of(settings), r.match_mode)
    {
        // Filters are applied to the rows BM25 found, so ask for more
        // when some may be filtered out.
        let fetch = if r.filter.is_some() {
            depth * 10
        } else {
            depth
        };
        let matches = store
            .search_keyword_query(account, instance, &fts, fetch)
            .map_err(internal)?;
        let custom = store
            .search_item_metadata(account, instance)
            .map_err(internal)?;
        for m in matches {
            let score = keyword_score(m.relevance);
            if score < r.threshold {
                continue;
            }
            // The metadata a sync stores with the chunk's vector.
            let mut md = Map::new();
            md.insert("filename".into(), json!(m.chunk.key));
            md.insert("folder".into(), json!(folder_of(&m.chunk.key)));
            md.insert("timestamp".into(), json!(m.modified_ms / 1000));
            if let Some((Value::Object(fields), _)) = custom.get(&m.chunk.key) {
                for (k, v) in fields {
                    md.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
            if let Some(filter) = &r.filter
                && !filter.matches(&md)
            {
                continue;
            }
            if keyword_hits.len() == depth {
                break;
            }
            keyword_hits.push(Hit {
                id: m.chunk.id.clone(),
                score,
            });
            meta.insert(m.chunk.id.clone(), md);
            texts.insert(m.chunk.id.clone(), m.chunk);
        }
    }
    let fused = fuse(&vector_hits, &keyword_hits, r.fusion, r.max_results);
    let missing: Vec<String> = fused
        .iter()
        .filter(|f| !texts.contains_key(&f.id))
        .map(|f| f.id.clone())
        .collect();
    for c in store
        .search_chunks(account, instance, &missing)
        .map_err(internal)?
    {
        texts.insert(c.id.clone(), c);
    }
    let mut found: Vec<Found> = fused
        .into_iter()
        .filter_map(|f| {
            let chunk = texts.remove(&f.id)?;
            let metadata = meta.remove(&f.id).unwrap_or_default();
            let single = r.kind != RetrievalType::Hybrid;
            Some(Found {
                chunk,
                // One arm alone keeps that arm's own score.
                score: if single {
                    f.vector.or(f.keyword).map_or(f.score, |(_, s)| s)
                } else {
                    f.score
                },
                timestamp: metadata
                    .get("timestamp")
                    .and_then(Value::as_i64)
                    .unwrap_or(0),
                folder: metadata
                    .get("folder")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                metadata,
                vector: f.vector,
                keyword: f.keyword,
                fusion: (!single).then_some(r.fusion),
                reranking: None,
            })
        })
        .collect();
    if let Some(rerank) = &r.rerank
        && !found.is_empty()
    {
        let contexts = found.iter().map(|f| f.chunk.text.clone()).collect();
        let (scores, _) = state
            .app
            .rerank(&rerank.model, query.to_string(), contexts)
            .await?;
        for (f, logit) in found.iter_mut().zip(scores) {
            // The reranker gives a logit; AI Search scores run 0 to 1.
            let score = 1.0 / (1.0 + (-logit).exp());
            f.reranking = Some(score);
            f.score = score;
        }
        found.retain(|f| f.score >= rerank.threshold);
        found.sort_by(|a, b| b.score.total_cmp(&a.score));
    }
    Ok(found)
}

/// The search text of a request: `query`, else the last user message's
/// text (a string or its `text` parts).
pub fn query_of(req: &Value) -> Result<String, Failure> {
    match (req.get("query"), req.get("messages")) {
        (Some(Value::String(q)), _) if !q.trim().is_empty() => Ok(q.clone()),
        (Some(q), _) if !q.is_null() => Err(bad("`query` must be a non-empty string")),
        (_, Some(Value::Array(messages))) => messages
            .iter()
            .rev()
            .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
            .and_then(|m| match m.get("content") {
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Array(parts)) => {
                    let text: Vec<&str> = parts
                        .iter()
                        .filter(|p| p.get("type").and_then(Value::as_str) == Some("text"))
                        .filter_map(|p| p.get("text").and_then(Value::as_str))
                        .collect();
                    (!text.is_empty()).then(|| text.join("\n"))
                }
                _ => None,
            })
            .filter(|q| !q.trim().is_empty())
            .ok_or_else(|| bad("`messages` needs a user message with text `content`")),
        _ => Err(bad("give `query` (a non-empty string) or `messages`")),
    }
}
