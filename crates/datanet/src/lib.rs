//! The datanet data service's core: what happens to a contributed row before it may count.
//!
//! A row goes through [`normalize`] (Unicode NFC, line endings, whitespace), exact dedup on the
//! BLAKE3 hash of the normalised text, near-duplicate detection with MinHash LSH
//! ([`minhash`]), a PII scan ([`pii`]) and quality heuristics ([`quality`]). Accepted rows are
//! committed to by a snapshot [`merkle`] tree whose root goes on chain (the `Datanets`
//! precompile); anyone can check a row's inclusion proof against it.
//!
//! [`row`] defines the three row schemas and the canonical form that is hashed and exported;
//! [`pipeline`] strings the checks together and gives every rejected row a readable reason.
//!
//! This crate does no I/O and never touches the chain; storage (object_store), ingestion
//! formats and the HTTP API come on top of it.

pub mod merkle;
pub mod minhash;
pub mod normalize;
pub mod pii;
pub mod pipeline;
pub mod quality;
pub mod row;
