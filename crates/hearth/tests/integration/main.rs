//! End-to-end tests of `hearth serve`'s HTTP API on the real registry-shipped
//! models (run `scripts/fetch-test-models` first; `.ci/run` does).
//!
//! One server is started per test binary (loading a model takes a second, and
//! sharing it is also what exercises continuous batching across tests).

mod ai_search;
mod bad_input;
mod batch;
mod embeddings;
mod gateway;
mod gateway_upstream;
mod images;
mod lora;
mod metering;
mod models_pull;
mod rerank;
mod speech;
mod summarization;
mod support;
mod text_to_image;
mod textgen;
mod to_markdown;
mod tools;
mod translation;
mod vectorize;
