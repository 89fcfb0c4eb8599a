//! Layered configuration: defaults < `hearth.toml` < `HEARTH_*` env < flags.
//!
//! Each layer is a TOML table merged over the one below; the result is
//! deserialized once with unknown fields rejected, then checked by
//! [`Config::validate`]. The file is `--config PATH`, else `$HEARTH_CONFIG`,
//! else `hearth.toml` in the working directory if present, else
//! `<data dir>/hearth.toml` if present.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Every environment variable Hearth reads, with the config key it sets.
pub const ENV_VARS: &[(&str, &str)] = &[
    ("HEARTH_LISTEN", "listen"),
    ("HEARTH_DATA_DIR", "data_dir"),
    ("HEARTH_MODELS_DIR", "models_dir"),
    ("HEARTH_ACCOUNT_ID", "account_id"),
    ("HEARTH_API_TOKEN", "api_token"),
    ("HEARTH_DEFAULT_MODEL", "default_model"),
    ("HEARTH_HUB_ENDPOINT", "hub_endpoint"),
    ("HEARTH_HUB_TOKEN", "hub_token"),
    ("HEARTH_MAX_BODY_BYTES", "max_body_bytes"),
    ("HEARTH_REQUEST_TIMEOUT_SECS", "request_timeout_secs"),
    ("HEARTH_THREADS", "textgen.threads"),
    ("HEARTH_PARALLEL", "textgen.parallel"),
    ("HEARTH_CTX_PER_SEQ", "textgen.ctx_per_seq"),
    ("HEARTH_BATCH", "textgen.batch"),
    (
        "HEARTH_VECTORIZE_SNAPSHOT_AFTER_BYTES",
        "vectorize.snapshot_after_bytes",
    ),
    ("HEARTH_QUEUE", "textgen.queue"),
    (
        "HEARTH_TRANSLATION_LLM_FALLBACK",
        "translation.llm_fallback",
    ),
    ("HEARTH_R2_ENDPOINT", "search.r2.endpoint"),
    ("HEARTH_R2_ACCESS_KEY_ID", "search.r2.access_key_id"),
    ("HEARTH_R2_SECRET_ACCESS_KEY", "search.r2.secret_access_key"),
];

/// Points at the config file when no `--config` flag is given.
pub const CONFIG_ENV: &str = "HEARTH_CONFIG";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// AI Search sources.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SearchConfig {
    /// Folders a `type: "local"` instance may index (and their
    /// subfolders). Empty: any folder the server can read, which suits one
    /// developer's machine; set it when accounts must not read each
    /// other's files.
    pub roots: Vec<PathBuf>,
    /// The S3-compatible storage `type: "r2"` instances read buckets from.
    pub r2: Option<S3Config>,
}

/// An S3-compatible endpoint: R2 (`https://<account>.r2.cloudflarestorage.com`),
/// S3, MinIO.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    pub endpoint: String,
    /// `auto` for R2.
    #[serde(default = "default_region")]
    pub region: String,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
}

