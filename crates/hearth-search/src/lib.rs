//! AI Search (AutoRAG): documents to markdown ([`markdown`], which also
//! serves Workers AI's `toMarkdown`), and in time chunking, indexing jobs
//! and retrieval over `hearth-vector`.

pub mod markdown;
