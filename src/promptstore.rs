//! Tenants' own prompts, uploaded through the admin API: validated, converted once to the
//! engine's format (8 kHz mono 16-bit PCM WAV) and kept as the node's working copy under
//! `data_dir/prompts/TENANT/NAME.wav`, which the media engine plays; every upload and delete
//! also goes through the spool to blob storage ([`crate::blob::prompt_key`]). A node that
//! lacks a prompt another node took (or that was restored) fetches it from blob storage
//! ([`PromptStore::sync_from`]).
//!
//! In tenant documents a prompt is named by its bare name (`welcome-acme`); `system/…` names
//! are the system prompts shipped in `prompts/`.

use crate::blob::{prompt_key, BlobStore};
use crate::media::g711::Law;
use crate::media::wav;
use crate::spool::{BlobJob, Spool};
use std::io::Write;
use std::path::PathBuf;

/// Largest upload accepted.
pub const MAX_UPLOAD_BYTES: usize = 20 * 1024 * 1024;
/// Longest prompt accepted.
pub const MAX_SECONDS: u64 = 600;
/// Shortest prompt accepted (anything shorter is a mistake, not a prompt).
pub const MIN_MS: u64 = 100;

/// Why an upload or a lookup failed.
#[derive(Debug, thiserror::Error)]
pub enum PromptStoreError {
    /// Name outside `[a-z0-9][a-z0-9_-]{0,63}`.
    #[error("prompt names are 1-64 of a-z, 0-9, '-', '_', starting with a letter or digit")]
    BadName,
    /// No such prompt.
    #[error("no such prompt")]
    NotFound,
    /// Not audio we can read.
    #[error("{0}")]
    BadAudio(String),
    /// Too long or too short.
    #[error("{0}")]
    BadLength(String),
    /// Local file trouble.
    #[error("prompt store: {0}")]
    Io(#[from] std::io::Error),
}

/// A stored prompt.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct PromptInfo {
    /// Name (what tenant documents use).
    pub name: String,
    /// Length of the converted audio.
    pub duration_ms: u64,
    /// Bytes of the converted WAV.
    pub size_bytes: u64,
}

/// The prompt name rule (a storage key and a URL segment).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_'))
}

/// What an upload's Content-Type says the body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadFormat {
    /// A WAV file (PCM 8/16/24/32-bit, float, µ-law or A-law; any rate; mono or stereo).
    Wav,
    /// Headerless 8 kHz G.711 µ-law (`audio/basic`, `audio/PCMU`).
    RawUlaw,
    /// Headerless 8 kHz G.711 A-law (`audio/PCMA`, `audio/x-alaw-basic`).
    RawAlaw,
}

impl UploadFormat {
    /// The format for a Content-Type (None: not one we take).
    pub fn from_content_type(ct: &str) -> Option<UploadFormat> {
        let base = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match base.as_str() {
            "audio/wav" | "audio/x-wav" | "audio/wave" | "audio/vnd.wave" => {
                Some(UploadFormat::Wav)
            }
            "audio/basic" | "audio/pcmu" => Some(UploadFormat::RawUlaw),
            "audio/pcma" | "audio/x-alaw-basic" => Some(UploadFormat::RawAlaw),
            _ => None,
        }
    }
}

