//! Words and their times: splitting a transcript's tokens into words,
//! aligning tokens to audio frames (OpenAI's `find_alignment`: normalized,
//! median-filtered cross-attention of the alignment heads, then dynamic
//! time warping), punctuation merged into its word, and the
//! voice-activity filter that cuts silence before decoding.

use tokenizers::Tokenizer;

use super::{Segment, audio::SAMPLE_RATE};

const PREPENDED: &str = "\"'“¿([{-";
const APPENDED: &str = "\"'.。,，!！?？:：”)]}、";

/// Words of a segment's text tokens, each with the tokens that spell it.
/// A word starts at a token that begins with a space, at punctuation, or
/// at the first token; tokens that end inside a UTF-8 character stay with
/// the next one.
pub fn split_words(tokenizer: &Tokenizer, tokens: &[u32]) -> Vec<(String, Vec<u32>)> {
    let mut subwords: Vec<(String, Vec<u32>)> = Vec::new();
    let mut pending: Vec<u32> = Vec::new();
    for token in tokens {
        pending.push(*token);
        let text = tokenizer.decode(&pending, false).unwrap_or_default();
        if !text.contains('\u{FFFD}') {
            subwords.push((text, std::mem::take(&mut pending)));
        }
    }
    if !pending.is_empty() {
        let text = tokenizer.decode(&pending, false).unwrap_or_default();
        subwords.push((text, pending));
    }
    let mut words: Vec<(String, Vec<u32>)> = Vec::new();
    for (text, tokens) in subwords {
        let trimmed = text.trim();
        let punctuation = !trimmed.is_empty() && trimmed.chars().all(|c| c.is_ascii_punctuation());
        match words.last_mut() {
            Some((word, word_tokens)) if !text.starts_with(' ') && !punctuation => {
                word.push_str(&text);
                word_tokens.extend(tokens);
            }
            _ => words.push((text, tokens)),
        }
    }
    words
}

/// For each row from the no-timestamps token through the last text token,
/// the audio frame (20 ms steps) where the alignment path enters it.
/// `heads[h][token][frame]` are the alignment heads' cross-attention scores
/// over the whole fed sequence (start tokens, no-timestamps, text, end).
pub fn align(heads: &[Vec<Vec<f32>>], sot_len: usize, text_len: usize) -> Vec<f64> {
    let Some(first) = heads.first() else {
        return Vec::new();
    };
    let rows = first.len();
    let frames = first.first().map_or(0, Vec::len);
    if frames == 0 || rows < sot_len + text_len + 2 {
        return Vec::new();
    }
    let mut matrix = vec![vec![0f32; frames]; rows];
    for head in heads {
        let mut weights: Vec<Vec<f32>> = head.iter().map(|row| softmax(row)).collect();
        // Standardize each frame's column across tokens.
        for f in 0..frames {
            let column: Vec<f32> = weights.iter().map(|r| r[f]).collect();
            let mean = column.iter().sum::<f32>() / rows as f32;
            let var = column.iter().map(|v| (v - mean).powi(2)).sum::<f32>()
                / (rows.saturating_sub(1).max(1)) as f32;
            let std = var.sqrt().max(1e-10);
            for r in weights.iter_mut() {
                r[f] = (r[f] - mean) / std;
            }
        }
        for (out, row) in matrix.iter_mut().zip(&weights) {
            for (o, v) in out.iter_mut().zip(median_filter(row, 7)) {
                *o += v / heads.len() as f32;
            }
        }
    }
    let cost: Vec<Vec<f32>> = matrix[sot_len..sot_len + text_len + 1]
        .iter()
        .map(|r| r.iter().map(|v| -v).collect())
        .collect();
    let path = dtw(&cost);
    let mut jumps = Vec::new();
    let mut previous = None;
    for (row, frame) in path {
        if previous != Some(row) {
            jumps.push(frame as f64);
            previous = Some(row);
        }
    }
    jumps
}

fn softmax(row: &[f32]) -> Vec<f32> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = row.iter().map(|v| (v - max).exp()).collect();
    let total: f32 = exp.iter().sum();
    exp.into_iter().map(|v| v / total).collect()
}

