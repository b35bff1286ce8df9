//! Content-addressed blob storage over `object_store`: the local filesystem by default, any
//! S3-compatible service by configuration.
//!
//! A blob's key is the BLAKE3 hash of its bytes (`blobs/ab/cdef…`), so writing is idempotent
//! (the same bytes land on the same key, and a key that exists is not written again) and every
//! read is checked: bytes that do not hash to their key are reported as corrupt, never served.
//! Objects are written whole by `object_store` (a temporary file renamed into place on disk, a
//! single PUT or a completed multipart upload on S3), so a crash never leaves half a blob under
//! a key.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use openledger_primitives::B256;
use serde::{Deserialize, Serialize};

/// Where blobs live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BlobConfig {
    /// A directory on this machine.
    Local { root: PathBuf },
    /// An S3 bucket (AWS, MinIO, moto, …).
    S3 {
        bucket: String,
        /// e.g. `http://127.0.0.1:9000`; empty for AWS itself.
        endpoint: String,
        region: String,
        access_key_id: String,
        secret_access_key: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob {0} is not in the store")]
    NotFound(B256),
    #[error("blob {key} is corrupt: its bytes hash to {actual}; restore it from a replica")]
    Corrupt { key: B256, actual: B256 },
    #[error("blob store: {0}")]
    Store(#[from] object_store::Error),
    #[error("blob store configuration: {0}")]
    Config(String),
}

#[derive(Clone)]
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
    description: String,
}

impl std::fmt::Debug for BlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.description)
    }
}

/// BLAKE3 of `bytes`, the key they are stored under.
pub fn content_hash(bytes: &[u8]) -> B256 {
    B256::from(*blake3::hash(bytes).as_bytes())
}

fn key(hash: &B256) -> ObjectPath {
    let hex = hex::encode(hash);
    ObjectPath::from(format!("blobs/{}/{}", &hex[..2], &hex[2..]))
}

impl BlobStore {
    pub fn open(config: &BlobConfig) -> Result<Self, BlobError> {
        match config {
            BlobConfig::Local { root } => Self::local(root),
            BlobConfig::S3 {
                bucket,
                endpoint,
                region,
                access_key_id,
                secret_access_key,
            } => {
                let mut builder = AmazonS3Builder::new()
                    .with_bucket_name(bucket)
                    .with_region(region)
                    .with_access_key_id(access_key_id)
                    .with_secret_access_key(secret_access_key);
                if !endpoint.is_empty() {
                    builder = builder
                        .with_endpoint(endpoint)
                        .with_allow_http(endpoint.starts_with("http://"))
                        .with_virtual_hosted_style_request(false);
                }
                let store = builder
                    .build()
                    .map_err(|e| BlobError::Config(e.to_string()))?;
                Ok(Self {
                    store: Arc::new(store),
                    description: format!("s3://{bucket} at {endpoint}"),
                })
            }
        }
    }

    pub fn local(root: &Path) -> Result<Self, BlobError> {
        std::fs::create_dir_all(root)
            .map_err(|e| BlobError::Config(format!("cannot create {}: {e}", root.display())))?;
        let store =
            LocalFileSystem::new_with_prefix(root).map_err(|e| BlobError::Config(e.to_string()))?;
        Ok(Self {
            store: Arc::new(store),
            description: format!("local {}", root.display()),
        })
    }

    /// Stores `bytes` and returns their hash; a no-op when they are already stored.
    pub async fn put(&self, bytes: Bytes) -> Result<B256, BlobError> {
        let hash = content_hash(&bytes);
        if self.contains(&hash).await? {
            return Ok(hash);
        }
        self.store
            .put(&key(&hash), PutPayload::from_bytes(bytes))
            .await?;
        Ok(hash)
    }

