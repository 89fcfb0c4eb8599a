//! AI Search (AutoRAG): documents to markdown ([`markdown`], which also
//! serves Workers AI's `toMarkdown`), markdown to chunks by tokens
//! ([`chunk`]), the files of a folder and the plan of a sync that touches
//! only what changed ([`source`]), the objects of an S3-compatible bucket
//! ([`bucket`]), keyword queries, rank fusion and the
//! legacy filter format ([`retrieve`]), the prompt that turns chunks into
//! a cited answer ([`answer`]), and the similarity cache of answers
//! ([`cache`]).

pub mod answer;
pub mod bucket;
pub mod cache;
pub mod chunk;
pub mod markdown;
pub mod retrieve;
pub mod source;
