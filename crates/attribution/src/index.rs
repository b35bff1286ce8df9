//! A built index, memory-mapped, and the queries over it.
//!
//! Nothing is decoded into memory beyond a dense unigram table for byte and u16
//! vocabularies (≤ 512 KiB): tokens, suffix array and doc table are read in place. Every
//! query is a binary search over the suffix array; comparisons read the corpus at the
//! suffix's position. Tokens are compared as unsigned integers, which is the order libsais
//! sorted them in (for u32 vocabularies the build ranked tokens order-preservingly).
//!
//! The separator never matches: queries that contain it (or a token ≥ it) find nothing,
//! and since every document ends with a separator no match runs into the next document.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::detmath;
use crate::error::{Error, Result};
use crate::format::{
    DOC_META_BYTES, DOC_META_FILE, DOC_OFFSETS_FILE, INDEX_FILES, MANIFEST_FILE, Manifest, SA_FILE,
    TOKENS_FILE, UNIGRAM_BYTES, UNIGRAMS_FILE, Vocab, hash_file, map_file,
};

/// A half-open range of suffix-array ranks whose suffixes all start with the same n-gram.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct SaRange {
    /// First rank.
    pub start: u64,
    /// One past the last rank.
    pub end: u64,
}

impl SaRange {
    /// Occurrences in the range.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// No occurrence.
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }
}

/// A document of the index, with the ids it was built with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DocInfo {
    /// The document's number in the index (build order).
    pub doc: u64,
    /// Row id in the snapshot.
    pub row_id: u64,
    /// Contribution id.
    pub contribution_id: u64,
    /// Contributor's address.
    pub contributor: [u8; 20],
    /// Duplicate cluster.
    pub cluster_id: u64,
    /// First position of the document in the corpus.
    pub start: u64,
    /// Its length in tokens (separator excluded).
    pub len: u64,
}

/// One place an n-gram occurs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Occurrence {
    /// The document holding it.
    pub doc: DocInfo,
    /// Offset of the n-gram's first token in the document.
    pub offset: u64,
}

/// The distribution of the token following a prefix.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NextTokens {
    /// Occurrences of the prefix.
    pub total: u64,
    /// Occurrences at a document's end (followed by the separator).
    pub end_of_document: u64,
    /// `(token, count)`, by token id; counts plus `end_of_document` sum to `total`.
    pub tokens: Vec<(u32, u64)>,
}

/// For one start position of a response: how far the longest match in the corpus reaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LongestMatch {
    /// One past the last matched position (`== start` when the first token is absent).
    pub end: usize,
    /// Where `response[start..end]` occurs (empty when nothing matched).
    pub range: SaRange,
}

/// A maximal span of a response found in the corpus (see [`Index::maximal_spans`]).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Span {
    /// First position in the response.
    pub start: usize,
    /// One past the last position.
    pub end: usize,
    /// Its occurrences in the suffix array.
    pub range: SaRange,
    /// Σ ln p(t) over its tokens (unigram probabilities, add-one smoothed; see [`Index::unigram_ln_prob`]).
    pub ln_prob: f64,
}

impl Span {
    /// Length in tokens.
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// Whether the span is empty (never, for spans the index returns).
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    /// Occurrences in the corpus.
    pub fn count(&self) -> u64 {
        self.range.len()
    }

    /// Rarity weight `−Σ ln p(t)`.
    pub fn weight(&self) -> f64 {
        -self.ln_prob
    }
}

/// An opened index. Cheap to share by reference across threads (`Sync`).
#[derive(Debug)]
pub struct Index {
    dir: PathBuf,
    manifest: Manifest,
    tokens: Mmap,
    sa: Mmap,
    doc_offsets: Mmap,
    doc_meta: Mmap,
    unigrams: Mmap,
    width: usize,
    ptr: usize,
    n: u64,
    sep: u32,
    dense_counts: Option<Vec<u64>>,
    /// `T + V`, the smoothing denominator.
    denominator: f64,
}

