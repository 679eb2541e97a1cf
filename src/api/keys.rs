//! API keys: the admin key from settings, and per-tenant keys created through the API.
//!
//! A tenant key is shown once at creation (`sy_<id>_<secret>`); only the SHA-256 of the whole
//! key is stored, in the local database, so a leaked database does not leak usable keys. Keys
//! can be read-only and are revoked by id.

use crate::localdb::{LocalDb, LocalDbError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Who a request acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The admin key: every tenant, tenant and key management.
    Admin,
    /// A tenant key.
    Tenant {
        /// Tenant id.
        tenant: String,
        /// Key id.
        key_id: String,
        /// Read-only key.
        read_only: bool,
    },
}

impl Principal {
    /// May read tenant `t`.
    pub fn can_read(&self, t: &str) -> bool {
        match self {
            Principal::Admin => true,
            Principal::Tenant { tenant, .. } => tenant == t,
        }
    }

    /// May change tenant `t`.
    pub fn can_write(&self, t: &str) -> bool {
        match self {
            Principal::Admin => true,
            Principal::Tenant {
                tenant, read_only, ..
            } => tenant == t && !read_only,
        }
    }
}

/// What is stored about a tenant key (never the key itself).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KeyInfo {
    /// Key id (the public part of the key).
    pub id: String,
    /// Tenant the key belongs to.
    pub tenant: String,
    /// Label.
    pub name: String,
    /// Read-only key.
    pub read_only: bool,
    /// Creation time, unix seconds.
    pub created: u64,
}

/// The key store.
#[derive(Clone)]
pub struct ApiKeys {
    by_hash: sled::Tree,
    admin_hash: Option<[u8; 32]>,
}

fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

impl ApiKeys {
    /// Opens the store; `admin_key` empty disables admin access.
    pub fn open(db: &LocalDb, admin_key: &str) -> Result<ApiKeys, LocalDbError> {
        Ok(ApiKeys {
            by_hash: db.tree("api_keys")?,
            admin_hash: (!admin_key.is_empty()).then(|| hash(admin_key)),
        })
    }

    /// Who presents `key`, if anyone. Constant-time on the admin key; tenant keys are looked
    /// up by hash, which reveals nothing about the key.
    pub fn authenticate(&self, key: &str) -> Option<Principal> {
        let h = hash(key);
        if let Some(a) = &self.admin_hash {
            if a.iter()
                .zip(h.iter())
                .fold(0u8, |acc, (x, y)| acc | (x ^ y))
                == 0
            {
                return Some(Principal::Admin);
            }
        }
        let v = self.by_hash.get(h).ok()??;
        let info: KeyInfo = serde_json::from_slice(&v).ok()?;
        Some(Principal::Tenant {
            tenant: info.tenant,
            key_id: info.id,
            read_only: info.read_only,
        })
    }

    /// Makes a new key for `tenant`: its hash, its record and the key itself (shown once).
    /// Nothing is stored: [`Self::insert`] on a single node, the cluster's key bucket in a
    /// cluster.
    pub fn mint(
        tenant: &str,
        name: &str,
        read_only: bool,
        now: u64,
    ) -> ([u8; 32], KeyInfo, String) {
        let id = hex::encode(rand::random::<[u8; 6]>());
        let secret = hex::encode(rand::random::<[u8; 24]>());
        let key = format!("sy_{id}_{secret}");
        let info = KeyInfo {
            id,
            tenant: tenant.to_string(),
            name: name.to_string(),
            read_only,
            created: now,
        };
        (hash(&key), info, key)
    }

    /// Stores a key's record under its hash (fsynced).
    pub fn insert(&self, hash: [u8; 32], info: &KeyInfo) -> Result<(), LocalDbError> {
        let v = serde_json::to_vec(info).map_err(|source| LocalDbError::Decode {
            key: info.id.clone(),
            source,
        })?;
        self.by_hash.insert(hash, v)?;
        self.by_hash.flush()?;
        Ok(())
    }

    /// Creates a key for `tenant` on this node (a single node).
    pub fn create(
        &self,
        tenant: &str,
        name: &str,
        read_only: bool,
        now: u64,
    ) -> Result<(KeyInfo, String), LocalDbError> {
        let (h, info, key) = Self::mint(tenant, name, read_only, now);
        self.insert(h, &info)?;
        Ok((info, key))
    }

    /// The hash of `tenant`'s key `id`, if there is one.
    pub fn find(&self, tenant: &str, id: &str) -> Option<[u8; 32]> {
        self.by_hash
            .iter()
            .filter_map(|r| r.ok())
            .find(|(_, v)| {
                serde_json::from_slice::<KeyInfo>(v)
                    .is_ok_and(|info| info.tenant == tenant && info.id == id)
            })
            .and_then(|(k, _)| <[u8; 32]>::try_from(k.as_ref()).ok())
    }

    /// A tenant's keys.
    pub fn list(&self, tenant: &str) -> Vec<KeyInfo> {
        let mut out: Vec<KeyInfo> = self
            .by_hash
            .iter()
            .filter_map(|r| r.ok())
            .filter_map(|(_, v)| serde_json::from_slice::<KeyInfo>(&v).ok())
            .filter(|k| k.tenant == tenant)
            .collect();
        out.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
        out
    }

    /// Revokes a tenant's key by id; false when there is no such key for that tenant.
    pub fn revoke(&self, tenant: &str, id: &str) -> Result<bool, LocalDbError> {
        for item in self.by_hash.iter() {
            let (k, v) = item?;
            if let Ok(info) = serde_json::from_slice::<KeyInfo>(&v) {
                if info.tenant == tenant && info.id == id {
                    self.by_hash.remove(k)?;
                    self.by_hash.flush()?;
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// Removes every key of a deleted tenant.
    pub fn revoke_all(&self, tenant: &str) -> Result<(), LocalDbError> {
        for k in self.list(tenant) {
            self.revoke(tenant, &k.id)?;
        }
        Ok(())
    }
}

impl crate::cluster::keys::KeyMirror for ApiKeys {
    fn local_keys(&self) -> Vec<(String, Vec<u8>)> {
        self.by_hash
            .iter()
            .filter_map(|r| r.ok())
            .map(|(k, v)| (hex::encode(k), v.to_vec()))
            .collect()
    }

    fn apply(&self, hash_hex: &str, record: Option<&[u8]>) {
        let Some(hash) = hex::decode(hash_hex)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
        else {
            return;
        };
        let result = match record {
            None => self.by_hash.remove(hash).map(|_| ()),
            Some(bytes) => match serde_json::from_slice::<KeyInfo>(bytes) {
                Ok(info) => self
                    .by_hash
                    .insert(hash, serde_json::to_vec(&info).unwrap_or_default())
                    .map(|_| ()),
                Err(e) => {
                    tracing::warn!(error = %e, "API key from the cluster is not a key record; ignored");
                    return;
                }
            },
        };
        if let Err(e) = result.and_then(|()| self.by_hash.flush().map(|_| ())) {
            tracing::error!(error = %e, "cannot store an API key change from the cluster");
        }
    }
}
