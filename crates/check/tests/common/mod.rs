//! Shared by the integration tests and the benchmark: where the Porcupine/Jepsen test data
//! lives, and how to check one file of it.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use synod_check::formats::{self, Format};
use synod_check::{analyze, Analysis, CheckOptions, ModelKind};

/// `$SYNOD_TESTDATA` if set, else the repository's own `testdata/` (vendored with its
/// licence notice, so a clone of the repository alone runs every test).
pub fn testdata_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SYNOD_TESTDATA") {
        return PathBuf::from(dir);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata")
}

/// One set of histories: its directory, format, model and options.
#[derive(Clone, Copy)]
pub struct Set {
    pub dir: &'static str,
    pub format: Format,
    pub model: ModelKind,
    pub kv_missing_is_empty: bool,
}

pub const ETCD: Set = Set {
    dir: "jepsen-etcd",
    format: Format::Jepsen,
    model: ModelKind::Register,
    kv_missing_is_empty: false,
};
pub const KV: Set =
    Set { dir: "kv", format: Format::JepsenKv, model: ModelKind::Kv, kv_missing_is_empty: true };

/// The history files of a set, sorted by name.
pub fn files(set: Set) -> Vec<PathBuf> {
    let dir = testdata_dir().join(set.dir);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e} (set SYNOD_TESTDATA?)", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("log" | "txt")))
        .collect();
    v.sort();
    v
}

/// `VERDICTS.tsv` of a set: file name -> verdict word.
pub fn verdicts(set: Set) -> Vec<(String, String)> {
    let path = testdata_dir().join(set.dir).join("VERDICTS.tsv");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (f, v) = l.split_once('\t').unwrap_or_else(|| panic!("bad VERDICTS line {l:?}"));
            (f.to_string(), v.trim().to_string())
        })
        .collect()
}

pub fn check_file(set: Set, path: &Path, budget: Duration, explain: bool) -> Analysis {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let parsed = formats::parse(set.format, &text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let opts = CheckOptions { budget, kv_missing_is_empty: set.kv_missing_is_empty };
    analyze(set.model, &parsed.events, &opts, explain).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
