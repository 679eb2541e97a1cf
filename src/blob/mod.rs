//! Blob storage for audio: voicemail messages, call recordings and uploaded prompts, through
//! the `object_store` crate.
//!
//! `blob.url` picks the backend: `file:///path` (the default: `data_dir/blobs`), `s3://bucket`
//! (AWS or any S3-compatible server: `blob.endpoint`, `blob.region`, credentials from settings
//! or the usual `AWS_*` environment; path-style requests unless `blob.virtual_hosted`), or
//! `az://container` (Azure Blob: `blob.account` and `blob.access_key`, or the `AZURE_*`
//! environment; `blob.use_emulator` for Azurite).
//!
//! Keys are laid out per tenant ([`voicemail_key`], [`recording_key`], [`prompt_key`]), so a
//! tenant's data is one prefix. Uploads stream from the local file (multipart for large ones),
//! and a put of the same key is the same object: the spool's retries never duplicate.

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt};
use std::sync::Arc;
use tokio::io::AsyncReadExt;

/// Errors of blob storage.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// No object under that key.
    #[error("no such blob")]
    NotFound,
    /// The store failed or is unreachable.
    #[error("blob store: {0}")]
    Store(String),
    /// Settings that do not make a store.
    #[error("blob.url: {0}")]
    Config(String),
    /// Reading the local file failed.
    #[error("blob upload: {0}")]
    Io(#[from] std::io::Error),
}

impl From<object_store::Error> for BlobError {
    fn from(e: object_store::Error) -> BlobError {
        match e {
            object_store::Error::NotFound { .. } => BlobError::NotFound,
            other => BlobError::Store(other.to_string()),
        }
    }
}

/// Settings for the S3 and Azure backends (`[blob]` in the settings file).
#[derive(Debug, Clone, Default)]
pub struct BlobOptions {
    /// S3 or Azure endpoint URL (an S3-compatible server, Azurite).
    pub endpoint: String,
    /// S3 region.
    pub region: String,
    /// S3 access key id.
    pub access_key_id: String,
    /// S3 secret.
    pub secret_access_key: String,
    /// Allow plain http endpoints.
    pub allow_http: bool,
    /// S3 virtual-hosted-style requests (default path-style).
    pub virtual_hosted: bool,
    /// Azure storage account.
    pub account: String,
    /// Azure access key.
    pub access_key: String,
    /// Azure: talk to the Azurite emulator.
    pub use_emulator: bool,
}

/// The key of a voicemail message's audio.
pub fn voicemail_key(tenant: &str, mailbox: &str, message: &str) -> String {
    format!("tenants/{tenant}/voicemail/{mailbox}/{message}.wav")
}

/// The key of a call recording (`name` is the file name, with `.wav`).
pub fn recording_key(tenant: &str, name: &str) -> String {
    format!("tenants/{tenant}/recordings/{name}")
}

/// The key of an uploaded prompt.
pub fn prompt_key(tenant: &str, name: &str) -> String {
    format!("tenants/{tenant}/prompts/{name}.wav")
}

/// The prefix holding all of a tenant's blobs.
pub fn tenant_prefix(tenant: &str) -> String {
    format!("tenants/{tenant}/")
}

/// An object's bytes being read, with its total size and the range served.
pub struct BlobRead {
    /// Size of the whole object.
    pub size: u64,
    /// The byte range this read covers.
    pub range: std::ops::Range<u64>,
    /// The bytes.
    pub stream: BoxStream<'static, Result<Bytes, BlobError>>,
}

/// Blob storage. See the module documentation.
#[derive(Clone)]
pub struct BlobStore {
    inner: Arc<dyn ObjectStore>,
    url: String,
}

impl std::fmt::Debug for BlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobStore").field("url", &self.url).finish()
    }
}

impl BlobStore {
    /// A store for `url`. Nothing is contacted yet.
    pub fn open(url: &str, o: &BlobOptions) -> Result<BlobStore, BlobError> {
        let inner: Arc<dyn ObjectStore> = if let Some(path) = url.strip_prefix("file://") {
            std::fs::create_dir_all(path)?;
            Arc::new(
                object_store::local::LocalFileSystem::new_with_prefix(path)
                    .map_err(|e| BlobError::Config(e.to_string()))?,
            )
        } else if url.starts_with("s3://") {
            let mut b = object_store::aws::AmazonS3Builder::from_env()
                .with_url(url)
                .with_allow_http(o.allow_http)
                .with_virtual_hosted_style_request(o.virtual_hosted);
            if !o.endpoint.is_empty() {
                b = b.with_endpoint(&o.endpoint);
            }
            if !o.region.is_empty() {
                b = b.with_region(&o.region);
            }
            if !o.access_key_id.is_empty() {
                b = b.with_access_key_id(&o.access_key_id);
            }
            if !o.secret_access_key.is_empty() {
                b = b.with_secret_access_key(&o.secret_access_key);
            }
            Arc::new(b.build().map_err(|e| BlobError::Config(e.to_string()))?)
        } else if url.starts_with("az://") || url.starts_with("azure://") {
            let mut b = object_store::azure::MicrosoftAzureBuilder::from_env()
                .with_url(url)
                .with_allow_http(o.allow_http)
                .with_use_emulator(o.use_emulator);
            if !o.endpoint.is_empty() {
                b = b.with_endpoint(o.endpoint.clone());
            }
            if !o.account.is_empty() {
                b = b.with_account(&o.account);
            }
            if !o.access_key.is_empty() {
                b = b.with_access_key(&o.access_key);
            }
            Arc::new(b.build().map_err(|e| BlobError::Config(e.to_string()))?)
        } else {
            return Err(BlobError::Config(format!(
                "{url} is not file://, s3:// or az://"
            )));
        };
        Ok(BlobStore {
            inner,
            url: url.to_string(),
        })
    }