impl Index {
    /// Open the index in `dir`: reads the manifest, checks its version and that every file
    /// has the size the manifest and its counts imply, and maps the files. Content hashes
    /// are checked by [`Index::verify`] (or [`Index::open_verified`]).
    pub fn open(dir: impl AsRef<Path>) -> Result<Index> {
        let dir = dir.as_ref().to_path_buf();
        let manifest = Manifest::read(&dir)?;
        let manifest_path = dir.join(MANIFEST_FILE);
        if !manifest.complete {
            return Err(Error::Incomplete {
                path: manifest_path,
            });
        }
        for name in INDEX_FILES {
            let path = dir.join(name);
            let Some(expected) = manifest.expected_size(name) else {
                return Err(Error::Manifest {
                    path: manifest_path,
                    reason: format!("counts too large for {name}"),
                });
            };
            let Some(entry) = manifest.files.get(name) else {
                return Err(Error::Manifest {
                    path: manifest_path,
                    reason: format!("no entry for {name}"),
                });
            };
            if entry.bytes != expected {
                return Err(Error::Manifest {
                    path: manifest_path,
                    reason: format!(
                        "{name} is recorded as {} bytes, its counts imply {expected}",
                        entry.bytes
                    ),
                });
            }
            let found = std::fs::metadata(&path)
                .map_err(crate::error::io_error(&path))?
                .len();
            if found != expected {
                return Err(Error::FileSize {
                    path,
                    expected,
                    found,
                });
            }
        }
        let map = |name: &str| map_file(&dir.join(name));
        let tokens = map(TOKENS_FILE)?;
        let sa = map(SA_FILE)?;
        let doc_offsets = map(DOC_OFFSETS_FILE)?;
        let doc_meta = map(DOC_META_FILE)?;
        let unigrams = map(UNIGRAMS_FILE)?;
        let width = manifest.token_width;
        let sep = manifest.separator;
        let dense_counts = (width <= 2).then(|| {
            let mut counts = vec![0u64; sep as usize + 1];
            for r in unigrams.chunks_exact(UNIGRAM_BYTES) {
                let t = u32::from_le_bytes(r[0..4].try_into().expect("4 bytes")) as usize;
                if let Some(c) = counts.get_mut(t) {
                    *c = u64::from_le_bytes(r[4..12].try_into().expect("8 bytes"));
                }
            }
            counts
        });
        let index = Index {
            denominator: (manifest.corpus_tokens + manifest.vocab.size()) as f64,
            ptr: manifest.pointer_width,
            n: manifest.num_tokens,
            dir,
            tokens,
            sa,
            doc_offsets,
            doc_meta,
            unigrams,
            width,
            sep,
            dense_counts,
            manifest,
        };
        let last = index.doc_offset(index.manifest.num_docs);
        if index.doc_offset(0) != 0 || last != index.n {
            return Err(Error::Manifest {
                path: index.dir.join(DOC_OFFSETS_FILE),
                reason: format!(
                    "document offsets run 0..{last}, the corpus has {} positions",
                    index.n
                ),
            });
        }
        Ok(index)
    }

    /// [`Index::open`], then [`Index::verify`].
    pub fn open_verified(dir: impl AsRef<Path>) -> Result<Index> {
        let index = Index::open(dir)?;
        index.verify()?;
        Ok(index)
    }

    /// Check every file's BLAKE3 against the manifest (reads the whole index once).
    pub fn verify(&self) -> Result<()> {
        for name in INDEX_FILES {
            let path = self.dir.join(name);
            let expected = &self.manifest.files[name].blake3;
            let found = hash_file(&path)?;
            if &found != expected {
                return Err(Error::FileHash {
                    path,
                    expected: expected.clone(),
                    found,
                });
            }
        }
        Ok(())
    }

    /// The manifest the index was opened with.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The index directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The token vocabulary.
    pub fn vocab(&self) -> &Vocab {
        &self.manifest.vocab
    }

    /// The snapshot roots the index was built from.
    pub fn snapshot_roots(&self) -> &[[u8; 32]] {
        &self.manifest.snapshot_roots
    }

    /// Token positions, separators included (`N`).
    pub fn num_tokens(&self) -> u64 {
        self.n
    }

