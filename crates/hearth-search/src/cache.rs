//! AI Search's similarity cache for generated answers: a question close
//! enough to one answered before (MinHash over its word shingles, found
//! through LSH bands, confirmed by exact Jaccard similarity) gets the same
//! answer without running the model. Entries live 30 days and an
//! instance's entries all go when a sync changes its chunks.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How alike two questions must be (Jaccard similarity of their shingles).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Threshold {
    SuperStrictMatch,
    CloseEnough,
    FlexibleFriend,
    AnythingGoes,
}

impl Threshold {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "super_strict_match" => Some(Self::SuperStrictMatch),
            "close_enough" => Some(Self::CloseEnough),
            "flexible_friend" => Some(Self::FlexibleFriend),
            "anything_goes" => Some(Self::AnythingGoes),
            _ => None,
        }
    }

    fn jaccard(self) -> f64 {
        match self {
            Self::SuperStrictMatch => 0.95,
            Self::CloseEnough => 0.75,
            Self::FlexibleFriend => 0.55,
            Self::AnythingGoes => 0.35,
        }
    }
}

/// How long an entry is served (fixed, as on Cloudflare).
pub const ENTRY_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// Entries kept per instance; the oldest go first.
const MAX_ENTRIES: usize = 10_000;
const BANDS: usize = 64;
const ROWS: usize = 2;
const HASHES: usize = BANDS * ROWS;

fn hash_of(value: impl Hash, seed: u64) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    seed.hash(&mut h);
    value.hash(&mut h);
    h.finish()
}

/// Words and word pairs of the text, lowercased, punctuation dropped: a
/// changed word touches few shingles, a reworded question many.
fn shingles(text: &str) -> HashSet<u64> {
    let words: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    let mut out: HashSet<u64> = words.iter().map(|w| hash_of(w, 0)).collect();
    out.extend(words.windows(2).map(|p| hash_of(p, 1)));
    out
}

fn signature(shingles: &HashSet<u64>) -> [u64; HASHES] {
    let mut sig = [u64::MAX; HASHES];
    for &s in shingles {
        for (i, slot) in sig.iter_mut().enumerate() {
            *slot = (*slot).min(hash_of(s, i as u64 + 2));
        }
    }
    sig
}

fn band_keys(sig: &[u64; HASHES]) -> impl Iterator<Item = (usize, u64)> + '_ {
    sig.chunks(ROWS)
        .enumerate()
        .map(|(band, rows)| (band, hash_of(rows, 0)))
}

fn jaccard(a: &HashSet<u64>, b: &HashSet<u64>) -> f64 {
    let union = a.union(b).count();
    if union == 0 {
        return 1.0;
    }
    a.intersection(b).count() as f64 / union as f64
}

struct Entry {
    context: String,
    shingles: HashSet<u64>,
    signature: [u64; HASHES],
    value: Value,
    stored: Instant,
}

#[derive(Default)]
struct Scope {
    next: u64,
    entries: HashMap<u64, Entry>,
    bands: HashMap<(usize, u64), Vec<u64>>,
}

impl Scope {
    fn remove(&mut self, id: u64) {
        if let Some(e) = self.entries.remove(&id) {
            for key in band_keys(&e.signature) {
                if let Some(ids) = self.bands.get_mut(&key) {
                    ids.retain(|&i| i != id);
                    if ids.is_empty() {
                        self.bands.remove(&key);
                    }
                }
            }
        }
    }
}

/// The cache of every instance, keyed by a scope (account and instance).
#[derive(Default)]
pub struct SimilarityCache {
    scopes: Mutex<HashMap<String, Scope>>,
}

