//! The datanet data service: where contributed rows live off chain.
//!
//! - [`ingest`] reads JSONL, CSV, Parquet, plain text and Markdown, streamed, into records.
//! - [`service`] runs each record through the datanet's pipeline (`openledger-datanet`),
//!   seals accepted rows into contributions, builds snapshots from what the chain accepted,
//!   proves and serves rows, and exports snapshots ([`export`]).
//! - [`blobs`] stores everything content-addressed (BLAKE3) through `object_store`: local
//!   files by default, S3 by configuration.
//! - [`ledger`] is what the service reads from the chain (the `Datanets` precompile).
//! - [`auth`] checks EIP-191 signed requests for permissioned datanets; [`api`] is the HTTP API.

pub mod api;
pub mod auth;
pub mod blobs;
pub mod export;
pub mod ingest;
pub mod ledger;
pub mod service;

pub use blobs::{BlobConfig, BlobStore};
pub use ledger::{Ledger, RpcLedger};
pub use service::{DataService, Description, ServiceConfig, ServiceError};
