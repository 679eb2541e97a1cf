//! Embeds the system prompts (`prompts/system/*.wav`) in the binary, so a server copied to
//! /usr/bin, installed with `cargo install` or started by systemd from any directory plays
//! them (`media.prompts_dir` still overrides or adds to them).

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("prompts/system");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut names: Vec<(String, String)> = std::fs::read_dir(&dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let path = e.path();
                    let stem = path.file_stem()?.to_str()?.to_string();
                    (path.extension()? == "wav").then(|| (stem, path.display().to_string()))
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    let mut out = String::from(
        "/// System prompts built into the binary: (name, WAV bytes), sorted by name.\n\
         pub static SYSTEM_PROMPTS: &[(&str, &[u8])] = &[\n",
    );
    for (stem, path) in &names {
        println!("cargo:rerun-if-changed={path}");
        let _ = writeln!(out, "    (\"system/{stem}\", include_bytes!({path:?})),");
    }
    out.push_str("];\n");
    let dest = Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join("system_prompts.rs");
    std::fs::write(dest, out).expect("writing system_prompts.rs");
}
