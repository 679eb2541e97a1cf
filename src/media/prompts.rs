//! The prompt cache: WAV files decoded and resampled to 8 kHz once, then shared (`Arc`) by
//! every call that plays them. Loading happens on the engine's clip loader (`loader.rs`) when
//! a prompt is first asked for, never on a media worker nor on the thread asking to play. System prompts are built into the binary (`build.rs`);
//! a file of the same name in `media.prompts_dir` replaces one, and new names add to them.

use super::wav;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// 8 kHz linear audio of one prompt.
pub type PromptAudio = Arc<[i16]>;

/// Why a prompt cannot be played.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PromptError {
    /// Name with characters a prompt name may not have.
    #[error("invalid prompt name {0:?}")]
    BadName(String),
    /// No such file.
    #[error("prompt {name} not found ({path})")]
    NotFound {
        /// Prompt name.
        name: String,
        /// Where it was looked for.
        path: String,
    },
    /// The file is not a usable WAV.
    #[error("prompt {name}: {error}")]
    Invalid {
        /// Prompt name.
        name: String,
        /// What is wrong.
        error: wav::WavError,
    },
}

/// Prompts by name: system prompts (`system/beep` → `DIR/system/beep.wav`), loaded once,
/// and tenants' uploaded prompts (`tenants/acme/welcome` → `TENANT_DIR/acme/welcome.wav`),
/// which can be replaced at any time: their file's modification time and size are checked on
/// each use (one `stat`), and a changed file is loaded again.
pub struct PromptCache {
    dir: PathBuf,
    tenant_dir: Option<PathBuf>,
    cache: RwLock<HashMap<String, PromptAudio>>,
    tenant_cache: RwLock<HashMap<String, (FileStamp, PromptAudio)>>,
}

/// What tells a changed file from the one cached.
type FileStamp = (Option<std::time::SystemTime>, u64);

/// The prefix of tenant prompt names.
pub const TENANT_PREFIX: &str = "tenants/";

impl PromptCache {
    /// A cache reading system prompts from `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> PromptCache {
        PromptCache {
            dir: dir.into(),
            tenant_dir: None,
            cache: RwLock::new(HashMap::new()),
            tenant_cache: RwLock::new(HashMap::new()),
        }
    }

    /// Also reads tenant prompts from `dir`.
    pub fn with_tenant_dir(mut self, dir: Option<PathBuf>) -> PromptCache {
        self.tenant_dir = dir;
        self
    }

    fn tenant_prompt(&self, name: &str, rest: &str) -> Result<PromptAudio, PromptError> {
        let not_found = |path: String| PromptError::NotFound {
            name: name.to_string(),
            path,
        };
        let Some(dir) = &self.tenant_dir else {
            return Err(not_found("(no tenant prompts on this node)".into()));
        };
        let path = dir.join(format!("{rest}.wav"));
        let meta = std::fs::metadata(&path).map_err(|_| not_found(path.display().to_string()))?;
        let stamp: FileStamp = (meta.modified().ok(), meta.len());
        if let Some((s, a)) = self
            .tenant_cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
        {
            if *s == stamp {
                return Ok(a.clone());
            }
        }
        let audio = self.load_file(&path).map_err(|e| match e {
            PromptError::Invalid { error, .. } => PromptError::Invalid {
                name: name.to_string(),
                error,
            },
            _ => not_found(path.display().to_string()),
        })?;
        self.tenant_cache
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), (stamp, audio.clone()));
        Ok(audio)
    }

    /// The folder prompts are read from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A system prompt's audio if it is already loaded (no disk: what a thread that must not
    /// wait may ask). Tenants' prompts are never answered here: their file is checked on each
    /// use.
    pub fn cached(&self, name: &str) -> Option<PromptAudio> {
        if name.starts_with(TENANT_PREFIX) {
            return None;
        }
        self.cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// A prompt's audio, loading it on first use.
    pub fn get(&self, name: &str) -> Result<PromptAudio, PromptError> {
        if let Some(rest) = name.strip_prefix(TENANT_PREFIX) {
            if !crate::records::names::valid_prompt_name(rest) {
                return Err(PromptError::BadName(name.to_string()));
            }
            return self.tenant_prompt(name, rest);
        }
        if let Some(p) = self
            .cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
        {
            return Ok(p.clone());
        }
        if !crate::records::names::valid_prompt_name(name) {
            return Err(PromptError::BadName(name.to_string()));
        }
        // The prompt folder first (an operator's own recordings replace or add to ours), then
        // the system prompts built into the binary.
        let path = self.dir.join(format!("{name}.wav"));
        let bytes = match std::fs::read(&path) {
            Ok(b) => std::borrow::Cow::Owned(b),
            Err(_) => {
                std::borrow::Cow::Borrowed(embedded(name).ok_or_else(|| PromptError::NotFound {
                    name: name.to_string(),
                    path: path.display().to_string(),
                })?)
            }
        };
        let decoded = wav::decode(&bytes).map_err(|error| PromptError::Invalid {
            name: name.to_string(),
            error,
        })?;
        let audio: PromptAudio = wav::to_8k(&decoded).into();
        self.cache
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), audio.clone());
        Ok(audio)
    }

    /// A WAV file outside the prompt folder (a voicemail message, a mailbox greeting), decoded
    /// and resampled but not cached: each is played rarely and may change.
    pub fn load_file(&self, path: &Path) -> Result<PromptAudio, PromptError> {
        let name = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|_| PromptError::NotFound {
            name: name.clone(),
            path: name.clone(),
        })?;
        let decoded = wav::decode(&bytes).map_err(|error| PromptError::Invalid { name, error })?;
        Ok(wav::to_8k(&decoded).into())
    }

    /// Adds audio under a name (tests, uploads).
    pub fn insert(&self, name: &str, audio: Vec<i16>) {
        self.cache
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), audio.into());
    }

    /// Bytes held by cached prompts.
    pub fn memory(&self) -> usize {
        let system: usize = self
            .cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|a| a.len() * 2)
            .sum();
        let tenants: usize = self
            .tenant_cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|(_, a)| a.len() * 2)
            .sum();
        system + tenants
    }
}

mod built_in {
    include!(concat!(env!("OUT_DIR"), "/system_prompts.rs"));
}

/// A system prompt built into the binary (`system/welcome`), if there is one.
pub fn embedded(name: &str) -> Option<&'static [u8]> {
    built_in::SYSTEM_PROMPTS
        .binary_search_by(|(n, _)| n.cmp(&name))
        .ok()
        .map(|i| built_in::SYSTEM_PROMPTS[i].1)
}

/// Names of the system prompts built into the binary.
pub fn embedded_names() -> impl Iterator<Item = &'static str> {
    built_in::SYSTEM_PROMPTS.iter().map(|(n, _)| *n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_prompts_are_built_in_and_a_folder_overrides_them() {
        assert!(embedded_names().count() >= 30);
        let dir = tempfile::tempdir().unwrap();
        let cache = PromptCache::new(dir.path().join("nowhere"));
        let welcome = cache.get("system/welcome").expect("built in");
        assert!(welcome.len() > 8000);
        assert!(cache.get("system/no-such-prompt").is_err());
        // A file in the folder wins over the built-in one.
        std::fs::create_dir_all(dir.path().join("p/system")).unwrap();
        std::fs::write(
            dir.path().join("p/system/welcome.wav"),
            wav::encode_pcm16(&[1000i16; 800], 8000, 1),
        )
        .unwrap();
        let own = PromptCache::new(dir.path().join("p"));
        assert_eq!(own.get("system/welcome").expect("own").len(), 800);
    }
}