    /// Non-separator tokens (`T`).
    pub fn corpus_tokens(&self) -> u64 {
        self.manifest.corpus_tokens
    }

    /// Documents.
    pub fn num_docs(&self) -> u64 {
        self.manifest.num_docs
    }

    /// Bytes of the index files (manifest excluded).
    pub fn size_bytes(&self) -> u64 {
        INDEX_FILES
            .iter()
            .map(|f| self.manifest.files[*f].bytes)
            .sum()
    }

    // ---- primitive reads -------------------------------------------------------------

    /// The token at `pos`; the separator past the end (only a damaged index gets there).
    #[inline]
    pub fn token(&self, pos: u64) -> u32 {
        let i = pos as usize * self.width;
        let t = &self.tokens;
        match self.width {
            1 => t.get(i).map_or(self.sep, |&b| b as u32),
            2 => t
                .get(i..i + 2)
                .map_or(self.sep, |b| u16::from_le_bytes([b[0], b[1]]) as u32),
            _ => t
                .get(i..i + 4)
                .map_or(self.sep, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        }
    }

    /// The corpus position of the suffix of rank `k`.
    #[inline]
    pub fn suffix(&self, k: u64) -> u64 {
        let p = self.ptr;
        let i = k as usize * p;
        if p == 4 {
            return self.sa.get(i..i + 4).map_or(self.n, |b| {
                u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u64
            });
        }
        let mut b = [0u8; 8];
        match self.sa.get(i..i + p) {
            Some(s) => b[..p].copy_from_slice(s),
            None => return self.n,
        }
        u64::from_le_bytes(b)
    }

    fn doc_offset(&self, d: u64) -> u64 {
        let i = d as usize * 8;
        self.doc_offsets.get(i..i + 8).map_or(self.n, |b| {
            u64::from_le_bytes(b.try_into().expect("8 bytes"))
        })
    }

    /// The document with number `doc` (`doc < num_docs()`).
    pub fn doc(&self, doc: u64) -> DocInfo {
        assert!(
            doc < self.num_docs(),
            "document {doc} of {}",
            self.num_docs()
        );
        let i = doc as usize * DOC_META_BYTES;
        let r = &self.doc_meta[i..i + DOC_META_BYTES];
        let u = |a: usize| u64::from_le_bytes(r[a..a + 8].try_into().expect("8 bytes"));
        let start = self.doc_offset(doc);
        DocInfo {
            doc,
            row_id: u(0),
            contribution_id: u(8),
            cluster_id: u(16),
            contributor: r[24..44].try_into().expect("20 bytes"),
            start,
            len: self.doc_offset(doc + 1).saturating_sub(start + 1),
        }
    }

    /// The number of the document holding corpus position `pos`.
    pub fn doc_at(&self, pos: u64) -> u64 {
        // Largest d < num_docs with offset[d] ≤ pos.
        let (mut lo, mut hi) = (0u64, self.num_docs());
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.doc_offset(mid) <= pos {
                lo = mid
            } else {
                hi = mid
            }
        }
        lo
    }

    /// The tokens of document `doc`.
    pub fn doc_tokens(&self, doc: u64) -> Vec<u32> {
        let d = self.doc(doc);
        (d.start..d.start + d.len).map(|p| self.token(p)).collect()
    }

