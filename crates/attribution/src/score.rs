//! Scoring: from the maximal spans of a response to each contribution's share.
//!
//! # Formula (method `span-v1`)
//!
//! Let `S` be the spans [`Index::maximal_spans`] keeps for the response with `min_len` and
//! `max_unigram_prob`, in order of start position. Spans occurring more than
//! `max_occurrences` times in the corpus are skipped (they attribute to no one in
//! particular, and bound the cost). For each remaining span `s`:
//!
//! ```text
//! w(s)      = − Σ_{t ∈ s} ln p(t),      p(t) = (count(t) + 1) / (T + V)
//! C(s)      = the distinct duplicate clusters of the documents that contain s
//! K(s, c)   = the distinct contributions among the documents of cluster c that contain s
//! score(k) += w(s) / (|C(s)| · |K(s, c)|)   for every c ∈ C(s) and k ∈ K(s, c)
//! ```
//!
//! `T` is the corpus's token count and `V` the vocabulary's size. A span's weight is shared
//! equally among the clusters containing it, and within a cluster equally among its
//! contributions. Copies of a row sit in the row's cluster, so duplicating or
//! near-duplicating a row — under any number of accounts — never raises the total the
//! cluster receives: it can only split that cluster's part further.
//!
//! Shares: the contributions are ranked by score (descending, ties by lower contribution
//! id), the first `top_k` kept, and the kept scores normalised to sum to one — the dropped
//! contributions' mass is thereby redistributed to the kept ones in proportion to their
//! scores. Each share becomes parts per million, `floor(10⁶ · share)`, and the units still
//! missing to reach exactly 1,000,000 go one each to the largest fractional remainders
//! (ties: lower contribution id). Contributions left with 0 ppm are dropped.
//!
//! # Determinism
//!
//! Floats are IEEE-754 `f64` added in a fixed order (spans by position; within a span, the
//! (cluster, contribution) pairs sorted), and logarithms come from [`crate::detmath::ln`],
//! which uses basic operations only, so every machine computes the same bits and the same
//! ppm.
//!
//! The sybil bound holds exactly for the raw scores. With truncation to `top_k`, many
//! tiny copies can take the last slots from small honest contributors; the mass those
//! lose is redistributed to every kept contribution in proportion, so copies gain at most
//! that proportional part.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::index::{Index, Span};

/// The parameters of `span-v1`; recorded in every [`crate::AttributionRecord`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpanParams {
    /// Shortest span kept, in tokens.
    pub min_len: u32,
    /// Largest span unigram probability `Π p(t)` kept.
    pub max_unigram_prob: f64,
    /// Contributions listed.
    pub top_k: u32,
    /// Spans occurring more often than this are skipped.
    pub max_occurrences: u64,
}

impl Default for SpanParams {
    /// `min_len` 8, `max_unigram_prob` 1e-10, `top_k` 16, `max_occurrences` 10,000 — suited
    /// to model tokens; byte-level indexes want a longer `min_len` (≈ 32).
    fn default() -> SpanParams {
        SpanParams {
            min_len: 8,
            max_unigram_prob: 1e-10,
            top_k: 16,
            max_occurrences: 10_000,
        }
    }
}

impl SpanParams {
    /// Refuse values that make no sense.
    pub fn check(&self) -> Result<()> {
        if self.min_len == 0 {
            return Err(Error::Params("min_len must be at least 1".into()));
        }
        if !(self.max_unigram_prob > 0.0 && self.max_unigram_prob <= 1.0) {
            return Err(Error::Params(format!(
                "max_unigram_prob must be in (0, 1], got {}",
                self.max_unigram_prob
            )));
        }
        if self.top_k == 0 {
            return Err(Error::Params("top_k must be at least 1".into()));
        }
        if self.max_occurrences == 0 {
            return Err(Error::Params("max_occurrences must be at least 1".into()));
        }
        Ok(())
    }
}

/// One contribution's part of a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ContributionShare {
    /// Contribution id.
    pub contribution_id: u64,
    /// Contributor's address.
    #[serde(with = "crate::hexser::array")]
    pub contributor: [u8; 20],
    /// Share in parts per million; the shares of a response sum to exactly 1,000,000.
    pub share_ppm: u32,
}

/// A span with what it contributed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScoredSpan {
    /// The span.
    pub span: Span,
    /// Its weight `w(s)`.
    pub weight: f64,
    /// Distinct clusters containing it (0 when skipped).
    pub clusters: u64,
    /// Skipped for occurring more than `max_occurrences` times.
    pub skipped: bool,
}

/// The full result of scoring one response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Attribution {
    /// Every kept span, by start position.
    pub spans: Vec<ScoredSpan>,
    /// Raw scores by contribution id (before truncation and normalisation).
    pub raw_scores: Vec<(u64, f64)>,
    /// The shares, by share descending then contribution id.
    pub contributions: Vec<ContributionShare>,
}

