//! Near-duplicate detection of text rows with MinHash and locality-sensitive hashing (LSH).
//!
//! Exact dedup (the BLAKE3 hash of the normalised text) only catches byte-identical rows. A
//! contributor can resubmit someone else's row with a few words changed, a sentence moved or a
//! footer appended and would still be paid for it; this module catches those.
//!
//! # How
//!
//! A row becomes a *set of shingles*: overlapping word n-grams (5 words by default) of its
//! lowercased text. The similarity of two rows is the Jaccard index of their shingle sets.
//! Rows with fewer words than the shingle size use character n-grams instead, so that short
//! rows still have enough shingles to compare.
//!
//! Comparing every new row with every accepted row is quadratic, so each row is summarised by a
//! fixed-size [`Signature`]: for each of `num_perm` random hash functions, the minimum hash over
//! its shingles. The functions are multiply-add-shift, `(a·x + b) mod 2^64 >> 32` with random
//! odd `a` (Dietzfelbinger): the shingle hashes `x` are already uniform (BLAKE3), so this cheap
//! family permutes them well enough, and it is several times faster than the textbook
//! `(a·x + b) mod (2^61 - 1)` because it needs no 128-bit products and vectorises. Two signatures agree at a position with probability equal to
//! the Jaccard index, so the fraction of agreeing positions estimates it (standard error
//! `sqrt(J(1-J)/num_perm)`, about 0.04 for 128 permutations at J = 0.7).
//!
//! # The S-curve trade-off
//!
//! [`LshIndex`] cuts each signature into `bands` bands of `rows` values and only compares rows
//! that agree on at least one whole band. Two rows of true similarity `s` become candidates with
//! probability `1 - (1 - s^rows)^bands`, an S-shaped curve whose steepest point is near
//! `(1/bands)^(1/rows)`. With the default 16 bands × 8 rows (≈ 0.71):
//!
//! | similarity s | 0.5  | 0.6  | 0.7  | 0.75 | 0.8  | 0.9    |
//! |--------------|------|------|------|------|------|--------|
//! | P(candidate) | 0.06 | 0.24 | 0.61 | 0.82 | 0.95 | 0.9999 |
//!
//! More rows per band make the curve steeper and move it right (fewer false candidates to
//! verify, but pairs just above the threshold are missed more often); more bands move it left
//! (better recall, more candidates to verify). Candidates are then verified against the
//! estimated Jaccard, so false candidates cost time, never correctness; what the curve decides is
//! recall, which is high for pairs at 0.8 and above and only about 60 % for pairs right at 0.7.
//!
//! Everything here is deterministic: the shingle hash is FNV-1a + SplitMix64 and the permutations are
//! derived from a seed, so signatures computed on different machines and runs can be stored and
//! compared.

use rustc_hash::FxHashMap as HashMap;

use serde::{Deserialize, Serialize};

/// Stands in for "no shingle": larger than every real hash value (< 2^32), so it never collides
/// with one. Only empty texts have it.
const EMPTY_SLOT: u64 = u64::MAX;

/// Seed of [`MinHashConfig::default`]. Changing it invalidates every stored signature.
const DEFAULT_SEED: u64 = 0x4f70_656e_4c65_6467; // "OpenLedg"

/// Errors from building a hasher or an index, or from mixing incompatible signatures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MinHashError {
    #[error("invalid MinHash configuration: {0}")]
    InvalidConfig(&'static str),
    #[error("signature has {actual} values but this index expects {expected}")]
    SignatureLength { expected: usize, actual: usize },
}

/// Parameters of a [`MinHasher`]. Signatures are only comparable between hashers with the same
/// configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MinHashConfig {
    /// Number of hash functions, i.e. the signature length.
    pub num_perm: usize,
    /// Words per shingle (and characters per shingle for texts shorter than that).
    pub shingle_words: usize,
    /// Seed from which the hash functions are derived.
    pub seed: u64,
}

impl Default for MinHashConfig {
    fn default() -> Self {
        Self {
            num_perm: 128,
            shingle_words: 5,
            seed: DEFAULT_SEED,
        }
    }
}

/// Computes MinHash [`Signature`]s of texts.
#[derive(Debug, Clone)]
pub struct MinHasher {
    config: MinHashConfig,
    /// Multipliers (odd) and increments of the hash functions `(a·x + b) mod 2^64 >> 32`, kept
    /// as two arrays so the per-shingle loop over them vectorises.
    multipliers: Vec<u64>,
    increments: Vec<u64>,
}

