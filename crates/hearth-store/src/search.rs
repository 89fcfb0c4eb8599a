//! AI Search rows: instances (their settings as the API takes them), the
//! files each indexed (content hash, chunk count, status), the chunks' text
//! (the vectors live in the instance's Vectorize index under the same ids),
//! each instance's keyword index (an FTS5 table of its own, so BM25's
//! statistics and the rows never mix accounts), and sync jobs with their
//! logs.

use std::collections::BTreeMap;

use rusqlite::{OptionalExtension, Transaction, params};
use sha2::{Digest, Sha256};

use crate::{GatewayRow, Store, StoreError};

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS search_instances (
    account TEXT NOT NULL, id TEXT NOT NULL, settings TEXT NOT NULL,
    created_ms INTEGER NOT NULL, modified_ms INTEGER NOT NULL,
    PRIMARY KEY (account, id)
);
CREATE TABLE IF NOT EXISTS search_files (
    account TEXT NOT NULL, instance TEXT NOT NULL, key TEXT NOT NULL,
    hash TEXT NOT NULL, size INTEGER NOT NULL, modified_ms INTEGER NOT NULL,
    chunks INTEGER NOT NULL, status TEXT NOT NULL, error TEXT,
    PRIMARY KEY (account, instance, key)
);
CREATE TABLE IF NOT EXISTS search_chunks (
    account TEXT NOT NULL, instance TEXT NOT NULL, id TEXT NOT NULL,
    key TEXT NOT NULL, idx INTEGER NOT NULL, text TEXT NOT NULL,
    PRIMARY KEY (account, instance, id)
);
CREATE INDEX IF NOT EXISTS search_chunks_by_key ON search_chunks (account, instance, key);
CREATE TABLE IF NOT EXISTS search_jobs (
    account TEXT NOT NULL, instance TEXT NOT NULL, id TEXT NOT NULL,
    source TEXT NOT NULL, status TEXT NOT NULL, started_ms INTEGER NOT NULL,
    ended_ms INTEGER, end_reason TEXT,
    PRIMARY KEY (account, instance, id)
);
CREATE TABLE IF NOT EXISTS search_item_metadata (
    account TEXT NOT NULL, instance TEXT NOT NULL, key TEXT NOT NULL,
    metadata TEXT NOT NULL, created_ms INTEGER NOT NULL,
    PRIMARY KEY (account, instance, key)
);
CREATE TABLE IF NOT EXISTS search_job_logs (
    account TEXT NOT NULL, instance TEXT NOT NULL, job TEXT NOT NULL,
    created_ms INTEGER NOT NULL, message TEXT NOT NULL, message_type TEXT NOT NULL
);
";

/// A stored AI Search instance (same shape as a gateway's row).
pub type SearchInstanceRow = GatewayRow;

/// A file an instance indexed, or failed to.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchFileRow {
    pub key: String,
    pub hash: String,
    pub size: u64,
    pub modified_ms: i64,
    pub chunks: u64,
    /// `completed` or `error`.
    pub status: String,
    pub error: Option<String>,
}

/// One chunk's text and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchChunkRow {
    pub id: String,
    pub key: String,
    pub index: u64,
    pub text: String,
}

/// A sync job.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchJobRow {
    pub id: String,
    pub source: String,
    pub status: String,
    pub started_ms: i64,
    pub ended_ms: Option<i64>,
    pub end_reason: Option<String>,
}

fn job_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<SearchJobRow> {
    Ok(SearchJobRow {
        id: r.get(0)?,
        source: r.get(1)?,
        status: r.get(2)?,
        started_ms: r.get(3)?,
        ended_ms: r.get(4)?,
        end_reason: r.get(5)?,
    })
}

/// The FTS5 table holding an instance's keyword index. Named by a hash:
/// account and instance ids never reach SQL text.
fn keyword_table(account: &str, instance: &str) -> String {
    let mut h = Sha256::new();
    h.update(account.as_bytes());
    h.update([0]);
    h.update(instance.as_bytes());
    format!("search_kw_{}", &hex::encode(h.finalize())[..20])
}

