//! Retrieval pieces that need no storage: the keyword query a question
//! becomes (FTS5 syntax, for the porter or trigram tokenizer, `and` or `or`
//! matching), BM25 scores brought to AI Search's 0-1 range, the fusion of a
//! vector ranking with a keyword ranking (RRF or max), and the legacy
//! AutoRAG filter format translated to Vectorize's.

use serde_json::{Map, Value, json};

/// How chunk text is split into keyword index terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeywordTokenizer {
    /// Words with Porter stemming: "running" finds "run".
    Porter,
    /// Overlapping three-character windows: substrings, code, CJK text.
    Trigram,
}

impl KeywordTokenizer {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "porter" => Some(Self::Porter),
            "trigram" => Some(Self::Trigram),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Porter => "porter",
            Self::Trigram => "trigram",
        }
    }

    /// The FTS5 `tokenize` option that indexes this way.
    pub fn fts5(self) -> &'static str {
        match self {
            Self::Porter => "porter unicode61 remove_diacritics 2",
            Self::Trigram => "trigram case_sensitive 0",
        }
    }
}

/// Whether every query term must appear in a chunk, or any one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchMode {
    And,
    Or,
}

impl MatchMode {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "and" => Some(Self::And),
            "or" => Some(Self::Or),
            _ => None,
        }
    }
}

/// How a vector ranking and a keyword ranking become one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fusion {
    /// Reciprocal rank fusion: ranks, not scores, so the two scales never
    /// have to agree.
    Rrf,
    /// The higher of the two normalized scores.
    Max,
}

impl Fusion {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "rrf" => Some(Self::Rrf),
            "max" => Some(Self::Max),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Rrf => "rrf",
            Self::Max => "max",
        }
    }
}

/// Words that carry no topic. With `and` matching a natural question
/// ("what is the capital of France") would otherwise need every one of
/// them in the chunk.
const STOPWORDS: &[&str] = &[
    "a", "about", "an", "and", "are", "as", "at", "be", "been", "but", "by", "can", "could", "did",
    "do", "does", "for", "from", "had", "has", "have", "how", "i", "if", "in", "into", "is", "it",
    "its", "me", "my", "no", "not", "of", "on", "or", "our", "should", "so", "than", "that", "the",
    "their", "them", "then", "there", "these", "they", "this", "those", "to", "was", "we", "were",
    "what", "when", "where", "which", "who", "whom", "why", "will", "with", "would", "you", "your",
];

fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xAC00..=0xD7AF | 0xF900..=0xFAFF)
}

fn quoted(term: &str) -> String {
    format!("\"{}\"", term.replace('"', "\"\""))
}

/// The FTS5 query for a user's text, or `None` when nothing in it can be
/// searched (only punctuation, or only terms too short for trigrams).
/// Terms are quoted, so no user input is read as FTS5 syntax.
pub fn fts_query(text: &str, tokenizer: KeywordTokenizer, mode: MatchMode) -> Option<String> {
    let words: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    let topical: Vec<&String> = words
        .iter()
        .filter(|w| !STOPWORDS.contains(&w.as_str()))
        .collect();
    let chosen: Vec<&String> = if topical.is_empty() {
        words.iter().collect()
    } else {
        topical
    };
    let mut terms: Vec<String> = Vec::new();
    for word in chosen {
        let chars: Vec<char> = word.chars().collect();
        let term = match tokenizer {
            KeywordTokenizer::Porter => quoted(word),
            KeywordTokenizer::Trigram if chars.len() < 3 => continue,
            // A CJK question has no spaces: one run would be read as one
            // exact phrase. Its trigrams, any of them, find the chunks that
            // share its words.
            KeywordTokenizer::Trigram if chars.len() > 3 && chars.iter().any(|&c| is_cjk(c)) => {
                let grams: Vec<String> = chars
                    .windows(3)
                    .map(|w| quoted(&w.iter().collect::<String>()))
                    .collect();
                format!("({})", grams.join(" OR "))
            }
            KeywordTokenizer::Trigram => quoted(word),
        };
        if !terms.contains(&term) {
            terms.push(term);
        }
    }
    if terms.is_empty() {
        return None;
    }
    let joiner = match mode {
        MatchMode::And => " AND ",
        MatchMode::Or => " OR ",
    };
    Some(terms.join(joiner))
}

