//! Fuzzes TCP stream framing with arbitrary chunking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::sip::transport::framing::StreamFramer;

fuzz_target!(|data: &[u8]| {
    let mut f = StreamFramer::new(65_535);
    let split = data.first().copied().unwrap_or(1).max(1) as usize;
    for chunk in data.chunks(split) {
        f.push(chunk);
        while let Ok(Some(_)) = f.next_frame() {}
    }
});
