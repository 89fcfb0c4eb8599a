//! AI Gateway's logic, free of HTTP: gateways and custom providers as
//! account resources, the `cf-aig-*` request headers, retry policies and
//! universal-endpoint steps (`request`), the response cache (`cache`),
//! gateway rate limits (`limits`) and the logs API's query language (`logs`).
//! `hearth-server` routes requests through these.
//!
//! A gateway's settings are kept as the JSON object Cloudflare's API takes,
//! checked field by field on the way in (types, ranges, enums), so fields
//! Hearth does not act on yet (`dlp`, `guardrails`, `otel`, ...) round-trip
//! unchanged instead of being lost.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub use hearth_store::GatewayRow;
use hearth_store::{Store, StoreError};
use hearth_types::{ApiError, ErrorCode};
use serde_json::{Map, Value, json};

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("{0}")]
    Invalid(String),
    #[error("a gateway with id `{0}` already exists")]
    Exists(String),
    #[error("no gateway with id `{0}`")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<GatewayError> for ApiError {
    fn from(e: GatewayError) -> Self {
        let code = match &e {
            GatewayError::Invalid(_) => ErrorCode::GatewayInvalid,
            GatewayError::Exists(_) => ErrorCode::GatewayExists,
            GatewayError::NotFound(_) => ErrorCode::GatewayNotFound,
            GatewayError::Store(_) => {
                tracing::error!(error = %e, "gateway store failure");
                return ApiError::plain(ErrorCode::Internal);
            }
        };
        ApiError::new(code, e.to_string())
    }
}

/// At most this many gateways per account (Cloudflare's documented figure is 10;
/// Hearth allows more for self-hosting).
pub const MAX_GATEWAYS_PER_ACCOUNT: usize = 1000;

pub(crate) fn invalid(m: impl Into<String>) -> GatewayError {
    GatewayError::Invalid(m.into())
}

pub fn validate_id(id: &str) -> Result<(), GatewayError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && !id.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "`id` {id:?} is not a valid gateway id: 1 to 64 lowercase letters, digits, `-` or `_`"
        )))
    }
}

fn int_or_null(
    map: &Map<String, Value>,
    key: &str,
    min: i64,
    max: i64,
    required: bool,
) -> Result<(), GatewayError> {
    match map.get(key) {
        None if required => Err(invalid(format!("`{key}` is required (a number or null)"))),
        None | Some(Value::Null) => Ok(()),
        Some(v) => match v.as_i64() {
            Some(n) if (min..=max).contains(&n) => Ok(()),
            _ => Err(invalid(format!(
                "`{key}` must be a whole number from {min} to {max} or null, got {v}"
            ))),
        },
    }
}

fn boolean(map: &Map<String, Value>, key: &str, required: bool) -> Result<(), GatewayError> {
    match map.get(key) {
        None if required => Err(invalid(format!("`{key}` is required (true or false)"))),
        None | Some(Value::Bool(_)) => Ok(()),
        Some(v) => Err(invalid(format!("`{key}` must be true or false, got {v}"))),
    }
}

fn one_of(map: &Map<String, Value>, key: &str, allowed: &[&str]) -> Result<(), GatewayError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(s)) if allowed.contains(&s.as_str()) => Ok(()),
        Some(v) => Err(invalid(format!(
            "`{key}` must be one of {allowed:?} or null, got {v}"
        ))),
    }
}

/// Checks a create (`creating`) or update body; returns the settings to
/// store (everything but `id` and the timestamps).
pub fn settings(body: &Value, creating: bool) -> Result<Map<String, Value>, GatewayError> {
    let Value::Object(map) = body else {
        return Err(invalid("the body must be a JSON object"));
    };
    boolean(map, "cache_invalidate_on_update", true)?;
    int_or_null(map, "cache_ttl", 0, 31_536_000, true)?;
    boolean(map, "collect_logs", true)?;
    int_or_null(map, "rate_limiting_interval", 0, 86_400, true)?;
    int_or_null(map, "rate_limiting_limit", 0, 1_000_000_000, true)?;
    one_of(map, "rate_limiting_technique", &["fixed", "sliding"])?;
    for key in [
        "authentication",
        "logpush",
        "zdr",
        "byok_only",
        "log_classification",
        "is_default",
    ] {
        boolean(map, key, false)?;
    }
    int_or_null(map, "log_management", 0, 10_000_000, false)?;
    one_of(
        map,
        "log_management_strategy",
        &["STOP_INSERTING", "DELETE_OLDEST"],
    )?;
    int_or_null(map, "retry_max_attempts", 1, 5, false)?;
    int_or_null(
        map,
        "retry_delay",
        0,
        request::MAX_RETRY_DELAY_MS as i64,
        false,
    )?;
    one_of(map, "retry_backoff", &["constant", "linear", "exponential"])?;
    one_of(map, "workers_ai_billing_mode", &["postpaid", "unified"])?;
    let mut out = map.clone();
    if creating {
        let id = match out.remove("id") {
            Some(Value::String(id)) => id,
            Some(v) => return Err(invalid(format!("`id` must be a string, got {v}"))),
            None => return Err(invalid("`id` is required")),
        };
        validate_id(&id)?;
        out.insert("id".into(), Value::String(id));
    } else {
        out.remove("id");
    }
    Ok(out)
}

