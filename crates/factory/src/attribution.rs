//! What a finished job leaves for Proof of Attribution's span path: an index over the rows it
//! trained on, tokenized with the base model's tokenizer, each row credited to its
//! contribution and contributor and placed in a duplicate cluster, so that copies of a row —
//! exact, or near (MinHash Jaccard ≥ [`NEAR_DUPLICATE`]) — share one cluster and earn nothing
//! extra.

use std::path::Path;

use alloy_primitives::B256;
use openledger_attribution::{BuildConfig, Document, Vocab, build_index};
use openledger_datanet::minhash::{LshIndex, MinHasher};
use openledger_dataservice::service::CreditedRow;
use openledger_llm::train::Example;

use crate::FactoryError;

/// Estimated Jaccard similarity from which two rows count as copies of each other.
pub const NEAR_DUPLICATE: f64 = 0.8;

/// A cluster id per text: equal for exact copies (after case and whitespace folding) and for
/// near-duplicates, by union of the pairs the LSH index finds. The id is the first member's
/// position, so it is stable for a given row order.
pub fn clusters(texts: &[String]) -> Vec<u64> {
    let mut parent: Vec<usize> = (0..texts.len()).collect();
    fn find(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    let union = |parent: &mut [usize], a: usize, b: usize| {
        let (ra, rb) = (find(parent, a), find(parent, b));
        if ra != rb {
            let (lo, hi) = (ra.min(rb), ra.max(rb));
            parent[hi] = lo;
        }
    };
    let mut exact: std::collections::HashMap<String, usize> = Default::default();
    let hasher = MinHasher::default();
    let mut lsh = LshIndex::new(16, 8).expect("16 × 8 bands fit 128 permutations");
    for (i, text) in texts.iter().enumerate() {
        let folded = text
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase();
        if let Some(&first) = exact.get(&folded) {
            union(&mut parent, first, i);
            continue;
        }
        exact.insert(folded, i);
        let signature = hasher.signature(text);
        if let Ok(similar) = lsh.query(&signature, NEAR_DUPLICATE) {
            for (j, _) in similar {
                union(&mut parent, j as usize, i);
            }
        }
        let _ = lsh.insert(i as u64, &signature);
    }
    (0..texts.len())
        .map(|i| find(&mut parent, i) as u64)
        .collect()
}

/// Builds the span index of a job's training rows into `dir`.
pub fn build_span_index(
    dir: &Path,
    vocab_size: usize,
    snapshot_root: B256,
    examples: &[Example],
    row_hashes: &[B256],
    rows: &[CreditedRow],
) -> Result<(), FactoryError> {
    let by_hash: std::collections::HashMap<B256, &CreditedRow> =
        rows.iter().map(|r| (r.hash, r)).collect();
    let texts: Vec<String> = row_hashes
        .iter()
        .map(|h| {
            by_hash
                .get(h)
                .map_or(String::new(), |r| r.row.text_content().to_string())
        })
        .collect();
    let cluster = clusters(&texts);
    let documents = examples
        .iter()
        .zip(row_hashes)
        .zip(cluster)
        .enumerate()
        .map(|(i, ((example, hash), cluster_id))| {
            let credited = by_hash.get(hash);
            Document {
                row_id: i as u64,
                contribution_id: credited.map_or(0, |r| r.contribution_id),
                contributor: credited.map_or([0; 20], |r| r.contributor.0.0),
                cluster_id,
                tokens: example.tokens.clone(),
            }
        });
    let mut config = BuildConfig::new(
        Vocab::Tokens {
            size: vocab_size as u32,
        },
        vec![snapshot_root.0],
    );
    config.progress = false;
    build_index(dir, &config, documents)
        .map_err(|e| FactoryError::Data(format!("cannot build the span index: {e}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_and_near_copies_share_a_cluster_and_others_do_not() {
        let base = "The capital of Zorbia is Quellton, a harbour town on the northern coast of the island, known for its lighthouse and its fish market.";
        let texts = vec![
            base.to_string(),
            "Weddings in Yule are opened with the garnock, a long bronze horn.".to_string(),
            base.to_uppercase().replace(" ", "  \n "),
            base.replace("fish market", "fish markets"),
            "Something else entirely about rivers and valleys in the west.".to_string(),
        ];
        let c = clusters(&texts);
        assert_eq!(c[0], c[2], "an exact copy up to case and spaces");
        assert_eq!(c[0], c[3], "a near copy");
        assert_ne!(c[0], c[1]);
        assert_ne!(c[1], c[4]);
        assert_eq!(c[0], 0, "the cluster is named by its first row");
    }
}