impl SimilarityCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// The stored answer to a question like `question`, asked in the same
    /// `context` (model, prompt, retrieval options), if one is fresh.
    pub fn get(
        &self,
        scope: &str,
        context: &str,
        question: &str,
        threshold: Threshold,
    ) -> Option<Value> {
        let mut scopes = self.scopes.lock().ok()?;
        let scope = scopes.get_mut(scope)?;
        let wanted = shingles(question);
        let sig = signature(&wanted);
        let mut candidates: HashSet<u64> = HashSet::new();
        for key in band_keys(&sig) {
            if let Some(ids) = scope.bands.get(&key) {
                candidates.extend(ids);
            }
        }
        let mut expired = Vec::new();
        let mut best: Option<(f64, u64)> = None;
        for id in candidates {
            let Some(e) = scope.entries.get(&id) else {
                continue;
            };
            if e.stored.elapsed() > ENTRY_TTL {
                expired.push(id);
                continue;
            }
            if e.context != context {
                continue;
            }
            let similarity = jaccard(&wanted, &e.shingles);
            if similarity >= threshold.jaccard() && best.is_none_or(|(s, _)| similarity > s) {
                best = Some((similarity, id));
            }
        }
        for id in expired {
            scope.remove(id);
        }
        best.and_then(|(_, id)| scope.entries.get(&id).map(|e| e.value.clone()))
    }

    pub fn put(&self, scope: &str, context: &str, question: &str, value: Value) {
        let Ok(mut scopes) = self.scopes.lock() else {
            return;
        };
        let scope = scopes.entry(scope.to_string()).or_default();
        if scope.entries.len() >= MAX_ENTRIES
            && let Some(oldest) = scope
                .entries
                .iter()
                .min_by_key(|(_, e)| e.stored)
                .map(|(&id, _)| id)
        {
            scope.remove(oldest);
        }
        let shingles = shingles(question);
        let signature = signature(&shingles);
        let id = scope.next;
        scope.next += 1;
        for key in band_keys(&signature) {
            scope.bands.entry(key).or_default().push(id);
        }
        scope.entries.insert(
            id,
            Entry {
                context: context.to_string(),
                shingles,
                signature,
                value,
                stored: Instant::now(),
            },
        );
    }

    /// Forgets a scope's answers (its chunks changed).
    pub fn invalidate(&self, scope: &str) {
        if let Ok(mut scopes) = self.scopes.lock() {
            scopes.remove(scope);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn close_questions_hit_and_far_ones_miss() {
        let cache = SimilarityCache::new();
        let q = "What animals are llamas related to in South America?";
        cache.put("a/kb", "m", q, json!("camelids"));
        let strict = Threshold::SuperStrictMatch;
        // Punctuation and case are not part of a question.
        assert_eq!(
            cache.get(
                "a/kb",
                "m",
                "what animals are llamas related to in south america",
                strict
            ),
            Some(json!("camelids"))
        );
        let reworded = "Which animals are llamas related to in South America?";
        assert_eq!(cache.get("a/kb", "m", reworded, strict), None);
        assert_eq!(
            cache
                .get("a/kb", "m", reworded, Threshold::CloseEnough)
                .is_some(),
            jaccard(&shingles(q), &shingles(reworded)) >= 0.75
        );
        assert_eq!(
            cache.get("a/kb", "m", reworded, Threshold::FlexibleFriend),
            Some(json!("camelids"))
        );
        assert_eq!(
            cache.get(
                "a/kb",
                "m",
                "How tall is the Eiffel Tower?",
                Threshold::AnythingGoes
            ),
            None
        );
        // Another context (model, prompt) or scope is another cache.
        assert_eq!(cache.get("a/kb", "other model", q, strict), None);
        assert_eq!(cache.get("b/kb", "m", q, strict), None);
        cache.invalidate("a/kb");
        assert_eq!(cache.get("a/kb", "m", q, strict), None);
    }

    #[test]
    fn lsh_finds_what_a_full_scan_finds() {
        let cache = SimilarityCache::new();
        let questions: Vec<String> = (0..300)
            .map(|i| format!("question {i} about topic {} and detail {}", i % 17, i % 5))
            .collect();
        for (i, q) in questions.iter().enumerate() {
            cache.put("s", "c", q, json!(i));
        }
        for (i, q) in questions.iter().enumerate() {
            assert_eq!(
                cache.get("s", "c", q, Threshold::SuperStrictMatch),
                Some(json!(i)),
                "{q}"
            );
        }
    }
}