/// The gateway object of every answer.
pub fn object(row: &GatewayRow, iso: impl Fn(i64) -> String) -> Value {
    let mut obj = match &row.settings {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    for (key, default) in [
        ("authentication", json!(false)),
        ("logpush", json!(false)),
        ("log_management", Value::Null),
        ("log_management_strategy", Value::Null),
        ("rate_limiting_technique", json!("fixed")),
    ] {
        obj.entry(key).or_insert(default);
    }
    obj.insert("id".into(), Value::String(row.id.clone()));
    obj.insert("created_at".into(), Value::String(iso(row.created_ms)));
    obj.insert("modified_at".into(), Value::String(iso(row.modified_ms)));
    Value::Object(obj)
}

/// Gateway resources of every account, over the store, with the settings
/// the data plane reads on every request kept in memory.
pub struct Gateways<'s> {
    pub store: &'s Store,
    pub known: &'s KnownGateways,
}

/// Gateways read recently, by account and id. The data plane looks its
/// gateway up on every request, and the store's one connection is shared
/// with the log writer: a read queued behind a batch of log inserts would
/// add milliseconds to a cache hit that otherwise takes microseconds.
#[derive(Default)]
pub struct KnownGateways {
    rows: std::sync::RwLock<HashMap<String, HashMap<String, Arc<GatewayRow>>>>,
    /// Bumped by every change, so that a row read from the store before a
    /// change is not remembered after it.
    changes: AtomicU64,
}

impl KnownGateways {
    fn get(&self, account: &str, id: &str) -> Option<Arc<GatewayRow>> {
        let rows = self.rows.read().unwrap_or_else(|e| e.into_inner());
        rows.get(account).and_then(|m| m.get(id)).cloned()
    }

    fn remember(&self, account: &str, row: Arc<GatewayRow>, changes_before_read: u64) {
        let mut rows = self.rows.write().unwrap_or_else(|e| e.into_inner());
        if self.changes.load(Ordering::Acquire) == changes_before_read {
            rows.entry(account.to_string())
                .or_default()
                .insert(row.id.clone(), row);
        }
    }

    /// Called after the store changed the gateway.
    fn forget(&self, account: &str, id: &str) {
        let mut rows = self.rows.write().unwrap_or_else(|e| e.into_inner());
        self.changes.fetch_add(1, Ordering::AcqRel);
        if let Some(m) = rows.get_mut(account) {
            m.remove(id);
        }
    }
}

