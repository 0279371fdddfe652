//! Per-request sampling: penalties, temperature, top-k, top-p, seeded randomness, logprobs.
//! Pure logic over a logits vector, so unit tests cover it without a model.

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Sampling settings of one request, already validated.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    /// Nucleus mass in (0, 1].
    pub top_p: f32,
    /// 0 means no limit.
    pub top_k: usize,
    /// Seed of the request's random stream; random when `None`.
    pub seed: Option<u64>,
    /// Multiplicative penalty (> 0, 1 = off) on tokens already seen, prompt included.
    pub repetition_penalty: f32,
    /// Subtracted per previous occurrence in the output (OpenAI semantics).
    pub frequency_penalty: f32,
    /// Subtracted once if the token occurred in the output.
    pub presence_penalty: f32,
    /// How many top alternatives to report per token; `None` reports no logprobs.
    pub logprobs: Option<usize>,
    /// Go on past an end-of-sequence token, to `max_tokens` or a stop string (vLLM's
    /// `ignore_eos`: what benchmarks use to generate a fixed number of tokens).
    pub ignore_eos: bool,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            seed: None,
            repetition_penalty: 1.0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            logprobs: None,
            ignore_eos: false,
        }
    }
}

/// The log-probability of a chosen token and of its top alternatives.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    /// Log-probability of the chosen token.
    pub logprob: f32,
    /// `(token id, logprob)` of the most likely tokens, best first.
    pub top: Vec<(u32, f32)>,
}

/// The sampling state of one sequence.
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
    seen: Vec<u32>,
    output_counts: HashMap<u32, u32>,
}

impl Sampler {
    /// Whether the sequence goes on past an end-of-sequence token.
    pub fn ignores_eos(&self) -> bool {
        self.params.ignore_eos
    }

    /// A sampler for a sequence that starts with `prompt`.
    pub fn new(params: SamplingParams, prompt: &[u32]) -> Self {
        let rng = match params.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        let mut seen = prompt.to_vec();
        seen.sort_unstable();
        seen.dedup();
        Self { params, rng, seen, output_counts: HashMap::new() }
    }

    /// Chooses the next token from `logits` and records it.
    pub fn sample(&mut self, logits: &mut [f32]) -> (u32, Option<TokenLogprob>) {
        self.apply_penalties(logits);
        let token = if self.params.temperature <= 0.0 { argmax(logits) } else { self.draw(logits) };
        let logprob = self.params.logprobs.map(|n| logprobs(logits, token, n));
        if let Err(i) = self.seen.binary_search(&token) {
            self.seen.insert(i, token);
        }
        *self.output_counts.entry(token).or_default() += 1;
        (token, logprob)
    }

    fn apply_penalties(&self, logits: &mut [f32]) {
        let p = &self.params;
        if p.repetition_penalty != 1.0 {
            for &t in &self.seen {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l = if *l > 0.0 {
                        *l / p.repetition_penalty
                    } else {
                        *l * p.repetition_penalty
                    };
                }
            }
        }
        if p.frequency_penalty != 0.0 || p.presence_penalty != 0.0 {
            for (&t, &n) in &self.output_counts {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l -= p.frequency_penalty * n as f32 + p.presence_penalty;
                }
            }
        }
    }

    fn draw(&mut self, logits: &[f32]) -> u32 {
        let mut order: Vec<u32> = (0..logits.len() as u32).collect();
        order.sort_unstable_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
        if self.params.top_k > 0 {
            order.truncate(self.params.top_k);
        }
        let max = logits[order[0] as usize];
        let t = self.params.temperature;
        let mut probs: Vec<f32> =
            order.iter().map(|&i| ((logits[i as usize] - max) / t).exp()).collect();
        let sum: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= sum);
        let mut mass = 0.0;
        let keep = probs
            .iter()
            .position(|p| {
                mass += p;
                mass >= self.params.top_p
            })
            .map_or(probs.len(), |i| i + 1);
        let total: f32 = probs[..keep].iter().sum();
        let mut x = self.rng.random::<f32>() * total;
        for (i, p) in probs[..keep].iter().enumerate() {
            if x < *p {
                return order[i];
            }
            x -= p;
        }
        order[keep - 1]
    }
}

/// Index of the largest value (the first one on ties, so greedy is deterministic).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, l) in logits.iter().enumerate() {
        if *l > logits[best] {
            best = i;
        }
    }
    best as u32
}

fn logprobs(logits: &[f32], token: u32, n: usize) -> TokenLogprob {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let log_sum = logits.iter().map(|l| (l - max).exp()).sum::<f32>().ln() + max;
    let mut top: Vec<(u32, f32)> = Vec::with_capacity(n + 1);
    for (i, l) in logits.iter().enumerate() {
        let lp = l - log_sum;
        if top.len() < n || top.last().is_some_and(|(_, b)| lp > *b) {
            let at = top.partition_point(|(_, b)| *b >= lp);
            top.insert(at, (i as u32, lp));
            top.truncate(n);
        }
    }
    TokenLogprob { logprob: logits[token as usize] - log_sum, top }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32) -> SamplingParams {
        SamplingParams { temperature, seed: Some(7), ..SamplingParams::default() }
    }

    #[test]
    fn greedy_picks_the_largest_logit() {
        let mut s = Sampler::new(params(0.0), &[]);
        assert_eq!(s.sample(&mut [0.1, 3.0, 2.0]).0, 1);
    }

    #[test]
    fn same_seed_gives_the_same_tokens() {
        let logits = [1.0, 1.1, 0.9, 1.05, 0.95];
        let draw = || {
            let mut s = Sampler::new(params(1.0), &[]);
            (0..20).map(|_| s.sample(&mut logits.clone()).0).collect::<Vec<_>>()
        };
        let a = draw();
        assert_eq!(a, draw());
        assert!(a.iter().any(|t| *t != a[0]), "temperature 1 over near-equal logits varies");
    }

    #[test]
    fn top_k_one_is_greedy() {
        let mut s = Sampler::new(SamplingParams { top_k: 1, ..params(5.0) }, &[]);
        for _ in 0..10 {
            assert_eq!(s.sample(&mut [0.0, 0.5, 0.4]).0, 1);
        }
    }

    #[test]
    fn tiny_top_p_keeps_only_the_best() {
        let mut s = Sampler::new(SamplingParams { top_p: 0.01, ..params(5.0) }, &[]);
        for _ in 0..10 {
            assert_eq!(s.sample(&mut [0.0, 0.5, 0.4]).0, 1);
        }
    }

    #[test]
    fn presence_penalty_moves_greedy_off_a_repeated_token() {
        let mut s = Sampler::new(SamplingParams { presence_penalty: 1.0, ..params(0.0) }, &[]);
        assert_eq!(s.sample(&mut [0.0, 1.0, 0.5]).0, 1);
        assert_eq!(s.sample(&mut [0.0, 1.0, 0.5]).0, 2);
    }

    #[test]
    fn logprobs_are_normalised_and_sorted() {
        let mut s = Sampler::new(SamplingParams { logprobs: Some(2), ..params(0.0) }, &[]);
        let (t, lp) = s.sample(&mut [0.0, 2.0, 1.0]);
        let lp = lp.unwrap();
        assert_eq!(t, 1);
        assert_eq!(lp.top.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![1, 2]);
        let total: f32 = [0.0f32, 2.0, 1.0].iter().map(|l| (l - 2.0).exp()).sum();
        assert!((lp.logprob - (1.0 / total).ln()).abs() < 1e-5);
    }
}