fn default_region() -> String {
    "auto".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TextGenConfig {
    /// CPU threads for llama.cpp (0: all cores).
    pub threads: usize,
    /// Sequences decoded together per model.
    pub parallel: usize,
    /// Context (KV cells) per sequence.
    pub ctx_per_seq: u32,
    /// Tokens per llama.cpp batch.
    pub batch: u32,
    /// Waiting requests per model before 3040.
    pub queue: usize,
}

impl Default for TextGenConfig {
    fn default() -> Self {
        Self {
            threads: 0,
            parallel: 8,
            ctx_per_seq: 2048,
            batch: 512,
            queue: 64,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VectorizeConfig {
    /// Threads that link new vectors into an index's graph (0: all cores).
    pub build_threads: usize,
    /// Snapshot an index once this many bytes of log follow its last snapshot.
    pub snapshot_after_bytes: u64,
    /// Beam width of a query's graph search (higher: better recall, slower).
    pub ef_search: usize,
    /// Largest insert/upsert body (Vectorize's upload limit is 100 MB).
    pub max_upload_bytes: usize,
}

impl Default for VectorizeConfig {
    fn default() -> Self {
        Self {
            build_threads: 0,
            snapshot_after_bytes: 64 << 20,
            ef_search: 100,
            max_upload_bytes: 100 * 1024 * 1024,
        }
    }
}

/// How an account pays for Neurons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Plan {
    /// Workers Free: 10,000 Neurons a day, then 3036 until 00:00 UTC.
    Free,
    /// Workers Paid: the same daily allocation, overage billed.
    Paid,
    /// Self-hosted: metered, never blocked.
    Unlimited,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// The plan of accounts not listed in `plans`.
    pub default_plan: Plan,
    /// Plan per account id.
    pub plans: BTreeMap<String, Plan>,
    /// Enforce Workers AI's per-account, per-task requests-per-minute limits.
    pub rate_limits: bool,
    /// Override a task's (or a model id's) requests per minute.
    pub rpm: BTreeMap<String, u32>,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            default_plan: Plan::Unlimited,
            plans: BTreeMap::new(),
            rate_limits: true,
            rpm: BTreeMap::new(),
        }
    }
}

/// Translation (`@cf/meta/m2m100-1.2b`'s contract).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TranslationConfig {
    /// When no installed translation model covers a language pair, let the
    /// default instruct model translate (the answer's `x-hearth-translator`
    /// header names it). Off: such a request is refused.
    pub llm_fallback: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// Finished batches are deleted this long after they finish.
    pub retention_hours: u64,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            retention_hours: 7 * 24,
        }
    }
}

/// One OpenAI-compatible upstream (vLLM, TGI, llama.cpp server, Ollama,
/// another Hearth, a hosted API) reachable through every gateway as
/// `/v1/{account}/{gateway}/<slug>/...` and `<slug>/<model>` in `/compat`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// The API root provider paths are appended to (`http://host:8000/v1`).
    pub base_url: String,
    /// Bearer key sent when a request brings no `Authorization`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// Read the key from this environment variable instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// USD per million tokens by model name, for gateway logs' `cost`.
    #[serde(default)]
    pub prices: BTreeMap<String, hearth_gateway::providers::Price>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Bytes of cached responses kept (in memory, mirrored in the data dir).
    pub cache_bytes: usize,
    /// Upstream providers by slug.
    pub providers: BTreeMap<String, UpstreamConfig>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            cache_bytes: 256 << 20,
            providers: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address `hearth serve` listens on.
    pub listen: String,
    /// Everything Hearth writes lives under this folder.
    pub data_dir: PathBuf,
    /// Weights folder; `<data_dir>/models` when unset.
    pub models_dir: Option<PathBuf>,
    /// An account that must exist at start (with `api_token`).
    pub account_id: Option<String>,
    pub api_token: Option<String>,
    /// The model `hearth serve` shows in its ready message and `hearth run` uses by default.
    pub default_model: String,
    /// Hugging Face-compatible hub for `hearth models pull`.
    pub hub_endpoint: String,
    pub hub_token: Option<String>,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Time limit of one request (3007 past it).
    pub request_timeout_secs: u64,
    pub textgen: TextGenConfig,
    pub vectorize: VectorizeConfig,
    pub limits: LimitsConfig,
    pub batch: BatchConfig,
    pub gateway: GatewayConfig,
    pub search: SearchConfig,
    pub translation: TranslationConfig,
    /// Serve a catalog id with another entry's weights: `"@cf/meta/llama-3.1-8b-instruct" = "@cf/huggingfacetb/smollm2-135m-instruct"`.
    pub aliases: BTreeMap<String, String>,
}

pub fn default_data_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".local/share/hearth")
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8787".into(),
            data_dir: default_data_dir(),
            models_dir: None,
            account_id: None,
            api_token: None,
            default_model: "@cf/huggingfacetb/smollm2-135m-instruct".into(),
            hub_endpoint: "https://huggingface.co".into(),
            hub_token: None,
            max_body_bytes: 10 * 1024 * 1024,
            request_timeout_secs: 300,
            textgen: TextGenConfig::default(),
            vectorize: VectorizeConfig::default(),
            limits: LimitsConfig::default(),
            batch: BatchConfig::default(),
            gateway: GatewayConfig::default(),
            search: SearchConfig::default(),
            translation: TranslationConfig::default(),
            aliases: BTreeMap::new(),
        }
    }
}

