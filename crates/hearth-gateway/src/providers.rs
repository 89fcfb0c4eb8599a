//! Upstream providers: OpenAI-compatible servers (vLLM, TGI, llama.cpp
//! server, Ollama, another Hearth, or a hosted API) that the gateway
//! forwards to. They come from the config file (`[gateway.providers.<slug>]`)
//! or from the custom-providers API (`custom-<slug>` in gateway URLs).

use std::collections::BTreeMap;

use hearth_store::{CustomProviderRow, Store};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{GatewayError, invalid};

/// USD per million tokens of one upstream model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
}

/// Where and how to reach one upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct Upstream {
    /// As it appears in gateway URLs (`vllm`, `custom-acme`).
    pub slug: String,
    /// Without a trailing slash; provider paths are appended to it.
    pub base_url: String,
    /// Sent as `Authorization: Bearer` when the request brings none.
    pub api_key: Option<String>,
    /// Extra headers sent on every request (a custom provider's `headers`).
    pub headers: Vec<(String, String)>,
    pub prices: BTreeMap<String, Price>,
    /// Changes whenever the provider does (a custom provider's
    /// `modified_at`; 0 for the config file's). Part of the cache key, so
    /// that updating or re-creating a provider leaves its cached answers
    /// unreachable, as Cloudflare invalidates them.
    pub version: i64,
}

impl Upstream {
    pub fn url(&self, path: &str, query: Option<&str>) -> String {
        let mut url = format!("{}/{}", self.base_url, path.trim_start_matches('/'));
        if let Some(q) = query.filter(|q| !q.is_empty()) {
            url.push('?');
            url.push_str(q);
        }
        url
    }

    /// Cost in USD from the price table, when the model has a price and
    /// the answer reported tokens.
    pub fn cost(
        &self,
        model: &str,
        tokens_in: Option<u64>,
        tokens_out: Option<u64>,
    ) -> Option<f64> {
        let price = self.prices.get(model)?;
        if tokens_in.is_none() && tokens_out.is_none() {
            return None;
        }
        Some(
            (price.input_per_mtok * tokens_in.unwrap_or(0) as f64
                + price.output_per_mtok * tokens_out.unwrap_or(0) as f64)
                / 1e6,
        )
    }
}

/// Checks a base URL: http or https, a host, no query or fragment.
pub fn check_base_url(field: &str, url: &str) -> Result<String, GatewayError> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    match rest {
        Some(r) if !r.is_empty() && !r.starts_with('/') && !r.contains(['?', '#', ' ']) => {
            Ok(url.trim_end_matches('/').to_string())
        }
        _ => Err(invalid(format!(
            "`{field}` must be an http:// or https:// URL without query, got {url:?}"
        ))),
    }
}

fn check_slug(slug: &str) -> Result<(), GatewayError> {
    let ok = !slug.is_empty()
        && slug.len() <= 64
        && slug
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "`slug` {slug:?} must be 1 to 64 lowercase letters, digits, `-` or `_`"
        )))
    }
}

const STRING_FIELDS: &[&str] = &[
    "name",
    "description",
    "link",
    "curl_example",
    "js_example",
    "logo",
];