    /// How often `token` occurs in the corpus.
    pub fn unigram_count(&self, token: u32) -> u64 {
        if let Some(dense) = &self.dense_counts {
            return dense.get(token as usize).copied().unwrap_or(0);
        }
        let records = self.unigrams.len() / UNIGRAM_BYTES;
        let at = |i: usize| {
            let r = &self.unigrams[i * UNIGRAM_BYTES..(i + 1) * UNIGRAM_BYTES];
            (
                u32::from_le_bytes(r[0..4].try_into().expect("4 bytes")),
                u64::from_le_bytes(r[4..12].try_into().expect("8 bytes")),
            )
        };
        let (mut lo, mut hi) = (0, records);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match at(mid).0.cmp(&token) {
                Ordering::Less => lo = mid + 1,
                Ordering::Greater => hi = mid,
                Ordering::Equal => return at(mid).1,
            }
        }
        0
    }

    /// `ln p(token)` with `p(t) = (count(t) + 1) / (T + V)` (add-one smoothing over the
    /// vocabulary's `V` ids), the logarithm from [`crate::detmath::ln`] (basic operations only), so
    /// it is bit-identical on every machine.
    pub fn unigram_ln_prob(&self, token: u32) -> f64 {
        let p = (self.unigram_count(token) + 1) as f64 / self.denominator;
        detmath::ln(p)
    }

    // ---- searches ----------------------------------------------------------------------

    fn full_range(&self) -> SaRange {
        SaRange {
            start: 0,
            end: self.n,
        }
    }

    /// Compare the suffix at `pos` with `pattern`, skipping the first `from` tokens (known
    /// equal). A suffix that starts with the whole pattern is `Equal`. Returns the ordering
    /// of the suffix relative to the pattern and the length of their common prefix.
    #[inline]
    fn compare(&self, pos: u64, pattern: &[u32], from: usize) -> (Ordering, usize) {
        for (d, &p) in pattern.iter().enumerate().skip(from) {
            let t = self.token(pos + d as u64);
            if t != p {
                return (t.cmp(&p), d);
            }
        }
        (Ordering::Equal, pattern.len())
    }

    /// First rank in `[lo, hi)` whose suffix is not below `pattern` (`upper`: above it),
    /// with the lcp bookkeeping of Manber & Myers so each probe starts comparing past the
    /// prefix both bounds already share with the pattern.
    fn bound(&self, mut lo: u64, mut hi: u64, pattern: &[u32], upper: bool) -> u64 {
        let (mut lcp_lo, mut lcp_hi) = (0usize, 0usize);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let (ord, lcp) = self.compare(self.suffix(mid), pattern, lcp_lo.min(lcp_hi));
            let right = if upper {
                ord != Ordering::Greater
            } else {
                ord == Ordering::Less
            };
            if right {
                lo = mid + 1;
                lcp_lo = lcp;
            } else {
                hi = mid;
                lcp_hi = lcp;
            }
        }
        lo
    }

    /// The ranks of the suffixes starting with `ngram` (the whole array for an empty one).
    pub fn find(&self, ngram: &[u32]) -> SaRange {
        if ngram.iter().any(|&t| t >= self.sep) {
            return SaRange::default();
        }
        let start = self.bound(0, self.n, ngram, false);
        let end = self.bound(start, self.n, ngram, true);
        SaRange { start, end }
    }

    /// Within `range` (all suffixes sharing a prefix of `depth` tokens), the sub-range whose
    /// token at `depth` is `t`: two binary searches on one token each.
    fn extend(&self, range: SaRange, depth: u64, t: u32) -> SaRange {
        if t >= self.sep {
            return SaRange::default();
        }
        let at = |k: u64| self.token(self.suffix(k) + depth);
        let (mut lo, mut hi) = (range.start, range.end);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if at(mid) < t { lo = mid + 1 } else { hi = mid }
        }
        let start = lo;
        hi = range.end;
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if at(mid) <= t { lo = mid + 1 } else { hi = mid }
        }
        SaRange { start, end: lo }
    }

    /// How often `ngram` occurs in the corpus (for an empty n-gram: all positions, `N`).
    pub fn count(&self, ngram: &[u32]) -> u64 {
        self.find(ngram).len()
    }

    /// Up to `limit` occurrences of `ngram`, in suffix-array order.
    pub fn occurrences(&self, ngram: &[u32], limit: usize) -> Vec<Occurrence> {
        self.occurrences_in(self.find(ngram), limit)
    }

    /// Up to `limit` occurrences from a range [`Index::find`] or a [`Span`] returned.
    pub fn occurrences_in(&self, range: SaRange, limit: usize) -> Vec<Occurrence> {
        let end = range
            .end
            .min(range.start.saturating_add(limit as u64))
            .min(self.n);
        (range.start..end)
            .map(|k| {
                let pos = self.suffix(k);
                let doc = self.doc(self.doc_at(pos));
                Occurrence {
                    offset: pos - doc.start.min(pos),
                    doc,
                }
            })
            .collect()
    }

    /// What follows `prefix` in the corpus: one binary search per distinct next token, so
    /// the cost grows with the number of distinct followers, not with the prefix's count.
    pub fn next_tokens(&self, prefix: &[u32]) -> NextTokens {
        let range = self.find(prefix);
        let depth = prefix.len() as u64;
        let mut out = NextTokens {
            total: range.len(),
            ..NextTokens::default()
        };
        let mut k = range.start;
        while k < range.end {
            let t = self.token(self.suffix(k) + depth);
            let (mut lo, mut hi) = (k + 1, range.end);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                if self.token(self.suffix(mid) + depth) <= t {
                    lo = mid + 1
                } else {
                    hi = mid
                }
            }
            if t >= self.sep {
                out.end_of_document += lo - k;
            } else {
                out.tokens.push((t, lo - k));
            }
            k = lo;
        }
        out
    }

    /// For every start position `i` of `response`, the longest `response[i..j]` found in the
    /// corpus. Uses that a match `[i, j)` implies one at `[i + 1, j)`: position `i + 1`
    /// re-finds `response[i+1..j]` with one binary search (lcp-accelerated), then extends
    /// token by token, so the extension steps over the whole response total at most `2n`.
    pub fn longest_matches(&self, response: &[u32]) -> Vec<LongestMatch> {
        let n = response.len();
        let mut out = Vec::with_capacity(n);
        let mut j = 0usize;
        for i in 0..n {
            j = j.max(i);
            let mut range = if j > i {
                self.find(&response[i..j])
            } else {
                self.full_range()
            };
            if range.is_empty() {
                // Only a damaged index loses a match it had: start over from this position.
                j = i;
                range = self.full_range();
            }
            while j < n {
                let next = self.extend(range, (j - i) as u64, response[j]);
                if next.is_empty() {
                    break;
                }
                range = next;
                j += 1;
            }
            out.push(LongestMatch {
                end: j,
                range: if j > i { range } else { SaRange::default() },
            });
        }
        out
    }

    /// The maximal spans of `response` found in the corpus, filtered for attribution.
    ///
    /// A span `[i, j)` is the longest match starting at `i` ([`Index::longest_matches`]); it is
    /// **maximal** when no other such span contains it, i.e. when it ends after the span of
    /// position `i − 1`. Of the maximal spans, those are kept that have
    /// `len ≥ min_len` and a **span unigram probability** `Π p(t) ≤ max_unigram_prob`
    /// (compared as `Σ ln p(t) ≤ ln max_unigram_prob`, with `p` of
    /// [`Index::unigram_ln_prob`]) — OLMoTrace's filter for spans made of rare tokens,
    /// as a threshold instead of its "lowest-K per response" so that a span's fate does not
    /// depend on the rest of the response. Spans come in order of start position.
    pub fn maximal_spans(
        &self,
        response: &[u32],
        min_len: usize,
        max_unigram_prob: f64,
    ) -> Vec<Span> {
        if max_unigram_prob.is_nan() || max_unigram_prob <= 0.0 {
            return Vec::new();
        }
        let threshold = detmath::ln(max_unigram_prob.min(1.0));
        let min_len = min_len.max(1);
        let ln_p: Vec<f64> = response.iter().map(|&t| self.unigram_ln_prob(t)).collect();
        let mut spans = Vec::new();
        let mut prev_end = 0usize;
        for (i, m) in self.longest_matches(response).into_iter().enumerate() {
            if m.end > i && m.end > prev_end && m.end - i >= min_len {
                let ln_prob = ln_p[i..m.end].iter().fold(0.0, |acc, &x| acc + x);
                if ln_prob <= threshold {
                    spans.push(Span {
                        start: i,
                        end: m.end,
                        range: m.range,
                        ln_prob,
                    });
                }
            }
            prev_end = prev_end.max(m.end);
        }
        spans
    }
}