/// Set `key` (dotted) in `table` to `value`.
fn set_path(table: &mut toml::Table, key: &str, value: toml::Value) {
    let mut parts = key.split('.').peekable();
    let mut cur = table;
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            cur.insert(part.to_string(), value);
            return;
        }
        let entry = cur
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        let toml::Value::Table(next) = entry else {
            return;
        };
        cur = next;
    }
}

fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// An env or flag string as TOML: integers and booleans keep their type.
fn scalar(raw: &str) -> toml::Value {
    if let Ok(i) = raw.parse::<i64>() {
        return toml::Value::Integer(i);
    }
    match raw {
        "true" => toml::Value::Boolean(true),
        "false" => toml::Value::Boolean(false),
        _ => toml::Value::String(raw.to_string()),
    }
}

/// The inputs of [`Config::load`].
#[derive(Debug, Default)]
pub struct ConfigSources {
    pub file: Option<PathBuf>,
    /// `(dotted key, value)` pairs from command-line flags.
    pub flags: Vec<(String, String)>,
    /// The environment to read (tests pass their own).
    pub env: Vec<(String, String)>,
}

impl ConfigSources {
    pub fn from_process(file: Option<PathBuf>, flags: Vec<(String, String)>) -> Self {
        Self {
            file,
            flags,
            env: std::env::vars().collect(),
        }
    }
}

impl Config {
    pub fn load(sources: ConfigSources) -> Result<Self, ConfigError> {
        let env: BTreeMap<_, _> = sources.env.into_iter().collect();
        let mut layered =
            toml::Table::try_from(Config::default()).map_err(|e| ConfigError::Parse {
                origin: "defaults".into(),
                message: e.to_string(),
            })?;

        let mut env_layer = toml::Table::new();
        for (var, key) in ENV_VARS {
            if let Some(v) = env.get(*var).filter(|v| !v.is_empty()) {
                // Ids and tokens stay strings even when they look like numbers.
                let value = if matches!(*key, "account_id" | "api_token" | "hub_token") {
                    toml::Value::String(v.clone())
                } else {
                    scalar(v)
                };
                set_path(&mut env_layer, key, value);
            }
        }
        let mut flag_layer = toml::Table::new();
        for (key, v) in &sources.flags {
            set_path(&mut flag_layer, key, scalar(v));
        }

        let file = sources
            .file
            .or_else(|| env.get(CONFIG_ENV).map(PathBuf::from))
            .or_else(|| Some(PathBuf::from("hearth.toml")).filter(|p| p.is_file()))
            .or_else(|| {
                let data_dir = flag_layer
                    .get("data_dir")
                    .or_else(|| env_layer.get("data_dir"))
                    .and_then(|v| v.as_str())
                    .map(PathBuf::from)
                    .unwrap_or_else(default_data_dir);
                Some(data_dir.join("hearth.toml")).filter(|p| p.is_file())
            });
        if let Some(path) = &file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            let table: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Parse {
                origin: path.display().to_string(),
                message: e.to_string(),
            })?;
            merge(&mut layered, table);
        }
        merge(&mut layered, env_layer);
        merge(&mut layered, flag_layer);
        let origin = file
            .as_deref()
            .map(Path::display)
            .map(|d| format!("configuration (file {d}, env, flags)"))
            .unwrap_or_else(|| "configuration (env, flags)".into());
        // The path names the offending key (`textgen.parallel: invalid type ...`).
        let config: Config = serde_path_to_error::deserialize(toml::Value::Table(layered))
            .map_err(|e| ConfigError::Parse {
                origin,
                message: format!("`{}`: {}", e.path(), e.inner().message()),
            })?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.listen.parse::<SocketAddr>().is_err() {
            return bad(format!("`listen` must be HOST:PORT, got `{}`", self.listen));
        }
        if let Some(id) = &self.account_id
            && !is_account_id(id)
        {
            return bad(format!(
                "`account_id` must be 32 hex characters, got `{id}`"
            ));
        }
        if self.account_id.is_some() != self.api_token.is_some() {
            return bad("`account_id` and `api_token` must be set together".into());
        }
        if self.api_token.as_deref().is_some_and(|t| t.len() < 8) {
            return bad("`api_token` must be at least 8 characters".into());
        }
        if self.textgen.parallel == 0 || self.textgen.parallel > 256 {
            return bad("`textgen.parallel` must be between 1 and 256".into());
        }
        if self.textgen.ctx_per_seq < 64 {
            return bad("`textgen.ctx_per_seq` must be at least 64".into());
        }
        if self.textgen.batch < 8 {
            return bad("`textgen.batch` must be at least 8".into());
        }
        if self.max_body_bytes < 1024 {
            return bad("`max_body_bytes` must be at least 1024".into());
        }
        if self.request_timeout_secs == 0 {
            return bad("`request_timeout_secs` must be at least 1".into());
        }
        for (slug, upstream) in &self.gateway.providers {
            if matches!(slug.as_str(), "workers-ai" | "compat") || slug.starts_with("custom-") {
                return bad(format!(
                    "`gateway.providers.{slug}`: `workers-ai`, `compat` and `custom-*` are reserved"
                ));
            }
            if slug.is_empty()
                || !slug
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
            {
                return bad(format!(
                    "`gateway.providers.{slug}`: a slug is lowercase letters, digits, `-` or `_`"
                ));
            }
            if let Err(e) = hearth_gateway::providers::check_base_url(
                &format!("gateway.providers.{slug}.base_url"),
                &upstream.base_url,
            ) {
                return bad(e.to_string());
            }
        }
        for (from, to) in &self.aliases {
            if from == to {
                return bad(format!("alias `{from}` points at itself"));
            }
        }
        Ok(())
    }

    pub fn models_dir(&self) -> PathBuf {
        self.models_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("models"))
    }

    pub fn threads(&self) -> usize {
        if self.textgen.threads == 0 {
            std::thread::available_parallelism().map_or(2, usize::from)
        } else {
            self.textgen.threads
        }
    }
}

