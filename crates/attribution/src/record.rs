//! The attribution record: what a response owes to whom, in a form anyone holding the same
//! index can recompute and check.
//!
//! # Canonical encoding
//!
//! `hash()` is BLAKE3 over this byte string (integers little-endian); JSON is for display
//! only and never hashed.
//!
//! | bytes | field |
//! |---|---|
//! | 8 | tag `b"OLATTRv1"` |
//! | 32 | `model` |
//! | 4 | number of snapshot roots `r` (u32) |
//! | 32 · r | `snapshot_roots`, in record order |
//! | 32 | `response_hash` |
//! | 1 + m | `method`: length m (u8), then its UTF-8 bytes |
//! | 4 | `params.min_len` (u32) |
//! | 8 | `params.max_unigram_prob` (f64 bits, u64) |
//! | 4 | `params.top_k` (u32) |
//! | 8 | `params.max_occurrences` (u64) |
//! | 4 | number of contributions `c` (u32) |
//! | 32 · c | each: `contribution_id` (u64), `contributor` (20 bytes), `share_ppm` (u32) |
//!
//! Contributions are listed by share descending, then contribution id, as scoring returns
//! them; decoding refuses trailing bytes.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::index::Index;
use crate::score::{ContributionShare, SpanParams, attribute};

/// The method name of this crate's span attribution.
pub const METHOD_SPAN_V1: &str = "span-v1";

const TAG: &[u8; 8] = b"OLATTRv1";

/// What one model response owes to which contributions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttributionRecord {
    /// The model that produced the response (BLAKE3 of its GGUF, as the model store names it).
    #[serde(with = "crate::hexser::array")]
    pub model: [u8; 32],
    /// The datanet snapshots the index covers.
    #[serde(with = "crate::hexser::array_vec")]
    pub snapshot_roots: Vec<[u8; 32]>,
    /// BLAKE3 of the response's token ids as little-endian u32 ([`response_hash`]).
    #[serde(with = "crate::hexser::array")]
    pub response_hash: [u8; 32],
    /// Always [`METHOD_SPAN_V1`] for records this crate makes.
    pub method: String,
    /// The scoring parameters.
    pub params: SpanParams,
    /// The shares, summing to 1,000,000 ppm (empty when nothing in the response was found).
    pub contributions: Vec<ContributionShare>,
}

/// BLAKE3 of `tokens` as little-endian u32s.
pub fn response_hash(tokens: &[u32]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    for t in tokens {
        hasher.update(&t.to_le_bytes());
    }
    *hasher.finalize().as_bytes()
}

impl AttributionRecord {
    /// Attribute `response` (token ids of the index's vocabulary) produced by `model`.
    pub fn create(
        index: &Index,
        model: [u8; 32],
        response: &[u32],
        params: SpanParams,
    ) -> Result<AttributionRecord> {
        let attribution = attribute(index, response, &params)?;
        Ok(AttributionRecord {
            model,
            snapshot_roots: index.snapshot_roots().to_vec(),
            response_hash: response_hash(response),
            method: METHOD_SPAN_V1.to_string(),
            params,
            contributions: attribution.contributions,
        })
    }

    /// The canonical encoding (layout in the module docs).
    pub fn encode(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(128 + 32 * (self.snapshot_roots.len() + self.contributions.len()));
        out.extend_from_slice(TAG);
        out.extend_from_slice(&self.model);
        out.extend_from_slice(&(self.snapshot_roots.len() as u32).to_le_bytes());
        for root in &self.snapshot_roots {
            out.extend_from_slice(root);
        }
        out.extend_from_slice(&self.response_hash);
        let method = self.method.as_bytes();
        let method = &method[..method.len().min(u8::MAX as usize)];
        out.push(method.len() as u8);
        out.extend_from_slice(method);
        out.extend_from_slice(&self.params.min_len.to_le_bytes());
        out.extend_from_slice(&self.params.max_unigram_prob.to_bits().to_le_bytes());
        out.extend_from_slice(&self.params.top_k.to_le_bytes());
        out.extend_from_slice(&self.params.max_occurrences.to_le_bytes());
        out.extend_from_slice(&(self.contributions.len() as u32).to_le_bytes());
        for c in &self.contributions {
            out.extend_from_slice(&c.contribution_id.to_le_bytes());
            out.extend_from_slice(&c.contributor);
            out.extend_from_slice(&c.share_ppm.to_le_bytes());
        }
        out
    }

    /// Decode a canonical encoding.
    pub fn decode(bytes: &[u8]) -> Result<AttributionRecord> {
        let mut r = Reader { bytes, at: 0 };
        if r.take(8)? != TAG {
            return Err(Error::Record("not an attribution record (tag)".into()));
        }
        let model = r.array()?;
        let roots = r.u32()? as usize;
        let snapshot_roots = (0..roots).map(|_| r.array()).collect::<Result<Vec<_>>>()?;
        let response_hash = r.array()?;
        let method_len = r.take(1)?[0] as usize;
        let method = String::from_utf8(r.take(method_len)?.to_vec())
            .map_err(|_| Error::Record("method is not UTF-8".into()))?;
        let params = SpanParams {
            min_len: r.u32()?,
            max_unigram_prob: f64::from_bits(r.u64()?),
            top_k: r.u32()?,
            max_occurrences: r.u64()?,
        };
        let count = r.u32()? as usize;
        let contributions = (0..count)
            .map(|_| {
                Ok(ContributionShare {
                    contribution_id: r.u64()?,
                    contributor: r.array()?,
                    share_ppm: r.u32()?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if r.at != bytes.len() {
            return Err(Error::Record(format!(
                "{} trailing bytes",
                bytes.len() - r.at
            )));
        }
        Ok(AttributionRecord {
            model,
            snapshot_roots,
            response_hash,
            method,
            params,
            contributions,
        })
    }

    /// BLAKE3 of [`AttributionRecord::encode`].
    pub fn hash(&self) -> [u8; 32] {
        *blake3::hash(&self.encode()).as_bytes()
    }

    /// The record as pretty JSON (hex for hashes and addresses).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("records always serialise")
    }

    /// Recompute the record from `index` and `response` and compare: `Ok(false)` when the
    /// response hash, the snapshot roots or the shares differ; an error for a method or
    /// parameters this code cannot recompute. The model is not checked (the index does not
    /// know it): the caller checks that `model` produced `response`.
    pub fn verify(&self, index: &Index, response: &[u32]) -> Result<bool> {
        if self.method != METHOD_SPAN_V1 {
            return Err(Error::Record(format!("unknown method {:?}", self.method)));
        }
        self.params.check()?;
        if self.response_hash != response_hash(response)
            || self.snapshot_roots != index.snapshot_roots()
        {
            return Ok(false);
        }
        let again = attribute(index, response, &self.params)?;
        Ok(again.contributions == self.contributions)
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| {
                Error::Record(format!("truncated at byte {} (wanted {n} more)", self.at))
            })?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        Ok(self.take(N)?.try_into().expect("take returns N bytes"))
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }
}
