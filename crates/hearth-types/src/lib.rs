//! Wire types of every surface Hearth serves, and nothing with IO.
//!
//! This crate owns the shapes that cross the network: the Cloudflare envelope
//! ([`envelope::Envelope`]), the one table of public errors ([`error::ErrorCode`]),
//! Workers AI task inputs and outputs ([`textgen`], [`embeddings`]) and the OpenAI-compatible
//! bodies ([`openai`]), and Vectorize's REST bodies ([`vectorize`]). Routes, tests and clients share these definitions so a
//! field renamed here is renamed everywhere.

pub mod embeddings;
pub mod envelope;
pub mod error;
pub mod openai;
pub mod textgen;
pub mod tools;
pub mod vectorize;

pub use envelope::{Envelope, EnvelopeError, ResultInfo};
pub use error::{ApiError, ErrorCode};