impl Gateways<'_> {
    pub fn create(
        &self,
        account: &str,
        body: &Value,
        now_ms: i64,
    ) -> Result<GatewayRow, GatewayError> {
        let mut settings = settings(body, true)?;
        let id = match settings.remove("id") {
            Some(Value::String(id)) => id,
            _ => return Err(invalid("`id` is required")),
        };
        if self.store.gateway_list(account)?.len() >= MAX_GATEWAYS_PER_ACCOUNT {
            return Err(invalid(format!(
                "an account holds at most {MAX_GATEWAYS_PER_ACCOUNT} gateways"
            )));
        }
        let row = GatewayRow {
            id: id.clone(),
            settings: Value::Object(settings),
            created_ms: now_ms,
            modified_ms: now_ms,
        };
        if !self.store.gateway_insert(account, &row)? {
            return Err(GatewayError::Exists(id));
        }
        Ok(row)
    }

    pub fn get(&self, account: &str, id: &str) -> Result<GatewayRow, GatewayError> {
        self.settings(account, id).map(|row| (*row).clone())
    }

    /// The gateway as the data plane uses it, from memory when it was read
    /// before and has not changed since.
    pub fn settings(&self, account: &str, id: &str) -> Result<Arc<GatewayRow>, GatewayError> {
        if let Some(row) = self.known.get(account, id) {
            return Ok(row);
        }
        let changes = self.known.changes.load(Ordering::Acquire);
        let row = Arc::new(
            self.store
                .gateway_get(account, id)?
                .ok_or_else(|| GatewayError::NotFound(id.to_string()))?,
        );
        self.known.remember(account, Arc::clone(&row), changes);
        Ok(row)
    }

    pub fn list(
        &self,
        account: &str,
        search: Option<&str>,
    ) -> Result<Vec<GatewayRow>, GatewayError> {
        let mut rows = self.store.gateway_list(account)?;
        if let Some(s) = search.filter(|s| !s.is_empty()) {
            rows.retain(|r| r.id.contains(s));
        }
        Ok(rows)
    }

    pub fn update(
        &self,
        account: &str,
        id: &str,
        body: &Value,
        now_ms: i64,
    ) -> Result<GatewayRow, GatewayError> {
        let settings = settings(body, false)?;
        let mut row = self.get(account, id)?;
        row.settings = Value::Object(settings);
        row.modified_ms = now_ms;
        self.store.gateway_update(account, &row)?;
        self.known.forget(account, id);
        Ok(row)
    }

    pub fn delete(&self, account: &str, id: &str) -> Result<GatewayRow, GatewayError> {
        let row = self.get(account, id)?;
        self.store.gateway_delete(account, id)?;
        self.known.forget(account, id);
        Ok(row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Value {
        json!({"id": "my-gw", "cache_invalidate_on_update": false, "cache_ttl": null, "collect_logs": true,
               "rate_limiting_interval": null, "rate_limiting_limit": null})
    }

    #[test]
    fn checks_each_field_by_name() {
        assert!(settings(&base(), true).is_ok());
        for (key, value, needle) in [
            ("id", json!("Bad Id"), "`id`"),
            ("cache_ttl", json!(-1), "`cache_ttl`"),
            ("collect_logs", json!("yes"), "`collect_logs`"),
            (
                "rate_limiting_technique",
                json!("leaky"),
                "`rate_limiting_technique`",
            ),
            ("retry_max_attempts", json!(9), "`retry_max_attempts`"),
            (
                "log_management_strategy",
                json!("KEEP"),
                "`log_management_strategy`",
            ),
        ] {
            let mut body = base();
            body[key] = value;
            let e = settings(&body, true).unwrap_err().to_string();
            assert!(e.contains(needle), "{key}: {e}");
        }
        let mut missing = base();
        missing.as_object_mut().unwrap().remove("collect_logs");
        assert!(
            settings(&missing, true)
                .unwrap_err()
                .to_string()
                .contains("required")
        );
    }
}

pub mod cache;
pub mod logs;
pub mod providers;
pub mod request;

/// A log id that sorts by time, as AI Gateway's ULID-looking ids do: 10
/// Crockford base32 characters of milliseconds, then 16 of randomness.
pub fn log_id(now_ms: i64, random: u128) -> String {
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let mut out = String::with_capacity(26);
    let t = now_ms.max(0) as u64;
    for i in (0..10).rev() {
        out.push(ALPHABET[((t >> (i * 5)) & 31) as usize] as char);
    }
    for i in (0..16).rev() {
        out.push(ALPHABET[((random >> (i * 5)) & 31) as usize] as char);
    }
    out
}

/// Cache TTL bounds (seconds): a minute to a month, as Cloudflare documents.
pub const MIN_CACHE_TTL: u64 = 60;
pub const MAX_CACHE_TTL: u64 = 30 * 24 * 3600;

/// Request headers that steer the gateway (`cf-aig-*`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AigHeaders {
    pub cache_ttl: Option<u64>,
    pub skip_cache: bool,
    pub cache_key: Option<String>,
    pub collect_log: Option<bool>,
    pub metadata: Option<Map<String, Value>>,
    pub event_id: Option<String>,
    /// Milliseconds to the first byte of the answer.
    pub request_timeout_ms: Option<u64>,
    pub max_attempts: Option<u32>,
    pub retry_delay_ms: Option<u64>,
    pub backoff: Option<request::Backoff>,
    pub custom_cost: Option<request::CustomCost>,
}

