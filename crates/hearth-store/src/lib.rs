//! Rows that must survive a crash: the Neurons usage ledger, per-request
//! analytics data points, model-terms agreements, the Batch API's queue,
//! AI Gateway's gateways, custom providers, logs and cache (`gateway`),
//! fine-tunes (`finetunes`), and AI Search's instances, files, chunks and
//! jobs (`search`).
//!
//! The embedded default is one SQLite database (`<data_dir>/hearth.db`) in
//! WAL mode with `synchronous = NORMAL`: a committed write survives the
//! process dying (`kill -9`, a panic, the OOM killer), which is the crash
//! this store promises to survive; only a power loss or kernel crash can
//! take back the last transactions, and it cannot corrupt the database.
//! (`FULL` would add an fsync to every request's ledger line.) Every write
//! that a client hears about is committed first.

mod finetunes;
mod gateway;
mod search;
pub use finetunes::FinetuneRow;
pub use gateway::{
    AnalyticsRow, Body, Bucket, CacheRow, CustomProviderRow, FILTER_KEYS, FilterOp, LogFilter,
    LogQuery, LogRecord, ORDER_KEYS,
};
pub use search::{
    KeywordMatch, ScheduledInstance, SearchChunkRow, SearchFileRow, SearchInstanceRow, SearchJobRow,
};

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A query the caller built cannot be run (names the part).
    #[error("{0}")]
    Invalid(String),
    /// The thread running a store call died.
    #[error("store task failed: {0}")]
    Task(String),
}

/// One request's consumption, as charged.
#[derive(Debug, Clone, PartialEq)]
pub struct Charge<'a> {
    pub account: &'a str,
    pub model: &'a str,
    pub task: &'a str,
    /// `YYYY-MM-DD`, UTC.
    pub day: &'a str,
    pub time_ms: i64,
    pub duration_ms: i64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub neurons: f64,
}

/// Usage per account, day and model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageRow {
    pub account: String,
    pub day: String,
    pub model: String,
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub neurons: f64,
}

/// An AI Gateway's stored settings.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayRow {
    pub id: String,
    /// The settings object as the API takes it (without `id` and timestamps).
    pub settings: serde_json::Value,
    pub created_ms: i64,
    pub modified_ms: i64,
}

/// One request as an analytics data point (Workers Analytics Engine style).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestPoint {
    pub time_ms: i64,
    pub model: String,
    pub task: String,
    pub duration_ms: i64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub neurons: f64,
}

/// A queued batch.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchJob {
    pub request_id: String,
    pub account: String,
    pub model: String,
    pub status: String,
    pub created_ms: i64,
    /// The submitted items, as JSON.
    pub requests: serde_json::Value,
}

/// One finished item of a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchItem {
    pub index: u32,
    pub success: bool,
    pub result: serde_json::Value,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

