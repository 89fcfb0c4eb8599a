//! AI Search rows: instances (their settings as the API takes them), the
//! files each indexed (content hash, chunk count, status), the chunks' text
//! (the vectors live in the instance's Vectorize index under the same ids),
//! and sync jobs with their logs.

use std::collections::BTreeMap;

use rusqlite::{OptionalExtension, params};

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

    /// Deletes an instance with its files, chunks and jobs.
    pub fn search_instance_delete(&self, account: &str, id: &str) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "DELETE FROM search_instances WHERE account = ?1 AND id = ?2",
            params![account, id],
        )?;
        for table in [
            "search_files",
            "search_chunks",
            "search_jobs",
            "search_job_logs",
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
        tx.execute(
            "DELETE FROM search_chunks WHERE account = ?1 AND instance = ?2 AND key = ?3",
            params![account, instance, file.key],
        )?;
        for c in chunks {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO search_chunks VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                account,
                instance,
                c.id,
                c.key,
                c.index as i64,
                c.text
            ])?;
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
        for table in ["search_chunks", "search_files"] {
            tx.execute(
                &format!("DELETE FROM {table} WHERE account = ?1 AND instance = ?2 AND key = ?3"),
                params![account, instance, key],
            )?;
        }
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

    /// A job's log lines, oldest first: `(created_ms, message, message_type)`.
    pub fn search_job_logs(
        &self,
        account: &str,
        instance: &str,
        job: &str,
    ) -> Result<Vec<(i64, String, String)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT created_ms, message, message_type FROM search_job_logs WHERE account = ?1 AND instance = ?2 AND job = ?3 ORDER BY rowid",
        )?;
        let rows = stmt
            .query_map(params![account, instance, job], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}