impl AigHeaders {
    /// Parses the headers (`get` looks one up by lower-case name).
    pub fn parse<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Result<Self, GatewayError> {
        let flag = |name: &str| -> Result<Option<bool>, GatewayError> {
            match get(name) {
                None => Ok(None),
                Some("true") => Ok(Some(true)),
                Some("false") => Ok(Some(false)),
                Some(v) => Err(invalid(format!(
                    "`{name}` must be true or false, got {v:?}"
                ))),
            }
        };
        let cache_ttl = match get("cf-aig-cache-ttl").or_else(|| get("cf-cache-ttl")) {
            None => None,
            // 0 turns caching off; otherwise Cloudflare's bounds, 60 s to a month.
            Some(v) => match v.trim().parse::<u64>() {
                Ok(n) if n == 0 || (MIN_CACHE_TTL..=MAX_CACHE_TTL).contains(&n) => Some(n),
                _ => {
                    return Err(invalid(format!(
                        "`cf-aig-cache-ttl` must be 0 or whole seconds from {MIN_CACHE_TTL} to {MAX_CACHE_TTL}, got {v:?}"
                    )));
                }
            },
        };
        let metadata = match get("cf-aig-metadata") {
            None => None,
            Some(v) => match serde_json::from_str::<Value>(v) {
                Ok(Value::Object(m)) => {
                    if let Some((k, _)) = m.iter().find(|(_, v)| v.is_object() || v.is_array()) {
                        return Err(invalid(format!(
                            "`cf-aig-metadata` values must be strings, numbers or booleans (`{k}` is not)"
                        )));
                    }
                    // Up to five entries; extra ones are dropped, as Cloudflare does.
                    Some(m.into_iter().take(5).collect())
                }
                _ => return Err(invalid("`cf-aig-metadata` must be a JSON object")),
            },
        };
        let number = |name: &str, max: u64| -> Result<Option<u64>, GatewayError> {
            match get(name) {
                None => Ok(None),
                Some(v) => match v.trim().parse::<u64>() {
                    Ok(n) if n <= max => Ok(Some(n)),
                    _ => Err(invalid(format!(
                        "`{name}` must be a whole number from 0 to {max}, got {v:?}"
                    ))),
                },
            }
        };
        let max_attempts = match number("cf-aig-max-attempts", request::MAX_ATTEMPTS as u64)? {
            Some(0) => {
                return Err(invalid(format!(
                    "`cf-aig-max-attempts` must be from 1 to {}, got 0",
                    request::MAX_ATTEMPTS
                )));
            }
            n => n.map(|n| n as u32),
        };
        let backoff = match get("cf-aig-backoff") {
            None => None,
            Some(v) => Some(request::Backoff::parse(v).ok_or_else(|| {
                invalid(format!(
                    "`cf-aig-backoff` must be constant, linear or exponential, got {v:?}"
                ))
            })?),
        };
        let custom_cost = match get("cf-aig-custom-cost") {
            None => None,
            Some(v) => Some(request::CustomCost::parse(v)?),
        };
        Ok(Self {
            request_timeout_ms: number("cf-aig-request-timeout", u64::MAX / 2)?,
            max_attempts,
            retry_delay_ms: number("cf-aig-retry-delay", request::MAX_RETRY_DELAY_MS)?,
            backoff,
            custom_cost,
            cache_ttl,
            skip_cache: flag("cf-aig-skip-cache")?
                .or(flag("cf-skip-cache")?)
                .unwrap_or(false),
            cache_key: get("cf-aig-cache-key").map(str::to_string),
            collect_log: flag("cf-aig-collect-log")?,
            metadata,
            event_id: get("cf-aig-event-id").map(str::to_string),
        })
    }

    /// The TTL that applies: the header, else 5 minutes for a custom key,
    /// else the gateway's `cache_ttl`; 0 means no caching.
    pub fn effective_ttl(&self, gateway: &GatewayRow) -> u64 {
        self.cache_ttl
            .or_else(|| self.cache_key.as_ref().map(|_| 300))
            .or_else(|| gateway.settings.get("cache_ttl").and_then(Value::as_u64))
            .unwrap_or(0)
    }

    pub fn collects_log(&self, gateway: &GatewayRow) -> bool {
        self.collect_log.unwrap_or_else(|| {
            gateway
                .settings
                .get("collect_logs")
                .and_then(Value::as_bool)
                .unwrap_or(true)
        })
    }
}

#[cfg(test)]
mod header_tests {
    use super::*;

    #[test]
    fn log_ids_sort_by_time() {
        let a = log_id(1_000, u128::MAX);
        let b = log_id(1_001, 0);
        assert_eq!(a.len(), 26);
        assert!(a < b);
    }