impl Default for MinHasher {
    fn default() -> Self {
        Self::new(MinHashConfig::default()).expect("the default configuration is valid")
    }
}

impl MinHasher {
    pub fn new(config: MinHashConfig) -> Result<Self, MinHashError> {
        if config.num_perm == 0 {
            return Err(MinHashError::InvalidConfig("num_perm must be at least 1"));
        }
        if config.shingle_words == 0 {
            return Err(MinHashError::InvalidConfig(
                "shingle_words must be at least 1",
            ));
        }
        let mut state = config.seed;
        let mut multipliers = Vec::with_capacity(config.num_perm);
        let mut increments = Vec::with_capacity(config.num_perm);
        for _ in 0..config.num_perm {
            multipliers.push(splitmix64(&mut state) | 1);
            increments.push(splitmix64(&mut state));
        }
        Ok(Self {
            config,
            multipliers,
            increments,
        })
    }

    pub fn config(&self) -> &MinHashConfig {
        &self.config
    }

    /// The sorted, deduplicated 64-bit hashes of the text's shingles; empty only for a text
    /// without any non-whitespace character.
    pub fn shingles(&self, text: &str) -> Vec<u64> {
        let lowercased = text.to_lowercase();
        let size = self.config.shingle_words;
        // Each word is hashed once; a shingle hash mixes its words' hashes in order.
        let word_hashes: Vec<u64> = lowercased
            .split_whitespace()
            .map(|word| fnv1a(word.as_bytes()))
            .collect();
        let mut hashes: Vec<u64> = if word_hashes.len() >= size {
            word_hashes
                .windows(size)
                .map(|window| shingle_hash(b'w', window))
                .collect()
        } else {
            // Too few words for a single word shingle: compare character n-grams of the words
            // joined by single spaces, so that "Hello world" and "hello  world!" still overlap.
            let joined = lowercased.split_whitespace().collect::<Vec<_>>().join(" ");
            let char_starts: Vec<usize> = joined.char_indices().map(|(i, _)| i).collect();
            if char_starts.is_empty() {
                Vec::new()
            } else if char_starts.len() <= size {
                vec![shingle_hash(b'c', &[fnv1a(joined.as_bytes())])]
            } else {
                (0..=char_starts.len() - size)
                    .map(|first| {
                        let end = char_starts
                            .get(first + size)
                            .copied()
                            .unwrap_or(joined.len());
                        let gram = &joined[char_starts[first]..end];
                        shingle_hash(b'c', &[fnv1a(gram.as_bytes())])
                    })
                    .collect()
            }
        };
        hashes.sort_unstable();
        hashes.dedup();
        hashes
    }

    /// The MinHash signature of `text`.
    pub fn signature(&self, text: &str) -> Signature {
        self.signature_of_shingles(&self.shingles(text))
    }

    /// The MinHash signature of an already computed shingle set (see [`MinHasher::shingles`]).
    pub fn signature_of_shingles(&self, shingles: &[u64]) -> Signature {
        let mut minimums = vec![EMPTY_SLOT; self.multipliers.len()];
        for &x in shingles {
            for ((minimum, &a), &b) in minimums
                .iter_mut()
                .zip(&self.multipliers)
                .zip(&self.increments)
            {
                let permuted = a.wrapping_mul(x).wrapping_add(b) >> 32;
                *minimum = (*minimum).min(permuted);
            }
        }
        Signature(minimums)
    }
}

/// A MinHash signature: per hash function, the minimum hash value over a text's shingles.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Signature(pub Vec<u64>);

