//! Fuzzes prompt uploads: WAV decoding of any encoding and rate, and raw G.711, converted to
//! the 8 kHz PCM WAV that is stored.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::promptstore::{convert, UploadFormat};
use switchyard::media::wav;

fuzz_target!(|data: &[u8]| {
    if let Ok(d) = wav::decode(data) {
        let _ = wav::to_8k(&d);
    }
    for f in [UploadFormat::Wav, UploadFormat::RawUlaw, UploadFormat::RawAlaw] {
        if let Ok(stored) = convert(data, f) {
            // What is stored must itself decode.
            assert!(wav::decode(&stored).is_ok());
        }
    }
});
