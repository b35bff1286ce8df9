//! Choosing the next token from logits: greedy, or temperature with top-k / top-p, after a
//! repetition penalty; seeded, so the same request gives the same answer.

use serde::{Deserialize, Serialize};

use crate::LlmError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplingParams {
    /// 0 means greedy (always the most likely token).
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens (0 = all).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probabilities add up to `top_p` (1 = all).
    pub top_p: f32,
    /// Logits of tokens already in the sequence are divided (if positive) or multiplied (if
    /// negative) by this; 1 = off.
    pub repetition_penalty: f32,
    /// How many recent tokens the penalty looks at.
    pub repetition_window: usize,
    pub seed: u64,
    pub max_tokens: usize,
    /// Generation stops before any of these strings; they are not part of the output.
    pub stop: Vec<String>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 1.0,
            repetition_window: 64,
            seed: 0,
            max_tokens: 256,
            stop: Vec::new(),
        }
    }
}

impl SamplingParams {
    /// Rejects values no sampler can honour, naming the field.
    pub fn validate(&self) -> Result<(), LlmError> {
        let bad = |what: String| Err(LlmError::BadInput(what));
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return bad(format!("temperature must be ≥ 0, got {}", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("top_p must be in (0, 1], got {}", self.top_p));
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return bad(format!(
                "repetition_penalty must be > 0, got {}",
                self.repetition_penalty
            ));
        }
        if self.max_tokens == 0 {
            return bad("max_tokens must be at least 1".into());
        }
        Ok(())
    }
}

/// One SplitMix64 step: small, well mixed, stable across platforms and releases. Everything
/// seeded in this crate (sampling, adapter initialisation, test weights) draws from it.
pub(crate) fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A uniform draw in [0, 1) from the top 53 bits of a SplitMix64 step.
pub(crate) fn unit_interval(state: &mut u64) -> f64 {
    (splitmix64(state) >> 11) as f64 / (1u64 << 53) as f64
}

/// A seeded sampler (SplitMix64).
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    state: u64,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Self {
        let state = params.seed;
        Self { params, state }
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    fn uniform(&mut self) -> f64 {
        unit_interval(&mut self.state)
    }

    /// The next token given the logits and the tokens so far (prompt included).
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        let p = &self.params;
        if p.repetition_penalty != 1.0 {
            let window = &history[history.len().saturating_sub(p.repetition_window)..];
            let mut seen = window.to_vec();
            seen.sort_unstable();
            seen.dedup();
            for &t in &seen {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l = if *l > 0.0 {
                        *l / p.repetition_penalty
                    } else {
                        *l * p.repetition_penalty
                    };
                }
            }
        }
        if p.temperature == 0.0 {
            return crate::model::argmax(logits);
        }
        let mut candidates: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, l / p.temperature))
            .collect();
        candidates.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if p.top_k > 0 {
            candidates.truncate(p.top_k);
        }
        let max = candidates[0].1;
        let mut probs: Vec<f64> = candidates
            .iter()
            .map(|(_, l)| f64::from(l - max).exp())
            .collect();
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|q| *q /= total);
        if p.top_p < 1.0 {
            let mut cumulative = 0.0;
            let keep = probs
                .iter()
                .position(|q| {
                    cumulative += q;
                    cumulative >= f64::from(p.top_p)
                })
                .map_or(probs.len(), |i| i + 1);
            probs.truncate(keep);
            let total: f64 = probs.iter().sum();
            probs.iter_mut().for_each(|q| *q /= total);
        }
        let mut r = self.uniform();
        for (i, q) in probs.iter().enumerate() {
            if r < *q {
                return candidates[i].0;
            }
            r -= q;
        }
        candidates[probs.len() - 1].0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_largest_logit() {
        let mut s = Sampler::new(SamplingParams::default());
        assert_eq!(s.sample(&mut [0.1, 3.0, -1.0, 2.9], &[]), 1);
    }

    #[test]
    fn repetition_penalty_can_change_the_choice() {
        let params = SamplingParams {
            repetition_penalty: 2.0,
            ..SamplingParams::default()
        };
        let mut s = Sampler::new(params);
        assert_eq!(s.sample(&mut [0.1, 3.0, -1.0, 2.0], &[1]), 3);
    }

    #[test]
    fn seeded_sampling_repeats_and_respects_top_k() {
        let params = SamplingParams {
            temperature: 1.0,
            top_k: 2,
            seed: 7,
            ..SamplingParams::default()
        };
        let logits = [1.0, 1.2, 0.9, 5.0, 4.8];
        let draw = |params: &SamplingParams| {
            let mut s = Sampler::new(params.clone());
            (0..200)
                .map(|_| s.sample(&mut logits.clone(), &[]))
                .collect::<Vec<_>>()
        };
        let a = draw(&params);
        assert_eq!(a, draw(&params), "same seed, same tokens");
        assert!(a.iter().all(|&t| t == 3 || t == 4), "only the top two");
        assert!(a.contains(&3) && a.contains(&4), "both get drawn");
    }

    #[test]
    fn top_p_keeps_the_nucleus() {
        let params = SamplingParams {
            temperature: 1.0,
            top_p: 0.5,
            seed: 1,
            ..SamplingParams::default()
        };
        let mut s = Sampler::new(params);
        for _ in 0..100 {
            assert_eq!(s.sample(&mut [0.0, 10.0, 0.0], &[]), 1);
        }
    }

    #[test]
    fn invalid_parameters_name_the_field() {
        for (params, field) in [
            (
                SamplingParams {
                    temperature: -1.0,
                    ..Default::default()
                },
                "temperature",
            ),
            (
                SamplingParams {
                    top_p: 0.0,
                    ..Default::default()
                },
                "top_p",
            ),
            (
                SamplingParams {
                    max_tokens: 0,
                    ..Default::default()
                },
                "max_tokens",
            ),
            (
                SamplingParams {
                    repetition_penalty: f32::NAN,
                    ..Default::default()
                },
                "repetition_penalty",
            ),
        ] {
            let err = params.validate().unwrap_err().to_string();
            assert!(err.contains(field), "{err}");
        }
    }
}