impl Signature {
    /// Estimated Jaccard similarity of the two texts' shingle sets: the fraction of positions
    /// at which the signatures agree. Two empty texts count as identical (1.0).
    ///
    /// # Panics
    ///
    /// If the signatures have different lengths: they come from different hasher
    /// configurations and cannot be compared.
    pub fn jaccard(&self, other: &Signature) -> f64 {
        assert_eq!(
            self.0.len(),
            other.0.len(),
            "signatures from different MinHash configurations are not comparable"
        );
        if self.0.is_empty() {
            return 0.0;
        }
        let agreeing = self.0.iter().zip(&other.0).filter(|(a, b)| a == b).count();
        agreeing as f64 / self.0.len() as f64
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// An LSH index over the signatures of accepted rows, answering "which rows are at least this
/// similar to a new one" without comparing against all of them.
#[derive(Debug, Clone)]
pub struct LshIndex {
    bands: usize,
    rows: usize,
    /// Per band: hash of the band's values → ids of the rows having exactly those values.
    buckets: Vec<HashMap<u64, Vec<u64>>>,
    signatures: HashMap<u64, Signature>,
}

impl Default for LshIndex {
    /// 16 bands × 8 rows, for 128-permutation signatures and a threshold around 0.7.
    fn default() -> Self {
        Self::new(16, 8).expect("16 × 8 is a valid banding")
    }
}

impl LshIndex {
    /// An empty index for signatures of `bands × rows` values.
    pub fn new(bands: usize, rows: usize) -> Result<Self, MinHashError> {
        if bands == 0 || rows == 0 {
            return Err(MinHashError::InvalidConfig(
                "bands and rows must be at least 1",
            ));
        }
        Ok(Self {
            bands,
            rows,
            buckets: vec![HashMap::default(); bands],
            signatures: HashMap::default(),
        })
    }

    /// The signature length this index accepts.
    pub fn signature_len(&self) -> usize {
        self.bands * self.rows
    }

    /// The similarity at which the candidate probability rises most steeply,
    /// `(1/bands)^(1/rows)`.
    pub fn approximate_threshold(&self) -> f64 {
        (1.0 / self.bands as f64).powf(1.0 / self.rows as f64)
    }

    /// Probability that two rows of true Jaccard similarity `similarity` share a band.
    pub fn candidate_probability(&self, similarity: f64) -> f64 {
        1.0 - (1.0 - similarity.powi(self.rows as i32)).powi(self.bands as i32)
    }

    pub fn len(&self) -> usize {
        self.signatures.len()
    }

    pub fn is_empty(&self) -> bool {
        self.signatures.is_empty()
    }

    /// Adds a row, replacing any row already indexed under the same id.
    pub fn insert(&mut self, row_id: u64, signature: &Signature) -> Result<(), MinHashError> {
        self.check_len(signature)?;
        self.remove(row_id);
        let keys = band_keys(signature, self.rows);
        for (bucket, key) in self.buckets.iter_mut().zip(keys) {
            bucket.entry(key).or_default().push(row_id);
        }
        self.signatures.insert(row_id, signature.clone());
        Ok(())
    }

    /// Removes a row; returns whether it was indexed.
    pub fn remove(&mut self, row_id: u64) -> bool {
        let Some(signature) = self.signatures.remove(&row_id) else {
            return false;
        };
        let keys = band_keys(&signature, self.rows);
        for (bucket, key) in self.buckets.iter_mut().zip(keys) {
            if let Some(ids) = bucket.get_mut(&key) {
                ids.retain(|&id| id != row_id);
                if ids.is_empty() {
                    bucket.remove(&key);
                }
            }
        }
        true
    }

    /// Indexed rows sharing a band with `signature` whose estimated Jaccard similarity is at
    /// least `threshold`, most similar first (ties by ascending row id).
    pub fn query(
        &self,
        signature: &Signature,
        threshold: f64,
    ) -> Result<Vec<(u64, f64)>, MinHashError> {
        self.check_len(signature)?;
        let mut candidates = rustc_hash::FxHashSet::default();
        for (bucket, key) in self.buckets.iter().zip(band_keys(signature, self.rows)) {
            if let Some(ids) = bucket.get(&key) {
                candidates.extend(ids.iter().copied());
            }
        }
        let mut matches: Vec<(u64, f64)> = candidates
            .into_iter()
            .map(|id| (id, self.signatures[&id].jaccard(signature)))
            .filter(|&(_, similarity)| similarity >= threshold)
            .collect();
        matches.sort_by(|(id_a, sim_a), (id_b, sim_b)| {
            sim_b.total_cmp(sim_a).then_with(|| id_a.cmp(id_b))
        });
        Ok(matches)
    }

    /// The most similar indexed row at or above `threshold`, if any.
    pub fn best_match(
        &self,
        signature: &Signature,
        threshold: f64,
    ) -> Result<Option<(u64, f64)>, MinHashError> {
        Ok(self.query(signature, threshold)?.into_iter().next())
    }

    fn check_len(&self, signature: &Signature) -> Result<(), MinHashError> {
        if signature.len() == self.signature_len() {
            Ok(())
        } else {
            Err(MinHashError::SignatureLength {
                expected: self.signature_len(),
                actual: signature.len(),
            })
        }
    }
}

/// 64-bit FNV-1a of a word: stable across platforms and releases, and quick for the short
/// inputs words are (a cryptographic hash per shingle cost a fifth of the whole pipeline).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325_u64;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// A shingle's hash from its parts' hashes, in order, through SplitMix64 rounds (which spread
/// FNV's weak low bits over the whole word). The kind byte keeps word and character shingles
/// apart; order matters, so ("a", "b") and ("b", "a") differ.
fn shingle_hash(kind: u8, parts: &[u64]) -> u64 {
    let mut state = u64::from(kind);
    for &part in parts {
        state ^= part;
        state = splitmix64(&mut state);
    }
    state
}

/// Bucket keys of a signature's bands, in band order (the length was checked by the caller).
fn band_keys(signature: &Signature, rows: usize) -> impl Iterator<Item = u64> + '_ {
    signature.0.chunks_exact(rows).map(band_key)
}

/// Bucket key of a band. Collisions between different bands only add candidates, which the
/// Jaccard check then rejects, so a cheap mix is enough.
fn band_key(values: &[u64]) -> u64 {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    for &value in values {
        state ^= value;
        state = splitmix64(&mut state);
    }
    state
}

/// The SplitMix64 generator step: a well-mixed, platform-independent stream from a seed.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PINNED_SHINGLE: u64 = 0xf7c5_58f4_2137_651c;
    use std::collections::HashSet;

