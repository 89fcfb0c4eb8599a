//! Local accounts and API tokens.
//!
//! Tokens are random 40-character strings; only their sha256 is stored (a
//! token carries enough entropy that a fast hash is the right tool, as for
//! GitHub's tokens). The file `<data_dir>/accounts.json` is replaced
//! atomically (write, fsync, rename), so a crash leaves the old or the new
//! version, never half of one.

use std::path::{Path, PathBuf};
use std::sync::RwLock;

use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum AccountsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid accounts file: {message}")]
    Corrupt { path: PathBuf, message: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TokenRecord {
    sha256: String,
    created_at: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct AccountRecord {
    id: String,
    name: String,
    created_at: u64,
    tokens: Vec<TokenRecord>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct AccountsFile {
    accounts: Vec<AccountRecord>,
}

pub struct Accounts {
    path: PathBuf,
    state: RwLock<AccountsFile>,
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn random_string(len: usize, alphabet: &[u8]) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| alphabet[rng.random_range(0..alphabet.len())] as char)
        .collect()
}

/// Constant-time comparison, so response timing reveals nothing about a hash prefix.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl Accounts {
    pub fn open(data_dir: &Path) -> Result<Self, AccountsError> {
        let path = data_dir.join("accounts.json");
        let state = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| AccountsError::Corrupt {
                path: path.clone(),
                message: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => AccountsFile::default(),
            Err(source) => return Err(AccountsError::Io { path, source }),
        };
        Ok(Self {
            path,
            state: RwLock::new(state),
        })
    }

    fn save(&self, state: &AccountsFile) -> Result<(), AccountsError> {
        let io = |source| AccountsError::Io {
            path: self.path.clone(),
            source,
        };
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = self.path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(state).map_err(|e| io(std::io::Error::other(e)))?;
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(io)?;
            f.write_all(&bytes).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        if let Some(dir) = self.path.parent()
            && let Ok(d) = std::fs::File::open(dir)
        {
            let _ = d.sync_all();
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.state.read().map_or(true, |s| s.accounts.is_empty())
    }

    pub fn exists(&self, account_id: &str) -> bool {
        self.state
            .read()
            .is_ok_and(|s| s.accounts.iter().any(|a| a.id == account_id))
    }

    /// The account a token belongs to.
    pub fn authenticate(&self, token: &str) -> Option<String> {
        let hash = hash_token(token);
        let state = self.state.read().ok()?;
        state
            .accounts
            .iter()
            .find(|a| a.tokens.iter().any(|t| same(&t.sha256, &hash)))
            .map(|a| a.id.clone())
    }

    /// Make sure `account_id` exists and accepts `token`.
    pub fn ensure(&self, account_id: &str, token: &str) -> Result<(), AccountsError> {
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        let hash = hash_token(token);
        let changed = match state.accounts.iter_mut().find(|a| a.id == account_id) {
            Some(a) if a.tokens.iter().any(|t| t.sha256 == hash) => false,
            Some(a) => {
                a.tokens.push(TokenRecord {
                    sha256: hash,
                    created_at: now(),
                });
                true
            }
            None => {
                state.accounts.push(AccountRecord {
                    id: account_id.to_string(),
                    name: "local".into(),
                    created_at: now(),
                    tokens: vec![TokenRecord {
                        sha256: hash,
                        created_at: now(),
                    }],
                });
                true
            }
        };
        if changed {
            self.save(&state)?;
        }
        Ok(())
    }

    /// Create a fresh account with one token; returns `(account_id, token)`.
    pub fn create(&self) -> Result<(String, String), AccountsError> {
        let id = random_string(32, b"0123456789abcdef");
        let token = random_string(
            40,
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-",
        );
        self.ensure(&id, &token)?;
        Ok((id, token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_stored_hashed_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let accounts = Accounts::open(dir.path()).unwrap();
        let (id, token) = accounts.create().unwrap();
        let raw = std::fs::read_to_string(dir.path().join("accounts.json")).unwrap();
        assert!(!raw.contains(&token));
        let reopened = Accounts::open(dir.path()).unwrap();
        assert_eq!(reopened.authenticate(&token), Some(id));
        assert_eq!(reopened.authenticate("wrong"), None);
    }
}