/// Median over a centred window, edges reflected (as `F.pad(mode="reflect")`).
fn median_filter(row: &[f32], width: usize) -> Vec<f32> {
    let half = width / 2;
    let n = row.len() as isize;
    if row.len() <= half {
        return row.to_vec();
    }
    let at = |i: isize| {
        let j = if i < 0 {
            -i
        } else if i >= n {
            2 * (n - 1) - i
        } else {
            i
        };
        row[j.clamp(0, n - 1) as usize]
    };
    (0..n)
        .map(|i| {
            let mut window: Vec<f32> = (i - half as isize..=i + half as isize).map(at).collect();
            window.sort_by(f32::total_cmp);
            window[half]
        })
        .collect()
}

/// Minimum-cost monotonic path through `cost[row][frame]` from the first
/// cell to the last, as `(row, frame)` pairs in order.
fn dtw(cost: &[Vec<f32>]) -> Vec<(usize, usize)> {
    let n = cost.len();
    let m = cost.first().map_or(0, Vec::len);
    if n == 0 || m == 0 {
        return Vec::new();
    }
    let mut total = vec![vec![f32::INFINITY; m + 1]; n + 1];
    let mut trace = vec![vec![0u8; m + 1]; n + 1];
    total[0][0] = 0.0;
    for j in 1..=m {
        for i in 1..=n {
            let (diagonal, up, left) = (total[i - 1][j - 1], total[i - 1][j], total[i][j - 1]);
            let (best, step) = if diagonal < up && diagonal < left {
                (diagonal, 0)
            } else if up < diagonal && up < left {
                (up, 1)
            } else {
                (left, 2)
            };
            total[i][j] = cost[i - 1][j - 1] + best;
            trace[i][j] = step;
        }
    }
    let (mut i, mut j) = (n, m);
    let mut path = Vec::new();
    while i > 0 && j > 0 {
        path.push((i - 1, j - 1));
        match trace[i][j] {
            0 => {
                i -= 1;
                j -= 1;
            }
            1 => i -= 1,
            _ => j -= 1,
        }
    }
    path.reverse();
    path
}

/// Opening quotes and brackets join the next word, closing punctuation the
/// previous one, as OpenAI's `merge_punctuations`.
pub fn merge_punctuation(words: Vec<super::Word>) -> Vec<super::Word> {
    let mut out: Vec<super::Word> = Vec::new();
    let mut carried: Option<super::Word> = None;
    for mut word in words {
        let trimmed = word.word.trim().to_string();
        if let Some(open) = carried.take() {
            word.word = format!("{}{}", open.word.trim(), word.word.trim_start());
            word.start = open.start.min(word.start);
        }
        if !trimmed.is_empty()
            && trimmed.chars().all(|c| APPENDED.contains(c))
            && let Some(previous) = out.last_mut()
        {
            previous.word.push_str(&trimmed);
            previous.end = previous.end.max(word.end);
            continue;
        }
        if !trimmed.is_empty() && trimmed.chars().all(|c| PREPENDED.contains(c)) {
            carried = Some(word);
            continue;
        }
        out.push(word);
    }
    out.extend(carried);
    for w in &mut out {
        w.word = w.word.trim().to_string();
        if w.end < w.start {
            w.end = w.start;
        }
    }
    out
}

/// The voiced parts of `pcm`, joined, and where each came from (sample
/// ranges): 30 ms frames louder than the quieter of -50 dBFS and 35 dB
/// under the loudest frame, gaps under 2 s bridged, 0.4 s of margin kept
/// around speech (the defaults faster-whisper's VAD uses).
pub fn voiced(pcm: &[f32]) -> (Vec<f32>, Vec<(usize, usize)>) {
    let frame = SAMPLE_RATE as usize * 30 / 1000;
    let energies: Vec<f32> = pcm
        .chunks(frame)
        .map(|c| {
            let rms = (c.iter().map(|s| s * s).sum::<f32>() / c.len() as f32).sqrt();
            20.0 * rms.max(1e-10).log10()
        })
        .collect();
    let loudest = energies.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let threshold = (loudest - 35.0).max(-50.0);
    let pad = SAMPLE_RATE as usize * 400 / 1000;
    let bridge = SAMPLE_RATE as usize * 2;
    let mut regions: Vec<(usize, usize)> = Vec::new();
    for (i, e) in energies.iter().enumerate() {
        if *e < threshold {
            continue;
        }
        let start = (i * frame).saturating_sub(pad);
        let end = ((i + 1) * frame + pad).min(pcm.len());
        match regions.last_mut() {
            Some(last) if start <= last.1 + bridge => last.1 = last.1.max(end),
            _ => regions.push((start, end)),
        }
    }
    let speech = regions
        .iter()
        .flat_map(|(s, e)| pcm[*s..*e].iter().copied())
        .collect();
    (speech, regions)
}