fn has_table(tx: &rusqlite::Connection, name: &str) -> Result<bool, StoreError> {
    Ok(tx
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [name],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

/// Drops a file's chunks from the keyword index (when the instance has
/// one) and from the chunk table.
fn delete_file_chunks(
    tx: &Transaction<'_>,
    account: &str,
    instance: &str,
    key: &str,
) -> Result<(), StoreError> {
    let table = keyword_table(account, instance);
    if has_table(tx, &table)? {
        tx.execute(
            &format!(
                "DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM search_chunks WHERE account = ?1 AND instance = ?2 AND key = ?3)"
            ),
            params![account, instance, key],
        )?;
    }
    tx.execute(
        "DELETE FROM search_chunks WHERE account = ?1 AND instance = ?2 AND key = ?3",
        params![account, instance, key],
    )?;
    Ok(())
}

/// An instance as the sync scheduler sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduledInstance {
    pub account: String,
    pub id: String,
    pub settings: serde_json::Value,
    /// When its latest sync began; `None` before the first.
    pub last_job_started_ms: Option<i64>,
}

/// A keyword match: the chunk and its BM25 relevance (higher is better).
#[derive(Debug, Clone, PartialEq)]
pub struct KeywordMatch {
    pub chunk: SearchChunkRow,
    pub relevance: f64,
    /// The file's modification time, for filters and results.
    pub modified_ms: i64,
}

impl Store {
    /// Inserts an instance; `false` when the account has one of that id.
    pub fn search_instance_insert(
        &self,
        account: &str,
        row: &SearchInstanceRow,
    ) -> Result<bool, StoreError> {
        self.settings_row_insert("search_instances", account, row)
    }

    pub fn search_instance_get(
        &self,
        account: &str,
        id: &str,
    ) -> Result<Option<SearchInstanceRow>, StoreError> {
        self.settings_row("search_instances", account, "id", id)
    }

    pub fn search_instance_list(
        &self,
        account: &str,
    ) -> Result<Vec<SearchInstanceRow>, StoreError> {
        self.settings_rows("search_instances", account)
    }

    pub fn search_instance_update(
        &self,
        account: &str,
        row: &SearchInstanceRow,
    ) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE search_instances SET settings = ?3, modified_ms = ?4 WHERE account = ?1 AND id = ?2",
            params![account, row.id, row.settings.to_string(), row.modified_ms],
        )?;
        Ok(())
    }

    /// Every account's instances with the start of their latest job, for
    /// the sync scheduler.
    pub fn search_instances_due(&self) -> Result<Vec<ScheduledInstance>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT i.account, i.id, i.settings,
                    (SELECT MAX(j.started_ms) FROM search_jobs j WHERE j.account = i.account AND j.instance = i.id)
             FROM search_instances i",
        )?;
        let rows = stmt
            .query_map([], |r| {
                let settings: String = r.get(2)?;
                Ok(ScheduledInstance {
                    account: r.get(0)?,
                    id: r.get(1)?,
                    settings: serde_json::from_str(&settings).unwrap_or(serde_json::Value::Null),
                    last_job_started_ms: r.get(3)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Makes the next sync index every file again (the chunking changed).
    pub fn search_files_mark_all_outdated(
        &self,
        account: &str,
        instance: &str,
    ) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE search_files SET hash = '', status = 'outdated' WHERE account = ?1 AND instance = ?2",
            params![account, instance],
        )?;
        Ok(())
    }

    /// Deletes an instance with its files, chunks and jobs.
    pub fn search_instance_delete(&self, account: &str, id: &str) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "DELETE FROM search_instances WHERE account = ?1 AND id = ?2",
            params![account, id],
        )?;
        tx.execute(
            &format!("DROP TABLE IF EXISTS {}", keyword_table(account, id)),
            [],
        )?;
        for table in [
            "search_files",
            "search_chunks",
            "search_jobs",
            "search_job_logs",
            "search_item_metadata",
        ] {
            tx.execute(
                &format!("DELETE FROM {table} WHERE account = ?1 AND instance = ?2"),
                params![account, id],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Content hashes of the files indexed without error, by key.
    pub fn search_indexed(
        &self,
        account: &str,
        instance: &str,
    ) -> Result<BTreeMap<String, String>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT key, hash FROM search_files WHERE account = ?1 AND instance = ?2 AND status = 'completed'",
        )?;
        let rows = stmt
            .query_map(params![account, instance], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<BTreeMap<_, _>, _>>()?;
        Ok(rows)
    }

    /// Every file row of an instance (for stats and listings).
    pub fn search_files(
        &self,
        account: &str,
        instance: &str,
    ) -> Result<Vec<SearchFileRow>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT key, hash, size, modified_ms, chunks, status, error FROM search_files WHERE account = ?1 AND instance = ?2 ORDER BY key",
        )?;
        let rows = stmt
            .query_map(params![account, instance], |r| {
                Ok(SearchFileRow {
                    key: r.get(0)?,
                    hash: r.get(1)?,
                    size: r.get::<_, i64>(2)? as u64,
                    modified_ms: r.get(3)?,
                    chunks: r.get::<_, i64>(4)? as u64,
                    status: r.get(5)?,
                    error: r.get(6)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Ids of a file's chunks.
    pub fn search_chunk_ids(
        &self,
        account: &str,
        instance: &str,
        key: &str,
    ) -> Result<Vec<String>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id FROM search_chunks WHERE account = ?1 AND instance = ?2 AND key = ?3",
        )?;
        let rows = stmt
            .query_map(params![account, instance, key], |r| r.get(0))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Records a file as indexed with exactly `chunks`, in one transaction
    /// (its earlier chunks go).
    pub fn search_file_indexed(
        &self,
        account: &str,
        instance: &str,
        file: &SearchFileRow,
        chunks: &[SearchChunkRow],
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        delete_file_chunks(&tx, account, instance, &file.key)?;
        let table = keyword_table(account, instance);
        let keyword = has_table(&tx, &table)?;
        for c in chunks {
            tx.prepare_cached("INSERT INTO search_chunks VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?
                .execute(params![
                    account,
                    instance,
                    c.id,
                    c.key,
                    c.index as i64,
                    c.text
                ])?;
            if keyword {
                let rowid = tx.last_insert_rowid();
                tx.prepare_cached(&format!(
                    "INSERT INTO {table} (rowid, text) VALUES (?1, ?2)"
                ))?
                .execute(params![rowid, c.text])?;
            }
        }
        tx.execute(
            "INSERT OR REPLACE INTO search_files VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                account,
                instance,
                file.key,
                file.hash,
                file.size as i64,
                file.modified_ms,
                file.chunks as i64,
                file.status,
                file.error
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Forgets a file and its chunks.
    pub fn search_file_delete(
        &self,
        account: &str,
        instance: &str,
        key: &str,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        delete_file_chunks(&tx, account, instance, key)?;
        tx.execute(
            "DELETE FROM search_files WHERE account = ?1 AND instance = ?2 AND key = ?3",
            params![account, instance, key],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The chunks of these ids that exist.
    pub fn search_chunks(
        &self,
        account: &str,
        instance: &str,
        ids: &[String],
    ) -> Result<Vec<SearchChunkRow>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT id, key, idx, text FROM search_chunks WHERE account = ?1 AND instance = ?2 AND id = ?3",
        )?;
        let mut out = Vec::new();
        for id in ids {
            if let Some(row) = stmt
                .query_row(params![account, instance, id], |r| {
                    Ok(SearchChunkRow {
                        id: r.get(0)?,
                        key: r.get(1)?,
                        index: r.get::<_, i64>(2)? as u64,
                        text: r.get(3)?,
                    })
                })
                .optional()?
            {
                out.push(row);
            }
        }
        Ok(out)
    }

    /// Gives an instance a keyword index with this FTS5 `tokenize` option,
    /// filled from the chunks it already holds (none at creation).
    pub fn search_keyword_create(
        &self,
        account: &str,
        instance: &str,
        tokenize: &str,
    ) -> Result<(), StoreError> {
        let table = keyword_table(account, instance);
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(&format!("DROP TABLE IF EXISTS {table}"), [])?;
        // Contentless: the text lives once, in search_chunks; the index
        // keeps only terms, keyed by the chunk row's rowid.
        tx.execute(
            &format!(
                "CREATE VIRTUAL TABLE {table} USING fts5(text, content='', contentless_delete=1, tokenize='{}')",
                tokenize.replace('\'', "")
            ),
            [],
        )?;
        tx.execute(
            &format!(
                "INSERT INTO {table} (rowid, text) SELECT rowid, text FROM search_chunks WHERE account = ?1 AND instance = ?2"
            ),
            params![account, instance],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Removes an instance's keyword index.
    pub fn search_keyword_drop(&self, account: &str, instance: &str) -> Result<(), StoreError> {
        self.conn().execute(
            &format!("DROP TABLE IF EXISTS {}", keyword_table(account, instance)),
            [],
        )?;
        Ok(())
    }

    /// The best `limit` chunks for an FTS5 query, by BM25. A query FTS5
    /// cannot parse is the caller's bug (queries are built quoted), and is
    /// reported as an error like any other.
    pub fn search_keyword_query(
        &self,
        account: &str,
        instance: &str,
        fts_query: &str,
        limit: usize,
    ) -> Result<Vec<KeywordMatch>, StoreError> {
        let table = keyword_table(account, instance);
        let conn = self.conn();
        if !has_table(&conn, &table)? {
            return Ok(Vec::new());
        }
        let mut stmt = conn.prepare(&format!(
            "SELECT c.id, c.key, c.idx, c.text, -k.rank, COALESCE(f.modified_ms, 0)
             FROM (SELECT rowid, rank FROM {table} WHERE {table} MATCH ?1 ORDER BY rank LIMIT ?2) k
             JOIN search_chunks c ON c.rowid = k.rowid
             LEFT JOIN search_files f ON f.account = c.account AND f.instance = c.instance AND f.key = c.key
             ORDER BY k.rank"
        ))?;
        let rows = stmt
            .query_map(params![fts_query, limit as i64], |r| {
                Ok(KeywordMatch {
                    chunk: SearchChunkRow {
                        id: r.get(0)?,
                        key: r.get(1)?,
                        index: r.get::<_, i64>(2)? as u64,
                        text: r.get(3)?,
                    },
                    relevance: r.get(4)?,
                    modified_ms: r.get(5)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Makes the next sync index a file again, changed or not.
    pub fn search_file_mark_outdated(
        &self,
        account: &str,
        instance: &str,
        key: &str,
    ) -> Result<bool, StoreError> {
        let n = self.conn().execute(
            "UPDATE search_files SET hash = '', status = 'outdated' WHERE account = ?1 AND instance = ?2 AND key = ?3",
            params![account, instance, key],
        )?;
        Ok(n > 0)
    }

    /// Records an uploaded item's custom metadata (a JSON object) and when
    /// it was first uploaded; a later upload keeps the first time.
    pub fn search_item_metadata_put(
        &self,
        account: &str,
        instance: &str,
        key: &str,
        metadata: &serde_json::Value,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO search_item_metadata VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (account, instance, key) DO UPDATE SET metadata = excluded.metadata",
            params![account, instance, key, metadata.to_string(), now_ms],
        )?;
        Ok(())
    }

    /// Every item's custom metadata and first upload time, by key.
    pub fn search_item_metadata(
        &self,
        account: &str,
        instance: &str,
    ) -> Result<BTreeMap<String, (serde_json::Value, i64)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT key, metadata, created_ms FROM search_item_metadata WHERE account = ?1 AND instance = ?2",
        )?;
        let rows = stmt
            .query_map(params![account, instance], |r| {
                let text: String = r.get(1)?;
                Ok((
                    r.get::<_, String>(0)?,
                    (
                        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
                        r.get::<_, i64>(2)?,
                    ),
                ))
            })?
            .collect::<Result<BTreeMap<_, _>, _>>()?;
        Ok(rows)
    }

    pub fn search_item_metadata_delete(
        &self,
        account: &str,
        instance: &str,
        key: &str,
    ) -> Result<(), StoreError> {
        self.conn().execute(
            "DELETE FROM search_item_metadata WHERE account = ?1 AND instance = ?2 AND key = ?3",
            params![account, instance, key],
        )?;
        Ok(())
    }

    pub fn search_job_insert(
        &self,
        account: &str,
        instance: &str,
        job: &SearchJobRow,
    ) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO search_jobs VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                account,
                instance,
                job.id,
                job.source,
                job.status,
                job.started_ms,
                job.ended_ms,
                job.end_reason
            ],
        )?;
        Ok(())
    }

    /// Asks for a sync in one transaction: with none running, `job` is
    /// stored as running and returned as started; with one running, a
    /// queued job (the one already queued, else `job` stored as queued)
    /// runs after it, since the running one may have listed the files
    /// before the change that asked.
    pub fn search_job_request(
        &self,
        account: &str,
        instance: &str,
        job: &SearchJobRow,
    ) -> Result<(SearchJobRow, bool), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let find = |status: &str| -> Result<Option<SearchJobRow>, StoreError> {
            Ok(tx
                .query_row(
                    "SELECT id, source, status, started_ms, ended_ms, end_reason FROM search_jobs
                     WHERE account = ?1 AND instance = ?2 AND status = ?3 LIMIT 1",
                    params![account, instance, status],
                    job_of,
                )
                .optional()?)
        };
        let (row, started) = if find("running")?.is_none() {
            (
                SearchJobRow {
                    status: "running".into(),
                    ..job.clone()
                },
                true,
            )
        } else if let Some(queued) = find("queued")? {
            return Ok((queued, false));
        } else {
            (
                SearchJobRow {
                    status: "queued".into(),
                    ..job.clone()
                },
                false,
            )
        };
        tx.execute(
            "INSERT INTO search_jobs VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                account,
                instance,
                row.id,
                row.source,
                row.status,
                row.started_ms,
                row.ended_ms,
                row.end_reason
            ],
        )?;
        tx.commit()?;
        Ok((row, started))
    }

    /// Starts the queued job of an instance when none is running: it
    /// becomes running from `now_ms` and is returned.
    pub fn search_job_promote(
        &self,
        account: &str,
        instance: &str,
        now_ms: i64,
    ) -> Result<Option<SearchJobRow>, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let running: i64 = tx.query_row(
            "SELECT COUNT(*) FROM search_jobs WHERE account = ?1 AND instance = ?2 AND status = 'running'",
            params![account, instance],
            |r| r.get(0),
        )?;
        if running > 0 {
            return Ok(None);
        }
        let queued = tx
            .query_row(
                "SELECT id, source, status, started_ms, ended_ms, end_reason FROM search_jobs
                 WHERE account = ?1 AND instance = ?2 AND status = 'queued' LIMIT 1",
                params![account, instance],
                job_of,
            )
            .optional()?;
        let Some(mut job) = queued else {
            return Ok(None);
        };
        tx.execute(
            "UPDATE search_jobs SET status = 'running', started_ms = ?4 WHERE account = ?1 AND instance = ?2 AND id = ?3",
            params![account, instance, job.id, now_ms],
        )?;
        tx.commit()?;
        job.status = "running".into();
        job.started_ms = now_ms;
        Ok(Some(job))
    }

    /// Instances with a queued job, of every account: `(account, instance)`.
    pub fn search_jobs_queued(&self) -> Result<Vec<(String, String)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT DISTINCT account, instance FROM search_jobs WHERE status = 'queued'",
        )?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    pub fn search_job_end(
        &self,
        account: &str,
        instance: &str,
        id: &str,
        status: &str,
        ended_ms: i64,
        end_reason: &str,
    ) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE search_jobs SET status = ?4, ended_ms = ?5, end_reason = ?6 WHERE account = ?1 AND instance = ?2 AND id = ?3",
            params![account, instance, id, status, ended_ms, end_reason],
        )?;
        Ok(())
    }

    pub fn search_jobs(
        &self,
        account: &str,
        instance: &str,
    ) -> Result<Vec<SearchJobRow>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, source, status, started_ms, ended_ms, end_reason FROM search_jobs WHERE account = ?1 AND instance = ?2 ORDER BY started_ms DESC, id",
        )?;
        let rows = stmt
            .query_map(params![account, instance], job_of)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Jobs a crash left running, of every account: `(account, instance, job)`.
    pub fn search_jobs_running(&self) -> Result<Vec<(String, String, SearchJobRow)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT account, instance, id, source, status, started_ms, ended_ms, end_reason FROM search_jobs WHERE status = 'running'",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    SearchJobRow {
                        id: r.get(2)?,
                        source: r.get(3)?,
                        status: r.get(4)?,
                        started_ms: r.get(5)?,
                        ended_ms: r.get(6)?,
                        end_reason: r.get(7)?,
                    },
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    pub fn search_job_log(
        &self,
        account: &str,
        instance: &str,
        job: &str,
        created_ms: i64,
        message: &str,
        message_type: &str,
    ) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO search_job_logs VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![account, instance, job, created_ms, message, message_type],
        )?;
        Ok(())
    }

    /// Log lines, oldest first: `(created_ms, message, message_type)`, of
    /// one job, or of every job of the instance.
    pub fn search_job_logs(
        &self,
        account: &str,
        instance: &str,
        job: Option<&str>,
    ) -> Result<Vec<(i64, String, String)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT created_ms, message, message_type FROM search_job_logs
             WHERE account = ?1 AND instance = ?2 AND (?3 IS NULL OR job = ?3) ORDER BY rowid",
        )?;
        let rows = stmt
            .query_map(params![account, instance, job], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(key: &str, chunks: u64) -> SearchFileRow {
        SearchFileRow {
            key: key.into(),
            hash: "h".into(),
            size: 1,
            modified_ms: 1_700_000_000_000,
            chunks,
            status: "completed".into(),
            error: None,
        }
    }

    fn chunk(key: &str, index: u64, text: &str) -> SearchChunkRow {
        SearchChunkRow {
            id: format!("{key}-{index}"),
            key: key.into(),
            index,
            text: text.into(),
        }
    }

    #[test]
    fn keyword_index_follows_the_chunks_and_keeps_instances_apart() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("hearth.db")).unwrap();
        // Chunks written before the index exists are taken in at creation.
        store
            .search_file_indexed(
                "acct",
                "docs",
                &file("a.md", 1),
                &[chunk("a.md", 0, "Running rivers of Europe")],
            )
            .unwrap();
        store
            .search_keyword_create("acct", "docs", "porter unicode61 remove_diacritics 2")
            .unwrap();
        store
            .search_file_indexed(
                "acct",
                "docs",
                &file("b.md", 2),
                &[
                    chunk("b.md", 0, "The Danube runs east"),
                    chunk("b.md", 1, "Mountains and lakes"),
                ],
            )
            .unwrap();
        let ids = |q: &str| -> Vec<String> {
            store
                .search_keyword_query("acct", "docs", q, 10)
                .unwrap()
                .into_iter()
                .map(|m| m.chunk.id)
                .collect()
        };
        // Porter stemming: "run" finds "Running" and "runs".
        let mut run = ids("\"run\"");
        run.sort();
        assert_eq!(run, ["a.md-0", "b.md-0"]);
        assert_eq!(ids("\"danube\" AND \"east\""), ["b.md-0"]);
        let best = store
            .search_keyword_query("acct", "docs", "\"lakes\"", 10)
            .unwrap();
        assert!(best[0].relevance > 0.0 && best[0].modified_ms == 1_700_000_000_000);
        // Re-indexing a file replaces its terms; deleting it removes them.
        store
            .search_file_indexed(
                "acct",
                "docs",
                &file("b.md", 1),
                &[chunk("b.md", 0, "Deserts")],
            )
            .unwrap();
        assert!(ids("\"danube\"").is_empty());
        assert_eq!(ids("\"deserts\""), ["b.md-0"]);
        store.search_file_delete("acct", "docs", "b.md").unwrap();
        assert!(ids("\"deserts\"").is_empty());
        // Another account's instance of the same name has its own index.
        assert!(
            store
                .search_keyword_query("other", "docs", "\"rivers\"", 10)
                .unwrap()
                .is_empty()
        );
        store.search_instance_delete("acct", "docs").unwrap();
        assert!(ids("\"rivers\"").is_empty());
    }
}