/// Score `response` against `index` with `params` (see the module docs for the formula).
pub fn attribute(index: &Index, response: &[u32], params: &SpanParams) -> Result<Attribution> {
    params.check()?;
    let spans = index.maximal_spans(response, params.min_len as usize, params.max_unigram_prob);
    let mut scores: BTreeMap<u64, f64> = BTreeMap::new();
    let mut contributors: BTreeMap<u64, [u8; 20]> = BTreeMap::new();
    let mut scored = Vec::with_capacity(spans.len());
    let mut pairs: Vec<(u64, u64)> = Vec::new();
    for span in spans {
        let weight = span.weight();
        if span.count() > params.max_occurrences {
            scored.push(ScoredSpan {
                span,
                weight,
                clusters: 0,
                skipped: true,
            });
            continue;
        }
        pairs.clear();
        for occ in index.occurrences_in(span.range, span.count() as usize) {
            pairs.push((occ.doc.cluster_id, occ.doc.contribution_id));
            contributors
                .entry(occ.doc.contribution_id)
                .or_insert(occ.doc.contributor);
        }
        pairs.sort_unstable();
        pairs.dedup();
        let clusters = pairs.chunk_by(|a, b| a.0 == b.0).count() as u64;
        for group in pairs.chunk_by(|a, b| a.0 == b.0) {
            let part = weight / (clusters * group.len() as u64) as f64;
            for &(_, contribution) in group {
                *scores.entry(contribution).or_insert(0.0) += part;
            }
        }
        scored.push(ScoredSpan {
            span,
            weight,
            clusters,
            skipped: false,
        });
    }
    let raw_scores: Vec<(u64, f64)> = scores.into_iter().collect();
    let contributions = to_ppm(&raw_scores, params.top_k as usize)
        .into_iter()
        .map(|(contribution_id, share_ppm)| ContributionShare {
            contribution_id,
            contributor: contributors[&contribution_id],
            share_ppm,
        })
        .collect();
    Ok(Attribution {
        spans: scored,
        raw_scores,
        contributions,
    })
}

/// Parts per million for the `top_k` highest of `scores` (`(id, score)`, any order), summing
/// to exactly 1,000,000 unless no score is positive (then empty). Largest-remainder rounding,
/// ties by lower id; zero shares dropped; result by share descending, then id.
pub fn to_ppm(scores: &[(u64, f64)], top_k: usize) -> Vec<(u64, u32)> {
    const PPM: u64 = 1_000_000;
    let mut kept: Vec<(u64, f64)> = scores
        .iter()
        .copied()
        .filter(|&(_, s)| s > 0.0 && s.is_finite())
        .collect();
    kept.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    kept.truncate(top_k);
    if kept.is_empty() {
        return Vec::new();
    }
    let total = kept.iter().fold(0.0, |acc, &(_, s)| acc + s);
    let mut parts: Vec<(u64, u64, f64)> = kept
        .iter()
        .map(|&(id, s)| {
            let q = s / total * PPM as f64;
            let floor = q.floor().min(PPM as f64);
            (id, floor as u64, q - floor)
        })
        .collect();
    let assigned: u64 = parts.iter().map(|p| p.1).sum();
    let mut missing = PPM.saturating_sub(assigned);
    let mut order: Vec<usize> = (0..parts.len()).collect();
    order.sort_by(|&a, &b| {
        parts[b]
            .2
            .total_cmp(&parts[a].2)
            .then(parts[a].0.cmp(&parts[b].0))
    });
    while missing > 0 {
        for &i in &order {
            if missing == 0 {
                break;
            }
            parts[i].1 += 1;
            missing -= 1;
        }
    }
    let mut out: Vec<(u64, u32)> = parts
        .into_iter()
        .filter(|p| p.1 > 0)
        .map(|(id, ppm, _)| (id, ppm as u32))
        .collect();
    out.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    out
}

#[cfg(test)]
mod tests {
    use super::to_ppm;
    use proptest::prelude::*;

    #[test]
    fn ppm_rounding_uses_largest_remainders_and_lower_ids_on_ties() {
        // Three equal scores: 333,333 each and one unit left, which goes to the lowest id.
        let out = to_ppm(&[(7, 1.0), (3, 1.0), (5, 1.0)], 16);
        assert_eq!(out, vec![(3, 333_334), (5, 333_333), (7, 333_333)]);
        // Truncation renormalises the kept ones.
        let out = to_ppm(&[(1, 3.0), (2, 1.0), (3, 0.5)], 2);
        assert_eq!(out, vec![(1, 750_000), (2, 250_000)]);
        assert!(to_ppm(&[(1, 0.0)], 4).is_empty());
        assert!(to_ppm(&[], 4).is_empty());
    }

    proptest! {
        #[test]
        fn ppm_always_sums_to_a_million(
            scores in proptest::collection::vec((0u64..50, 0.0f64..1e6), 1..40),
            top_k in 1usize..20,
        ) {
            let mut seen = std::collections::BTreeSet::new();
            let scores: Vec<(u64, f64)> = scores.into_iter().filter(|s| seen.insert(s.0)).collect();
            let out = to_ppm(&scores, top_k);
            if scores.iter().any(|s| s.1 > 0.0) {
                prop_assert_eq!(out.iter().map(|p| p.1 as u64).sum::<u64>(), 1_000_000);
            }
            prop_assert!(out.len() <= top_k);
            prop_assert_eq!(out.clone(), to_ppm(&scores, top_k));
        }
    }
}
