//! Neurons, plans and rate limits, as Workers AI runs them.
//!
//! Every inference is priced from the catalog entry of the id the client
//! asked for (an alias serves `@cf/meta/llama-3.1-8b-instruct` with small
//! weights, but the Worker would pay for Llama 3.1 on Cloudflare) and
//! written to the usage ledger before the answer's last byte. A free account
//! that has used its 10,000 daily Neurons gets 3036 until 00:00 UTC.
//! Requests per minute are counted per account and task (or per model where
//! Cloudflare sets a model its own limit) in one-minute windows, under one
//! lock, so a limit of 60 lets exactly 60 concurrent requests through.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;

use hearth_catalog::ModelEntry;
use hearth_store::{Charge, Store, StoreError, UsageRow};
use hearth_types::{ApiError, ErrorCode};
use serde::Serialize;

use crate::config::{LimitsConfig, Plan};

pub const FREE_NEURONS_PER_DAY: f64 = 10_000.0;
pub const USD_PER_1000_NEURONS: f64 = 0.011;

/// The time source of limits and the ledger; tests move it by hand.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> i64;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to.
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(ms: i64) -> Self {
        Self(AtomicI64::new(ms))
    }
    pub fn set(&self, ms: i64) {
        self.0.store(ms, Ordering::SeqCst);
    }
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// `YYYY-MM-DD` (UTC) of an instant.
pub fn day_of(ms: i64) -> String {
    hearth_vector::iso8601(ms)[..10].to_string()
}

/// Workers AI's default requests per minute per task.
pub fn task_rpm(task: &str) -> Option<u32> {
    Some(match task {
        "Automatic Speech Recognition" => 720,
        "Image Classification" => 3000,
        "Image-to-Text" => 720,
        "Object Detection" => 3000,
        "Summarization" => 1500,
        "Text Classification" => 2000,
        "Text Embeddings" => 3000,
        "Text Generation" => 300,
        "Text-to-Image" => 720,
        "Translation" => 720,
        _ => return None,
    })
}

/// What the usage endpoint and `hearth usage` show.
#[derive(Debug, Clone, Serialize)]
pub struct UsageReport {
    pub plan: Plan,
    pub free_neurons_per_day: f64,
    pub today: TodayUsage,
    pub rows: Vec<PricedRow>,
    pub totals: Totals,
}

