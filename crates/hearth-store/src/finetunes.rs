//! Fine-tunes (LoRA adapters) as account resources: the row the API shows;
//! the adapter's files live in the data dir beside it.

use rusqlite::{OptionalExtension, params};

use crate::{Store, StoreError};

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS finetunes (
    account TEXT NOT NULL, id TEXT NOT NULL, name TEXT NOT NULL, model TEXT NOT NULL,
    description TEXT, public INTEGER NOT NULL,
    created_ms INTEGER NOT NULL, modified_ms INTEGER NOT NULL,
    PRIMARY KEY (account, id), UNIQUE (account, name)
);
";

/// A stored fine-tune.
#[derive(Debug, Clone, PartialEq)]
pub struct FinetuneRow {
    pub id: String,
    pub name: String,
    pub model: String,
    pub description: Option<String>,
    pub public: bool,
    pub created_ms: i64,
    pub modified_ms: i64,
}

fn row_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<FinetuneRow> {
    Ok(FinetuneRow {
        id: r.get(0)?,
        name: r.get(1)?,
        model: r.get(2)?,
        description: r.get(3)?,
        public: r.get::<_, i64>(4)? != 0,
        created_ms: r.get(5)?,
        modified_ms: r.get(6)?,
    })
}

const COLUMNS: &str = "id, name, model, description, public, created_ms, modified_ms";

impl Store {
    /// Inserts a fine-tune; `false` when the account has one of that name.
    pub fn finetune_insert(&self, account: &str, row: &FinetuneRow) -> Result<bool, StoreError> {
        let n = self.conn().execute(
            "INSERT OR IGNORE INTO finetunes VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                account,
                row.id,
                row.name,
                row.model,
                row.description,
                row.public as i64,
                row.created_ms,
                row.modified_ms
            ],
        )?;
        Ok(n == 1)
    }

    /// The account's fine-tunes, oldest first.
    pub fn finetune_list(&self, account: &str) -> Result<Vec<FinetuneRow>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM finetunes WHERE account = ?1 ORDER BY created_ms, id"
        ))?;
        let rows = stmt
            .query_map(params![account], row_of)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Public fine-tunes of every account.
    pub fn finetune_list_public(&self) -> Result<Vec<FinetuneRow>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM finetunes WHERE public = 1 ORDER BY created_ms, id"
        ))?;
        let rows = stmt.query_map([], row_of)?.collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// The account's fine-tune whose id or name is `key`.
    pub fn finetune_get(
        &self,
        account: &str,
        key: &str,
    ) -> Result<Option<FinetuneRow>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                &format!(
                    "SELECT {COLUMNS} FROM finetunes WHERE account = ?1 AND (id = ?2 OR name = ?2)"
                ),
                params![account, key],
                row_of,
            )
            .optional()?)
    }
}
