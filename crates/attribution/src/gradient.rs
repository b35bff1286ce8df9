//! The record of the gradient path (`grad-datainf-v1`): which training rows' gradients align
//! with a response's, under the fine-tune that produced it.
//!
//! The scores come from the model runtime (per-layer CountSketches of LoRA gradients, DataInf;
//! see `openledger_llm::influence`); this module only turns per-row scores into contribution
//! shares and states them canonically. Scores are first rounded to fixed point (2⁻³²), then
//! summed per contribution in row order, keeping only rows that helped (positive scores), and
//! the `top_k` contributions become parts per million by [`crate::score::to_ppm`].
//!
//! Canonical encoding (hashed with BLAKE3; integers little-endian): `b"OLGRADv1"`, model (32),
//! root count (u32) and roots (32 each), response hash (32), sketch width (u32), sketch seed
//! (u64), damping (f64 bits), top_k (u32), contribution count (u32), then per contribution its
//! id (u64) and share (u32 ppm).

use serde::{Deserialize, Serialize};

use crate::score::to_ppm;

/// The method name of gradient records.
pub const METHOD_GRADIENT_DATAINF_V1: &str = "grad-datainf-v1";

const TAG: &[u8; 8] = b"OLGRADv1";

/// The parameters a gradient record was computed with.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct GradientParams {
    pub sketch_width: u32,
    /// As a decimal string in JSON: JavaScript numbers lose integers past 2⁵³.
    #[serde(with = "u64_string")]
    pub sketch_seed: u64,
    /// DataInf's λ as a fraction of the mean squared gradient norm per layer.
    pub damping: f64,
    pub top_k: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GradientRecord {
    #[serde(with = "crate::hexser::array")]
    pub model: [u8; 32],
    #[serde(with = "crate::hexser::array_vec")]
    pub snapshot_roots: Vec<[u8; 32]>,
    #[serde(with = "crate::hexser::array")]
    pub response_hash: [u8; 32],
    pub method: String,
    pub params: GradientParams,
    /// (contribution id, parts per million), by share descending then id.
    pub contributions: Vec<(u64, u32)>,
}

mod u64_string {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(|e| {
            D::Error::custom(format!(
                "expected a u64 as a decimal string, got {s:?}: {e}"
            ))
        })
    }
}

/// A score rounded to 2⁻³², so shares do not depend on the last bits of floating point.
fn quantized(score: f64) -> f64 {
    (score * 4_294_967_296.0).round() / 4_294_967_296.0
}

impl GradientRecord {
    /// The record for per-row `scores` (`(contribution id, score)`, in row order).
    pub fn from_scores(
        model: [u8; 32],
        snapshot_roots: Vec<[u8; 32]>,
        response_hash: [u8; 32],
        params: GradientParams,
        scores: &[(u64, f64)],
    ) -> Self {
        let mut by_contribution: std::collections::BTreeMap<u64, f64> = Default::default();
        for &(id, score) in scores {
            let s = quantized(score);
            if s > 0.0 {
                *by_contribution.entry(id).or_default() += s;
            }
        }
        let summed: Vec<(u64, f64)> = by_contribution.into_iter().collect();
        Self {
            model,
            snapshot_roots,
            response_hash,
            method: METHOD_GRADIENT_DATAINF_V1.into(),
            params,
            contributions: to_ppm(&summed, params.top_k as usize),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(160 + 32 * self.snapshot_roots.len());
        out.extend_from_slice(TAG);
        out.extend_from_slice(&self.model);
        out.extend_from_slice(&(self.snapshot_roots.len() as u32).to_le_bytes());
        for root in &self.snapshot_roots {
            out.extend_from_slice(root);
        }
        out.extend_from_slice(&self.response_hash);
        out.extend_from_slice(&self.params.sketch_width.to_le_bytes());
        out.extend_from_slice(&self.params.sketch_seed.to_le_bytes());
        out.extend_from_slice(&self.params.damping.to_bits().to_le_bytes());
        out.extend_from_slice(&self.params.top_k.to_le_bytes());
        out.extend_from_slice(&(self.contributions.len() as u32).to_le_bytes());
        for (id, ppm) in &self.contributions {
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&ppm.to_le_bytes());
        }
        out
    }

    pub fn hash(&self) -> [u8; 32] {
        *blake3::hash(&self.encode()).as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> GradientParams {
        GradientParams {
            sketch_width: 128,
            sketch_seed: 1,
            damping: 0.1,
            top_k: 2,
        }
    }

    #[test]
    fn rows_sum_per_contribution_and_only_helpful_rows_count() {
        let scores = [(7, 3.0), (9, 1.0), (7, 1.0), (5, -10.0), (11, 0.5)];
        let r = GradientRecord::from_scores([1; 32], vec![[2; 32]], [3; 32], params(), &scores);
        assert_eq!(r.contributions, vec![(7, 800_000), (9, 200_000)]);
        let again = GradientRecord::from_scores([1; 32], vec![[2; 32]], [3; 32], params(), &scores);
        assert_eq!(r.hash(), again.hash());
        let mut other = r.clone();
        other.contributions[0].1 -= 1;
        assert_ne!(r.hash(), other.hash());
    }
}

#[cfg(test)]
mod roundtrip {
    use super::*;

    #[test]
    fn json_round_trip_keeps_the_hash() {
        let params = GradientParams {
            sketch_width: 128,
            sketch_seed: 0x6772_6164_5f73_6b74,
            damping: 0.1,
            top_k: 16,
        };
        let r = GradientRecord::from_scores([1; 32], vec![[2; 32]], [3; 32], params, &[(5, 1.0)]);
        let json = serde_json::to_value(&r).unwrap();
        assert!(
            json["params"]["sketch_seed"].is_string(),
            "no precision lost in JavaScript"
        );
        let back: GradientRecord = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back, r, "{json}");
        assert_eq!(back.hash(), r.hash());
    }
}
