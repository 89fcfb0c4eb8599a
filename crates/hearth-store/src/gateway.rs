//! AI Gateway rows: gateways, custom providers, log entries (with their
//! request and response bodies kept apart, so listing stays cheap) and the
//! response cache's disk copy.

use rusqlite::types::Value as Sql;
use rusqlite::{OptionalExtension, params, params_from_iter};
use serde_json::Value;

use crate::{GatewayRow, Store, StoreError, json_of};

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS gateways (
    account TEXT NOT NULL, id TEXT NOT NULL, settings TEXT NOT NULL,
    created_ms INTEGER NOT NULL, modified_ms INTEGER NOT NULL,
    PRIMARY KEY (account, id)
);
CREATE TABLE IF NOT EXISTS gateway_logs (
    account TEXT NOT NULL, gateway TEXT NOT NULL, id TEXT NOT NULL, entry TEXT NOT NULL,
    PRIMARY KEY (account, gateway, id)
);
CREATE TABLE IF NOT EXISTS gateway_log_bodies (
    account TEXT NOT NULL, gateway TEXT NOT NULL, id TEXT NOT NULL,
    request BLOB NOT NULL, response BLOB NOT NULL,
    PRIMARY KEY (account, gateway, id)
);
CREATE TABLE IF NOT EXISTS gateway_cache (
    key TEXT PRIMARY KEY, expires_ms INTEGER NOT NULL, stored_ms INTEGER NOT NULL,
    status INTEGER NOT NULL, content_type TEXT NOT NULL, body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS custom_providers (
    account TEXT NOT NULL, id TEXT NOT NULL, slug TEXT NOT NULL, settings TEXT NOT NULL,
    created_ms INTEGER NOT NULL, modified_ms INTEGER NOT NULL,
    PRIMARY KEY (account, id), UNIQUE (account, slug)
);
";

/// A stored custom provider: `settings` holds the API's object (slug,
/// base_url, name, ...) without id and timestamps.
pub type CustomProviderRow = GatewayRow;

/// One log entry on its way to the store.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRecord {
    pub account: String,
    pub gateway: String,
    /// The entry as the logs API shows it (an object with an `id`).
    pub entry: Value,
    pub request_body: Vec<u8>,
    pub response_body: Vec<u8>,
    /// The gateway's `log_management`: at most this many stored logs,
    /// and whether the oldest make room (`DELETE_OLDEST`) or new ones are
    /// dropped (`STOP_INSERTING`).
    pub max_logs: Option<u64>,
    pub delete_oldest: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterOp {
    Eq,
    Neq,
    Contains,
    Lt,
    Gt,
}

/// One `filters[]` condition of the logs API.
#[derive(Debug, Clone, PartialEq)]
pub struct LogFilter {
    pub key: String,
    pub op: FilterOp,
    pub values: Vec<Value>,
}

/// Which logs, in which order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LogQuery {
    pub filters: Vec<LogFilter>,
    pub search: Option<String>,
    /// A key of [`ORDER_KEYS`]; `created_at` when empty.
    pub order_by: String,
    pub ascending: bool,
}

/// Keys `filters[]` accepts (Cloudflare's list).
pub const FILTER_KEYS: &[&str] = &[
    "id",
    "created_at",
    "request_content_type",
    "response_content_type",
    "request_type",
    "success",
    "cached",
    "provider",
    "model",
    "model_type",
    "cost",
    "tokens",
    "tokens_in",
    "tokens_out",
    "duration",
    "feedback",
    "event_id",
    "metadata.key",
    "metadata.value",
    "authentication",
    "wholesale",
    "compatibilityMode",
    "dlp_action",
    "user_agent",
];

/// Keys logs can be ordered by.
pub const ORDER_KEYS: &[&str] = &[
    "created_at",
    "provider",
    "model",
    "model_type",
    "success",
    "cached",
    "cost",
    "tokens_in",
    "tokens_out",
    "duration",
    "feedback",
];

const BOOL_KEYS: &[&str] = &[
    "success",
    "cached",
    "authentication",
    "wholesale",
    "compatibilityMode",
];
const NUMBER_KEYS: &[&str] = &[
    "cost",
    "tokens",
    "tokens_in",
    "tokens_out",
    "duration",
    "feedback",
];

