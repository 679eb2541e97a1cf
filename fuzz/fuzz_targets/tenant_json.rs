//! Fuzzes tenant documents as the admin API and `tenant import` read them: JSON into the
//! model, then validation (which must answer, never panic).
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::tenant::TenantConfig;

fuzz_target!(|data: &[u8]| {
    if let Ok(cfg) = serde_json::from_slice::<TenantConfig>(data) {
        let _ = switchyard::tenant::validate::validate(&cfg);
        let _ = serde_json::to_vec(&cfg);
    }
});
