//! AI Search (AutoRAG): documents to markdown ([`markdown`], which also
//! serves Workers AI's `toMarkdown`), markdown to chunks by tokens
//! ([`chunk`]), and in time indexing jobs and retrieval over `hearth-vector`.

pub mod chunk;
pub mod markdown;