    /// Deterministic test-data generator; the crate has no `rand` dependency.
    struct TestRng(u64);

    impl TestRng {
        fn below(&mut self, bound: usize) -> usize {
            (splitmix64(&mut self.0) % bound as u64) as usize
        }

        fn chance(&mut self, percent: usize) -> bool {
            self.below(100) < percent
        }
    }

    fn vocabulary(rng: &mut TestRng, size: usize) -> Vec<String> {
        const SYLLABLES: [&str; 24] = [
            "ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "ze", "po", "qu", "de", "fi", "ga",
            "ho", "ju", "bre", "cla", "dro", "fle", "gri", "pla", "stu", "tra",
        ];
        let mut words = HashSet::new();
        while words.len() < size {
            let syllables = 2 + rng.below(3);
            let word: String = (0..syllables)
                .map(|_| SYLLABLES[rng.below(SYLLABLES.len())])
                .collect();
            words.insert(word);
        }
        let mut words: Vec<String> = words.into_iter().collect();
        words.sort();
        words
    }

    /// A document as sentences of words, so that near-duplicates can move whole sentences.
    fn random_document(rng: &mut TestRng, vocabulary: &[String]) -> Vec<Vec<String>> {
        let sentences = 24 + rng.below(12);
        (0..sentences)
            .map(|_| {
                let words = 8 + rng.below(8);
                (0..words)
                    .map(|_| vocabulary[rng.below(vocabulary.len())].clone())
                    .collect()
            })
            .collect()
    }

