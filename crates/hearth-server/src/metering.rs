//! Admission (daily allocation, rate limits) before inference and the
//! Neurons charge after it, for every inference route; and the usage
//! endpoint (`GET .../ai/usage`, a Hearth extension).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use hearth_runtime::App;
use hearth_runtime::metering::day_of;
use hearth_types::{ApiError, Envelope};

use crate::AppState;
use crate::error::Failure;

/// A request let through; [`Admission::charge`] prices it once it is done.
#[derive(Clone)]
pub struct Admission {
    app: Arc<App>,
    account: String,
    model: String,
    task: String,
    started: Instant,
}

impl Admission {
    pub fn admit(
        state: &AppState,
        account: &str,
        model: &str,
        task: &str,
    ) -> Result<Self, ApiError> {
        let entry = state.app.catalog().get(model);
        state.app.meter().admit(account, model, task, entry)?;
        Ok(Self {
            app: Arc::clone(&state.app),
            account: account.to_string(),
            model: model.to_string(),
            task: task.to_string(),
            started: Instant::now(),
        })
    }

    /// Prices a finished text generation by its token counts.
    pub fn charge_usage(&self, usage: &hearth_types::textgen::Usage) -> f64 {
        self.charge(
            u64::from(usage.prompt_tokens),
            u64::from(usage.completion_tokens),
        )
    }

    pub fn charge(&self, input_tokens: u64, output_tokens: u64) -> f64 {
        let entry = self.app.catalog().get(&self.model);
        self.app.meter().charge(
            &self.account,
            &self.model,
            &self.task,
            entry,
            input_tokens,
            output_tokens,
            self.started,
        )
    }
}

impl Admission {
    /// Prices a request metered in units (images, audio minutes) rather
    /// than tokens.
    pub fn charge_units(&self, units: f64, steps: u32) -> f64 {
        let entry = self.app.catalog().get(&self.model);
        self.app.meter().charge_units(
            &self.account,
            &self.model,
            &self.task,
            entry,
            units,
            steps,
            self.started,
        )
    }
}

/// What a model that needs its terms accepted answers to `prompt: "agree"`.
pub const AGREED: &str = "Thank you for agreeing to the model's terms. You can now use the model.";

/// For a model whose terms must be accepted: `Ok(true)` when this request
/// is the acceptance itself (`prompt: "agree"`), an error (5016) while the
/// account has not accepted, `Ok(false)` otherwise.
pub fn agreement(
    state: &AppState,
    account: &str,
    model: &str,
    prompt: Option<&str>,
) -> Result<bool, ApiError> {
    if !state
        .app
        .catalog()
        .get(model)
        .is_some_and(|e| e.requires_agreement)
    {
        return Ok(false);
    }
    let store = state.app.meter().store();
    let fail = |e: hearth_store::StoreError| {
        tracing::error!(error = %e, "agreements unreadable");
        ApiError::plain(hearth_types::ErrorCode::Internal)
    };
    if prompt.is_some_and(|p| p.trim().eq_ignore_ascii_case("agree")) {
        store
            .agree(account, model, state.app.meter().now_ms())
            .map_err(fail)?;
        return Ok(true);
    }
    if store.has_agreed(account, model).map_err(fail)? {
        return Ok(false);
    }
    Err(ApiError::new(
        hearth_types::ErrorCode::ModelAgreement,
        format!(
            "Model agreement: the account has not agreed to the terms of {model}; send {{\"prompt\": \"agree\"}} to this model once to accept them"
        ),
    ))
}

/// `GET .../ai/analytics?since_ms=&limit=`: one data point per request,
/// newest first (a Hearth extension, Workers Analytics Engine style).
pub async fn analytics(
    State(state): State<AppState>,
    Path(path): Path<HashMap<String, String>>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, Failure> {
    let account = path.get("account_id").cloned().unwrap_or_default();
    let since_ms = match params.get("since_ms") {
        None => 0,
        Some(v) => v.parse::<i64>().map_err(|_| {
            ApiError::invalid_input(format!(
                "`since_ms` must be milliseconds since the epoch, got `{v}`"
            ))
        })?,
    };
    let limit = match params.get("limit") {
        None => 1000,
        Some(v) => match v.parse::<u32>() {
            Ok(n) if (1..=10_000).contains(&n) => n,
            _ => {
                return Err(Failure(ApiError::invalid_input(format!(
                    "`limit` must be 1 to 10000, got `{v}`"
                ))));
            }
        },
    };
    let points = state
        .app
        .meter()
        .store()
        .requests(&account, since_ms, limit)
        .map_err(|e| {
            tracing::error!(error = %e, "analytics unreadable");
            ApiError::plain(hearth_types::ErrorCode::Internal)
        })?;
    Ok(Json(Envelope::ok(points)).into_response())
}

fn day_param(
    params: &HashMap<String, String>,
    key: &str,
    default: String,
) -> Result<String, ApiError> {
    match params.get(key) {
        None => Ok(default),
        Some(d) => {
            let b = d.as_bytes();
            let ok = d.len() == 10
                && b[4] == b'-'
                && b[7] == b'-'
                && d.chars()
                    .enumerate()
                    .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
            if ok {
                Ok(d.clone())
            } else {
                Err(ApiError::invalid_input(format!(
                    "`{key}` must be a day as YYYY-MM-DD, got `{d}`"
                )))
            }
        }
    }
}

/// `GET .../ai/usage?since=YYYY-MM-DD&until=YYYY-MM-DD` (default: the last 30 days).
pub async fn usage(
    State(state): State<AppState>,
    Path(path): Path<HashMap<String, String>>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, Failure> {
    let account = path.get("account_id").cloned().unwrap_or_default();
    let now = state.app.meter().now_ms();
    let since = day_param(&params, "since", day_of(now - 29 * 86_400_000))?;
    let until = day_param(&params, "until", day_of(now))?;
    let report = state.app.meter().report(Some(&account), &since, &until)?;
    Ok(Json(Envelope::ok(report)).into_response())
}
