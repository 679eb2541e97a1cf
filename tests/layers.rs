//! The direction of dependencies, checked by reading the imports.
//!
//! Switchyard's layers (see the README's "Layout"): records at the bottom; SDP, the SIP
//! protocol pieces and media beside each other; storage; the SIP endpoint; the call layer and
//! its apps; the admin API and the server on top. SDP and the SIP protocol pieces are crates of
//! their own (`crates/sdp`, `crates/sip`, re-exported as `switchyard::sdp` and the protocol
//! modules of `switchyard::sip`), so the compiler keeps them from naming anything above, and
//! `.ci/run` checks the crates they depend on. The other layers are modules of the main crate,
//! where this test does the compiler's job: every `crate::` and `super::` path in non-test
//! code is resolved to the layer it names, and a layer may only name the layers listed for it
//! in [`ALLOWED`]. A new module must be given a place here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each layer and the layers it may use. Units are top-level modules, except that `sip` is
/// split: the protocol pieces (`sip`: messages, headers, digest, transactions, dialogs,
/// registrar, auth guard) sit low, the endpoint (`sip::endpoint`) sits above the tenant
/// configuration it routes with, and the socket code (`sip::transport`) is the runtime's edge.
const ALLOWED: &[(&str, &[&str])] = &[
    ("records", &[]),
    ("test_support", &[]),
    ("sdp", &[]),
    ("localdb", &[]),
    ("sip", &["records"]),
    ("blob", &["records"]),
    ("media", &["records", "sdp"]),
    ("tenant", &["records", "localdb", "sip"]),
    ("history", &["records", "blob"]),
    ("spool", &["records", "blob", "history"]),
    ("mailstore", &["records", "blob", "history", "spool"]),
    (
        "promptstore",
        &["records", "blob", "spool", "media", "tenant"],
    ),
    (
        "retention",
        &["records", "blob", "history", "spool", "mailstore", "tenant"],
    ),
    ("sip::endpoint", &["records", "sdp", "sip", "tenant"]),
    ("sip::transport", &["sip", "sip::endpoint"]),
    (
        "call",
        &[
            "records",
            "sdp",
            "sip",
            "sip::endpoint",
            "media",
            "tenant",
            "blob",
            "history",
            "spool",
            "mailstore",
            "promptstore",
        ],
    ),
    (
        "apps",
        &[
            "records",
            "sdp",
            "media",
            "tenant",
            "blob",
            "history",
            "spool",
            "mailstore",
            "promptstore",
            "call",
        ],
    ),
    (
        "cluster",
        &[
            "records",
            "localdb",
            "sip",
            "tenant",
            "blob",
            "promptstore",
            "mailstore",
        ],
    ),
    (
        "backup",
        &["records", "localdb", "tenant", "history", "blob"],
    ),
    (
        "api",
        &[
            "records",
            "sdp",
            "sip",
            "sip::endpoint",
            "media",
            "tenant",
            "localdb",
            "blob",
            "history",
            "spool",
            "mailstore",
            "promptstore",
            "call",
            "apps",
            "cluster",
        ],
    ),
    // The binary's wiring: settings, the runtime, the operator's checks. They see everything.
    ("settings", &["*"]),
    ("server", &["*"]),
    ("doctor", &["*"]),
];

/// Crates a layer must not use besides [`RUNTIME_AND_STORAGE`]: the SIP core and SDP take bytes and time and return what to
/// do (no runtime, no sockets, no disk, no WebRTC stack, no HTTP schema); records are plain
/// data. `sip::transport` is the SIP side's socket edge and is not listed.
const FORBIDDEN_CRATES: &[(&str, &[&str])] = &[
    ("records", &[]),
    ("sdp", &["utoipa"]),
    ("sip", &["utoipa"]),
    ("sip::endpoint", &["utoipa"]),
];

/// Banned in every layer listed in [`FORBIDDEN_CRATES`], besides its own list: an async
/// runtime, sockets, databases, the WebRTC stack, HTTP.
const RUNTIME_AND_STORAGE: &[&str] = &[
    "tokio",
    "sled",
    "mio",
    "str0m",
    "sqlx",
    "axum",
    "object_store",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let p = entry.expect("entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The module path of a file: `src/sip/endpoint/invite.rs` → `["sip", "endpoint", "invite"]`.
fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts.last().is_some_and(|l| l == "mod") {
        parts.pop();
    }
    parts
}

/// The layer a module path belongs to.
fn unit_of(path: &[String]) -> Option<String> {
    let first = path.first()?;
    if first == "sip" {
        if let Some(second) = path.get(1) {
            if second == "endpoint" || second == "transport" {
                return Some(format!("sip::{second}"));
            }
        }
    }
    Some(first.clone())
}

/// Code without comments, string contents and `#[cfg(test)]` modules (tests may reach across
/// layers to build fixtures).
fn production_code(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut lines = src.lines().peekable();
    while let Some(line) = lines.next() {
        let t = line.trim_start();
        if t.starts_with("#[cfg(test)]") {
            // Skip the item that follows: to the end of its braces, or one line.
            let mut depth = 0i32;
            let mut opened = false;
            for l in lines.by_ref() {
                depth += l.matches('{').count() as i32 - l.matches('}').count() as i32;
                opened |= l.contains('{');
                if (opened && depth <= 0) || (!opened && l.trim_end().ends_with(';')) {
                    break;
                }
            }
            continue;
        }
        let code = match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        };
        // Paths inside string literals are text, not imports.
        let mut in_str = false;
        for c in code.chars() {
            if c == '"' {
                in_str = !in_str;
            } else if !in_str {
                out.push(c);
            }
        }
        out.push('\n');
    }
    out
}