    /// Stores the file at `path` (streamed in parts, so it need not fit in memory) under the
    /// hash the caller computed while writing it.
    pub async fn put_file(&self, path: &Path, hash: B256) -> Result<(), BlobError> {
        if self.contains(&hash).await? {
            return Ok(());
        }
        let mut upload =
            object_store::WriteMultipart::new(self.store.put_multipart(&key(&hash)).await?);
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(|e| BlobError::Config(format!("cannot read {}: {e}", path.display())))?;
        let mut buf = vec![0u8; 8 << 20];
        loop {
            use tokio::io::AsyncReadExt;
            let n = file
                .read(&mut buf)
                .await
                .map_err(|e| BlobError::Config(format!("cannot read {}: {e}", path.display())))?;
            if n == 0 {
                break;
            }
            upload.wait_for_capacity(4).await?;
            upload.write(&buf[..n]);
        }
        upload.finish().await?;
        Ok(())
    }

    pub async fn contains(&self, hash: &B256) -> Result<bool, BlobError> {
        match self.store.head(&key(hash)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// The whole blob, checked against its hash.
    pub async fn get(&self, hash: &B256) -> Result<Bytes, BlobError> {
        let bytes = match self.store.get(&key(hash)).await {
            Ok(result) => result.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => return Err(BlobError::NotFound(*hash)),
            Err(e) => return Err(e.into()),
        };
        let actual = content_hash(&bytes);
        if actual != *hash {
            return Err(BlobError::Corrupt { key: *hash, actual });
        }
        Ok(bytes)
    }

    /// Part of a blob. Range reads cannot be checked against the blob's hash; callers check
    /// what they read against a finer hash they hold (a row's hash).
    pub async fn get_range(&self, hash: &B256, start: u64, len: u64) -> Result<Bytes, BlobError> {
        match self.store.get_range(&key(hash), start..start + len).await {
            Ok(bytes) => Ok(bytes),
            Err(object_store::Error::NotFound { .. }) => Err(BlobError::NotFound(*hash)),
            Err(e) => Err(e.into()),
        }
    }

    /// Copies a blob into a local file (streamed), checking the hash on the way.
    pub async fn download(&self, hash: &B256, path: &Path) -> Result<(), BlobError> {
        use futures::StreamExt;
        use tokio::io::AsyncWriteExt;
        let result = match self.store.get(&key(hash)).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Err(BlobError::NotFound(*hash)),
            Err(e) => return Err(e.into()),
        };
        let io =
            |e: std::io::Error| BlobError::Config(format!("cannot write {}: {e}", path.display()));
        let mut file = tokio::fs::File::create(path).await.map_err(io)?;
        let mut hasher = blake3::Hasher::new();
        let mut stream = result.into_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(io)?;
        }
        file.flush().await.map_err(io)?;
        let actual = B256::from(*hasher.finalize().as_bytes());
        if actual != *hash {
            return Err(BlobError::Corrupt { key: *hash, actual });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn blobs_are_content_addressed_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::local(dir.path()).unwrap();
        let hash = store.put(Bytes::from_static(b"hello rows")).await.unwrap();
        assert_eq!(hash, content_hash(b"hello rows"));
        assert_eq!(
            store.put(Bytes::from_static(b"hello rows")).await.unwrap(),
            hash
        );
        assert_eq!(&store.get(&hash).await.unwrap()[..], b"hello rows");
        assert_eq!(&store.get_range(&hash, 6, 4).await.unwrap()[..], b"rows");

        let missing = content_hash(b"absent");
        assert!(matches!(store.get(&missing).await, Err(BlobError::NotFound(h)) if h == missing));

        // Flip the stored bytes behind the store's back: reads must refuse them.
        let hex = hex::encode(hash);
        let file = dir.path().join("blobs").join(&hex[..2]).join(&hex[2..]);
        std::fs::write(&file, b"jello rows").unwrap();
        assert!(matches!(
            store.get(&hash).await,
            Err(BlobError::Corrupt { .. })
        ));
    }

    #[tokio::test]
    async fn files_stream_in_and_out() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::local(&dir.path().join("store")).unwrap();
        let src = dir.path().join("src.bin");
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&src, &data).unwrap();
        let hash = content_hash(&data);
        store.put_file(&src, hash).await.unwrap();
        let out = dir.path().join("out.bin");
        store.download(&hash, &out).await.unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), data);
    }
}
