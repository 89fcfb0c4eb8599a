//! The generation step of AI Search: the system prompt that carries the
//! retrieved chunks to the model, each under its file name so the answer
//! can cite it, within a budget the model's context can hold.

/// The instructions used when neither the instance nor the request gives a
/// system prompt.
pub const DEFAULT_SYSTEM_PROMPT: &str = "You answer questions using only the documents below. \
Each document starts with its file name. Combine what the documents say, cite the file \
names you used in square brackets, and say so plainly when the documents do not hold \
the answer. Answer in Markdown.";

/// The instructions that turn a question into search terms, when the
/// instance and the request give none.
pub const DEFAULT_REWRITE_PROMPT: &str = "You turn a user's question into a search query for a \
document index. Keep the key concepts and names, add close synonyms, drop filler words. \
Reply with the search query only, on one line.";

/// The search query a rewrite produced: its first non-empty line, without
/// quotes or a label, or `None` when the model gave nothing usable.
pub fn rewritten_query(output: &str) -> Option<String> {
    let line = output.lines().map(str::trim).find(|l| !l.is_empty())?;
    let line = line
        .strip_prefix("Search query:")
        .or_else(|| line.strip_prefix("Query:"))
        .unwrap_or(line)
        .trim()
        .trim_matches('"')
        .trim();
    (!line.is_empty()).then(|| line.to_string())
}

/// Characters of chunk text a model with `context_tokens` of context is
/// given: half its context, at a cautious three characters a token, so
/// the question and the answer fit beside them. The best chunks come
/// first, so a short context drops the weakest.
pub fn context_budget(context_tokens: u32) -> usize {
    context_tokens as usize / 2 * 3
}

/// The system message: instructions, then the chunks (best first) that fit
/// in `budget` characters, at least one.
pub fn system_message(instructions: &str, chunks: &[(&str, &str)], budget: usize) -> String {
    let mut out = String::from(instructions);
    out.push_str("\n\n");
    let mut used = 0;
    for (i, (filename, text)) in chunks.iter().enumerate() {
        if i > 0 && used + text.len() > budget {
            break;
        }
        used += text.len();
        out.push_str(&format!(
            "<document name=\"{filename}\">\n{}\n</document>\n",
            text.trim()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_go_in_best_first_within_the_budget() {
        let big = "x".repeat(60);
        let chunks = [
            ("a.md", "alpha"),
            ("b.pdf", big.as_str()),
            ("c.md", "gamma"),
        ];
        let m = system_message("Answer.", &chunks, 50);
        assert!(m.starts_with("Answer.\n\n<document name=\"a.md\">\nalpha\n</document>"));
        assert!(!m.contains("b.pdf"), "over the budget");
        assert!(!m.contains("c.md"), "after the first that did not fit");
        let first_only = system_message("A", &[("big", big.as_str())], 10);
        assert!(first_only.contains("big"), "the best chunk always goes in");
        assert_eq!(context_budget(2048), 3072);
    }

    #[test]
    fn a_rewrite_is_its_first_line_unlabelled() {
        assert_eq!(
            rewritten_query("\n Query: \"llama relatives\"\nmore").as_deref(),
            Some("llama relatives")
        );
        assert_eq!(rewritten_query("  \n\n"), None);
        assert_eq!(rewritten_query("\"\""), None);
    }
}
