//! The exact-match response cache: key = SHA-256 of account, gateway,
//! provider path and body (or the caller's `cf-aig-cache-key`), entries
//! expire after their TTL and the oldest go first when the byte budget is
//! spent. Metadata headers are not part of the key, as on Cloudflare.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

#[derive(Debug, Clone, PartialEq)]
pub struct Cached {
    pub status: u16,
    pub content_type: String,
    /// Shared, so that a hit hands out the body without copying it.
    pub body: bytes::Bytes,
    /// Tokens in and out the answer reports, read once when it is stored
    /// rather than on every hit's log entry.
    pub tokens: (Option<u64>, Option<u64>),
}

struct Entry {
    value: Cached,
    expires_ms: i64,
    inserted: u64,
}

pub struct ResponseCache {
    max_bytes: usize,
    inner: Mutex<Inner>,
}

struct Inner {
    entries: HashMap<String, Entry>,
    /// Keys by insertion, oldest first, and entries by expiry: eviction
    /// finds its victim in O(log n) however large the cache is.
    by_insertion: BTreeMap<u64, String>,
    by_expiry: BTreeSet<(i64, u64)>,
    bytes: usize,
    counter: u64,
}

impl Inner {
    fn remove(&mut self, key: &str) -> Option<Entry> {
        let e = self.entries.remove(key)?;
        self.by_insertion.remove(&e.inserted);
        self.by_expiry.remove(&(e.expires_ms, e.inserted));
        self.bytes -= e.value.body.len();
        Some(e)
    }

    /// The entry to evict: an expired one, else the oldest insertion.
    fn victim(&self, now_ms: i64) -> Option<String> {
        let inserted = match self.by_expiry.first() {
            Some(&(expires, inserted)) if expires <= now_ms => inserted,
            _ => *self.by_insertion.keys().next()?,
        };
        self.by_insertion.get(&inserted).cloned()
    }
}

/// The default cache key of a request.
pub fn key(account: &str, gateway: &str, generation: i64, path: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    for part in [account.as_bytes(), gateway.as_bytes(), path.as_bytes()] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    // Bumped when the gateway's settings change and it asks for invalidation.
    h.update(generation.to_le_bytes());
    h.update(body);
    hex(&h.finalize())
}

/// The key of a caller-chosen `cf-aig-cache-key`, kept apart per gateway.
pub fn custom_key(account: &str, gateway: &str, generation: i64, key: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"custom\0");
    for part in [account.as_bytes(), gateway.as_bytes(), key.as_bytes()] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    h.update(generation.to_le_bytes());
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl ResponseCache {
    pub fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                by_insertion: BTreeMap::new(),
                by_expiry: BTreeSet::new(),
                bytes: 0,
                counter: 0,
            }),
        }
    }

    pub fn get(&self, key: &str, now_ms: i64) -> Option<Cached> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match inner.entries.get(key) {
            Some(e) if e.expires_ms > now_ms => Some(e.value.clone()),
            Some(_) => {
                inner.remove(key);
                None
            }
            None => None,
        }
    }

    /// Stores a response for `ttl_secs`; returns the keys evicted to make room.
    pub fn put(&self, key: String, value: Cached, ttl_secs: u64, now_ms: i64) -> Vec<String> {
        self.put_until(
            key,
            value,
            now_ms.saturating_add(ttl_secs as i64 * 1000),
            now_ms,
        )
    }

    /// Stores a response until `expires_ms` (a copy restored from disk).
    pub fn put_until(
        &self,
        key: String,
        value: Cached,
        expires_ms: i64,
        now_ms: i64,
    ) -> Vec<String> {
        let size = value.body.len();
        let mut evicted = Vec::new();
        if size > self.max_bytes {
            return evicted;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.remove(&key);
        while inner.bytes + size > self.max_bytes {
            let Some(victim) = inner.victim(now_ms) else {
                break;
            };
            inner.remove(&victim);
            evicted.push(victim);
        }
        inner.counter += 1;
        let inserted = inner.counter;
        inner.bytes += size;
        inner.by_insertion.insert(inserted, key.clone());
        inner.by_expiry.insert((expires_ms, inserted));
        inner.entries.insert(
            key,
            Entry {
                value,
                expires_ms,
                inserted,
            },
        );
        evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(n: usize) -> Cached {
        Cached {
            status: 200,
            content_type: "application/json".into(),
            body: vec![b'x'; n].into(),
            tokens: (None, None),
        }
    }

    #[test]
    fn entries_expire_and_the_budget_evicts_the_oldest() {
        let c = ResponseCache::new(100);
        c.put("a".into(), v(40), 60, 0);
        c.put("b".into(), v(40), 60, 0);
        assert!(c.get("a", 59_999).is_some());
        assert!(c.get("a", 60_000).is_none(), "expired at its TTL");
        c.put("a".into(), v(40), 60, 0);
        assert_eq!(c.put("c".into(), v(40), 60, 0), vec!["b".to_string()]);
        assert!(c.get("b", 1).is_none(), "the oldest went first");
        assert!(c.get("a", 1).is_some() && c.get("c", 1).is_some());
        assert_ne!(key("a", "g", 0, "/p", b"{}"), key("a", "g", 1, "/p", b"{}"));
    }

    #[test]
    fn expired_entries_go_before_older_live_ones() {
        let c = ResponseCache::new(100);
        c.put("old-live".into(), v(30), 3600, 0);
        c.put("short".into(), v(30), 60, 0);
        c.put("old-live".into(), v(30), 3600, 0); // replaced: one entry, re-indexed
        c.put("newer".into(), v(30), 3600, 0);
        // At 61 s `short` has expired: it goes first, not the oldest live entry.
        assert_eq!(
            c.put("more".into(), v(30), 3600, 61_000),
            vec!["short".to_string()]
        );
        assert!(c.get("old-live", 61_000).is_some());
        // Then the oldest insertion.
        assert_eq!(
            c.put("last".into(), v(30), 3600, 61_000),
            vec!["old-live".to_string()]
        );
    }
}