/// A BM25 relevance (higher is better, unbounded) on AI Search's 0-1
/// scale: saturating, so one strong term match lands near the middle and
/// several approach 1, whatever the other results were.
pub fn keyword_score(bm25: f64) -> f32 {
    let s = bm25.max(0.0);
    (s / (s + 1.0)) as f32
}

/// One ranking's entry, best first.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub id: String,
    pub score: f32,
}

/// A fused result with where it stood in each ranking (1-based ranks).
#[derive(Debug, Clone, PartialEq)]
pub struct Fused {
    pub id: String,
    pub score: f32,
    pub vector: Option<(usize, f32)>,
    pub keyword: Option<(usize, f32)>,
}

/// The RRF constant from Cormack et al.: damps the lead of a top rank so
/// agreement between the two rankings counts for more.
const RRF_K: f32 = 60.0;

/// Fuses two rankings into at most `limit` results, best first. RRF scores
/// are divided by the best possible (first in both), so they run 0-1 like
/// every other AI Search score.
pub fn fuse(vector: &[Hit], keyword: &[Hit], method: Fusion, limit: usize) -> Vec<Fused> {
    let mut out: Vec<Fused> = Vec::new();
    for (rank, hit) in vector.iter().enumerate() {
        out.push(Fused {
            id: hit.id.clone(),
            score: 0.0,
            vector: Some((rank + 1, hit.score)),
            keyword: None,
        });
    }
    for (rank, hit) in keyword.iter().enumerate() {
        match out.iter_mut().find(|f| f.id == hit.id) {
            Some(f) => f.keyword = Some((rank + 1, hit.score)),
            None => out.push(Fused {
                id: hit.id.clone(),
                score: 0.0,
                vector: None,
                keyword: Some((rank + 1, hit.score)),
            }),
        }
    }
    let best = 2.0 / (RRF_K + 1.0);
    for f in &mut out {
        f.score = match method {
            Fusion::Rrf => {
                let part = |r: Option<(usize, f32)>| {
                    r.map_or(0.0, |(rank, _)| 1.0 / (RRF_K + rank as f32))
                };
                (part(f.vector) + part(f.keyword)) / best
            }
            Fusion::Max => f
                .vector
                .map_or(0.0, |(_, s)| s)
                .max(f.keyword.map_or(0.0, |(_, s)| s)),
        };
    }
    // Ties keep the vector ranking's order, then the keyword ranking's.
    out.sort_by(|a, b| b.score.total_cmp(&a.score));
    out.truncate(limit);
    out
}