/// Every module path the code names through `crate::` or `super::`, resolved.
fn named_paths(code: &str, here: &[String]) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let bytes = code.as_bytes();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while i < bytes.len() {
        let starts = i == 0 || !(is_ident(bytes[i - 1]) || bytes[i - 1] == b':');
        let rest = &code[i..];
        if starts && (rest.starts_with("crate::") || rest.starts_with("super::")) {
            let mut base: Vec<String> = if rest.starts_with("crate::") {
                i += "crate::".len();
                Vec::new()
            } else {
                // `super` is the parent of this file's module (a `mod.rs` is its own module).
                let mut b = here.to_vec();
                while code[i..].starts_with("super::") {
                    b.pop();
                    i += "super::".len();
                }
                b
            };
            // Take the next two segments: enough to tell the layer.
            for _ in 0..2 {
                let start = i;
                while i < bytes.len() && is_ident(bytes[i]) {
                    i += 1;
                }
                if i == start {
                    break;
                }
                base.push(code[start..i].to_string());
                if code[i..].starts_with("::") {
                    i += 2;
                } else {
                    break;
                }
            }
            found.push(base);
            continue;
        }
        i += 1;
    }
    found
}

/// True when `code` names `krate` as a path root (`tokio::…`, `use tokio`).
fn names_crate(code: &str, krate: &str) -> bool {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    code.match_indices(krate).any(|(i, _)| {
        let before = code[..i].chars().next_back();
        let after = &code[i + krate.len()..];
        !before.is_some_and(is_ident) && (after.starts_with("::") || after.starts_with(';'))
    })
}

#[test]
fn layers_only_use_the_layers_below_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut violations = BTreeSet::new();
    let mut unplaced = BTreeSet::new();
    for file in files {
        let rel = file.strip_prefix(&src).expect("under src");
        if rel == Path::new("lib.rs") || rel == Path::new("main.rs") {
            continue;
        }
        // Test-only files (`tests.rs`, `testing.rs`, anything in a `tests/` module folder)
        // build fixtures across layers.
        let stem = rel.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        let in_tests_dir = rel
            .parent()
            .is_some_and(|d| d.components().any(|c| c.as_os_str() == "tests"));
        if stem == "tests" || stem == "testing" || in_tests_dir {
            continue;
        }
        let module = module_of(rel);
        let Some(unit) = unit_of(&module) else {
            continue;
        };
        let Some(may) = allowed.get(unit.as_str()) else {
            unplaced.insert(unit);
            continue;
        };
        let text = std::fs::read_to_string(&file).expect("read");
        let code = production_code(&text);
        if let Some((_, banned)) = FORBIDDEN_CRATES.iter().find(|(u, _)| *u == unit) {
            for krate in RUNTIME_AND_STORAGE.iter().chain(banned.iter()) {
                if names_crate(&code, krate) {
                    violations.insert(format!("{} ({unit}) uses the {krate} crate", rel.display()));
                }
            }
        }
        for path in named_paths(&code, &module) {
            let Some(target) = unit_of(&path) else {
                continue;
            };
            if target == unit || may.contains(&"*") || may.contains(&target.as_str()) {
                continue;
            }
            violations.insert(format!(
                "{} ({unit}) uses {} ({target})",
                rel.display(),
                path.join("::")
            ));
        }
    }
    assert!(
        unplaced.is_empty(),
        "modules with no place in tests/layers.rs ALLOWED: {unplaced:?}"
    );
    assert!(
        violations.is_empty(),
        "imports against the direction of dependencies:\n  {}",
        violations.into_iter().collect::<Vec<_>>().join("\n  ")
    );
}

#[test]
fn the_checker_resolves_paths_and_ignores_tests_comments_and_strings() {
    let here: Vec<String> = ["sip", "endpoint", "invite"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let code = production_code(
        "use super::super::registrar::X; // crate::media::engine\n\
         let s = \"crate::media::x\";\n\
         use crate::sdp::negotiate;\n\
         #[cfg(test)]\nmod tests {\n    use crate::server::x;\n}\n",
    );
    let paths = named_paths(&code, &here);
    let units: Vec<String> = paths.iter().filter_map(|p| unit_of(p)).collect();
    assert_eq!(units, vec!["sip".to_string(), "sdp".to_string()]);
    // `super::` in a mod.rs names the parent of the directory's module.
    let here_mod: Vec<String> = ["sip", "endpoint"].iter().map(|s| s.to_string()).collect();
    let paths = named_paths("use super::auth_guard::G;", &here_mod);
    assert_eq!(unit_of(&paths[0]).as_deref(), Some("sip"));
    assert!(names_crate("let x = tokio::spawn(f);", "tokio"));
    assert!(names_crate("use sled;", "sled"));
    assert!(!names_crate(
        "let my_tokio::x = 1; fn tokio_ish() {}",
        "tokio"
    ));
}
