//! What an instance indexes and what a sync must do about it: the files of
//! a local folder (keys are paths relative to it, `/`-separated as object
//! keys are), narrowed by `prefix` and include/exclude globs, each with its
//! size, modification time and content hash; and the plan that compares
//! them with what the last sync indexed, so that only new, changed and
//! deleted files are reprocessed.

use std::collections::BTreeMap;
use std::path::Path;

use globset::{Glob, GlobSet, GlobSetBuilder};
use sha2::{Digest, Sha256};

/// AI Search's largest indexed file.
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("`{field}`: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
}

/// Which keys of a source are indexed.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    prefix: String,
    include: Option<GlobSet>,
    exclude: Option<GlobSet>,
}

fn globs(field: &'static str, patterns: &[String]) -> Result<Option<GlobSet>, SourceError> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut set = GlobSetBuilder::new();
    for p in patterns {
        set.add(Glob::new(p).map_err(|e| SourceError::Invalid {
            field,
            reason: format!("`{p}` is not a glob ({e})"),
        })?);
    }
    set.build().map(Some).map_err(|e| SourceError::Invalid {
        field,
        reason: e.to_string(),
    })
}

impl Selection {
    pub fn new(
        prefix: &str,
        include_items: &[String],
        exclude_items: &[String],
    ) -> Result<Self, SourceError> {
        Ok(Self {
            prefix: prefix.trim_start_matches('/').to_string(),
            include: globs("include_items", include_items)?,
            exclude: globs("exclude_items", exclude_items)?,
        })
    }

    /// The key prefix every admitted key starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Keys under the prefix, matching an include glob (when any are
    /// given) and no exclude glob.
    pub fn admits(&self, key: &str) -> bool {
        key.starts_with(&self.prefix)
            && self.include.as_ref().is_none_or(|g| g.is_match(key))
            && !self.exclude.as_ref().is_some_and(|g| g.is_match(key))
    }
}

/// One file of a source as a sync sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceFile {
    pub key: String,
    pub size: u64,
    pub modified_ms: i64,
    /// Hex SHA-256 of the content; empty for files over the size limit,
    /// which are not read.
    pub hash: String,
}

/// The files of `root` that `selection` admits, by key.
pub fn scan(root: &Path, selection: &Selection) -> Result<Vec<SourceFile>, SourceError> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    let read_err = |path: &Path, e: std::io::Error| SourceError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).map_err(|e| read_err(&dir, e))? {
            let entry = entry.map_err(|e| read_err(&dir, e))?;
            let path = entry.path();
            let meta = entry.metadata().map_err(|e| read_err(&path, e))?;
            if meta.is_dir() {
                dirs.push(path);
                continue;
            }
            if !meta.is_file() {
                continue;
            }
            let Ok(relative) = path.strip_prefix(root) else {
                continue;
            };
            let key = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            if !selection.admits(&key) {
                continue;
            }
            let modified_ms = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_millis() as i64);
            let hash = if meta.len() > MAX_FILE_BYTES {
                String::new()
            } else {
                let bytes = std::fs::read(&path).map_err(|e| read_err(&path, e))?;
                hex::encode(Sha256::digest(&bytes))
            };
            out.push(SourceFile {
                key,
                size: meta.len(),
                modified_ms,
                hash,
            });
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

/// What a sync does, file by file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SyncPlan {
    /// New or changed: convert, chunk, embed, replace the old chunks.
    pub index: Vec<SourceFile>,
    /// Gone from the source: their chunks go.
    pub delete: Vec<String>,
    /// Indexed already with the same content.
    pub unchanged: Vec<String>,
    /// Over the size limit: reported as errors, not indexed.
    pub too_large: Vec<SourceFile>,
}

/// Compares the source now with the content hashes the last sync indexed.
pub fn plan(indexed: &BTreeMap<String, String>, now: &[SourceFile]) -> SyncPlan {
    let mut plan = SyncPlan::default();
    for f in now {
        if f.size > MAX_FILE_BYTES {
            plan.too_large.push(f.clone());
        } else if indexed.get(&f.key) == Some(&f.hash) {
            plan.unchanged.push(f.key.clone());
        } else {
            plan.index.push(f.clone());
        }
    }
    let present: std::collections::HashSet<&str> = now.iter().map(|f| f.key.as_str()).collect();
    plan.delete = indexed
        .keys()
        .filter(|k| !present.contains(k.as_str()))
        .cloned()
        .collect();
    plan
}

/// The folder of a key as AI Search's filters see it: the key's prefix up
/// to and including the last `/` (empty at the top).
pub fn folder_of(key: &str) -> &str {
    key.rfind('/').map_or("", |i| &key[..=i])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, key: &str, data: &[u8]) {
        let path = root.join(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
    }

    #[test]
    fn scan_selects_hashes_and_plans_only_what_changed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "docs/a.md", b"alpha");
        write(root, "docs/b.md", b"beta");
        write(root, "docs/drafts/c.md", b"gamma");
        write(root, "other/d.txt", b"delta");
        let selection =
            Selection::new("docs/", &["**/*.md".into()], &["docs/drafts/**".into()]).unwrap();
        let files = scan(root, &selection).unwrap();
        let keys: Vec<&str> = files.iter().map(|f| f.key.as_str()).collect();
        assert_eq!(keys, ["docs/a.md", "docs/b.md"]);
        assert_eq!(files[0].hash.len(), 64);

        let first = plan(&BTreeMap::new(), &files);
        assert_eq!(first.index.len(), 2);
        let indexed: BTreeMap<String, String> = files
            .iter()
            .map(|f| (f.key.clone(), f.hash.clone()))
            .collect();

        // Edit one, delete one, add one: only those are reprocessed.
        write(root, "docs/a.md", b"alpha, edited");
        std::fs::remove_file(root.join("docs/b.md")).unwrap();
        write(root, "docs/e.md", b"epsilon");
        let again = plan(&indexed, &scan(root, &selection).unwrap());
        let reindexed: Vec<&str> = again.index.iter().map(|f| f.key.as_str()).collect();
        assert_eq!(reindexed, ["docs/a.md", "docs/e.md"]);
        assert_eq!(again.delete, ["docs/b.md"]);
        assert!(again.unchanged.is_empty());

        let unchanged = plan(
            &scan(root, &selection)
                .unwrap()
                .into_iter()
                .map(|f| (f.key, f.hash))
                .collect(),
            &scan(root, &selection).unwrap(),
        );
        assert!(unchanged.index.is_empty() && unchanged.delete.is_empty());
        assert_eq!(unchanged.unchanged.len(), 2);
    }

    #[test]
    fn bad_globs_name_their_field_and_folders_follow_keys() {
        let e = Selection::new("", &["a[".into()], &[]).unwrap_err();
        assert!(e.to_string().contains("`include_items`"), "{e}");
        assert_eq!(folder_of("customer-a/docs/x.pdf"), "customer-a/docs/");
        assert_eq!(folder_of("top.md"), "");
    }

    #[test]
    fn oversized_files_are_not_read_and_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "big.txt",
            &vec![b'x'; MAX_FILE_BYTES as usize + 1],
        );
        let files = scan(dir.path(), &Selection::default()).unwrap();
        assert_eq!(files[0].hash, "");
        let p = plan(&BTreeMap::new(), &files);
        assert_eq!(p.too_large.len(), 1);
        assert!(p.index.is_empty());
    }
}