/// The legacy AutoRAG filter (`{type, key, value}` comparisons, one level
/// of `and`/`or`) as a Vectorize filter. Timestamps are given in
/// milliseconds there (13 digits, often as strings) and stored in seconds:
/// they are rounded down.
pub fn legacy_filter(filter: &Value) -> Result<Value, String> {
    let Value::Object(obj) = filter else {
        return Err("`filters` must be an object with `type`".into());
    };
    let kind = obj
        .get("type")
        .and_then(Value::as_str)
        .ok_or("`filters.type` is required: eq, ne, gt, gte, lt, lte, and, or")?;
    match kind {
        "and" | "or" => {
            let Some(Value::Array(list)) = obj.get("filters") else {
                return Err(format!(
                    "`filters.filters` must be the array of an `{kind}`"
                ));
            };
            if list.is_empty() {
                return Err(format!(
                    "`filters.filters` of an `{kind}` must not be empty"
                ));
            }
            let comparisons = list
                .iter()
                .enumerate()
                .map(|(i, f)| comparison(f, &format!("filters.filters[{i}]")))
                .collect::<Result<Vec<_>, _>>()?;
            if kind == "or" {
                let key = comparisons[0].0.clone();
                if comparisons.iter().any(|(k, op, _)| *k != key || op != "eq") {
                    return Err("an `or` filter takes only `eq` comparisons on one key".into());
                }
                let values: Vec<Value> = comparisons.into_iter().map(|(_, _, v)| v).collect();
                return Ok(json!({ key: {"$in": values} }));
            }
            let mut out = Map::new();
            for (key, op, value) in comparisons {
                let entry = out.entry(key.clone()).or_insert_with(|| json!({}));
                let ops = entry.as_object_mut().ok_or("unreachable")?;
                let name = format!("${op}");
                if ops.contains_key(&name) {
                    return Err(format!("`and` compares `{key}` with `{op}` twice"));
                }
                ops.insert(name, value);
            }
            Ok(Value::Object(out))
        }
        _ => {
            let (key, op, value) = comparison(filter, "filters")?;
            Ok(json!({ key: { format!("${op}"): value } }))
        }
    }
}