/// Converts an upload to the engine's format (8 kHz mono 16-bit PCM WAV), checking it is
/// audio and between [`MIN_MS`] and [`MAX_SECONDS`] long.
pub fn convert(bytes: &[u8], format: UploadFormat) -> Result<Vec<u8>, PromptStoreError> {
    let samples: Vec<i16> = match format {
        UploadFormat::Wav => {
            let d = wav::decode(bytes).map_err(|e| PromptStoreError::BadAudio(e.to_string()))?;
            if d.rate < 4000 || d.rate > 192_000 {
                return Err(PromptStoreError::BadAudio(format!(
                    "sample rate {} Hz is outside 4000-192000",
                    d.rate
                )));
            }
            if d.samples.len() as u64 > u64::from(d.rate) * MAX_SECONDS {
                return Err(too_long());
            }
            wav::to_8k(&d)
        }
        UploadFormat::RawUlaw | UploadFormat::RawAlaw => {
            if bytes.starts_with(b"RIFF") {
                return Err(PromptStoreError::BadAudio(
                    "this is a WAV file: send it as audio/wav".into(),
                ));
            }
            let law = if format == UploadFormat::RawUlaw {
                Law::Ulaw
            } else {
                Law::Alaw
            };
            let mut out = Vec::with_capacity(bytes.len());
            law.decode(bytes, &mut out);
            out
        }
    };
    let ms = samples.len() as u64 / 8;
    if ms > MAX_SECONDS * 1000 {
        return Err(too_long());
    }
    if ms < MIN_MS {
        return Err(PromptStoreError::BadLength(format!(
            "the audio lasts {ms} ms; a prompt needs at least {MIN_MS} ms"
        )));
    }
    Ok(wav::encode_pcm16(&samples, 8000, 1))
}

fn too_long() -> PromptStoreError {
    PromptStoreError::BadLength(format!("prompts may last up to {MAX_SECONDS} s"))
}

