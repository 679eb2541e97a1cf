//! The node's local durable database (sled under `data_dir/db`).
//!
//! sled is reached only through this module and the stores built on its trees: the tenant
//! snapshot (`tenant::store`) and the registrar's bindings (`sip::registrar`). Every write that
//! must survive a crash is followed by [`LocalDb::flush`].

use std::path::Path;

/// Errors from the local database.
#[derive(Debug, thiserror::Error)]
pub enum LocalDbError {
    /// sled failed (I/O, corruption, or the database is locked by another process).
    #[error("local database: {0}")]
    Sled(#[from] sled::Error),
    /// A stored value could not be decoded.
    #[error("local database value under {key}: {source}")]
    Decode {
        /// Key of the bad value.
        key: String,
        /// The decoding error.
        source: serde_json::Error,
    },
}

/// The opened database.
#[derive(Clone)]
pub struct LocalDb {
    db: sled::Db,
}

impl LocalDb {
    /// Opens (or creates) the database under `data_dir/db`. Fails when another process holds it.
    pub fn open(data_dir: &Path) -> Result<LocalDb, LocalDbError> {
        let db = sled::Config::new()
            .path(data_dir.join("db"))
            .mode(sled::Mode::LowSpace)
            .open()?;
        Ok(LocalDb { db })
    }

    /// A named tree (created on first use).
    pub fn tree(&self, name: &str) -> Result<sled::Tree, LocalDbError> {
        Ok(self.db.open_tree(name)?)
    }

    /// Makes every write so far durable.
    pub fn flush(&self) -> Result<(), LocalDbError> {
        self.db.flush()?;
        Ok(())
    }
}