fn comparison(filter: &Value, path: &str) -> Result<(String, String, Value), String> {
    let op = filter
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("`{path}.type` is required"))?;
    if !["eq", "ne", "gt", "gte", "lt", "lte"].contains(&op) {
        return Err(if op == "and" || op == "or" {
            format!("`{path}`: compound filters cannot be nested")
        } else {
            format!("`{path}.type` must be eq, ne, gt, gte, lt or lte, got `{op}`")
        });
    }
    let key = filter
        .get("key")
        .and_then(Value::as_str)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| format!("`{path}.key` must be a non-empty string"))?;
    let value = match filter.get("value") {
        Some(v @ (Value::String(_) | Value::Number(_) | Value::Bool(_))) => v.clone(),
        _ => {
            return Err(format!(
                "`{path}.value` must be a string, number or boolean"
            ));
        }
    };
    let value = if key == "timestamp" {
        let ms = match &value {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse::<f64>().ok(),
            _ => None,
        }
        .ok_or_else(|| format!("`{path}.value`: a timestamp is a number of milliseconds"))?;
        // Ten digits or fewer is already seconds.
        let seconds = if ms >= 1e11 {
            (ms / 1000.0).floor()
        } else {
            ms.floor()
        };
        json!(seconds as i64)
    } else {
        value
    };
    Ok((key.to_string(), op.to_string(), value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn questions_become_quoted_terms_without_stopwords() {
        let q = fts_query(
            "What is the capital of France?",
            KeywordTokenizer::Porter,
            MatchMode::And,
        );
        assert_eq!(q.as_deref(), Some("\"capital\" AND \"france\""));
        let q = fts_query(
            "ERR_CONNECTION \"x\" OR y",
            KeywordTokenizer::Porter,
            MatchMode::Or,
        );
        assert_eq!(
            q.as_deref(),
            Some("\"err\" OR \"connection\" OR \"x\" OR \"y\"")
        );
        assert_eq!(
            fts_query("?!", KeywordTokenizer::Porter, MatchMode::And),
            None
        );
        // Only stopwords: they are all there is to search.
        assert_eq!(
            fts_query("to be", KeywordTokenizer::Porter, MatchMode::And).as_deref(),
            Some("\"to\" AND \"be\"")
        );
        assert_eq!(
            fts_query("a config of", KeywordTokenizer::Trigram, MatchMode::And).as_deref(),
            Some("\"config\"")
        );
        let cjk = fts_query("経費精算", KeywordTokenizer::Trigram, MatchMode::And);
        assert_eq!(cjk.as_deref(), Some("(\"経費精\" OR \"費精算\")"));
    }

    fn hits(ids: &[&str]) -> Vec<Hit> {
        ids.iter()
            .map(|id| Hit {
                id: id.to_string(),
                score: 0.5,
            })
            .collect()
    }

    #[test]
    fn rrf_rewards_agreement_and_runs_zero_to_one() {
        let fused = fuse(&hits(&["a", "b", "c"]), &hits(&["c", "d"]), Fusion::Rrf, 10);
        assert_eq!(fused[0].id, "c", "in both rankings beats first in one");
        assert_eq!(fused[0].vector, Some((3, 0.5)));
        assert_eq!(fused[0].keyword, Some((1, 0.5)));
        assert!(fused.iter().all(|f| f.score > 0.0 && f.score <= 1.0));
        let both_first = fuse(&hits(&["a"]), &hits(&["a"]), Fusion::Rrf, 10);
        assert!((both_first[0].score - 1.0).abs() < 1e-6);
        assert_eq!(fuse(&hits(&["a", "b", "c"]), &[], Fusion::Rrf, 2).len(), 2);
    }

    #[test]
    fn max_takes_the_better_score() {
        let v = vec![Hit {
            id: "a".into(),
            score: 0.3,
        }];
        let k = vec![
            Hit {
                id: "a".into(),
                score: 0.9,
            },
            Hit {
                id: "b".into(),
                score: 0.5,
            },
        ];
        let fused = fuse(&v, &k, Fusion::Max, 10);
        assert_eq!((fused[0].id.as_str(), fused[0].score), ("a", 0.9));
        assert_eq!((fused[1].id.as_str(), fused[1].score), ("b", 0.5));
    }

    #[test]
    fn bm25_scores_saturate_below_one() {
        assert_eq!(keyword_score(0.0), 0.0);
        assert!(keyword_score(1.0) == 0.5 && keyword_score(20.0) < 1.0);
        assert!(keyword_score(9.0) > keyword_score(3.0));
    }

    #[test]
    fn legacy_filters_translate() {
        let f = legacy_filter(&json!({"type": "eq", "key": "folder", "value": "docs/"}));
        assert_eq!(f, Ok(json!({"folder": {"$eq": "docs/"}})));
        let f = legacy_filter(&json!({"type": "and", "filters": [
            {"type": "gt", "key": "folder", "value": "customer-a//"},
            {"type": "lte", "key": "folder", "value": "customer-a/z"},
            {"type": "gte", "key": "timestamp", "value": "1735689600999"}]}));
        assert_eq!(
            f,
            Ok(
                json!({"folder": {"$gt": "customer-a//", "$lte": "customer-a/z"},
                      "timestamp": {"$gte": 1735689600}})
            )
        );
        let f = legacy_filter(&json!({"type": "or", "filters": [
            {"type": "eq", "key": "folder", "value": "a/"}, {"type": "eq", "key": "folder", "value": "b/"}]}));
        assert_eq!(f, Ok(json!({"folder": {"$in": ["a/", "b/"]}})));
    }

    #[test]
    fn bad_legacy_filters_name_the_field() {
        let err = |v: Value| legacy_filter(&v).err().unwrap_or_default();
        assert!(err(json!({"key": "folder"})).contains("filters.type"));
        assert!(err(json!({"type": "like", "key": "a", "value": 1})).contains("filters.type"));
        assert!(err(json!({"type": "eq", "value": 1})).contains("filters.key"));
        assert!(err(json!({"type": "eq", "key": "a", "value": [1]})).contains("filters.value"));
        assert!(
            err(json!({"type": "and", "filters": [{"type": "or", "filters": []}]}))
                .contains("nested")
        );
        assert!(
            err(json!({"type": "or", "filters": [
            {"type": "eq", "key": "a", "value": 1}, {"type": "gt", "key": "a", "value": 1}]}))
            .contains("only `eq`")
        );
        assert!(
            err(json!({"type": "eq", "key": "timestamp", "value": "yesterday"}))
                .contains("milliseconds")
        );
        assert!(err(json!([])).contains("object"));
    }
}