    #[test]
    fn headers_parse_and_refuse_by_name() {
        let h = AigHeaders::parse(|n| match n {
            "cf-aig-cache-ttl" => Some("120"),
            "cf-aig-metadata" => Some(r#"{"a":1,"b":"x","c":true,"d":2,"e":3,"f":4}"#),
            _ => None,
        })
        .unwrap();
        assert_eq!(h.cache_ttl, Some(120));
        assert_eq!(h.metadata.unwrap().len(), 5);
        let e = AigHeaders::parse(|n| (n == "cf-aig-skip-cache").then_some("yes")).unwrap_err();
        assert!(e.to_string().contains("cf-aig-skip-cache"));
        let e =
            AigHeaders::parse(|n| (n == "cf-aig-metadata").then_some(r#"{"a":{}}"#)).unwrap_err();
        assert!(e.to_string().contains("`a`"));
    }
}

pub mod limits {
    //! Gateway-wide rate limits: `rate_limiting_limit` requests per
    //! `rate_limiting_interval` seconds, in aligned windows (`fixed`) or over
    //! the trailing interval (`sliding`), counted under one lock.

    use std::collections::{HashMap, VecDeque};
    use std::sync::Mutex;

    use serde_json::Value;

    use crate::GatewayRow;

    #[derive(Default)]
    pub struct GatewayLimiter {
        state: Mutex<HashMap<(String, String), Window>>,
    }

    #[derive(Default)]
    struct Window {
        fixed_start: i64,
        fixed_count: u64,
        sliding: VecDeque<i64>,
    }

    /// Limit and interval (ms) of a gateway, or `None` when it has no limit.
    pub fn limit_of(gateway: &GatewayRow) -> Option<(u64, i64, bool)> {
        let limit = gateway.settings.get("rate_limiting_limit")?.as_u64()?;
        let interval = gateway.settings.get("rate_limiting_interval")?.as_u64()?;
        if limit == 0 || interval == 0 {
            return None;
        }
        let sliding = gateway
            .settings
            .get("rate_limiting_technique")
            .and_then(Value::as_str)
            == Some("sliding");
        Some((limit, interval as i64 * 1000, sliding))
    }

    impl GatewayLimiter {
        /// Takes one request; `Err(retry_after_ms)` when the limit is reached.
        pub fn take(&self, account: &str, gateway: &GatewayRow, now_ms: i64) -> Result<(), i64> {
            let Some((limit, interval, sliding)) = limit_of(gateway) else {
                return Ok(());
            };
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let w = state
                .entry((account.to_string(), gateway.id.clone()))
                .or_default();
            if sliding {
                while w.sliding.front().is_some_and(|&t| t <= now_ms - interval) {
                    w.sliding.pop_front();
                }
                if w.sliding.len() as u64 >= limit {
                    let oldest = w.sliding.front().copied().unwrap_or(now_ms);
                    return Err(oldest + interval - now_ms);
                }
                w.sliding.push_back(now_ms);
            } else {
                let start = now_ms - now_ms.rem_euclid(interval);
                if w.fixed_start != start {
                    w.fixed_start = start;
                    w.fixed_count = 0;
                }
                if w.fixed_count >= limit {
                    return Err(start + interval - now_ms);
                }
                w.fixed_count += 1;
            }
            Ok(())
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use serde_json::json;

        fn gw(technique: &str) -> GatewayRow {
            GatewayRow {
                id: "g".into(),
                settings: json!({"rate_limiting_limit": 2, "rate_limiting_interval": 10, "rate_limiting_technique": technique}),
                created_ms: 0,
                modified_ms: 0,
            }
        }

        #[test]
        fn fixed_windows_reset_on_the_boundary() {
            let l = GatewayLimiter::default();
            let g = gw("fixed");
            assert!(l.take("a", &g, 8_000).is_ok());
            assert!(l.take("a", &g, 9_000).is_ok());
            assert_eq!(l.take("a", &g, 9_999), Err(1));
            assert!(l.take("a", &g, 10_000).is_ok(), "a new aligned window");
            assert!(l.take("b", &g, 9_999).is_ok(), "accounts are apart");
        }

        #[test]
        fn sliding_windows_count_the_trailing_interval() {
            let l = GatewayLimiter::default();
            let g = gw("sliding");
            assert!(l.take("a", &g, 0).is_ok());
            assert!(l.take("a", &g, 5_000).is_ok());
            assert_eq!(l.take("a", &g, 9_000), Err(1_000));
            assert!(
                l.take("a", &g, 10_000).is_ok(),
                "the first request left the window"
            );
            assert!(
                l.take("a", &g, 12_000).is_err(),
                "5 s and 10 s are still inside"
            );
        }
    }
}
