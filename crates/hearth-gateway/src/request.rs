//! How one gateway request is carried out: the retry policy (attempts,
//! delay, backoff, timeout to first byte) layered from the gateway's
//! settings, the request's `cf-aig-*` headers and a universal step's
//! `config`; the custom cost header; and the universal endpoint's steps.

use serde_json::{Map, Value};

use crate::{AigHeaders, GatewayError, GatewayRow, invalid};

/// Cloudflare's ceiling on attempts per request.
pub const MAX_ATTEMPTS: u32 = 5;
/// Cloudflare's ceiling on the delay between attempts.
pub const MAX_RETRY_DELAY_MS: u64 = 5_000;
/// Steps of one universal request (Cloudflare documents no figure; this
/// bounds the work one request can cause).
pub const MAX_STEPS: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backoff {
    Constant,
    Linear,
    Exponential,
}

impl Backoff {
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "constant" => Some(Self::Constant),
            "linear" => Some(Self::Linear),
            "exponential" => Some(Self::Exponential),
            _ => None,
        }
    }
}

/// Attempts, the waits between them and the time allowed to each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub delay_ms: u64,
    pub backoff: Backoff,
    /// Time to the first byte of each attempt's answer.
    pub timeout_ms: Option<u64>,
}

impl RetryPolicy {
    /// The gateway's defaults (`retry_max_attempts`, `retry_delay`,
    /// `retry_backoff`) under the request's headers.
    pub fn resolve(headers: &AigHeaders, gateway: &GatewayRow) -> Self {
        let setting = |k: &str| gateway.settings.get(k);
        Self {
            max_attempts: headers
                .max_attempts
                .or_else(|| {
                    setting("retry_max_attempts")
                        .and_then(Value::as_u64)
                        .map(|n| n as u32)
                })
                .unwrap_or(1)
                .clamp(1, MAX_ATTEMPTS),
            delay_ms: headers
                .retry_delay_ms
                .or_else(|| setting("retry_delay").and_then(Value::as_u64))
                .unwrap_or(0)
                .min(MAX_RETRY_DELAY_MS),
            backoff: headers
                .backoff
                .or_else(|| {
                    setting("retry_backoff")
                        .and_then(Value::as_str)
                        .and_then(Backoff::parse)
                })
                .unwrap_or(Backoff::Constant),
            timeout_ms: headers.request_timeout_ms,
        }
    }

    /// A universal step's `config` over this policy.
    pub fn with_step(mut self, config: &StepConfig) -> Self {
        if let Some(n) = config.max_attempts {
            self.max_attempts = n;
        }
        if let Some(d) = config.retry_delay_ms {
            self.delay_ms = d;
        }
        if let Some(b) = config.backoff {
            self.backoff = b;
        }
        if config.request_timeout_ms.is_some() {
            self.timeout_ms = config.request_timeout_ms;
        }
        self
    }

    /// The wait before retry number `retry` (1 = the second attempt).
    pub fn delay_before(&self, retry: u32) -> u64 {
        let retry = retry.max(1) as u64;
        match self.backoff {
            Backoff::Constant => self.delay_ms,
            Backoff::Linear => self.delay_ms.saturating_mul(retry),
            Backoff::Exponential => self.delay_ms.saturating_mul(1 << (retry - 1).min(16)),
        }
    }
}

/// `cf-aig-custom-cost`: the caller's prices replace the gateway's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CustomCost {
    PerToken { input: f64, output: f64 },
    Total(f64),
}

impl CustomCost {
    pub fn parse(raw: &str) -> Result<Self, GatewayError> {
        let bad = || {
            invalid(format!(
                "`cf-aig-custom-cost` must be {{\"per_token_in\": n, \"per_token_out\": n}} or {{\"total_cost\": n}}, got {raw:?}"
            ))
        };
        let Ok(Value::Object(m)) = serde_json::from_str::<Value>(raw) else {
            return Err(bad());
        };
        let num = |k: &str| -> Result<Option<f64>, GatewayError> {
            match m.get(k) {
                None => Ok(None),
                Some(v) => v.as_f64().filter(|f| *f >= 0.0).map(Some).ok_or_else(bad),
            }
        };
        if m.keys()
            .any(|k| !["per_token_in", "per_token_out", "total_cost"].contains(&k.as_str()))
        {
            return Err(bad());
        }
        match (
            num("per_token_in")?,
            num("per_token_out")?,
            num("total_cost")?,
        ) {
            (None, None, Some(total)) => Ok(Self::Total(total)),
            (input, output, None) if input.is_some() || output.is_some() => Ok(Self::PerToken {
                input: input.unwrap_or(0.0),
                output: output.unwrap_or(0.0),
            }),
            _ => Err(bad()),
        }
    }

