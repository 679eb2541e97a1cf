//! Fuzzes the jitter buffer with arbitrary timestamps and frame sizes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::media::jitter::JitterBuffer;

fuzz_target!(|data: &[u8]| {
    let mut jb = JitterBuffer::new(u32::from(data.first().copied().unwrap_or(2) % 8));
    let mut out = [0i16; 160];
    for chunk in data.chunks(6) {
        if chunk.len() < 6 {
            break;
        }
        let ts = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        let n = usize::from(u16::from_be_bytes([chunk[4], chunk[5]]) % 2000);
        let samples = vec![ts as i16; n];
        jb.insert(ts, &samples);
        let real = jb.pop_frame(&mut out);
        assert!(real <= out.len());
        if chunk[5] == 0xff {
            jb.reset();
        }
    }
});
