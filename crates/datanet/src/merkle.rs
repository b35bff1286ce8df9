//! Snapshot Merkle trees over row hashes, and inclusion proofs anyone can check.
//!
//! The tree is built over the set of row hashes sorted ascending (duplicates removed), so the
//! root depends only on which rows a snapshot holds, never on upload order. Leaves and inner
//! nodes are hashed with different prefixes (`0x00`, `0x01`) so a leaf can never pass for an
//! inner node, and an odd node at the end of a level moves up unchanged rather than being
//! paired with itself (pairing with itself would let two different row sets share a root).

use openledger_primitives::B256;
use serde::{Deserialize, Serialize};

const LEAF: u8 = 0x00;
const NODE: u8 = 0x01;

/// The content address of a row: BLAKE3 of its normalised text.
pub fn row_hash(normalized: &str) -> B256 {
    B256::from(*blake3::hash(normalized.as_bytes()).as_bytes())
}

fn leaf(row: &B256) -> B256 {
    let mut h = blake3::Hasher::new();
    h.update(&[LEAF]);
    h.update(row.as_slice());
    B256::from(*h.finalize().as_bytes())
}

fn node(left: &B256, right: &B256) -> B256 {
    let mut h = blake3::Hasher::new();
    h.update(&[NODE]);
    h.update(left.as_slice());
    h.update(right.as_slice());
    B256::from(*h.finalize().as_bytes())
}

/// One step of a proof: the sibling's hash and whether it sits on the left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub sibling: B256,
    pub sibling_on_left: bool,
}

/// Proof that a row hash is in the tree with a given root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InclusionProof {
    pub row: B256,
    pub steps: Vec<Step>,
}

impl InclusionProof {
    /// True when the proof leads from the row to `root`.
    pub fn verify(&self, root: B256) -> bool {
        let mut h = leaf(&self.row);
        for step in &self.steps {
            h = if step.sibling_on_left {
                node(&step.sibling, &h)
            } else {
                node(&h, &step.sibling)
            };
        }
        h == root
    }
}

/// A Merkle tree over a set of row hashes.
#[derive(Debug, Clone)]
pub struct MerkleTree {
    /// Level 0 are the leaves (sorted by row hash), the last level is the root.
    levels: Vec<Vec<B256>>,
    rows: Vec<B256>,
}

impl MerkleTree {
    pub fn new(rows: impl IntoIterator<Item = B256>) -> Self {
        let mut rows: Vec<B256> = rows.into_iter().collect();
        rows.sort_unstable();
        rows.dedup();
        let mut levels = vec![rows.iter().map(leaf).collect::<Vec<_>>()];
        while levels.last().is_some_and(|l| l.len() > 1) {
            let below = levels.last().expect("non-empty");
            let above = below
                .chunks(2)
                .map(|pair| match pair {
                    [l, r] => node(l, r),
                    [single] => *single,
                    _ => unreachable!("chunks of two"),
                })
                .collect();
            levels.push(above);
        }
        Self { levels, rows }
    }

    /// The root; the empty tree's root is all zeros.
    pub fn root(&self) -> B256 {
        self.levels
            .last()
            .and_then(|l| l.first())
            .copied()
            .unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The inclusion proof of `row`, or `None` if the tree does not hold it.
    pub fn prove(&self, row: B256) -> Option<InclusionProof> {
        let mut index = self.rows.binary_search(&row).ok()?;
        let mut steps = Vec::new();
        for level in &self.levels[..self.levels.len() - 1] {
            let sibling = index ^ 1;
            if sibling < level.len() {
                steps.push(Step {
                    sibling: level[sibling],
                    sibling_on_left: sibling < index,
                });
            }
            index /= 2;
        }
        Some(InclusionProof { row, steps })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rows(n: usize) -> Vec<B256> {
        (0..n).map(|i| row_hash(&format!("row {i}"))).collect()
    }

    #[test]
    fn every_row_proves_and_outsiders_do_not() {
        for n in [1, 2, 3, 4, 5, 7, 8, 9, 33] {
            let tree = MerkleTree::new(rows(n));
            for r in rows(n) {
                let proof = tree.prove(r).unwrap();
                assert!(proof.verify(tree.root()), "row of {n}");
            }
            assert!(tree.prove(row_hash("not there")).is_none());
        }
    }

    #[test]
    fn the_root_ignores_order_and_duplicates_but_not_content() {
        let mut a = rows(10);
        let root = MerkleTree::new(a.clone()).root();
        a.reverse();
        a.push(a[0]);
        assert_eq!(MerkleTree::new(a.clone()).root(), root);
        a.pop();
        a.pop();
        assert_ne!(MerkleTree::new(a).root(), root);
        assert_eq!(MerkleTree::new(Vec::new()).root(), B256::ZERO);
    }

    #[test]
    fn a_proof_fails_for_another_row_or_root() {
        let tree = MerkleTree::new(rows(6));
        let proof = tree.prove(rows(6)[2]).unwrap();
        let mut forged = proof.clone();
        forged.row = rows(6)[3];
        assert!(!forged.verify(tree.root()));
        assert!(!proof.verify(MerkleTree::new(rows(5)).root()));
    }

    proptest! {
        #[test]
        fn proofs_hold_for_any_set(n in 1usize..200, pick in any::<prop::sample::Index>()) {
            let tree = MerkleTree::new(rows(n));
            let r = rows(n)[pick.index(n)];
            prop_assert!(tree.prove(r).unwrap().verify(tree.root()));
        }
    }
}