    /// The store's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Uploads a local file to `key` (multipart above a few MiB), replacing what was there.
    pub async fn put_file(&self, key: &str, file: &std::path::Path) -> Result<u64, BlobError> {
        let mut f = tokio::fs::File::open(file).await?;
        let size = f.metadata().await?.len();
        let path = ObjectPath::from(key);
        if size <= 8 * 1024 * 1024 {
            let mut buf = Vec::with_capacity(size as usize);
            f.read_to_end(&mut buf).await?;
            self.inner.put(&path, Bytes::from(buf).into()).await?;
            return Ok(size);
        }
        let mut w = object_store::buffered::BufWriter::new(self.inner.clone(), path);
        let mut chunk = vec![0u8; 1024 * 1024];
        loop {
            let n = f.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            w.put(Bytes::copy_from_slice(&chunk[..n]))
                .await
                .map_err(BlobError::from)?;
        }
        tokio::io::AsyncWriteExt::shutdown(&mut w).await?;
        Ok(size)
    }

    /// Stores `bytes` under `key`.
    pub async fn put_bytes(&self, key: &str, bytes: Bytes) -> Result<(), BlobError> {
        self.inner.put(&ObjectPath::from(key), bytes.into()).await?;
        Ok(())
    }

    /// The size of the object at `key`.
    pub async fn size(&self, key: &str) -> Result<u64, BlobError> {
        Ok(self.inner.head(&ObjectPath::from(key)).await?.size)
    }

    /// Reads `key`, or the bytes `range` of it.
    pub async fn read(
        &self,
        key: &str,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<BlobRead, BlobError> {
        let opts = GetOptions {
            range: range.map(GetRange::Bounded),
            ..GetOptions::default()
        };
        let r = self.inner.get_opts(&ObjectPath::from(key), opts).await?;
        let size = r.meta.size;
        let range = r.range.clone();
        Ok(BlobRead {
            size,
            range,
            stream: r.into_stream().map_err(BlobError::from).boxed(),
        })
    }

    /// Reads a whole (small) object.
    pub async fn get_bytes(&self, key: &str) -> Result<Bytes, BlobError> {
        Ok(self
            .inner
            .get(&ObjectPath::from(key))
            .await?
            .bytes()
            .await?)
    }

    /// Deletes `key`; a missing key is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), BlobError> {
        match self.inner.delete(&ObjectPath::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Keys under `prefix`, sorted.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, BlobError> {
        let p = ObjectPath::from(prefix.trim_end_matches('/'));
        let mut keys: Vec<String> = self
            .inner
            .list(Some(&p))
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await?;
        keys.sort();
        Ok(keys)
    }

    /// Deletes everything under `prefix`; returns how many objects went.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<usize, BlobError> {
        let keys = self.list(prefix).await?;
        for k in &keys {
            self.delete(k).await?;
        }
        Ok(keys.len())
    }

    /// Checks the store answers (a listing of a key that need not exist).
    pub async fn ping(&self) -> Result<(), BlobError> {
        let p = ObjectPath::from("switchyard-health");
        let mut s = self.inner.list(Some(&p));
        match s.next().await {
            Some(Err(e)) => Err(e.into()),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_put_read_range_delete() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().join("blobs").display());
        let s = BlobStore::open(&url, &BlobOptions::default()).unwrap();
        let src = dir.path().join("a.wav");
        std::fs::write(&src, b"0123456789").unwrap();
        let key = recording_key("t1", "a.wav");
        assert_eq!(s.put_file(&key, &src).await.unwrap(), 10);
        // The same key again replaces, never duplicates.
        s.put_file(&key, &src).await.unwrap();
        assert_eq!(s.list("tenants/t1/").await.unwrap(), vec![key.clone()]);
        let r = s.read(&key, Some(2..5)).await.unwrap();
        assert_eq!(r.size, 10);
        let bytes: Vec<Bytes> = r.stream.try_collect().await.unwrap();
        assert_eq!(bytes.concat(), b"234");
        assert!(matches!(
            s.read("tenants/t2/recordings/a.wav", None).await,
            Err(BlobError::NotFound)
        ));
        assert_eq!(s.delete_prefix("tenants/t1/").await.unwrap(), 1);
        assert!(s.list("tenants/t1/").await.unwrap().is_empty());
        s.delete(&key).await.unwrap();
    }
}
