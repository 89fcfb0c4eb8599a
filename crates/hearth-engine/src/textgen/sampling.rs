//! Token sampling over one row of logits: penalties, temperature, top-k, top-p.
//!
//! Greedy (temperature 0) is an argmax, so it is deterministic; with a seed the
//! draw comes from a seeded ChaCha generator, so it is reproducible too.

use std::collections::HashMap;

use hearth_types::textgen::GenerationParams;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How many recent tokens `repetition_penalty` looks back over (llama.cpp's default).
const REPEAT_LAST_N: usize = 64;
/// Candidates kept for top-p when no top-k is given: the mass beyond them is negligible
/// and a full sort of a 262k vocabulary per token is not.
const TOP_P_CANDIDATES: usize = 1024;

pub struct Sampler {
    temperature: f32,
    top_k: Option<usize>,
    top_p: Option<f32>,
    repetition_penalty: Option<f32>,
    frequency_penalty: f32,
    presence_penalty: f32,
    rng: StdRng,
    recent: Vec<i32>,
    counts: HashMap<i32, u32>,
    scratch: Vec<(i32, f32)>,
}

impl Sampler {
    pub fn new(params: &GenerationParams, prompt: &[i32]) -> Self {
        let seed = params.seed.unwrap_or_else(rand::random);
        let start = prompt.len().saturating_sub(REPEAT_LAST_N);
        Self {
            temperature: params.temperature,
            top_k: params.top_k.map(|k| k as usize),
            top_p: params.top_p.filter(|p| *p < 1.0),
            repetition_penalty: params
                .repetition_penalty
                .filter(|p| (*p - 1.0).abs() > f32::EPSILON),
            frequency_penalty: params.frequency_penalty.unwrap_or(0.0),
            presence_penalty: params.presence_penalty.unwrap_or(0.0),
            rng: StdRng::seed_from_u64(seed),
            recent: prompt[start..].to_vec(),
            counts: HashMap::new(),
            scratch: Vec::new(),
        }
    }

    /// Record a token the sequence produced, for the penalties.
    pub fn accept(&mut self, token: i32) {
        if self.recent.len() == REPEAT_LAST_N {
            self.recent.remove(0);
        }
        self.recent.push(token);
        *self.counts.entry(token).or_insert(0) += 1;
    }

    fn penalized(&self, token: i32, logit: f32) -> f32 {
        let mut l = logit;
        if let Some(p) = self.repetition_penalty
            && self.recent.contains(&token)
        {
            l = if l > 0.0 { l / p } else { l * p };
        }
        if let Some(&n) = self.counts.get(&token) {
            l -= self.frequency_penalty * n as f32 + self.presence_penalty;
        }
        l
    }

    fn has_penalties(&self) -> bool {
        self.repetition_penalty.is_some()
            || self.frequency_penalty != 0.0
            || self.presence_penalty != 0.0
    }

    pub fn sample(&mut self, logits: &[f32]) -> i32 {
        if self.temperature <= 1e-5 && !self.has_penalties() {
            // The common greedy case: a plain argmax over the row.
            return argmax(logits);
        }
        // Penalties touch only tokens already seen, so apply them to a sparse
        // overlay instead of copying the whole vocabulary.
        let overlay: HashMap<i32, f32> = if self.has_penalties() {
            self.recent
                .iter()
                .chain(self.counts.keys())
                .map(|&t| {
                    (
                        t,
                        self.penalized(t, logits.get(t as usize).copied().unwrap_or(f32::MIN)),
                    )
                })
                .collect()
        } else {
            HashMap::new()
        };
        let logit = |i: usize| -> f32 { overlay.get(&(i as i32)).copied().unwrap_or(logits[i]) };

        if self.temperature <= 1e-5 {
            let mut best = 0usize;
            let mut best_l = f32::NEG_INFINITY;
            for i in 0..logits.len() {
                let l = logit(i);
                if l > best_l {
                    best_l = l;
                    best = i;
                }
            }
            return best as i32;
        }

        let keep = match (self.top_k, self.top_p) {
            (Some(k), _) => Some(k),
            (None, Some(_)) => Some(TOP_P_CANDIDATES),
            (None, None) => None,
        };
        let inv_t = 1.0 / self.temperature;
        match keep {
            None => {
                let max = (0..logits.len())
                    .map(logit)
                    .fold(f32::NEG_INFINITY, f32::max);
                let total: f32 = (0..logits.len())
                    .map(|i| ((logit(i) - max) * inv_t).exp())
                    .sum();
                let mut target = self.rng.random::<f32>() * total;
                for i in 0..logits.len() {
                    target -= ((logit(i) - max) * inv_t).exp();
                    if target <= 0.0 {
                        return i as i32;
                    }
                }
                (logits.len() - 1) as i32
            }
            Some(k) => {
                let scratch = &mut self.scratch;
                scratch.clear();
                scratch.extend((0..logits.len()).map(|i| (i as i32, logit(i))));
                let k = k.min(scratch.len()).max(1);
                if k < scratch.len() {
                    scratch.select_nth_unstable_by(k - 1, |a, b| b.1.total_cmp(&a.1));
                    scratch.truncate(k);
                }
                scratch.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
                let max = scratch[0].1;
                let mut probs: Vec<f32> = scratch
                    .iter()
                    .map(|(_, l)| ((l - max) * inv_t).exp())
                    .collect();
                let total: f32 = probs.iter().sum();
                probs.iter_mut().for_each(|p| *p /= total);
                let mut cut = probs.len();
                if let Some(top_p) = self.top_p {
                    let mut acc = 0.0;
                    for (i, p) in probs.iter().enumerate() {
                        acc += p;
                        if acc >= top_p {
                            cut = i + 1;
                            break;
                        }
                    }
                }
                let mass: f32 = probs[..cut].iter().sum();
                let mut target = self.rng.random::<f32>() * mass;
                for i in 0..cut {
                    target -= probs[i];
                    if target <= 0.0 {
                        return scratch[i].0;
                    }
                }
                scratch[cut - 1].0
            }
        }
    }
}

fn argmax(logits: &[f32]) -> i32 {
    let mut best = 0usize;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(t: f32) -> GenerationParams {
        GenerationParams {
            temperature: t,
            seed: Some(7),
            ..Default::default()
        }
    }

    #[test]
    fn greedy_picks_the_argmax() {
        let mut s = Sampler::new(&params(0.0), &[]);
        assert_eq!(s.sample(&[0.1, 3.0, 2.9]), 1);
    }

    #[test]
    fn same_seed_same_draws() {
        let logits: Vec<f32> = (0..100).map(|i| (i % 7) as f32 * 0.3).collect();
        let draws = |_: ()| {
            let mut s = Sampler::new(&params(1.0), &[]);
            (0..20).map(|_| s.sample(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(draws(()), draws(()));
    }

    #[test]
    fn presence_penalty_moves_greedy_choice() {
        let mut p = params(0.0);
        p.presence_penalty = Some(2.0);
        let mut s = Sampler::new(&p, &[]);
        s.accept(1);
        assert_eq!(s.sample(&[0.1, 3.0, 2.9]), 2);
    }

    #[test]
    fn top_k_one_is_greedy() {
        let mut p = params(1.5);
        p.top_k = Some(1);
        let mut s = Sampler::new(&p, &[]);
        for _ in 0..10 {
            assert_eq!(s.sample(&[0.1, 3.0, 2.9, -1.0]), 1);
        }
    }
}
