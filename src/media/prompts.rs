//! The prompt cache: WAV files decoded and resampled to 8 kHz once, then shared (`Arc`) by
//! every call that plays them. Loading happens on the caller's thread when a prompt is first
//! asked for, never on a media worker.

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

/// Prompts by name (`system/beep` → `DIR/system/beep.wav`).
pub struct PromptCache {
    dir: PathBuf,
    cache: RwLock<HashMap<String, PromptAudio>>,
}

impl PromptCache {
    /// A cache reading from `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> PromptCache {
        PromptCache {
            dir: dir.into(),
            cache: RwLock::new(HashMap::new()),
        }
    }

    /// The folder prompts are read from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A prompt's audio, loading it on first use.
    pub fn get(&self, name: &str) -> Result<PromptAudio, PromptError> {
        if let Some(p) = self
            .cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
        {
            return Ok(p.clone());
        }
        if !crate::tenant::validate::valid_prompt_name(name) {
            return Err(PromptError::BadName(name.to_string()));
        }
        let path = self.dir.join(format!("{name}.wav"));
        let bytes = std::fs::read(&path).map_err(|_| PromptError::NotFound {
            name: name.to_string(),
            path: path.display().to_string(),
        })?;
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
        self.cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|a| a.len() * 2)
            .sum()
    }
}