/// Checks a custom provider's create (`creating`: every required field) or
/// edit body; returns the settings to store with a normalized `base_url`.
pub fn custom_provider_settings(
    body: &Value,
    current: Option<&Map<String, Value>>,
) -> Result<Map<String, Value>, GatewayError> {
    let Value::Object(patch) = body else {
        return Err(invalid("the body must be a JSON object"));
    };
    let mut out = current.cloned().unwrap_or_default();
    for (k, v) in patch {
        let checked = match k.as_str() {
            "slug" => match v {
                Value::String(s) => {
                    check_slug(s)?;
                    v.clone()
                }
                _ => return Err(invalid(format!("`slug` must be a string, got {v}"))),
            },
            "base_url" => match v {
                Value::String(s) => Value::String(check_base_url("base_url", s)?),
                _ => return Err(invalid(format!("`base_url` must be a string, got {v}"))),
            },
            "enable" | "beta" => match v {
                Value::Bool(_) => v.clone(),
                _ => return Err(invalid(format!("`{k}` must be true or false, got {v}"))),
            },
            "position" => match v.as_i64() {
                Some(_) => v.clone(),
                None => {
                    return Err(invalid(format!(
                        "`position` must be a whole number, got {v}"
                    )));
                }
            },
            "headers" => match v {
                Value::String(s) => {
                    header_pairs(s)?;
                    v.clone()
                }
                Value::Null => v.clone(),
                _ => {
                    return Err(invalid(format!(
                        "`headers` must be a JSON object as a string, got {v}"
                    )));
                }
            },
            f if STRING_FIELDS.contains(&f) => match v {
                Value::String(s) if f != "name" || !s.is_empty() => v.clone(),
                Value::Null if f != "name" => v.clone(),
                _ => {
                    return Err(invalid(format!(
                        "`{f}` must be a non-empty string, got {v}"
                    )));
                }
            },
            other => {
                return Err(invalid(format!(
                    "unknown field `{other}` (name, slug, base_url, description, link, enable, beta, headers, position, curl_example, js_example, logo)"
                )));
            }
        };
        out.insert(k.clone(), checked);
    }
    for required in ["name", "slug", "base_url"] {
        if !out.contains_key(required) {
            return Err(invalid(format!("`{required}` is required")));
        }
    }
    out.entry("enable").or_insert(Value::Bool(false));
    out.entry("beta").or_insert(Value::Bool(false));
    Ok(out)
}

/// A custom provider's `headers` string as name/value pairs.
pub fn header_pairs(raw: &str) -> Result<Vec<(String, String)>, GatewayError> {
    match serde_json::from_str::<Value>(raw) {
        Ok(Value::Object(m)) => m
            .into_iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k, s)),
                other => Err(invalid(format!(
                    "`headers` value of `{k}` must be a string, got {other}"
                ))),
            })
            .collect(),
        _ => Err(invalid(
            "`headers` must be a JSON object of strings, as a string",
        )),
    }
}

/// The API object of a custom provider.
pub fn custom_provider_object(row: &CustomProviderRow, iso: impl Fn(i64) -> String) -> Value {
    let mut obj = match &row.settings {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    obj.insert("id".into(), Value::String(row.id.clone()));
    obj.insert("created_at".into(), Value::String(iso(row.created_ms)));
    obj.insert("modified_at".into(), Value::String(iso(row.modified_ms)));
    Value::Object(obj)
}

/// At most this many custom providers per account.
pub const MAX_CUSTOM_PROVIDERS: usize = 100;

/// Custom providers of every account, over the store.
pub struct CustomProviders<'s> {
    pub store: &'s Store,
}

