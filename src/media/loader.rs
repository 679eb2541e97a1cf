//! The clip loader: one thread that reads and decodes audio for playbacks, so that neither
//! the thread asking to play (the SIP and call loop) nor a media worker waits for a disk.
//!
//! [`MediaEngine::play_audio`](super::MediaEngine::play_audio) hands a prompt already in
//! the cache to the leg at once; anything else (a prompt not read yet, a tenant's prompt whose
//! file is checked on each use, a voicemail message or greeting) becomes a
//! [`Clip::Loading`] that the leg plays as silence until this thread fills it. Jobs are done
//! in order, one at a time: a slow disk delays prompts, not packets.

use super::engine::{Audio, LegId, MediaEvent};
use super::leg::Clip;
use super::prompts::{PromptAudio, PromptCache};
use std::sync::{mpsc, Arc, OnceLock};

/// One clip to read for a playback.
pub(super) struct LoadJob {
    /// The leg that plays it, and the playback's tag (for the failure event).
    pub leg: LegId,
    pub tag: u64,
    pub audio: Audio,
    pub slot: Arc<OnceLock<Option<PromptAudio>>>,
}

/// Starts the loader; jobs are sent to the returned queue. The thread ends when every sender
/// is dropped (the engine is gone).
pub(super) fn spawn_loader(
    prompts: Arc<PromptCache>,
    events: tokio::sync::mpsc::UnboundedSender<MediaEvent>,
) -> std::io::Result<mpsc::Sender<LoadJob>> {
    let (tx, rx) = mpsc::channel::<LoadJob>();
    std::thread::Builder::new()
        .name("media-loader".into())
        .spawn(move || {
            for job in rx {
                let loaded = match &job.audio {
                    Audio::Prompt(p) => prompts.get(p),
                    Audio::File(f) => prompts.load_file(f),
                };
                match loaded {
                    Ok(audio) => {
                        let _ = job.slot.set(Some(audio));
                    }
                    Err(e) => {
                        let _ = job.slot.set(None);
                        // The call layer decides what a caller who cannot hear a prompt gets.
                        let _ = events.send(MediaEvent::PlaybackFailed {
                            leg: job.leg,
                            tag: job.tag,
                            error: e.to_string(),
                        });
                    }
                }
            }
        })?;
    Ok(tx)
}

/// A clip for `audio`: ready when the cache holds it, otherwise loading (a job is queued).
pub(super) fn clip_for(
    prompts: &PromptCache,
    loader: &mpsc::Sender<LoadJob>,
    leg: LegId,
    tag: u64,
    audio: &Audio,
) -> Clip {
    if let Audio::Prompt(name) = audio {
        if let Some(ready) = prompts.cached(name) {
            return Clip::Ready(ready);
        }
    }
    let slot = Arc::new(OnceLock::new());
    let job = LoadJob {
        leg,
        tag,
        audio: audio.clone(),
        slot: slot.clone(),
    };
    if loader.send(job).is_err() {
        // No loader (the engine is stopping): nothing to wait for.
        let _ = slot.set(None);
    }
    Clip::Loading(slot)
}