fn info(name: String, size: u64) -> PromptInfo {
    PromptInfo {
        name,
        duration_ms: size.saturating_sub(44) / 16,
        size_bytes: size,
    }
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct PromptStore {
    dir: PathBuf,
    spool: Option<Spool>,
}

impl PromptStore {
    /// Prompts under `dir` (`dir/TENANT/NAME.wav`).
    pub fn new(dir: impl Into<PathBuf>) -> PromptStore {
        PromptStore {
            dir: dir.into(),
            spool: None,
        }
    }

    /// Mirrors uploads and deletes to blob storage through `spool`.
    pub fn with_spool(mut self, spool: Spool) -> PromptStore {
        self.spool = Some(spool);
        self
    }

    /// The folder of every tenant's prompts (what the media engine reads).
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    fn tenant_dir(&self, tenant: &str) -> Result<PathBuf, PromptStoreError> {
        if tenant.is_empty() || tenant.contains(['/', '.', '\\']) {
            return Err(PromptStoreError::NotFound);
        }
        Ok(self.dir.join(tenant))
    }

    /// Where a prompt's converted audio is on this node.
    pub fn path(&self, tenant: &str, name: &str) -> Result<PathBuf, PromptStoreError> {
        if !valid_name(name) {
            return Err(PromptStoreError::BadName);
        }
        Ok(self.tenant_dir(tenant)?.join(format!("{name}.wav")))
    }

    /// Stores converted audio (from [`convert`]) as `name`, replacing an older one; true
    /// when it replaced one.
    pub fn put(
        &self,
        tenant: &str,
        name: &str,
        wav_bytes: &[u8],
    ) -> Result<(PromptInfo, bool), PromptStoreError> {
        let path = self.path(tenant, name)?;
        let dir = self.tenant_dir(tenant)?;
        std::fs::create_dir_all(&dir)?;
        let existed = path.exists();
        let tmp = dir.join(format!(".{name}.{:08x}.tmp", rand::random::<u32>()));
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(wav_bytes)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &path)?;
        // The new name is durable once the folder is: acknowledged uploads survive a power cut.
        std::fs::File::open(&dir)?.sync_all()?;
        if let Some(sp) = &self.spool {
            sp.push_blob(BlobJob::Put {
                key: prompt_key(tenant, name),
                file: path,
                remove_local: false,
                not_before_ms: 0,
                then: None,
            });
        }
        Ok((info(name.to_string(), wav_bytes.len() as u64), existed))
    }

    /// One prompt.
    pub fn get(&self, tenant: &str, name: &str) -> Result<PromptInfo, PromptStoreError> {
        let path = self.path(tenant, name)?;
        let meta = std::fs::metadata(&path).map_err(|_| PromptStoreError::NotFound)?;
        Ok(info(name.to_string(), meta.len()))
    }

    /// A tenant's prompts, by name.
    pub fn list(&self, tenant: &str) -> Result<Vec<PromptInfo>, PromptStoreError> {
        let dir = self.tenant_dir(tenant)?;
        let mut out: Vec<PromptInfo> = std::fs::read_dir(&dir)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| {
                        let file = e.file_name().to_string_lossy().into_owned();
                        let name = file.strip_suffix(".wav")?.to_string();
                        valid_name(&name)
                            .then(|| e.metadata().ok().map(|m| info(name, m.len())))
                            .flatten()
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Deletes a prompt here and in blob storage.
    pub fn delete(&self, tenant: &str, name: &str) -> Result<(), PromptStoreError> {
        let path = self.path(tenant, name)?;
        std::fs::remove_file(&path).map_err(|_| PromptStoreError::NotFound)?;
        if let Some(sp) = &self.spool {
            sp.push_blob(BlobJob::Delete {
                key: prompt_key(tenant, name),
            });
        }
        Ok(())
    }

    /// SHA-256 of this node's copy of a prompt (None: it has none).
    pub fn digest(&self, tenant: &str, name: &str) -> Option<[u8; 32]> {
        use sha2::{Digest, Sha256};
        let bytes = std::fs::read(self.path(tenant, name).ok()?).ok()?;
        Some(Sha256::digest(&bytes).into())
    }

    /// Every prompt on this node, as (tenant, name).
    pub fn all(&self) -> Vec<(String, String)> {
        let Ok(tenants) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for t in tenants.flatten() {
            let tenant = t.file_name().to_string_lossy().into_owned();
            if let Ok(list) = self.list(&tenant) {
                out.extend(list.into_iter().map(|p| (tenant.clone(), p.name)));
            }
        }
        out
    }

    /// Removes this node's copy of a prompt deleted through another node (blob storage is
    /// that node's business); true when there was one.
    pub fn forget(&self, tenant: &str, name: &str) -> bool {
        self.path(tenant, name)
            .is_ok_and(|p| std::fs::remove_file(p).is_ok())
    }

    /// Stores a prompt's audio fetched from blob storage as this node's copy (checked to be
    /// a WAV, written whole or not at all).
    pub fn install(&self, tenant: &str, name: &str, bytes: &[u8]) -> Result<(), PromptStoreError> {
        wav::decode(bytes)
            .map_err(|e| PromptStoreError::BadAudio(format!("stored prompt is not a WAV: {e}")))?;
        let path = self.path(tenant, name)?;
        std::fs::create_dir_all(self.tenant_dir(tenant)?)?;
        let tmp = path.with_extension("fetch.tmp");
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, &path)?;
        Ok(())
    }

    /// Removes a deleted tenant's prompts from this node.
    pub fn forget_tenant(&self, tenant: &str) {
        if let Ok(dir) = self.tenant_dir(tenant) {
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    /// Fetches from blob storage the prompts of `tenants` this node does not have (taken by
    /// another node, or after a restore). Returns how many were fetched.
    pub async fn sync_from(&self, blobs: &BlobStore, tenants: &[String]) -> usize {
        let mut fetched = 0;
        for t in tenants {
            let prefix = format!("tenants/{t}/prompts/");
            let Ok(keys) = blobs.list(&prefix).await else {
                continue;
            };
            for key in keys {
                let Some(name) = key
                    .strip_prefix(&prefix)
                    .and_then(|n| n.strip_suffix(".wav"))
                    .filter(|n| valid_name(n))
                else {
                    continue;
                };
                let Ok(path) = self.path(t, name) else {
                    continue;
                };
                if path.exists() {
                    continue;
                }
                let Ok(bytes) = blobs.get_bytes(&key).await else {
                    continue;
                };
                match self.install(t, name, &bytes) {
                    Ok(()) => {
                        tracing::info!(tenant = %t, prompt = %name, "prompt fetched from blob storage");
                        fetched += 1;
                    }
                    Err(e) => tracing::warn!(%key, error = %e, "stored prompt not fetched"),
                }
            }
        }
        fetched
    }
}

/// Where a tenant document uses prompt `name`: the paths of every `prompts` entry,
/// `invalid_prompt`, `greeting` and `prompt` that names it.
pub fn references(cfg: &crate::tenant::TenantConfig, name: &str) -> Vec<String> {
    fn walk(v: &serde_json::Value, path: &str, name: &str, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    let holds_prompt = matches!(
                        k.as_str(),
                        "prompt" | "invalid_prompt" | "greeting" | "prompts"
                    );
                    match v {
                        serde_json::Value::String(s) if holds_prompt && s == name => out.push(p),
                        serde_json::Value::Array(a) if k == "prompts" => {
                            for (i, item) in a.iter().enumerate() {
                                if item.as_str() == Some(name) {
                                    out.push(format!("{p}.{i}"));
                                }
                            }
                        }
                        other => walk(other, &p, name, out),
                    }
                }
            }
            serde_json::Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    walk(v, &format!("{path}.{i}"), name, out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Ok(v) = serde_json::to_value(cfg) {
        walk(&v, "", name, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(rate: u32, secs: f32) -> Vec<i16> {
        (0..(rate as f32 * secs) as usize)
            .map(|i| {
                ((2.0 * std::f32::consts::PI * 440.0 * i as f32 / rate as f32).sin() * 9000.0)
                    as i16
            })
            .collect()
    }

    #[test]
    fn uploads_are_converted_to_8k_mono_pcm_and_bad_ones_named() {
        // 16 kHz PCM: resampled to 8 kHz, same length in time.
        let w = wav::encode_pcm16(&tone(16000, 1.0), 16000, 1);
        let out = convert(&w, UploadFormat::Wav).unwrap();
        let d = wav::decode(&out).unwrap();
        assert_eq!(d.rate, 8000);
        assert_eq!(d.samples.len(), 8000);
        // Raw µ-law: 8000 bytes is one second.
        let mut ulaw = Vec::new();
        Law::Ulaw.encode(&tone(8000, 0.5), &mut ulaw);
        let out = convert(&ulaw, UploadFormat::RawUlaw).unwrap();
        assert_eq!(wav::decode(&out).unwrap().samples.len(), 4000);
        assert!(matches!(
            convert(b"hello, not audio", UploadFormat::Wav),
            Err(PromptStoreError::BadAudio(_))
        ));
        assert!(matches!(
            convert(
                &wav::encode_pcm16(&tone(8000, 0.05), 8000, 1),
                UploadFormat::Wav
            ),
            Err(PromptStoreError::BadLength(_))
        ));
        assert!(matches!(
            convert(&w, UploadFormat::RawUlaw),
            Err(PromptStoreError::BadAudio(_))
        ));
        assert_eq!(
            UploadFormat::from_content_type("audio/wav; codecs=1"),
            Some(UploadFormat::Wav)
        );
        assert_eq!(UploadFormat::from_content_type("text/plain"), None);
    }

    #[test]
    fn names_and_references() {
        assert!(valid_name("welcome-2"));
        for bad in ["", "Welcome", "-x", "a/b", "a.b", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
        let mut cfg: crate::tenant::TenantConfig =
            serde_json::from_str(crate::server::DEMO_TENANT).unwrap();
        assert!(references(&cfg, "welcome-acme").is_empty());
        let menu = cfg.ivrs.values_mut().next().unwrap();
        menu.prompts.push("welcome-acme".into());
        menu.invalid_prompt = Some("welcome-acme".into());
        let refs = references(&cfg, "welcome-acme");
        assert_eq!(refs.len(), 2, "{refs:?}");
        assert!(
            refs.iter().any(|r| r.ends_with(".invalid_prompt")),
            "{refs:?}"
        );
        assert!(refs.iter().any(|r| r.contains(".prompts.")), "{refs:?}");
    }
}
