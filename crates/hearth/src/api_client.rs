//! The HTTP client the CLI's commands use against a running server: where
//! it is (`--url`, else the configured listen address), whose account and
//! token, and the envelope unwrapped into `result` or an error that says
//! what the server said.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use hearth_runtime::Config;
use serde_json::Value;

#[derive(Args)]
pub struct Connection {
    /// Server base URL (default: http://<listen> from the config).
    #[arg(long)]
    url: Option<String>,
    /// Account id (default: HEARTH_ACCOUNT_ID / config `account_id`).
    #[arg(long)]
    account: Option<String>,
    /// API token (default: HEARTH_API_TOKEN / config `api_token`).
    #[arg(long)]
    token: Option<String>,
}

/// A server's API under one account, at `base` (the account's path plus
/// the surface's own, e.g. `/vectorize/v2/indexes`).
pub struct Client {
    pub http: reqwest::Client,
    pub base: String,
    token: String,
}

impl Client {
    pub fn new(config: &Config, conn: Connection, surface: &str) -> Result<Self> {
        let url = conn
            .url
            .unwrap_or_else(|| format!("http://{}", config.listen));
        let account = conn
            .account
            .or_else(|| config.account_id.clone())
            .context("no account: pass --account or set HEARTH_ACCOUNT_ID")?;
        let token = conn
            .token
            .or_else(|| config.api_token.clone())
            .context("no token: pass --token or set HEARTH_API_TOKEN")?;
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(600))
                .build()?,
            base: format!(
                "{}/client/v4/accounts/{account}{surface}",
                url.trim_end_matches('/')
            ),
            token,
        })
    }

    /// Sends and returns the answer's JSON, the envelope's `result`
    /// taken out when `enveloped`.
    async fn exchange(&self, req: reqwest::RequestBuilder, enveloped: bool) -> Result<Value> {
        let resp = req
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.base))?;
        let status = resp.status();
        let body: Value = resp
            .json()
            .await
            .context("the server did not answer JSON")?;
        if !status.is_success() || (enveloped && body["success"] != true) {
            let errors: Vec<String> = body["errors"]
                .as_array()
                .map(|errs| {
                    errs.iter()
                        .map(|e| {
                            format!("{} ({})", e["message"].as_str().unwrap_or("?"), e["code"])
                        })
                        .collect()
                })
                .unwrap_or_default();
            bail!("{status}: {}", errors.join("; "));
        }
        Ok(if enveloped {
            body["result"].clone()
        } else {
            body
        })
    }

    /// A request answered in the Cloudflare envelope: its `result`.
    pub async fn send(&self, req: reqwest::RequestBuilder) -> Result<Value> {
        self.exchange(req, true).await
    }

    /// A request answered without the envelope (OpenAI-shaped routes).
    pub async fn send_raw(&self, req: reqwest::RequestBuilder) -> Result<Value> {
        self.exchange(req, false).await
    }

    pub async fn get(&self, path: &str) -> Result<Value> {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Result<Value> {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body))
            .await
    }
}