fn slug_of(settings: &Map<String, Value>) -> String {
    settings
        .get("slug")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

impl CustomProviders<'_> {
    pub fn create(
        &self,
        account: &str,
        id: String,
        body: &Value,
        now_ms: i64,
    ) -> Result<CustomProviderRow, GatewayError> {
        let settings = custom_provider_settings(body, None)?;
        if self.store.custom_provider_list(account)?.len() >= MAX_CUSTOM_PROVIDERS {
            return Err(invalid(format!(
                "an account holds at most {MAX_CUSTOM_PROVIDERS} custom providers"
            )));
        }
        let slug = slug_of(&settings);
        let row = CustomProviderRow {
            id,
            settings: Value::Object(settings),
            created_ms: now_ms,
            modified_ms: now_ms,
        };
        if !self.store.custom_provider_insert(account, &slug, &row)? {
            return Err(GatewayError::Exists(format!(
                "custom provider slug `{slug}`"
            )));
        }
        Ok(row)
    }

    pub fn get(&self, account: &str, id: &str) -> Result<CustomProviderRow, GatewayError> {
        self.store
            .custom_provider_get(account, id)?
            .ok_or_else(|| GatewayError::NotFound(format!("custom provider `{id}`")))
    }

    pub fn edit(
        &self,
        account: &str,
        id: &str,
        body: &Value,
        now_ms: i64,
    ) -> Result<CustomProviderRow, GatewayError> {
        let mut row = self.get(account, id)?;
        let current = row.settings.as_object().cloned().unwrap_or_default();
        let settings = custom_provider_settings(body, Some(&current))?;
        let slug = slug_of(&settings);
        row.settings = Value::Object(settings);
        row.modified_ms = now_ms;
        if !self.store.custom_provider_update(account, &slug, &row)? {
            return Err(GatewayError::Exists(format!(
                "custom provider slug `{slug}`"
            )));
        }
        Ok(row)
    }

    pub fn delete(&self, account: &str, id: &str) -> Result<CustomProviderRow, GatewayError> {
        let row = self.get(account, id)?;
        self.store.custom_provider_delete(account, id)?;
        Ok(row)
    }

    /// The upstream behind `custom-<slug>`, if it exists and is enabled.
    pub fn upstream(&self, account: &str, slug: &str) -> Result<Upstream, GatewayError> {
        let row = self
            .store
            .custom_provider_by_slug(account, slug)?
            .ok_or_else(|| {
                invalid(format!(
                    "no custom provider with slug `{slug}` in this account"
                ))
            })?;
        let s = &row.settings;
        if s.get("enable").and_then(Value::as_bool) != Some(true) {
            return Err(invalid(format!(
                "custom provider `{slug}` is disabled (set `enable: true`)"
            )));
        }
        Ok(Upstream {
            slug: format!("custom-{slug}"),
            base_url: s
                .get("base_url")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            api_key: None,
            headers: match s.get("headers").and_then(Value::as_str) {
                Some(h) => header_pairs(h)?,
                None => Vec::new(),
            },
            prices: BTreeMap::new(),
            version: row.modified_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn custom_provider_fields_are_checked_by_name() {
        let ok = json!({"name": "Acme", "slug": "acme", "base_url": "https://llm.acme.test/v1/"});
        let s = custom_provider_settings(&ok, None).unwrap();
        assert_eq!(s["base_url"], "https://llm.acme.test/v1");
        assert_eq!(s["enable"], false);
        for (patch, needle) in [
            (json!({"slug": "Acme!"}), "`slug`"),
            (json!({"base_url": "ftp://x"}), "`base_url`"),
            (json!({"headers": "[1]"}), "`headers`"),
            (json!({"enable": "yes"}), "`enable`"),
            (json!({"colour": 1}), "`colour`"),
        ] {
            let mut body = ok.clone();
            for (k, v) in patch.as_object().unwrap() {
                body[k] = v.clone();
            }
            let e = custom_provider_settings(&body, None)
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{e}");
        }
        let e = custom_provider_settings(&json!({"name": "x"}), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`slug`"), "{e}");
    }

    #[test]
    fn upstream_prices_and_urls() {
        let u = Upstream {
            slug: "vllm".into(),
            base_url: "http://127.0.0.1:8000/v1".into(),
            api_key: None,
            headers: vec![],
            prices: [(
                "m".to_string(),
                Price {
                    input_per_mtok: 1.0,
                    output_per_mtok: 2.0,
                },
            )]
            .into(),
            version: 0,
        };
        assert_eq!(
            u.url("/chat/completions", Some("a=1")),
            "http://127.0.0.1:8000/v1/chat/completions?a=1"
        );
        assert_eq!(u.cost("m", Some(1_000_000), Some(500_000)), Some(2.0));
        assert_eq!(u.cost("other", Some(1), Some(1)), None);
        assert_eq!(u.cost("m", None, None), None);
    }
}