    /// The cost in USD; per-token prices apply only when the answer
    /// reported tokens, as on Cloudflare.
    pub fn cost(&self, tokens_in: Option<u64>, tokens_out: Option<u64>) -> Option<f64> {
        match *self {
            Self::Total(t) => Some(t),
            Self::PerToken { input, output } => {
                if tokens_in.is_none() && tokens_out.is_none() {
                    return None;
                }
                Some(
                    input * tokens_in.unwrap_or(0) as f64 + output * tokens_out.unwrap_or(0) as f64,
                )
            }
        }
    }
}

/// A universal step's `config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StepConfig {
    pub request_timeout_ms: Option<u64>,
    pub max_attempts: Option<u32>,
    pub retry_delay_ms: Option<u64>,
    pub backoff: Option<Backoff>,
}

/// One element of a universal request.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub provider: String,
    /// The provider path after the slug (`chat/completions`, `@cf/...`).
    pub endpoint: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The provider-native body.
    pub query: Value,
    pub config: StepConfig,
}

impl Step {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses a universal endpoint body: an array of steps, or one step.
pub fn parse_steps(body: &[u8]) -> Result<Vec<Step>, GatewayError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("the body is not valid JSON: {e}")))?;
    let items = match value {
        Value::Array(items) => items,
        obj @ Value::Object(_) => vec![obj],
        _ => return Err(invalid("the body must be an array of steps")),
    };
    if items.is_empty() || items.len() > MAX_STEPS {
        return Err(invalid(format!(
            "the body must hold 1 to {MAX_STEPS} steps, got {}",
            items.len()
        )));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| parse_step(i, item))
        .collect()
}

fn parse_step(i: usize, item: Value) -> Result<Step, GatewayError> {
    let Value::Object(mut m) = item else {
        return Err(invalid(format!("step {i} must be an object")));
    };
    let string = |m: &mut Map<String, Value>, k: &str| match m.remove(k) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        _ => Err(invalid(format!("step {i}: `{k}` is required (a string)"))),
    };
    let provider = string(&mut m, "provider")?;
    let endpoint = string(&mut m, "endpoint")?
        .trim_start_matches('/')
        .to_string();
    let query = m.remove("query").ok_or_else(|| {
        invalid(format!(
            "step {i}: `query` (the provider's body) is required"
        ))
    })?;
    let mut headers = Vec::new();
    match m.remove("headers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(h)) => {
            for (k, v) in h {
                let v = match v {
                    Value::String(s) => s,
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    other => {
                        return Err(invalid(format!(
                            "step {i}: header `{k}` must be a string, got {other}"
                        )));
                    }
                };
                headers.push((k.to_ascii_lowercase(), v));
            }
        }
        Some(other) => {
            return Err(invalid(format!(
                "step {i}: `headers` must be an object, got {other}"
            )));
        }
    }
    // The older flat form: `authorization: "Bearer ..."`.
    if let Some(Value::String(a)) = m.remove("authorization")
        && !headers.iter().any(|(k, _)| k == "authorization")
    {
        headers.push(("authorization".into(), a));
    }
    let config = match m.remove("config") {
        None | Some(Value::Null) => StepConfig::default(),
        Some(Value::Object(c)) => parse_config(i, c)?,
        Some(other) => {
            return Err(invalid(format!(
                "step {i}: `config` must be an object, got {other}"
            )));
        }
    };
    if let Some(k) = m.keys().next() {
        return Err(invalid(format!(
            "step {i}: unknown field `{k}` (provider, endpoint, headers, query, config)"
        )));
    }
    Ok(Step {
        provider,
        endpoint,
        headers,
        query,
        config,
    })
}