pub fn is_account_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(
        env: &[(&str, &str)],
        flags: &[(&str, &str)],
        file: Option<PathBuf>,
    ) -> ConfigSources {
        ConfigSources {
            file,
            flags: flags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn layers_apply_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hearth.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:1000\"\n[textgen]\nparallel = 2\nctx_per_seq = 512\n",
        )
        .unwrap();
        let c = Config::load(sources(
            &[
                ("HEARTH_LISTEN", "127.0.0.1:2000"),
                ("HEARTH_PARALLEL", "3"),
            ],
            &[("listen", "127.0.0.1:3000")],
            Some(file),
        ))
        .unwrap();
        assert_eq!(c.listen, "127.0.0.1:3000");
        assert_eq!(c.textgen.parallel, 3);
        assert_eq!(c.textgen.ctx_per_seq, 512);
    }

    #[test]
    fn unknown_fields_are_rejected_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hearth.toml");
        std::fs::write(&file, "listne = \"x\"\n").unwrap();
        let e = Config::load(sources(&[], &[], Some(file)))
            .unwrap_err()
            .to_string();
        assert!(e.contains("listne"), "{e}");
    }

    #[test]
    fn a_wrongly_typed_env_value_names_its_key() {
        let e = Config::load(sources(&[("HEARTH_PARALLEL", "abc")], &[], None))
            .unwrap_err()
            .to_string();
        assert!(e.contains("textgen.parallel"), "{e}");
    }

    #[test]
    fn account_id_must_be_hex() {
        let e = Config::load(sources(
            &[
                ("HEARTH_ACCOUNT_ID", "nothex"),
                ("HEARTH_API_TOKEN", "secret-token"),
            ],
            &[],
            None,
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("account_id"), "{e}");
    }
}
