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
