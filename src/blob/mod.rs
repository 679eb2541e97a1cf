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

/// The Azurite emulator's account (the same on every installation).
const AZURITE_ACCOUNT: &str = "devstoreaccount1";
/// The Azurite emulator's published account key (not a secret).
const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

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
    /// The folder of a `file://` store: object_store's local store renames into place
    /// without fsync, so we fsync the object and its folder before saying it is stored.
    local_root: Option<std::path::PathBuf>,
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
                .with_allow_http(o.allow_http);
            if o.use_emulator {
                // Azurite: object_store's own emulator mode ignores an endpoint, so the
                // emulator's well-known account is spelled out here with ours (or its
                // default address).
                let endpoint = if o.endpoint.is_empty() {
                    format!("http://127.0.0.1:10000/{AZURITE_ACCOUNT}")
                } else {
                    o.endpoint.trim_end_matches('/').to_string()
                };
                b = b
                    .with_endpoint(endpoint)
                    .with_allow_http(true)
                    .with_account(if o.account.is_empty() {
                        AZURITE_ACCOUNT
                    } else {
                        &o.account
                    })
                    .with_access_key(if o.access_key.is_empty() {
                        AZURITE_KEY
                    } else {
                        &o.access_key
                    });
            } else {
                if !o.endpoint.is_empty() {
                    b = b.with_endpoint(o.endpoint.clone());
                }
                if !o.account.is_empty() {
                    b = b.with_account(&o.account);
                }
                if !o.access_key.is_empty() {
                    b = b.with_access_key(&o.access_key);
                }
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
            local_root: url.strip_prefix("file://").map(std::path::PathBuf::from),
        })
    }

    /// For a `file://` store: makes the object at `key` durable (file, then every folder up to
    /// the root, since a new folder's entry is as volatile as the file's). A cloud store's
    /// success answer already means durable.
    async fn make_durable(&self, key: &str) -> Result<(), BlobError> {
        let Some(root) = self.local_root.clone() else {
            return Ok(());
        };
        let path = ObjectPath::from(key);
        let file = path
            .parts()
            .fold(root.clone(), |p, part| p.join(part.as_ref()));
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            std::fs::File::open(&file)?.sync_all()?;
            let mut dir = file.parent();
            while let Some(d) = dir {
                std::fs::File::open(d)?.sync_all()?;
                if d == root {
                    break;
                }
                dir = d.parent();
            }
            Ok(())
        })
        .await
        .map_err(|e| BlobError::Io(std::io::Error::other(e)))??;
        Ok(())
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
            self.make_durable(key).await?;
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
        self.make_durable(key).await?;
        Ok(size)
    }

    /// Stores `bytes` under `key`.
    pub async fn put_bytes(&self, key: &str, bytes: Bytes) -> Result<(), BlobError> {
        self.inner.put(&ObjectPath::from(key), bytes.into()).await?;
        self.make_durable(key).await
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

    /// The same checks on every backend: put (twice: one object), list, ranged read, size,
    /// a missing key, delete, delete by prefix. `scope` keeps runs apart on shared servers.
    async fn suite(s: BlobStore, scope: &str) {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("a.wav");
        std::fs::write(&src, b"0123456789").unwrap();
        let t1 = format!("{scope}-t1");
        let key = recording_key(&t1, "a.wav");
        assert_eq!(s.put_file(&key, &src).await.unwrap(), 10);
        // The same key again replaces, never duplicates.
        s.put_file(&key, &src).await.unwrap();
        s.put_bytes(&voicemail_key(&t1, "100", "m1"), Bytes::from_static(b"vm"))
            .await
            .unwrap();
        assert_eq!(
            s.list(&tenant_prefix(&t1)).await.unwrap(),
            vec![key.clone(), voicemail_key(&t1, "100", "m1")]
        );
        assert_eq!(s.size(&key).await.unwrap(), 10);
        let r = s.read(&key, Some(2..5)).await.unwrap();
        assert_eq!(r.size, 10);
        assert_eq!(r.range, 2..5);
        let bytes: Vec<Bytes> = r.stream.try_collect().await.unwrap();
        assert_eq!(bytes.concat(), b"234");
        assert!(matches!(
            s.read(&recording_key(&format!("{scope}-t2"), "a.wav"), None)
                .await,
            Err(BlobError::NotFound)
        ));
        s.ping().await.unwrap();
        s.delete(&key).await.unwrap();
        // Deleting what is gone is not an error (a retried delete).
        s.delete(&key).await.unwrap();
        assert_eq!(s.delete_prefix(&tenant_prefix(&t1)).await.unwrap(), 1);
        assert!(s.list(&tenant_prefix(&t1)).await.unwrap().is_empty());
    }

    fn scope() -> String {
        format!("{:08x}", rand::random::<u32>())
    }

    fn required(what: &str) {
        crate::test_support::peer_missing(what);
    }

    #[tokio::test]
    async fn local_folder() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().join("blobs").display());
        suite(BlobStore::open(&url, &BlobOptions::default()).unwrap(), "x").await;
    }

    #[tokio::test]
    async fn azurite() {
        let Ok(endpoint) = std::env::var("SWITCHYARD_TEST_AZURITE_ENDPOINT") else {
            return required("Azurite (SWITCHYARD_TEST_AZURITE_ENDPOINT)");
        };
        let container = std::env::var("SWITCHYARD_TEST_AZURITE_CONTAINER")
            .unwrap_or_else(|_| "switchyard".into());
        let o = BlobOptions {
            endpoint,
            use_emulator: true,
            ..BlobOptions::default()
        };
        suite(
            BlobStore::open(&format!("az://{container}"), &o).unwrap(),
            &scope(),
        )
        .await;
    }

    #[tokio::test]
    async fn s3_compatible() {
        let Ok(endpoint) = std::env::var("SWITCHYARD_TEST_S3_ENDPOINT") else {
            return required("an S3-compatible server (SWITCHYARD_TEST_S3_ENDPOINT)");
        };
        let bucket =
            std::env::var("SWITCHYARD_TEST_S3_BUCKET").unwrap_or_else(|_| "switchyard".into());
        let o = BlobOptions {
            endpoint,
            region: "us-east-1".into(),
            access_key_id: "test".into(),
            secret_access_key: "test".into(),
            allow_http: true,
            ..BlobOptions::default()
        };
        suite(
            BlobStore::open(&format!("s3://{bucket}"), &o).unwrap(),
            &scope(),
        )
        .await;
    }
}