/// The SQL expression of a log field (only keys of the fixed lists reach
/// SQL text; values always travel as parameters).
fn field(key: &str) -> Result<String, StoreError> {
    match key {
        "id" | "created_at" => Ok(if key == "id" {
            "id".into()
        } else {
            "json_extract(entry, '$.created_at')".into()
        }),
        "tokens" => Ok("(COALESCE(json_extract(entry, '$.tokens_in'), 0) + COALESCE(json_extract(entry, '$.tokens_out'), 0))".into()),
        k if FILTER_KEYS.contains(&k) || ORDER_KEYS.contains(&k) => {
            Ok(format!("json_extract(entry, '$.{k}')"))
        }
        k => Err(StoreError::Invalid(format!("unknown log field `{k}`"))),
    }
}

/// A filter value as SQLite compares it with the stored JSON.
fn sql_value(key: &str, v: &Value) -> Sql {
    let text = match v {
        Value::Null => return Sql::Null,
        Value::Bool(b) => return Sql::Integer(*b as i64),
        Value::Number(n) => {
            return n
                .as_i64()
                .map(Sql::Integer)
                .unwrap_or_else(|| Sql::Real(n.as_f64().unwrap_or(0.0)));
        }
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if BOOL_KEYS.contains(&key) {
        match text.as_str() {
            "true" | "1" => return Sql::Integer(1),
            "false" | "0" => return Sql::Integer(0),
            _ => {}
        }
    }
    if NUMBER_KEYS.contains(&key)
        && let Ok(f) = text.parse::<f64>()
    {
        return Sql::Real(f);
    }
    Sql::Text(text)
}

fn where_clause(q: &LogQuery, args: &mut Vec<Sql>) -> Result<String, StoreError> {
    let mut sql = String::from("account = ? AND gateway = ?");
    for f in &q.filters {
        let values: Vec<Sql> = f.values.iter().map(|v| sql_value(&f.key, v)).collect();
        if values.is_empty() {
            return Err(StoreError::Invalid(format!(
                "filter on `{}` has no value",
                f.key
            )));
        }
        let condition = if let Some(part) = f.key.strip_prefix("metadata.") {
            let column = if part == "key" { "key" } else { "value" };
            let test = match f.op {
                FilterOp::Contains => {
                    let mut ors = Vec::new();
                    for v in values {
                        ors.push(format!("CAST({column} AS TEXT) LIKE '%' || ? || '%'"));
                        args.push(v);
                    }
                    ors.join(" OR ")
                }
                FilterOp::Lt | FilterOp::Gt => {
                    args.push(values.into_iter().next().unwrap_or(Sql::Null));
                    format!(
                        "{column} {} ?",
                        if f.op == FilterOp::Lt { "<" } else { ">" }
                    )
                }
                FilterOp::Eq | FilterOp::Neq => {
                    let marks = vec!["?"; values.len()].join(", ");
                    args.extend(values);
                    format!("{column} IN ({marks})")
                }
            };
            let exists = format!(
                "EXISTS (SELECT 1 FROM json_each(COALESCE(json_extract(entry, '$.metadata'), '{{}}')) WHERE {test})"
            );
            if f.op == FilterOp::Neq {
                format!("NOT {exists}")
            } else {
                exists
            }
        } else {
            let expr = field(&f.key)?;
            match f.op {
                FilterOp::Eq | FilterOp::Neq => {
                    let has_null = values.contains(&Sql::Null);
                    let concrete: Vec<Sql> =
                        values.into_iter().filter(|v| *v != Sql::Null).collect();
                    let mut ors = Vec::new();
                    if !concrete.is_empty() {
                        ors.push(format!(
                            "{expr} IN ({})",
                            vec!["?"; concrete.len()].join(", ")
                        ));
                        args.extend(concrete);
                    }
                    if has_null {
                        ors.push(format!("{expr} IS NULL"));
                    }
                    let eq = format!("({})", ors.join(" OR "));
                    if f.op == FilterOp::Eq {
                        eq
                    } else {
                        format!("NOT COALESCE({eq}, 0)")
                    }
                }
                FilterOp::Contains => {
                    let mut ors = Vec::new();
                    for v in values {
                        ors.push(format!("CAST({expr} AS TEXT) LIKE '%' || ? || '%'"));
                        args.push(v);
                    }
                    format!("({})", ors.join(" OR "))
                }
                FilterOp::Lt | FilterOp::Gt => {
                    args.push(values.into_iter().next().unwrap_or(Sql::Null));
                    format!("{expr} {} ?", if f.op == FilterOp::Lt { "<" } else { ">" })
                }
            }
        };
        sql.push_str(" AND ");
        sql.push_str(&condition);
    }
    if let Some(s) = q.search.as_ref().filter(|s| !s.is_empty()) {
        sql.push_str(
            " AND (id LIKE '%' || ? || '%' OR json_extract(entry, '$.model') LIKE '%' || ? || '%' \
             OR json_extract(entry, '$.provider') LIKE '%' || ? || '%')",
        );
        for _ in 0..3 {
            args.push(Sql::Text(s.clone()));
        }
    }
    Ok(sql)
}

fn order_clause(q: &LogQuery) -> Result<String, StoreError> {
    let dir = if q.ascending { "ASC" } else { "DESC" };
    let key = if q.order_by.is_empty() {
        "created_at"
    } else {
        q.order_by.as_str()
    };
    if !ORDER_KEYS.contains(&key) {
        return Err(StoreError::Invalid(format!("cannot order by `{key}`")));
    }
    Ok(if key == "created_at" {
        format!("id {dir}")
    } else {
        format!("{} {dir}, id {dir}", field(key)?)
    })
}

/// One row of [`Store::gateway_analytics`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AnalyticsRow {
    /// Start of the bucket, ISO 8601.
    pub time: String,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub requests: u64,
    pub errors: u64,
    pub cached: u64,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub cost: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    Minute,
    Hour,
    Day,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    Request,
    Response,
}