pub struct Store {
    conn: Mutex<Connection>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS usage (
    account TEXT NOT NULL, day TEXT NOT NULL, model TEXT NOT NULL,
    requests INTEGER NOT NULL, input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL, neurons REAL NOT NULL,
    PRIMARY KEY (account, day, model)
);
CREATE TABLE IF NOT EXISTS requests (
    time_ms INTEGER NOT NULL, account TEXT NOT NULL, model TEXT NOT NULL,
    task TEXT NOT NULL, duration_ms INTEGER NOT NULL, input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL, neurons REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS requests_by_account ON requests (account, time_ms);
CREATE TABLE IF NOT EXISTS batches (
    request_id TEXT PRIMARY KEY, account TEXT NOT NULL, model TEXT NOT NULL,
    status TEXT NOT NULL, created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL,
    requests TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS batches_by_status ON batches (status, created_ms);
CREATE TABLE IF NOT EXISTS agreements (
    account TEXT NOT NULL, model TEXT NOT NULL, time_ms INTEGER NOT NULL,
    PRIMARY KEY (account, model)
);
CREATE TABLE IF NOT EXISTS batch_items (
    request_id TEXT NOT NULL, idx INTEGER NOT NULL, success INTEGER NOT NULL,
    result TEXT NOT NULL, input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL,
    PRIMARY KEY (request_id, idx)
);
";

pub(crate) fn json_of(text: String) -> serde_json::Value {
    serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
}

impl Store {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(gateway::SCHEMA)?;
        conn.execute_batch(finetunes::SCHEMA)?;
        conn.execute_batch(search::SCHEMA)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a request to the ledger and the analytics points, atomically.
    pub fn charge(&self, c: &Charge<'_>) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO usage VALUES (?1, ?2, ?3, 1, ?4, ?5, ?6)
             ON CONFLICT (account, day, model) DO UPDATE SET
               requests = requests + 1, input_tokens = input_tokens + ?4,
               output_tokens = output_tokens + ?5, neurons = neurons + ?6",
            params![
                c.account,
                c.day,
                c.model,
                c.input_tokens,
                c.output_tokens,
                c.neurons
            ],
        )?;
        tx.execute(
            "INSERT INTO requests VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                c.time_ms,
                c.account,
                c.model,
                c.task,
                c.duration_ms,
                c.input_tokens,
                c.output_tokens,
                c.neurons
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Neurons an account used on `day`.
    pub fn neurons_on(&self, account: &str, day: &str) -> Result<f64, StoreError> {
        Ok(self.conn().query_row(
            "SELECT COALESCE(SUM(neurons), 0) FROM usage WHERE account = ?1 AND day = ?2",
            params![account, day],
            |r| r.get(0),
        )?)
    }

    /// Ledger rows between two days (inclusive), for one account or all.
    pub fn usage(
        &self,
        account: Option<&str>,
        since: &str,
        until: &str,
    ) -> Result<Vec<UsageRow>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT account, day, model, requests, input_tokens, output_tokens, neurons FROM usage
             WHERE (?1 IS NULL OR account = ?1) AND day >= ?2 AND day <= ?3
             ORDER BY account, day, model",
        )?;
        let rows = stmt
            .query_map(params![account, since, until], |r| {
                Ok(UsageRow {
                    account: r.get(0)?,
                    day: r.get(1)?,
                    model: r.get(2)?,
                    requests: r.get(3)?,
                    input_tokens: r.get(4)?,
                    output_tokens: r.get(5)?,
                    neurons: r.get(6)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Records that `account` accepted `model`'s terms.
    pub fn agree(&self, account: &str, model: &str, time_ms: i64) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT OR IGNORE INTO agreements VALUES (?1, ?2, ?3)",
            params![account, model, time_ms],
        )?;
        Ok(())
    }

    pub fn has_agreed(&self, account: &str, model: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT 1 FROM agreements WHERE account = ?1 AND model = ?2",
                params![account, model],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// The latest analytics points of an account, newest first.
    pub fn requests(
        &self,
        account: &str,
        since_ms: i64,
        limit: u32,
    ) -> Result<Vec<RequestPoint>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT time_ms, model, task, duration_ms, input_tokens, output_tokens, neurons
             FROM requests WHERE account = ?1 AND time_ms >= ?2 ORDER BY time_ms DESC LIMIT ?3",
        )?;
        let rows = stmt
            .query_map(params![account, since_ms, limit], |r| {
                Ok(RequestPoint {
                    time_ms: r.get(0)?,
                    model: r.get(1)?,
                    task: r.get(2)?,
                    duration_ms: r.get(3)?,
                    input_tokens: r.get(4)?,
                    output_tokens: r.get(5)?,
                    neurons: r.get(6)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    pub fn batch_insert(&self, job: &BatchJob) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO batches VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6)",
            params![
                job.request_id,
                job.account,
                job.model,
                job.status,
                job.created_ms,
                job.requests.to_string()
            ],
        )?;
        Ok(())
    }

    fn job_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BatchJob> {
        Ok(BatchJob {
            request_id: r.get(0)?,
            account: r.get(1)?,
            model: r.get(2)?,
            status: r.get(3)?,
            created_ms: r.get(4)?,
            requests: json_of(r.get(5)?),
        })
    }

    pub fn batch_get(
        &self,
        account: &str,
        request_id: &str,
    ) -> Result<Option<BatchJob>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT request_id, account, model, status, created_ms, requests FROM batches
                 WHERE account = ?1 AND request_id = ?2",
                params![account, request_id],
                Self::job_from_row,
            )
            .optional()?)
    }

    /// The oldest batch that still has work (running first: it was
    /// interrupted by a restart).
    pub fn batch_next(&self) -> Result<Option<BatchJob>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT request_id, account, model, status, created_ms, requests FROM batches
                 WHERE status IN ('running', 'queued')
                 ORDER BY status = 'running' DESC, created_ms, request_id LIMIT 1",
                [],
                Self::job_from_row,
            )
            .optional()?)
    }