    fn render(document: &[Vec<String>]) -> String {
        document
            .iter()
            .map(|sentence| format!("{}.", sentence.join(" ")))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn exact_jaccard(a: &[u64], b: &[u64]) -> f64 {
        let a: HashSet<_> = a.iter().collect();
        let b: HashSet<_> = b.iter().collect();
        a.intersection(&b).count() as f64 / a.union(&b).count() as f64
    }

    const PARAGRAPH: &str = "The quick brown fox jumps over the lazy dog while the farmer \
        watches from the porch and wonders whether the fence will hold through another \
        winter of storms, snow and the long dark nights that come with the northern season. \
        His daughter has already ordered new posts from the mill in town, but the delivery \
        keeps slipping because the only truck that can carry them is being repaired after \
        the flood in spring. Meanwhile the sheep have learned that the weakest corner is \
        behind the old barn, and every few days one of them wanders off toward the river \
        meadow, where the grass is greener and nobody shouts at them to come back home.";

    #[test]
    fn identical_texts_estimate_one() {
        let hasher = MinHasher::default();
        let signature = hasher.signature(PARAGRAPH);
        assert_eq!(signature.len(), 128);
        assert_eq!(signature.jaccard(&hasher.signature(PARAGRAPH)), 1.0);
    }

    #[test]
    fn case_and_whitespace_do_not_change_the_signature() {
        let hasher = MinHasher::default();
        let shouted = PARAGRAPH.to_uppercase().replace(' ', " \n\t ");
        assert_eq!(hasher.signature(PARAGRAPH), hasher.signature(&shouted));
    }

    #[test]
    fn signatures_are_deterministic_across_hasher_instances() {
        let first = MinHasher::default().signature(PARAGRAPH);
        let second = MinHasher::new(MinHashConfig::default())
            .unwrap()
            .signature(PARAGRAPH);
        assert_eq!(first, second);
    }

    #[test]
    fn different_seeds_give_different_signatures() {
        let other_seed = MinHasher::new(MinHashConfig {
            seed: 7,
            ..MinHashConfig::default()
        })
        .unwrap();
        assert_ne!(
            MinHasher::default().signature(PARAGRAPH),
            other_seed.signature(PARAGRAPH)
        );
    }

    #[test]
    fn shingle_hash_is_stable_across_platforms_and_releases() {
        // Pinned so that a change of hash (which would invalidate stored signatures) fails here.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        let parts: Vec<u64> = ["the", "quick", "brown", "fox", "jumps"]
            .iter()
            .map(|w| fnv1a(w.as_bytes()))
            .collect();
        let hash = shingle_hash(b'w', &parts);
        assert_eq!(hash, shingle_hash(b'w', &parts));
        assert_ne!(hash, shingle_hash(b'c', &parts));
        let mut reversed = parts.clone();
        reversed.reverse();
        assert_ne!(hash, shingle_hash(b'w', &reversed));
        assert_eq!(hash, PINNED_SHINGLE);
    }

    #[test]
    fn hash_values_are_32_bit_and_spread() {
        let hasher = MinHasher::default();
        let signature = hasher.signature("a handful of words makes a few shingles to hash here");
        assert!(signature.0.iter().all(|&v| v < 1 << 32));
        // 128 minimums of independent functions are not all alike.
        let distinct: HashSet<u64> = signature.0.iter().copied().collect();
        assert!(distinct.len() > 120, "{}", distinct.len());
    }

    #[test]
    fn short_texts_fall_back_to_character_shingles() {
        let hasher = MinHasher::default();
        let short = hasher.shingles("Hello brave new world");
        assert!(short.len() > 10, "character 5-grams, got {}", short.len());
        let similar = hasher.signature("hello brave new world!");
        assert!(hasher.signature("Hello brave new world").jaccard(&similar) > 0.7);
        assert_eq!(hasher.shingles("hi").len(), 1);
        assert!(hasher.shingles(" \n\t").is_empty());
    }

    #[test]
    fn edited_text_is_found_with_estimate_close_to_exact_jaccard() {
        let hasher = MinHasher::default();
        let edited = PARAGRAPH
            .replace("lazy dog", "sleepy dog")
            .replace("northern season", "northern seasons");
        let exact = exact_jaccard(&hasher.shingles(PARAGRAPH), &hasher.shingles(&edited));
        let mut index = LshIndex::default();
        index.insert(1, &hasher.signature(PARAGRAPH)).unwrap();
        index
            .insert(
                2,
                &hasher.signature("Completely unrelated words about databases and tax law"),
            )
            .unwrap();

        let (row, estimate) = index
            .best_match(&hasher.signature(&edited), 0.7)
            .unwrap()
            .expect("the edited paragraph is a near-duplicate");
        println!("exact Jaccard {exact:.3}, estimated {estimate:.3}");
        assert_eq!(row, 1);
        assert!(estimate >= 0.7);
        assert!(
            (estimate - exact).abs() <= 0.1,
            "exact {exact}, estimate {estimate}"
        );
    }

    #[test]
    fn unrelated_texts_are_not_returned() {
        let hasher = MinHasher::default();
        let mut index = LshIndex::default();
        index.insert(1, &hasher.signature(PARAGRAPH)).unwrap();
        let unrelated = "Interest rates rose again this quarter as the central bank tried to \
            cool inflation, and analysts expect mortgage costs to follow within weeks";
        assert!(
            index
                .query(&hasher.signature(unrelated), 0.7)
                .unwrap()
                .is_empty()
        );
        assert!(
            index
                .query(&hasher.signature(unrelated), 0.0)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn query_results_are_sorted_by_similarity_then_row_id() {
        let hasher = MinHasher::default();
        let mut index = LshIndex::default();
        let slightly_edited = PARAGRAPH.replace("porch", "veranda");
        index
            .insert(30, &hasher.signature(&slightly_edited))
            .unwrap();
        index.insert(20, &hasher.signature(PARAGRAPH)).unwrap();
        index.insert(10, &hasher.signature(PARAGRAPH)).unwrap();
        let found = index.query(&hasher.signature(PARAGRAPH), 0.5).unwrap();
        let ids: Vec<u64> = found.iter().map(|&(id, _)| id).collect();
        assert_eq!(ids, [10, 20, 30]);
        assert_eq!(found[0].1, 1.0);
        assert!(found[2].1 < 1.0);
    }

    #[test]
    fn reinserting_a_row_replaces_and_removing_forgets_it() {
        let hasher = MinHasher::default();
        let mut index = LshIndex::default();
        index.insert(1, &hasher.signature(PARAGRAPH)).unwrap();
        index
            .insert(
                1,
                &hasher.signature("something else entirely, nothing like it at all"),
            )
            .unwrap();
        assert_eq!(index.len(), 1);
        assert!(
            index
                .query(&hasher.signature(PARAGRAPH), 0.7)
                .unwrap()
                .is_empty()
        );
        assert!(index.remove(1));
        assert!(!index.remove(1));
        assert!(index.is_empty());
        assert!(index.buckets.iter().all(HashMap::is_empty));
    }

    #[test]
    fn signatures_of_the_wrong_length_are_rejected() {
        let short = MinHasher::new(MinHashConfig {
            num_perm: 64,
            ..MinHashConfig::default()
        })
        .unwrap();
        let mut index = LshIndex::default();
        let expected = Err(MinHashError::SignatureLength {
            expected: 128,
            actual: 64,
        });
        assert_eq!(index.insert(1, &short.signature(PARAGRAPH)), expected);
        assert_eq!(
            index.query(&short.signature(PARAGRAPH), 0.7).map(|_| ()),
            expected
        );
    }

    #[test]
    fn invalid_configurations_are_rejected() {
        assert!(LshIndex::new(0, 8).is_err());
        assert!(
            MinHasher::new(MinHashConfig {
                num_perm: 0,
                ..MinHashConfig::default()
            })
            .is_err()
        );
        assert!(
            MinHasher::new(MinHashConfig {
                shingle_words: 0,
                ..MinHashConfig::default()
            })
            .is_err()
        );
    }

    #[test]
    fn default_banding_has_its_steepest_point_near_seven_tenths() {
        let index = LshIndex::default();
        assert!((index.approximate_threshold() - 0.707).abs() < 0.001);
        assert!(index.candidate_probability(0.5) < 0.1);
        assert!(index.candidate_probability(0.8) > 0.94);
    }

    /// A near-duplicate as a copier would make it: a few phrases reworded (`edit_percent` of the
    /// words), and maybe a sentence moved and a footer appended.
    fn near_duplicate(
        rng: &mut TestRng,
        original: &[Vec<String>],
        vocabulary: &[String],
        edit_percent: usize,
    ) -> Vec<Vec<String>> {
        let mut copy = original.to_vec();
        let total_words: usize = copy.iter().map(Vec::len).sum();
        let mut to_edit = (total_words * edit_percent).div_ceil(100);
        while to_edit > 0 {
            let sentence = rng.below(copy.len());
            let phrase = to_edit.min(1 + rng.below(3)).min(copy[sentence].len());
            let start = rng.below(copy[sentence].len() - phrase + 1);
            for word in &mut copy[sentence][start..start + phrase] {
                *word = vocabulary[rng.below(vocabulary.len())].clone();
            }
            to_edit -= phrase;
        }
        if rng.chance(50) {
            let moved = copy.remove(rng.below(copy.len()));
            let position = rng.below(copy.len() + 1);
            copy.insert(position, moved);
        }
        if rng.chance(50) {
            copy.push(
                "shared under the usual terms see the website"
                    .split(' ')
                    .map(String::from)
                    .collect(),
            );
        }
        copy
    }

    struct PlantedScores {
        precision: f64,
        recall: f64,
        min_exact: f64,
        mean_exact: f64,
    }

    /// Ingests 200 random documents and then 50 near-duplicates of distinct ones with the
    /// datanet pipeline's banding and threshold, the way the data service would (each row
    /// checked against everything accepted so far), and scores the reported pairs against the
    /// planted ones.
    fn planted_corpus_scores(edit_percent: usize) -> PlantedScores {
        let mut rng = TestRng(42);
        let vocabulary = vocabulary(&mut rng, 2000);
        let originals: Vec<_> = (0..200)
            .map(|_| random_document(&mut rng, &vocabulary))
            .collect();
        // Distinct sources, so that the planted pairs are the only true pairs.
        let mut sources: Vec<usize> = (0..originals.len()).collect();
        for i in (1..sources.len()).rev() {
            sources.swap(i, rng.below(i + 1));
        }
        sources.truncate(50);

        let hasher = MinHasher::default();
        let mut index =
            LshIndex::new(crate::pipeline::LSH_BANDS, crate::pipeline::LSH_ROWS).unwrap();
        let threshold = crate::pipeline::DEFAULT_NEAR_DUP_THRESHOLD;
        let mut reported = HashSet::new();
        let mut ingest = |row_id: u64, text: &str, reported: &mut HashSet<(u64, u64)>| {
            let signature = hasher.signature(text);
            for (earlier, _) in index.query(&signature, threshold).unwrap() {
                reported.insert((earlier, row_id));
            }
            index.insert(row_id, &signature).unwrap();
        };
        for (id, document) in originals.iter().enumerate() {
            ingest(id as u64, &render(document), &mut reported);
        }
        let mut planted = HashSet::new();
        let mut planted_exact = Vec::new();
        for (offset, &source) in sources.iter().enumerate() {
            let original = render(&originals[source]);
            let copy = near_duplicate(&mut rng, &originals[source], &vocabulary, edit_percent);
            let copy = render(&copy);
            planted_exact.push(exact_jaccard(
                &hasher.shingles(&original),
                &hasher.shingles(&copy),
            ));
            let id = (originals.len() + offset) as u64;
            planted.insert((source as u64, id));
            ingest(id, &copy, &mut reported);
        }

        let true_positives = reported.intersection(&planted).count() as f64;
        let scores = PlantedScores {
            precision: if reported.is_empty() {
                1.0
            } else {
                true_positives / reported.len() as f64
            },
            recall: true_positives / planted.len() as f64,
            min_exact: planted_exact.iter().copied().fold(f64::INFINITY, f64::min),
            mean_exact: planted_exact.iter().sum::<f64>() / planted_exact.len() as f64,
        };
        println!(
            "planted corpus, {edit_percent}% of words edited: exact Jaccard of planted pairs \
             min {:.3} mean {:.3}; reported {} pairs; precision {:.3}, recall {:.3}",
            scores.min_exact,
            scores.mean_exact,
            reported.len(),
            scores.precision,
            scores.recall
        );
        scores
    }

    #[test]
    fn planted_near_duplicates_are_found_with_high_precision_and_recall() {
        // 2 % of the words reworded, plus maybe a moved sentence and a footer: true Jaccard
        // about 0.75–0.95, far above the threshold.
        let scores = planted_corpus_scores(2);
        assert!(
            scores.min_exact >= 0.75,
            "planted pairs should be clearly similar"
        );
        assert!(scores.precision >= 0.95, "precision {}", scores.precision);
        assert!(scores.recall >= 0.95, "recall {}", scores.recall);
    }

    #[test]
    fn heavier_edits_are_still_caught_without_costing_precision() {
        // With 5-word shingles every edited word breaks up to five shingles, so editing 5 % of
        // the words (plus a moved sentence and a footer) leaves a true Jaccard of only about
        // 0.55–0.8. The threshold of 0.5 is chosen for exactly this: such copies are still
        // caught, and unrelated texts (below 0.1) are nowhere near it.
        let scores = planted_corpus_scores(5);
        assert!(scores.mean_exact < 0.8);
        assert!(scores.precision >= 0.95, "precision {}", scores.precision);
        assert!(scores.recall >= 0.9, "recall {}", scores.recall);
    }
}
