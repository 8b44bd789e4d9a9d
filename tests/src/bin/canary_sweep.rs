//! Searches a canary sweep directory (`tests/canary_sweep.sh`) for the secrets the suite
//! listed in `canaries.txt`: the TRACE log, every reply, and the raw bytes of every data
//! dir. A minted token may appear in the reply that minted it and nowhere else; anything
//! else may appear nowhere. Exits 1 with each hit listed.
//!
//!     canary-sweep <dir>

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use aho_corasick::AhoCorasick;

struct Needle {
    kind: String,
    label: String,
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            files(&path, out)?;
        } else if path.file_name().is_some_and(|n| n != "canaries.txt") {
            out.push(path);
        }
    }
    Ok(())
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    (0..text.len()).step_by(2).map(|i| text.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok())).collect()
}

fn main() -> std::process::ExitCode {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: canary-sweep <dir>");
        return std::process::ExitCode::from(2);
    };
    let listed = std::fs::read_to_string(dir.join("canaries.txt")).unwrap_or_default();
    let unique: BTreeSet<(&str, &str)> = listed.lines().filter_map(|line| line.split_once('\t')).collect();
    let mut needles = Vec::new();
    let mut patterns: Vec<Vec<u8>> = Vec::new();
    for (kind, value) in &unique {
        let label = format!("{kind} {}…", value.chars().take(10).collect::<String>());
        patterns.push(value.as_bytes().to_vec());
        needles.push(Needle { kind: kind.to_string(), label: label.clone() });
        // A master key could leak as its raw bytes too.
        if *kind == "master_key" {
            if let Some(raw) = hex_decode(value) {
                patterns.push(raw);
                needles.push(Needle { kind: kind.to_string(), label: format!("{label} (raw bytes)") });
            }
        }
    }
    let mut paths = Vec::new();
    if let Err(e) = files(&dir, &mut paths) {
        eprintln!("canary-sweep: reading {}: {e}", dir.display());
        return std::process::ExitCode::from(2);
    }
    let Ok(matcher) = AhoCorasick::new(&patterns) else {
        eprintln!("canary-sweep: could not build the matcher");
        return std::process::ExitCode::from(2);
    };
    let (mut bytes_searched, mut hits) = (0u64, 0usize);
    for path in &paths {
        let Ok(data) = std::fs::read(path) else { continue };
        bytes_searched += data.len() as u64;
        let is_replies = path.file_name().is_some_and(|n| n == "replies.log");
        for found in matcher.find_overlapping_iter(&data) {
            let needle = &needles[found.pattern().as_usize()];
            if is_replies && needle.kind == "token" {
                continue;
            }
            hits += 1;
            let start = found.start().saturating_sub(80);
            let context = String::from_utf8_lossy(&data[start..(found.end() + 40).min(data.len())]).replace('\n', "⏎");
            eprintln!("HIT {} in {} at byte {}: …{context}…", needle.label, path.display(), found.start());
        }
    }
    let kinds: BTreeSet<&str> = unique.iter().map(|(k, _)| *k).collect();
    println!(
        "canary sweep: {} canaries ({}), {} files, {:.1} MiB searched, {hits} hits",
        unique.len(),
        kinds.into_iter().map(|k| format!("{k}: {}", unique.iter().filter(|(kind, _)| *kind == k).count())).collect::<Vec<_>>().join(", "),
        paths.len(),
        bytes_searched as f64 / (1024.0 * 1024.0),
    );
    if hits > 0 || unique.is_empty() {
        if unique.is_empty() {
            eprintln!("canary-sweep: no canaries were listed; was the suite run with TOLLGATE_CANARY_SWEEP?");
        }
        return std::process::ExitCode::FAILURE;
    }
    std::process::ExitCode::SUCCESS
}
