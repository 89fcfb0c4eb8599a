//! Markdown into chunks of at most `size` tokens of the instance's
//! embedding model, recursively on the document's structure (sections,
//! then paragraphs, lines, sentences, words, and characters as the last
//! resort), with `overlap_percent` of each chunk repeated at the start of
//! the next, as AI Search's chunking settings describe. Tokens are counted
//! by the caller's tokenizer; a chunk's count is the sum of its pieces'
//! counts, which is exact for tokenizers that split at whitespace (WordPiece,
//! SentencePiece with a leading-space marker) at the piece boundaries used
//! here.

use std::ops::Range;

/// AI Search's chunk size bounds, in tokens.
pub const MIN_SIZE: usize = 64;
pub const MAX_SIZE: usize = 512;
/// AI Search's largest overlap, in percent of the chunk size.
pub const MAX_OVERLAP_PERCENT: usize = 30;

/// Where text is split, coarsest first. Each separator stays with the piece
/// it starts (headings) or ends (paragraph and line breaks, sentences).
const SEPARATORS: &[(&str, Side)] = &[
    ("\n# ", Side::Starts),
    ("\n## ", Side::Starts),
    ("\n### ", Side::Starts),
    ("\n#### ", Side::Starts),
    ("\n\n", Side::Ends),
    ("\n", Side::Ends),
    (". ", Side::Ends),
    ("? ", Side::Ends),
    ("! ", Side::Ends),
    (" ", Side::Ends),
];