#[derive(Debug, Clone, Serialize)]
pub struct TodayUsage {
    pub day: String,
    pub neurons: f64,
    /// What is left of the free allocation today.
    pub free_neurons_left: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PricedRow {
    #[serde(flatten)]
    pub row: UsageRow,
    /// List price of these Neurons.
    pub usd: f64,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Totals {
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub neurons: f64,
    pub usd: f64,
    /// What Cloudflare would bill: Neurons above each day's free
    /// allocation, at $0.011 per 1,000.
    pub cloudflare_usd: f64,
}

pub struct Meter {
    store: Store,
    clock: std::sync::Arc<dyn Clock>,
    limits: LimitsConfig,
    /// (account, limit key) → (minute, requests in it)
    windows: Mutex<HashMap<(String, String), (i64, u32)>>,
}

fn store_error(e: StoreError) -> ApiError {
    tracing::error!(error = %e, "usage ledger failure");
    ApiError::plain(ErrorCode::Internal)
}

impl Meter {
    pub fn new(store: Store, clock: std::sync::Arc<dyn Clock>, limits: LimitsConfig) -> Self {
        Self {
            store,
            clock,
            limits,
            windows: Mutex::new(HashMap::new()),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    pub fn plan(&self, account: &str) -> Plan {
        self.limits
            .plans
            .get(account)
            .copied()
            .unwrap_or(self.limits.default_plan)
    }

    /// Checks the daily allocation and takes one request from the
    /// per-minute limit.
    pub fn admit(
        &self,
        account: &str,
        model: &str,
        task: &str,
        entry: Option<&ModelEntry>,
    ) -> Result<(), ApiError> {
        if self.plan(account) == Plan::Free {
            let used = self
                .store
                .neurons_on(account, &day_of(self.now_ms()))
                .map_err(store_error)?;
            if used >= FREE_NEURONS_PER_DAY {
                return Err(ApiError::plain(ErrorCode::AccountLimited));
            }
        }
        if !self.limits.rate_limits {
            return Ok(());
        }
        let model_rpm = self
            .limits
            .rpm
            .get(model)
            .copied()
            .or_else(|| entry.and_then(|e| e.rate_limit_rpm));
        let (key, limit) = match model_rpm {
            Some(rpm) => (model.to_string(), rpm),
            None => match self
                .limits
                .rpm
                .get(task)
                .copied()
                .or_else(|| task_rpm(task))
            {
                Some(rpm) => (task.to_string(), rpm),
                None => return Ok(()),
            },
        };
        let minute = self.now_ms().div_euclid(60_000);
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let slot = windows
            .entry((account.to_string(), key.clone()))
            .or_insert((minute, 0));
        if slot.0 != minute {
            *slot = (minute, 0);
        }
        if slot.1 >= limit {
            return Err(ApiError::new(
                ErrorCode::RateLimited,
                format!(
                    "Rate limited: {limit} requests per minute for {key}; retry after {} s",
                    60 - self.now_ms().rem_euclid(60_000) / 1000
                ),
            ));
        }
        slot.1 += 1;
        Ok(())
    }

    /// Prices a finished token-metered request and writes it to the ledger.
    /// Returns the Neurons.
    #[allow(clippy::too_many_arguments)]
    pub fn charge(
        &self,
        account: &str,
        model: &str,
        task: &str,
        entry: Option<&ModelEntry>,
        input_tokens: u64,
        output_tokens: u64,
        started: Instant,
    ) -> f64 {
        let neurons = entry.map_or(0.0, |e| {
            e.neurons_for_tokens(
                input_tokens.min(u32::MAX as u64) as u32,
                output_tokens.min(u32::MAX as u64) as u32,
            )
        });
        self.record(
            account,
            model,
            task,
            input_tokens,
            output_tokens,
            neurons,
            started,
        );
        neurons
    }

    /// Prices a request metered in units (audio minutes, images, image
    /// tiles plus steps) and writes it to the ledger. Returns the Neurons.
    #[allow(clippy::too_many_arguments)]
    pub fn charge_units(
        &self,
        account: &str,
        model: &str,
        task: &str,
        entry: Option<&ModelEntry>,
        units: f64,
        steps: u32,
        started: Instant,
    ) -> f64 {
        let neurons = entry.map_or(0.0, |e| e.neurons_for_units(units, steps));
        self.record(account, model, task, 0, 0, neurons, started);
        neurons
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        account: &str,
        model: &str,
        task: &str,
        input_tokens: u64,
        output_tokens: u64,
        neurons: f64,
        started: Instant,
    ) {
        let now = self.now_ms();
        let charged = self.store.charge(&Charge {
            account,
            model,
            task,
            day: &day_of(now),
            time_ms: now,
            duration_ms: started.elapsed().as_millis() as i64,
            input_tokens,
            output_tokens,
            neurons,
        });
        if let Err(e) = charged {
            // The answer is already computed; losing its ledger line is
            // logged loudly rather than failing the client.
            tracing::error!(error = %e, account, model, "could not record usage");
        }
    }

    pub fn report(
        &self,
        account: Option<&str>,
        since: &str,
        until: &str,
    ) -> Result<UsageReport, ApiError> {
        let rows = self
            .store
            .usage(account, since, until)
            .map_err(store_error)?;
        let today = day_of(self.now_ms());
        let used_today = match account {
            Some(a) => self.store.neurons_on(a, &today).map_err(store_error)?,
            None => 0.0,
        };
        let mut totals = Totals::default();
        let mut per_account_day: HashMap<(String, String), f64> = HashMap::new();
        let priced: Vec<PricedRow> = rows
            .into_iter()
            .map(|row| {
                let usd = row.neurons / 1000.0 * USD_PER_1000_NEURONS;
                totals.requests += row.requests;
                totals.input_tokens += row.input_tokens;
                totals.output_tokens += row.output_tokens;
                totals.neurons += row.neurons;
                totals.usd += usd;
                *per_account_day
                    .entry((row.account.clone(), row.day.clone()))
                    .or_default() += row.neurons;
                PricedRow { row, usd }
            })
            .collect();
        totals.cloudflare_usd = per_account_day
            .values()
            .map(|n| (n - FREE_NEURONS_PER_DAY).max(0.0) / 1000.0 * USD_PER_1000_NEURONS)
            .sum();
        Ok(UsageReport {
            plan: account.map_or(self.limits.default_plan, |a| self.plan(a)),
            free_neurons_per_day: FREE_NEURONS_PER_DAY,
            today: TodayUsage {
                day: today,
                neurons: used_today,
                free_neurons_left: (FREE_NEURONS_PER_DAY - used_today).max(0.0),
            },
            rows: priced,
            totals,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn meter(limits: LimitsConfig) -> (Meter, Arc<ManualClock>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(1_764_288_000_000)); // 2025-11-28T00:00Z
        let store = Store::open(&dir.path().join("hearth.db")).unwrap();
        (Meter::new(store, clock.clone(), limits), clock, dir)
    }

    #[test]
    fn a_limit_of_60_lets_exactly_60_concurrent_requests_through() {
        let mut limits = LimitsConfig::default();
        limits.rpm.insert("Text Generation".into(), 60);
        let (meter, clock, _dir) = meter(limits);
        let meter = Arc::new(meter);
        let admitted = std::sync::atomic::AtomicU32::new(0);
        std::thread::scope(|s| {
            for _ in 0..100 {
                s.spawn(|| {
                    if meter.admit("a", "m", "Text Generation", None).is_ok() {
                        admitted.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        });
        assert_eq!(admitted.load(Ordering::SeqCst), 60);
        let e = meter.admit("a", "m", "Text Generation", None).unwrap_err();
        assert_eq!((e.code.code(), e.code.status()), (3040, 429));
        assert!(
            e.message.contains("60 requests per minute"),
            "{}",
            e.message
        );
        // Another account has its own window; the next minute starts afresh.
        assert!(meter.admit("b", "m", "Text Generation", None).is_ok());
        clock.advance(60_000);
        assert!(meter.admit("a", "m", "Text Generation", None).is_ok());
    }

    #[test]
    fn unit_priced_requests_reach_the_ledger() {
        let (meter, _clock, _dir) = meter(LimitsConfig::default());
        let catalog = hearth_catalog::Catalog::builtin().unwrap();
        let whisper = catalog.get("@cf/openai/whisper");
        let n = meter.charge_units(
            "a",
            "@cf/openai/whisper",
            "Automatic Speech Recognition",
            whisper,
            2.5,
            0,
            Instant::now(),
        );
        assert!((n - 2.5 * 41.14).abs() < 1e-9);
        let flux = catalog.get("@cf/black-forest-labs/flux-1-schnell");
        let n = meter.charge_units(
            "a",
            "@cf/black-forest-labs/flux-1-schnell",
            "Text-to-Image",
            flux,
            4.0,
            4,
            Instant::now(),
        );
        assert!((n - (4.0 * 4.8 + 4.0 * 9.6)).abs() < 1e-9);
        let report = meter.report(Some("a"), "2025-11-28", "2025-11-28").unwrap();
        assert_eq!(report.totals.requests, 2);
    }

    #[test]
    fn a_free_account_is_blocked_at_10000_neurons_until_midnight_utc() {
        let mut limits = LimitsConfig::default();
        limits.plans.insert("free".into(), Plan::Free);
        let (meter, clock, _dir) = meter(limits);
        clock.advance(23 * 3_600_000); // 23:00 UTC
        let started = Instant::now();
        meter.charge("free", "m", "Text Generation", None, 1, 1, started);
        assert!(meter.admit("free", "m", "Text Generation", None).is_ok());
        meter
            .store()
            .charge(&Charge {
                account: "free",
                model: "m",
                task: "Text Generation",
                day: &day_of(clock.now_ms()),
                time_ms: clock.now_ms(),
                duration_ms: 1,
                input_tokens: 0,
                output_tokens: 0,
                neurons: 10_000.0,
            })
            .unwrap();
        let e = meter
            .admit("free", "m", "Text Generation", None)
            .unwrap_err();
        assert_eq!((e.code.code(), e.code.status()), (3036, 429));
        // Unlimited accounts are never blocked.
        assert!(meter.admit("other", "m", "Text Generation", None).is_ok());
        clock.advance(3_600_000); // 00:00 UTC next day
        assert!(meter.admit("free", "m", "Text Generation", None).is_ok());
        let report = meter
            .report(Some("free"), "2025-11-28", "2025-11-29")
            .unwrap();
        assert_eq!(report.today.neurons, 0.0);
        assert!((report.totals.neurons - 10_000.0).abs() < 1e-9);
    }
}
