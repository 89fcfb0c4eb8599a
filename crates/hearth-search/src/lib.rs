//! AI Search (AutoRAG): documents to markdown ([`markdown`], which also
//! serves Workers AI's `toMarkdown`), markdown to chunks by tokens
//! ([`chunk`]), the files of a source and the plan of a sync that touches
//! only what changed ([`source`]), and in time indexing jobs and retrieval
//! over `hearth-vector`.

pub mod chunk;
pub mod markdown;
pub mod source;