#[derive(Clone, Copy)]
enum Side {
    Starts,
    Ends,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChunkOptions {
    pub size: usize,
    pub overlap_percent: usize,
}

impl ChunkOptions {
    /// Checks the bounds, naming the setting that is out of them.
    pub fn new(size: usize, overlap_percent: usize) -> Result<Self, ChunkError> {
        if !(MIN_SIZE..=MAX_SIZE).contains(&size) {
            return Err(ChunkError(format!(
                "`chunk_size` must be from {MIN_SIZE} to {MAX_SIZE} tokens, got {size}"
            )));
        }
        if overlap_percent > MAX_OVERLAP_PERCENT {
            return Err(ChunkError(format!(
                "`chunk_overlap` must be from 0 to {MAX_OVERLAP_PERCENT} percent, got {overlap_percent}"
            )));
        }
        Ok(Self {
            size,
            overlap_percent,
        })
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ChunkError(String);

/// One chunk: its text is `source[range]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    pub range: Range<usize>,
    pub tokens: usize,
}

/// Pieces of `span` no larger than `size` tokens, in order, covering it.
fn pieces(
    text: &str,
    span: Range<usize>,
    level: usize,
    size: usize,
    count: &dyn Fn(&str) -> usize,
    out: &mut Vec<(Range<usize>, usize)>,
) {
    let tokens = count(&text[span.clone()]);
    if tokens <= size || span.is_empty() {
        out.push((span, tokens));
        return;
    }
    let Some(&(sep, side)) = SEPARATORS.get(level) else {
        // No separator is left: cut at characters, the longest run that
        // fits each time (found by bisection; at least one character).
        let ends: Vec<usize> = text[span.clone()]
            .char_indices()
            .skip(1)
            .map(|(i, _)| span.start + i)
            .chain(std::iter::once(span.end))
            .collect();
        let (mut start, mut from) = (span.start, 0);
        while from < ends.len() {
            let (mut lo, mut hi) = (from, ends.len() - 1);
            while lo < hi {
                let mid = (lo + hi).div_ceil(2);
                if count(&text[start..ends[mid]]) <= size {
                    lo = mid;
                } else {
                    hi = mid - 1;
                }
            }
            let end = ends[lo];
            out.push((start..end, count(&text[start..end])));
            start = end;
            from = lo + 1;
        }
        return;
    };
    let mut cuts = vec![span.start];
    let mut from = span.start;
    while let Some(at) = text[from..span.end].find(sep).map(|i| i + from) {
        let cut = match side {
            Side::Starts => at + 1, // after the newline, before the `#`
            Side::Ends => at + sep.len(),
        };
        if cut > span.start && cut < span.end {
            cuts.push(cut);
        }
        from = at + sep.len();
    }
    cuts.push(span.end);
    cuts.dedup();
    if cuts.len() == 2 {
        pieces(text, span, level + 1, size, count, out);
        return;
    }
    for w in cuts.windows(2) {
        pieces(text, w[0]..w[1], level + 1, size, count, out);
    }
}

/// Splits `text` into chunks under `options`.
pub fn chunk(text: &str, options: ChunkOptions, count: &dyn Fn(&str) -> usize) -> Vec<Chunk> {
    let mut parts = Vec::new();
    pieces(text, 0..text.len(), 0, options.size, count, &mut parts);
    parts.retain(|(r, _)| !text[r.clone()].trim().is_empty());
    let overlap = options.size * options.overlap_percent / 100;
    // A heading starts a chunk of its own section, without overlap.
    let heading = |i: usize| text[parts[i].0.clone()].trim_start().starts_with('#');
    let mut chunks = Vec::new();
    let mut next = 0;
    // The start and tokens of the previous chunk's tail the next one repeats.
    let mut carried: Option<(usize, usize)> = None;
    while next < parts.len() {
        let (start, mut tokens) = carried.take().unwrap_or((parts[next].0.start, 0));
        let mut end = start;
        let mut taken = 0;
        while next < parts.len()
            && (taken == 0 || (tokens + parts[next].1 <= options.size && !heading(next)))
        {
            tokens += parts[next].1;
            end = parts[next].0.end;
            next += 1;
            taken += 1;
        }
        chunks.push(Chunk {
            range: start..end,
            tokens,
        });
        if next < parts.len() && overlap > 0 && !heading(next) {
            let budget = overlap.min(options.size.saturating_sub(parts[next].1));
            carried = tail(text, start..end, budget, count);
        }
    }
    chunks
}

/// The shortest suffix of `text[span]` starting at a word that holds at
/// most `budget` tokens and is not all of it: `(start, tokens)`.
fn tail(
    text: &str,
    span: Range<usize>,
    budget: usize,
    count: &dyn Fn(&str) -> usize,
) -> Option<(usize, usize)> {
    let bytes = text.as_bytes();
    let starts: Vec<usize> = (span.start + 1..span.end)
        .filter(|&i| bytes[i - 1].is_ascii_whitespace() && !bytes[i].is_ascii_whitespace())
        .collect();
    // Later starts hold fewer tokens: find the earliest that fits.
    let (mut lo, mut hi) = (0, starts.len());
    while lo < hi {
        let mid = (lo + hi) / 2;
        if count(&text[starts[mid]..span.end]) <= budget {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    let start = *starts.get(lo)?;
    let tokens = count(&text[start..span.end]);
    (tokens > 0).then_some((start, tokens))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> usize {
        s.split_whitespace().count()
    }

    fn doc() -> String {
        let mut s = String::from("# Title\n\nIntro line.\n\n");
        for section in 0..4 {
            s.push_str(&format!("## Section {section}\n\n"));
            for p in 0..3 {
                let sentence = format!("Sentence {p} of section {section} has a few words. ");
                s.push_str(&sentence.repeat(6));
                s.push_str("\n\n");
            }
        }
        s
    }

    #[test]
    fn bounds_are_named() {
        assert!(
            ChunkOptions::new(32, 10)
                .unwrap_err()
                .to_string()
                .contains("`chunk_size`")
        );
        assert!(
            ChunkOptions::new(256, 40)
                .unwrap_err()
                .to_string()
                .contains("`chunk_overlap`")
        );
        assert!(ChunkOptions::new(64, 0).is_ok());
    }

    #[test]
    fn chunks_fit_cover_the_text_and_follow_its_structure() {
        let text = doc();
        let chunks = chunk(&text, ChunkOptions::new(64, 0).unwrap(), &words);
        assert!(chunks.len() > 4);
        for c in &chunks {
            assert!(
                c.tokens <= 64 && c.tokens == words(&text[c.range.clone()]),
                "{c:?}"
            );
        }
        // Without overlap the chunks are consecutive and lose nothing.
        let joined: Vec<&str> = text.split_whitespace().collect();
        let rebuilt: Vec<&str> = chunks
            .iter()
            .flat_map(|c| text[c.range.clone()].split_whitespace())
            .collect();
        assert_eq!(joined, rebuilt);
        // Sections start chunks: no chunk runs from one section into the
        // middle of the next when the section itself fits.
        assert!(
            chunks
                .iter()
                .any(|c| text[c.range.clone()].starts_with("## Section 2"))
        );
    }

    #[test]
    fn overlap_repeats_the_end_of_the_previous_chunk() {
        let text = doc();
        let chunks = chunk(&text, ChunkOptions::new(64, 30).unwrap(), &words);
        let mut overlapped = 0;
        for w in chunks.windows(2) {
            assert!(w[1].range.start > w[0].range.start, "always moves forward");
            if w[1].range.start < w[0].range.end {
                overlapped += 1;
                assert!(
                    words(&text[w[1].range.start..w[0].range.end]) <= 64 * 30 / 100,
                    "{w:?}"
                );
            }
        }
        assert!(overlapped > 0);
    }

    #[test]
    fn an_unbroken_run_is_cut_at_characters() {
        let text = "x".repeat(1000);
        let by_chars = |s: &str| s.len();
        let chunks = chunk(&text, ChunkOptions::new(100, 0).unwrap(), &by_chars);
        assert_eq!(chunks.len(), 10);
        assert!(chunks.iter().all(|c| c.tokens == 100));
    }
}