fn parse_config(i: usize, c: Map<String, Value>) -> Result<StepConfig, GatewayError> {
    let mut config = StepConfig::default();
    for (k, v) in c {
        let n = v.as_u64();
        match k.as_str() {
            "requestTimeout" => {
                config.request_timeout_ms =
                    Some(n.ok_or_else(|| invalid(format!("step {i}: `config.requestTimeout` must be whole milliseconds, got {v}")))?)
            }
            "maxAttempts" => match n {
                Some(n) if (1..=MAX_ATTEMPTS as u64).contains(&n) => config.max_attempts = Some(n as u32),
                _ => {
                    return Err(invalid(format!(
                        "step {i}: `config.maxAttempts` must be from 1 to {MAX_ATTEMPTS}, got {v}"
                    )));
                }
            },
            "retryDelay" => match n {
                Some(n) if n <= MAX_RETRY_DELAY_MS => config.retry_delay_ms = Some(n),
                _ => {
                    return Err(invalid(format!(
                        "step {i}: `config.retryDelay` must be from 0 to {MAX_RETRY_DELAY_MS} ms, got {v}"
                    )));
                }
            },
            "backoff" => {
                config.backoff = Some(v.as_str().and_then(Backoff::parse).ok_or_else(|| {
                    invalid(format!(
                        "step {i}: `config.backoff` must be constant, linear or exponential, got {v}"
                    ))
                })?)
            }
            other => {
                return Err(invalid(format!(
                    "step {i}: unknown `config.{other}` (requestTimeout, maxAttempts, retryDelay, backoff)"
                )));
            }
        }
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn gw(settings: Value) -> GatewayRow {
        GatewayRow {
            id: "g".into(),
            settings,
            created_ms: 0,
            modified_ms: 0,
        }
    }

    #[test]
    fn backoffs_grow_as_named() {
        let p = |backoff| RetryPolicy {
            max_attempts: 5,
            delay_ms: 100,
            backoff,
            timeout_ms: None,
        };
        let waits = |b| (1..=4).map(|r| p(b).delay_before(r)).collect::<Vec<_>>();
        assert_eq!(waits(Backoff::Constant), [100, 100, 100, 100]);
        assert_eq!(waits(Backoff::Linear), [100, 200, 300, 400]);
        assert_eq!(waits(Backoff::Exponential), [100, 200, 400, 800]);
    }

    #[test]
    fn headers_override_the_gateway_and_steps_override_headers() {
        let g = gw(json!({"retry_max_attempts": 3, "retry_delay": 50, "retry_backoff": "linear"}));
        let none = AigHeaders::default();
        let p = RetryPolicy::resolve(&none, &g);
        assert_eq!(
            (p.max_attempts, p.delay_ms, p.backoff),
            (3, 50, Backoff::Linear)
        );
        let h = AigHeaders::parse(|n| match n {
            "cf-aig-max-attempts" => Some("2"),
            "cf-aig-backoff" => Some("exponential"),
            "cf-aig-request-timeout" => Some("250"),
            _ => None,
        })
        .unwrap();
        let p = RetryPolicy::resolve(&h, &g);
        assert_eq!(
            (p.max_attempts, p.delay_ms, p.backoff, p.timeout_ms),
            (2, 50, Backoff::Exponential, Some(250))
        );
        let step = StepConfig {
            max_attempts: Some(4),
            ..Default::default()
        };
        assert_eq!(p.with_step(&step).max_attempts, 4);
        let e = AigHeaders::parse(|n| (n == "cf-aig-max-attempts").then_some("6")).unwrap_err();
        assert!(e.to_string().contains("cf-aig-max-attempts"));
        let e = AigHeaders::parse(|n| (n == "cf-aig-retry-delay").then_some("5001")).unwrap_err();
        assert!(e.to_string().contains("cf-aig-retry-delay"));
    }

    #[test]
    fn custom_costs_parse_and_price() {
        let per = CustomCost::parse(r#"{"per_token_in": 0.5, "per_token_out": 1}"#).unwrap();
        assert_eq!(per.cost(Some(2), Some(3)), Some(4.0));
        assert_eq!(per.cost(None, None), None);
        assert_eq!(
            CustomCost::parse(r#"{"total_cost": 0.25}"#)
                .unwrap()
                .cost(None, None),
            Some(0.25)
        );
        for bad in [r#"{}"#, r#"{"total_cost": -1}"#, r#"{"price": 1}"#, "x"] {
            assert!(CustomCost::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn steps_parse_and_name_what_is_wrong() {
        let steps = parse_steps(
            br#"[{"provider": "workers-ai", "endpoint": "@cf/m", "headers": {"Authorization": "Bearer x", "cf-aig-cache-ttl": 0},
                  "query": {"prompt": "hi"}, "config": {"requestTimeout": 100, "maxAttempts": 2, "backoff": "linear"}},
                 {"provider": "openai", "endpoint": "/chat/completions", "query": {}}]"#,
        )
        .unwrap();
        assert_eq!(steps.len(), 2);
        assert_eq!(steps[0].header("authorization"), Some("Bearer x"));
        assert_eq!(steps[0].header("cf-aig-cache-ttl"), Some("0"));
        assert_eq!(steps[0].config.max_attempts, Some(2));
        assert_eq!(steps[1].endpoint, "chat/completions");
        for (body, needle) in [
            (&br#"[]"#[..], "1 to"),
            (br#"[{"endpoint": "x", "query": {}}]"#, "`provider`"),
            (br#"[{"provider": "p", "endpoint": "x"}]"#, "`query`"),
            (br#"[{"provider": "p", "endpoint": "x", "query": {}, "config": {"maxAttempts": 9}}]"#, "maxAttempts"),
            (br#"[{"provider": "p", "endpoint": "x", "query": {}, "extra": 1}]"#, "`extra`"),
        ] {
            let e = parse_steps(body).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
    }
}
