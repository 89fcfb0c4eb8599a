//! A bucket of an S3-compatible store (R2, S3, MinIO) as an AI Search
//! source, through `object_store`: the listing under the selection's
//! prefix, narrowed by its globs, with each object's ETag as its content
//! version (so unchanged objects are never downloaded), and objects read
//! one at a time with their user metadata (`x-amz-meta-*`, where
//! `context` lives).

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{Attribute, ObjectStore};

use crate::source::{MAX_FILE_BYTES, Selection, SourceError, SourceFile};

/// Where the store is and how to sign for it.
#[derive(Debug, Clone)]
pub struct BucketOptions {
    pub endpoint: String,
    pub region: String,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
}

/// One object's bytes and user metadata.
pub struct Object {
    pub bytes: Vec<u8>,
    pub metadata: BTreeMap<String, String>,
}

pub struct Bucket {
    name: String,
    store: Arc<dyn ObjectStore>,
}

fn read_error(bucket: &str, e: impl std::fmt::Display) -> SourceError {
    SourceError::Read {
        path: format!("bucket {bucket}"),
        reason: e.to_string(),
    }
}

impl Bucket {
    pub fn open(options: &BucketOptions, name: &str) -> Result<Self, SourceError> {
        let mut builder = AmazonS3Builder::new()
            .with_endpoint(&options.endpoint)
            .with_region(&options.region)
            .with_bucket_name(name)
            // R2 and MinIO address buckets by path, not by host name.
            .with_virtual_hosted_style_request(false)
            .with_allow_http(options.endpoint.starts_with("http://"));
        match (&options.access_key_id, &options.secret_access_key) {
            (Some(id), Some(secret)) => {
                builder = builder
                    .with_access_key_id(id)
                    .with_secret_access_key(secret);
            }
            _ => builder = builder.with_skip_signature(true),
        }
        let store = builder.build().map_err(|e| SourceError::Invalid {
            field: "source",
            reason: format!("bucket `{name}`: {e}"),
        })?;
        Ok(Self {
            name: name.to_string(),
            store: Arc::new(store),
        })
    }

    /// The objects the selection admits, by key, with their ETags.
    pub async fn scan(&self, selection: &Selection) -> Result<Vec<SourceFile>, SourceError> {
        let prefix = selection.prefix();
        let listing = if prefix.is_empty() {
            self.store.list(None)
        } else {
            // A key prefix need not end at a `/`: list its folder and
            // filter, as `Selection::admits` does.
            let folder = prefix.rfind('/').map(|i| &prefix[..i]).unwrap_or("");
            self.store.list(Some(&Path::from(folder)))
        };
        let objects: Vec<_> = listing
            .try_collect()
            .await
            .map_err(|e| read_error(&self.name, e))?;
        let mut out: Vec<SourceFile> = objects
            .into_iter()
            .filter(|o| selection.admits(o.location.as_ref()))
            .map(|o| SourceFile {
                key: o.location.to_string(),
                size: o.size,
                modified_ms: o.last_modified.timestamp_millis(),
                // The ETag changes with the content; with none, the time
                // and size stand in.
                hash: o.e_tag.clone().map_or_else(
                    || format!("{}-{}", o.last_modified.timestamp_millis(), o.size),
                    |t| format!("etag:{}", t.trim_matches('"')),
                ),
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    pub async fn read(&self, key: &str) -> Result<Object, SourceError> {
        let got = self
            .store
            .get(&Path::from(key))
            .await
            .map_err(|e| read_error(&self.name, format!("{key}: {e}")))?;
        if got.meta.size > MAX_FILE_BYTES {
            return Err(read_error(
                &self.name,
                format!("{key}: over the {MAX_FILE_BYTES} byte limit"),
            ));
        }
        let metadata = got
            .attributes
            .iter()
            .filter_map(|(k, v)| match k {
                Attribute::Metadata(name) => Some((name.to_string(), v.to_string())),
                _ => None,
            })
            .collect();
        let bytes = got
            .bytes()
            .await
            .map_err(|e| read_error(&self.name, format!("{key}: {e}")))?;
        Ok(Object {
            bytes: bytes.to_vec(),
            metadata,
        })
    }
}
