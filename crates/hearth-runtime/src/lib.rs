//! Wiring and transport-neutral operations.
//!
//! - [`config`]: layered configuration (defaults < `hearth.toml` < `HEARTH_*`
//!   env < flags), validated, unknown fields rejected; every env var is listed
//!   in [`config::ENV_VARS`].
//! - [`accounts`]: local accounts and their API tokens (stored hashed).
//! - [`app`]: [`App`], the operations every API surface shares (resolve a
//!   model, generate text, list the catalog). The Workers AI route and the
//!   OpenAI-compatible route call the same `App` methods.

pub mod accounts;
pub mod app;
pub mod config;
pub mod metering;

pub use accounts::{Accounts, AccountsError};
pub use app::{App, AppError, Generation, ModelStatus, PromptInput, Resolved};
pub use config::{Config, ConfigError};