    pub fn batch_set_status(
        &self,
        request_id: &str,
        status: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE batches SET status = ?2, updated_ms = ?3 WHERE request_id = ?1",
            params![request_id, status, now_ms],
        )?;
        Ok(())
    }

    /// Records an item's result once: a retried item after a crash keeps
    /// the first recorded result.
    pub fn batch_item_done(&self, request_id: &str, item: &BatchItem) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT OR IGNORE INTO batch_items VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                request_id,
                item.index,
                item.success,
                item.result.to_string(),
                item.input_tokens,
                item.output_tokens
            ],
        )?;
        Ok(())
    }

    pub fn batch_items(&self, request_id: &str) -> Result<Vec<BatchItem>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT idx, success, result, input_tokens, output_tokens FROM batch_items
             WHERE request_id = ?1 ORDER BY idx",
        )?;
        let rows = stmt
            .query_map(params![request_id], |r| {
                Ok(BatchItem {
                    index: r.get(0)?,
                    success: r.get(1)?,
                    result: json_of(r.get(2)?),
                    input_tokens: r.get(3)?,
                    output_tokens: r.get(4)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Deletes finished batches last updated before `before_ms`.
    pub fn batch_expire(&self, before_ms: i64) -> Result<usize, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "DELETE FROM batch_items WHERE request_id IN
               (SELECT request_id FROM batches WHERE status = 'done' AND updated_ms < ?1)",
            params![before_ms],
        )?;
        let n = tx.execute(
            "DELETE FROM batches WHERE status = 'done' AND updated_ms < ?1",
            params![before_ms],
        )?;
        tx.commit()?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_adds_up_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hearth.db");
        {
            let store = Store::open(&path).unwrap();
            for _ in 0..3 {
                store
                    .charge(&Charge {
                        account: "a",
                        model: "m",
                        task: "Text Generation",
                        day: "2026-11-28",
                        time_ms: 1,
                        duration_ms: 5,
                        input_tokens: 10,
                        output_tokens: 2,
                        neurons: 1.5,
                    })
                    .unwrap();
            }
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.neurons_on("a", "2026-11-28").unwrap(), 4.5);
        assert_eq!(store.neurons_on("a", "2026-11-29").unwrap(), 0.0);
        let rows = store.usage(Some("a"), "2026-11-01", "2026-11-30").unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (
                rows[0].requests,
                rows[0].input_tokens,
                rows[0].output_tokens
            ),
            (3, 30, 6)
        );
    }

    #[test]
    fn batch_items_are_recorded_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("hearth.db")).unwrap();
        store
            .batch_insert(&BatchJob {
                request_id: "r".into(),
                account: "a".into(),
                model: "m".into(),
                status: "queued".into(),
                created_ms: 1,
                requests: serde_json::json!([{"prompt": "x"}]),
            })
            .unwrap();
        assert_eq!(store.batch_next().unwrap().unwrap().request_id, "r");
        let item = |text: &str| BatchItem {
            index: 0,
            success: true,
            result: serde_json::json!({"response": text}),
            input_tokens: 1,
            output_tokens: 1,
        };
        store.batch_item_done("r", &item("first")).unwrap();
        store.batch_item_done("r", &item("second")).unwrap();
        let items = store.batch_items("r").unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].result["response"], "first");
        store.batch_set_status("r", "done", 10).unwrap();
        assert!(store.batch_next().unwrap().is_none());
        assert_eq!(store.batch_expire(11).unwrap(), 1);
        assert!(store.batch_get("a", "r").unwrap().is_none());
    }
}
