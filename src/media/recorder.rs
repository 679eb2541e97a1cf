//! Recording files: one writer thread for the whole engine, so disk latency never stalls a
//! media worker. Workers hand over one second of 16-bit samples at a time; after every chunk
//! the WAV header is rewritten with the current sizes, so a file is valid at any moment —
//! when the call drops, and even when the process is killed mid-recording.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::mpsc;

/// Messages to the writer thread.
#[derive(Debug)]
pub enum WriterMsg {
    /// Create the file and write a header.
    Open {
        /// Recording id.
        id: u64,
        /// Path.
        path: PathBuf,
        /// 1 or 2.
        channels: u16,
    },
    /// Append interleaved samples.
    Append {
        /// Recording id.
        id: u64,
        /// Samples.
        samples: Vec<i16>,
    },
    /// Finish the file (header final, data synced to disk).
    Close {
        /// Recording id.
        id: u64,
    },
}

struct Open {
    file: File,
    channels: u16,
    data_bytes: u32,
}

fn header(channels: u16, data_bytes: u32) -> [u8; 44] {
    let mut h = [0u8; 44];
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&(36 + data_bytes).to_le_bytes());
    h[8..16].copy_from_slice(b"WAVEfmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&1u16.to_le_bytes());
    h[22..24].copy_from_slice(&channels.to_le_bytes());
    h[24..28].copy_from_slice(&8000u32.to_le_bytes());
    h[28..32].copy_from_slice(&(8000 * 2 * u32::from(channels)).to_le_bytes());
    h[32..34].copy_from_slice(&(2 * channels).to_le_bytes());
    h[34..36].copy_from_slice(&16u16.to_le_bytes());
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&data_bytes.to_le_bytes());
    h
}

fn write_header(o: &mut Open) -> std::io::Result<()> {
    o.file.seek(SeekFrom::Start(0))?;
    o.file.write_all(&header(o.channels, o.data_bytes))?;
    o.file.seek(SeekFrom::End(0))?;
    Ok(())
}

/// Starts the writer thread.
pub fn spawn_writer() -> mpsc::Sender<WriterMsg> {
    let (tx, rx) = mpsc::channel::<WriterMsg>();
    let spawned = std::thread::Builder::new().name("recorder".into()).spawn(move || {
        let mut files: HashMap<u64, Open> = HashMap::new();
        for msg in rx {
            match msg {
                WriterMsg::Open { id, path, channels } => {
                    if let Some(dir) = path.parent() {
                        let _ = std::fs::create_dir_all(dir);
                    }
                    match File::create(&path) {
                        Ok(mut file) => {
                            if let Err(e) = file.write_all(&header(channels, 0)) {
                                tracing::error!(path = %path.display(), error = %e, "cannot write recording");
                                continue;
                            }
                            files.insert(id, Open { file, channels, data_bytes: 0 });
                        }
                        Err(e) => tracing::error!(path = %path.display(), error = %e, "cannot create recording"),
                    }
                }
                WriterMsg::Append { id, samples } => {
                    let Some(o) = files.get_mut(&id) else { continue };
                    let mut bytes = Vec::with_capacity(samples.len() * 2);
                    for s in samples {
                        bytes.extend_from_slice(&s.to_le_bytes());
                    }
                    let r = o.file.write_all(&bytes).and_then(|_| {
                        o.data_bytes = o.data_bytes.saturating_add(bytes.len() as u32);
                        write_header(o)
                    });
                    if let Err(e) = r {
                        tracing::error!(error = %e, "recording write failed");
                    }
                }
                WriterMsg::Close { id } => {
                    if let Some(mut o) = files.remove(&id) {
                        let _ = write_header(&mut o).and_then(|_| o.file.sync_data());
                    }
                }
            }
        }
    });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the recording writer thread");
    }
    tx
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// A recording that is never closed (the call dropped, the process died) is still a valid
    /// WAV holding everything handed over so far.
    #[test]
    fn header_is_valid_before_the_recording_is_closed() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("deep/dir/rec.wav");
        let tx = spawn_writer();
        tx.send(WriterMsg::Open {
            id: 9,
            path: path.clone(),
            channels: 2,
        })
        .expect("open");
        let samples: Vec<i16> = (0..16000).map(|i| (i % 100) as i16).collect();
        tx.send(WriterMsg::Append {
            id: 9,
            samples: samples.clone(),
        })
        .expect("append");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(b) = std::fs::read(&path) {
                if b.len() == 44 + 32000 {
                    let d = crate::media::wav::decode(&b).expect("valid wav");
                    assert_eq!(d.rate, 8000);
                    assert_eq!(d.samples.len(), 8000, "two channels mixed to one");
                    assert_eq!(u32::from_le_bytes([b[40], b[41], b[42], b[43]]), 32000);
                    assert_eq!(u16::from_le_bytes([b[22], b[23]]), 2);
                    break;
                }
            }
            assert!(Instant::now() < deadline, "file never complete");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