/// A cached response as stored on disk.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheRow {
    pub key: String,
    pub expires_ms: i64,
    pub stored_ms: i64,
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Store {
    /// Inserts a row into a table of settings objects keyed by account and
    /// id (`gateways`, `search_instances`); false when the id is taken.
    pub(crate) fn settings_row_insert(
        &self,
        table: &'static str,
        account: &str,
        row: &GatewayRow,
    ) -> Result<bool, StoreError> {
        let n = self.conn().execute(
            &format!("INSERT OR IGNORE INTO {table} (account, id, settings, created_ms, modified_ms) VALUES (?1, ?2, ?3, ?4, ?5)"),
            params![
                account,
                row.id,
                row.settings.to_string(),
                row.created_ms,
                row.modified_ms
            ],
        )?;
        Ok(n == 1)
    }

    /// The account's row of a settings table whose `column` is `value`.
    pub(crate) fn settings_row(
        &self,
        table: &'static str,
        account: &str,
        column: &'static str,
        value: &str,
    ) -> Result<Option<GatewayRow>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT id, settings, created_ms, modified_ms FROM {table} WHERE account = ?1 AND {column} = ?2"),
                params![account, value],
                Self::gateway_from_row,
            )
            .optional()?)
    }

    /// The account's rows of a settings table, oldest first.
    pub(crate) fn settings_rows(
        &self,
        table: &'static str,
        account: &str,
    ) -> Result<Vec<GatewayRow>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT id, settings, created_ms, modified_ms FROM {table} WHERE account = ?1 ORDER BY created_ms, id"
        ))?;
        let rows = stmt
            .query_map(params![account], Self::gateway_from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Inserts a gateway; false when the id is taken in this account.
    pub fn gateway_insert(&self, account: &str, row: &GatewayRow) -> Result<bool, StoreError> {
        self.settings_row_insert("gateways", account, row)
    }

    pub(crate) fn gateway_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<GatewayRow> {
        Ok(GatewayRow {
            id: r.get(0)?,
            settings: json_of(r.get(1)?),
            created_ms: r.get(2)?,
            modified_ms: r.get(3)?,
        })
    }

    pub fn gateway_get(&self, account: &str, id: &str) -> Result<Option<GatewayRow>, StoreError> {
        self.settings_row("gateways", account, "id", id)
    }

    pub fn gateway_list(&self, account: &str) -> Result<Vec<GatewayRow>, StoreError> {
        self.settings_rows("gateways", account)
    }

    pub fn gateway_update(&self, account: &str, row: &GatewayRow) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE gateways SET settings = ?3, modified_ms = ?4 WHERE account = ?1 AND id = ?2",
            params![account, row.id, row.settings.to_string(), row.modified_ms],
        )?;
        Ok(())
    }

    pub fn gateway_delete(&self, account: &str, id: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "DELETE FROM gateways WHERE account = ?1 AND id = ?2",
            params![account, id],
        )?;
        Ok(())
    }

    /// Replaces a log entry; false when there is none with that id.
    pub fn gateway_log_replace(
        &self,
        account: &str,
        gateway: &str,
        id: &str,
        entry: &serde_json::Value,
    ) -> Result<bool, StoreError> {
        let n = self.conn().execute(
            "UPDATE gateway_logs SET entry = ?4 WHERE account = ?1 AND gateway = ?2 AND id = ?3",
            params![account, gateway, id, entry.to_string()],
        )?;
        Ok(n == 1)
    }

    pub fn gateway_log(
        &self,
        account: &str,
        gateway: &str,
        id: &str,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT entry FROM gateway_logs WHERE account = ?1 AND gateway = ?2 AND id = ?3",
                params![account, gateway, id],
                |r| Ok(json_of(r.get(0)?)),
            )
            .optional()?)
    }

    /// Appends log entries in one transaction, honouring each gateway's
    /// `log_management`; returns how many were dropped (`STOP_INSERTING`).
    pub fn gateway_logs_insert(&self, records: &[LogRecord]) -> Result<usize, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let mut counts: std::collections::HashMap<(String, String), u64> = Default::default();
        let mut dropped = 0;
        for r in records {
            if let Some(max) = r.max_logs {
                let key = (r.account.clone(), r.gateway.clone());
                let count = match counts.get(&key) {
                    Some(c) => *c,
                    None => tx.query_row(
                        "SELECT COUNT(*) FROM gateway_logs WHERE account = ?1 AND gateway = ?2",
                        params![r.account, r.gateway],
                        |row| row.get(0),
                    )?,
                };
                let mut count = count;
                if count >= max {
                    if !r.delete_oldest || max == 0 {
                        dropped += 1;
                        counts.insert(key, count);
                        continue;
                    }
                    // Auto log cleanup frees 0.1% at a time (at least what
                    // this entry needs), as Cloudflare does.
                    let excess = count + 1 - max;
                    let chunk = excess.max(max / 1000);
                    let oldest: Vec<String> = {
                        let mut stmt = tx.prepare(
                            "SELECT id FROM gateway_logs WHERE account = ?1 AND gateway = ?2 ORDER BY id ASC LIMIT ?3",
                        )?;
                        stmt.query_map(params![r.account, r.gateway, chunk], |row| row.get(0))?
                            .collect::<Result<_, _>>()?
                    };
                    for id in &oldest {
                        for table in ["gateway_logs", "gateway_log_bodies"] {
                            tx.execute(
                                &format!("DELETE FROM {table} WHERE account = ?1 AND gateway = ?2 AND id = ?3"),
                                params![r.account, r.gateway, id],
                            )?;
                        }
                    }
                    count -= oldest.len() as u64;
                }
                counts.insert(key, count + 1);
            }
            let id = r
                .entry
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default();
            tx.prepare_cached("INSERT OR IGNORE INTO gateway_logs VALUES (?1, ?2, ?3, ?4)")?
                .execute(params![r.account, r.gateway, id, r.entry.to_string()])?;
            tx.prepare_cached(
                "INSERT OR IGNORE INTO gateway_log_bodies VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                r.account,
                r.gateway,
                id,
                r.request_body,
                r.response_body
            ])?;
        }
        tx.commit()?;
        Ok(dropped)
    }

    /// A page of a gateway's logs matching `q`, and how many match.
    pub fn gateway_logs(
        &self,
        account: &str,
        gateway: &str,
        q: &LogQuery,
        offset: u64,
        limit: u64,
    ) -> Result<(Vec<Value>, u64), StoreError> {
        let mut args = vec![Sql::Text(account.into()), Sql::Text(gateway.into())];
        let filter = where_clause(q, &mut args)?;
        let order = order_clause(q)?;
        let conn = self.conn();
        let total: u64 = conn.query_row(
            &format!("SELECT COUNT(*) FROM gateway_logs WHERE {filter}"),
            params_from_iter(args.iter()),
            |r| r.get(0),
        )?;
        args.push(Sql::Integer(limit as i64));
        args.push(Sql::Integer(offset as i64));
        let mut stmt = conn.prepare(&format!(
            "SELECT entry FROM gateway_logs WHERE {filter} ORDER BY {order} LIMIT ? OFFSET ?"
        ))?;
        let rows = stmt
            .query_map(params_from_iter(args.iter()), |r| Ok(json_of(r.get(0)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok((rows, total))
    }

    /// Deletes up to `limit` logs matching `q` (first in `q`'s order);
    /// returns how many went.
    pub fn gateway_logs_delete(
        &self,
        account: &str,
        gateway: &str,
        q: &LogQuery,
        limit: Option<u64>,
    ) -> Result<usize, StoreError> {
        let mut args = vec![Sql::Text(account.into()), Sql::Text(gateway.into())];
        let filter = where_clause(q, &mut args)?;
        let order = order_clause(q)?;
        args.push(Sql::Integer(limit.map(|l| l as i64).unwrap_or(-1)));
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let ids: Vec<String> = {
            let mut stmt = tx.prepare(&format!(
                "SELECT id FROM gateway_logs WHERE {filter} ORDER BY {order} LIMIT ?"
            ))?;
            stmt.query_map(params_from_iter(args.iter()), |r| r.get(0))?
                .collect::<Result<_, _>>()?
        };
        for id in &ids {
            for table in ["gateway_logs", "gateway_log_bodies"] {
                tx.execute(
                    &format!("DELETE FROM {table} WHERE account = ?1 AND gateway = ?2 AND id = ?3"),
                    params![account, gateway, id],
                )?;
            }
        }
        tx.commit()?;
        Ok(ids.len())
    }

    /// The stored request or response body of a log entry.
    pub fn gateway_log_body(
        &self,
        account: &str,
        gateway: &str,
        id: &str,
        which: Body,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let column = match which {
            Body::Request => "request",
            Body::Response => "response",
        };
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {column} FROM gateway_log_bodies WHERE account = ?1 AND gateway = ?2 AND id = ?3"),
                params![account, gateway, id],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Requests, errors, cache hits, tokens and cost per time bucket (and
    /// per provider and model when asked), between two ISO 8601 times.
    #[allow(clippy::too_many_arguments)]
    pub fn gateway_analytics(
        &self,
        account: &str,
        gateway: &str,
        since: &str,
        until: &str,
        bucket: Bucket,
        by_provider: bool,
        by_model: bool,
    ) -> Result<Vec<AnalyticsRow>, StoreError> {
        // ISO 8601 prefixes are the buckets: `2026-12-01T10:05` is a minute.
        let len = match bucket {
            Bucket::Minute => 16,
            Bucket::Hour => 13,
            Bucket::Day => 10,
        };
        let provider = if by_provider {
            "json_extract(entry, '$.provider')"
        } else {
            "NULL"
        };
        let model = if by_model {
            "json_extract(entry, '$.model')"
        } else {
            "NULL"
        };
        let sql = format!(
            "SELECT substr(json_extract(entry, '$.created_at'), 1, {len}) AS t, {provider} AS p, {model} AS m,
                    COUNT(*),
                    SUM(CASE WHEN json_extract(entry, '$.success') THEN 0 ELSE 1 END),
                    SUM(CASE WHEN json_extract(entry, '$.cached') THEN 1 ELSE 0 END),
                    SUM(COALESCE(json_extract(entry, '$.tokens_in'), 0)),
                    SUM(COALESCE(json_extract(entry, '$.tokens_out'), 0)),
                    SUM(COALESCE(json_extract(entry, '$.cost'), 0))
             FROM gateway_logs
             WHERE account = ?1 AND gateway = ?2
               AND json_extract(entry, '$.created_at') >= ?3 AND json_extract(entry, '$.created_at') < ?4
             GROUP BY t, p, m ORDER BY t, p, m"
        );
        let conn = self.conn();
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt
            .query_map(params![account, gateway, since, until], |r| {
                let t: String = r.get(0)?;
                let time = match bucket {
                    Bucket::Minute => format!("{t}:00Z"),
                    Bucket::Hour => format!("{t}:00:00Z"),
                    Bucket::Day => format!("{t}T00:00:00Z"),
                };
                Ok(AnalyticsRow {
                    time,
                    provider: r.get(1)?,
                    model: r.get(2)?,
                    requests: r.get(3)?,
                    errors: r.get(4)?,
                    cached: r.get(5)?,
                    tokens_in: r.get::<_, f64>(6)? as u64,
                    tokens_out: r.get::<_, f64>(7)? as u64,
                    cost: r.get(8)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Stores (or replaces) a cached response.
    pub fn cache_put(&self, row: &CacheRow) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT OR REPLACE INTO gateway_cache VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                row.key,
                row.expires_ms,
                row.stored_ms,
                row.status,
                row.content_type,
                row.body
            ],
        )?;
        Ok(())
    }

    pub fn cache_delete(&self, keys: &[String]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        for key in keys {
            tx.execute("DELETE FROM gateway_cache WHERE key = ?1", params![key])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Drops expired responses and returns the live ones, newest first,
    /// up to `max_bytes` of bodies (the rest are dropped too).
    pub fn cache_load(&self, now_ms: i64, max_bytes: usize) -> Result<Vec<CacheRow>, StoreError> {
        let conn = self.conn();
        conn.execute(
            "DELETE FROM gateway_cache WHERE expires_ms <= ?1",
            params![now_ms],
        )?;
        let mut stmt = conn.prepare(
            "SELECT key, expires_ms, stored_ms, status, content_type, body FROM gateway_cache ORDER BY stored_ms DESC",
        )?;
        let mut rows = Vec::new();
        let mut bytes = 0usize;
        let mut overflow = Vec::new();
        for row in stmt.query_map([], |r| {
            Ok(CacheRow {
                key: r.get(0)?,
                expires_ms: r.get(1)?,
                stored_ms: r.get(2)?,
                status: r.get(3)?,
                content_type: r.get(4)?,
                body: r.get(5)?,
            })
        })? {
            let row = row?;
            if bytes + row.body.len() > max_bytes {
                overflow.push(row.key);
                continue;
            }
            bytes += row.body.len();
            rows.push(row);
        }
        drop(stmt);
        for key in overflow {
            conn.execute("DELETE FROM gateway_cache WHERE key = ?1", params![key])?;
        }
        Ok(rows)
    }

    pub fn custom_provider_insert(
        &self,
        account: &str,
        slug: &str,
        row: &CustomProviderRow,
    ) -> Result<bool, StoreError> {
        let n = self.conn().execute(
            "INSERT OR IGNORE INTO custom_providers VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                account,
                row.id,
                slug,
                row.settings.to_string(),
                row.created_ms,
                row.modified_ms
            ],
        )?;
        Ok(n == 1)
    }

    pub fn custom_provider_get(
        &self,
        account: &str,
        id: &str,
    ) -> Result<Option<CustomProviderRow>, StoreError> {
        self.settings_row("custom_providers", account, "id", id)
    }

    pub fn custom_provider_by_slug(
        &self,
        account: &str,
        slug: &str,
    ) -> Result<Option<CustomProviderRow>, StoreError> {
        self.settings_row("custom_providers", account, "slug", slug)
    }

    pub fn custom_provider_list(
        &self,
        account: &str,
    ) -> Result<Vec<CustomProviderRow>, StoreError> {
        self.settings_rows("custom_providers", account)
    }

    /// Replaces a custom provider's settings; false when the new slug is taken.
    pub fn custom_provider_update(
        &self,
        account: &str,
        slug: &str,
        row: &CustomProviderRow,
    ) -> Result<bool, StoreError> {
        match self.conn().execute(
            "UPDATE custom_providers SET slug = ?3, settings = ?4, modified_ms = ?5 WHERE account = ?1 AND id = ?2",
            params![account, row.id, slug, row.settings.to_string(), row.modified_ms],
        ) {
            Ok(_) => Ok(true),
            Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::ConstraintViolation => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    pub fn custom_provider_delete(&self, account: &str, id: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "DELETE FROM custom_providers WHERE account = ?1 AND id = ?2",
            params![account, id],
        )?;
        Ok(())
    }
}