/// Maps times on the joined voiced audio back onto the original audio.
pub fn restore_times(segments: &mut [Segment], kept: &[(usize, usize)]) {
    let rate = f64::from(SAMPLE_RATE);
    let map = |t: f64| {
        let mut sample = (t * rate).round().max(0.0) as usize;
        for (start, end) in kept {
            let len = end - start;
            if sample <= len {
                return (start + sample) as f64 / rate;
            }
            sample -= len;
        }
        kept.last().map_or(t, |(_, end)| *end as f64 / rate)
    };
    for s in segments {
        s.start = map(s.start);
        s.end = map(s.end);
        for w in &mut s.words {
            w.start = map(w.start);
            w.end = map(w.end);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtw_follows_the_cheap_diagonal() {
        // Row r is cheap on frames 2r and 2r+1.
        let cost: Vec<Vec<f32>> = (0..3)
            .map(|r| (0..6).map(|f| if f / 2 == r { 0.0 } else { 1.0 }).collect())
            .collect();
        let path = dtw(&cost);
        assert_eq!(path.first(), Some(&(0, 0)));
        assert_eq!(path.last(), Some(&(2, 5)));
        let entries: Vec<usize> = (0..3)
            .map(|r| {
                path.iter()
                    .find(|(row, _)| *row == r)
                    .map(|p| p.1)
                    .unwrap_or(99)
            })
            .collect();
        assert_eq!(entries, vec![0, 2, 4]);
    }

    #[test]
    fn median_filter_removes_a_spike() {
        let row = [0.0, 0.0, 0.0, 9.0, 0.0, 0.0, 0.0, 0.0];
        assert!(median_filter(&row, 7).iter().all(|v| *v == 0.0));
    }

    #[test]
    fn punctuation_joins_its_word() {
        let w = |word: &str, start: f64, end: f64| super::super::Word {
            word: word.into(),
            start,
            end,
        };
        let merged = merge_punctuation(vec![
            w(" \"", 0.0, 0.1),
            w("Hello", 0.1, 0.5),
            w(",", 0.5, 0.6),
            w(" world", 0.6, 1.0),
            w(".\"", 1.0, 1.1),
        ]);
        let words: Vec<&str> = merged.iter().map(|w| w.word.as_str()).collect();
        assert_eq!(words, vec!["\"Hello,", "world.\""]);
        assert_eq!(merged[0].start, 0.0);
        assert_eq!(merged[1].end, 1.1);
    }

    #[test]
    fn silence_is_cut_and_times_map_back() {
        let rate = SAMPLE_RATE as usize;
        let mut pcm = vec![0.0f32; rate * 5];
        for (i, s) in pcm[rate * 3..rate * 4].iter_mut().enumerate() {
            *s = 0.3 * (i as f32 * 0.05).sin();
        }
        let (speech, kept) = voiced(&pcm);
        assert_eq!(kept.len(), 1);
        assert!(speech.len() < rate * 2, "{}", speech.len());
        let mut segments = vec![Segment {
            start: 0.4,
            end: 1.4,
            text: String::new(),
            temperature: 0.0,
            avg_logprob: 0.0,
            compression_ratio: 1.0,
            no_speech_prob: 0.0,
            words: vec![],
        }];
        restore_times(&mut segments, &kept);
        assert!(
            (segments[0].start - 3.0).abs() < 0.05,
            "{}",
            segments[0].start
        );
        assert!((segments[0].end - 4.0).abs() < 0.05, "{}", segments[0].end);
    }
}
