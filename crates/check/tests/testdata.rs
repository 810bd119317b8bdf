//! The Jepsen histories redistributed with Porcupine: every known verdict is reproduced.

mod common;

use std::time::Duration;

use common::{check_file, files, testdata_dir, verdicts, Set, ETCD, KV};
use synod_check::Verdict;

const BUDGET: Duration = Duration::from_secs(60);

fn reproduces_verdicts_tsv(set: Set) {
    let expected = verdicts(set);
    assert!(!expected.is_empty());
    for (file, want) in expected {
        let path = testdata_dir().join(set.dir).join(&file);
        let got = check_file(set, &path, BUDGET, false).verdict;
        assert_eq!(got.to_string(), want, "{file}");
    }
}

#[test]
fn etcd_histories_reproduce_their_known_verdicts() {
    reproduces_verdicts_tsv(ETCD);
}

#[test]
fn kv_histories_reproduce_their_known_verdicts() {
    reproduces_verdicts_tsv(KV);
}

/// The etcd histories from 050 on that are linearizable, as Porcupine's own test suite
/// (`porcupine_test.go`, `TestEtcdJepsen050`..`102`) has them; all others from 050 on are
/// not. (095 is an empty run: trivially linearizable.)
const ETCD_LINEARIZABLE_FROM_050: [u32; 14] = [51, 53, 56, 67, 75, 76, 80, 87, 92, 95, 98, 100, 101, 102];

#[test]
fn every_etcd_history_gets_its_known_verdict_and_none_is_unknown() {
    let mut summary = String::new();
    let files = files(ETCD);
    assert!(files.len() >= 102, "expected etcd_000..etcd_101 at least, found {}", files.len());
    for path in files {
        let a = check_file(ETCD, &path, BUDGET, false);
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        summary.push_str(&format!("{name}\t{}\n", a.verdict));
        assert_ne!(a.verdict, Verdict::Unknown, "{name}: {:?}", a.note);
        let n: u32 = name.trim_start_matches("etcd_").trim_end_matches(".log").parse().unwrap();
        if n >= 50 {
            let want = if ETCD_LINEARIZABLE_FROM_050.contains(&n) {
                Verdict::Linearizable
            } else {
                Verdict::NotLinearizable
            };
            assert_eq!(a.verdict, want, "{name}");
        }
    }
    println!("{summary}");
}

#[test]
fn the_empty_etcd_run_is_linearizable() {
    let a = check_file(ETCD, &testdata_dir().join("jepsen-etcd/etcd_095.log"), BUDGET, false);
    assert_eq!((a.verdict, a.operations.len()), (Verdict::Linearizable, 0));
}

#[test]
fn violations_are_explained_down_to_the_failing_key_and_prefix() {
    let a = check_file(KV, &testdata_dir().join("kv/c10-bad.txt"), BUDGET, true);
    let v = a.violation.as_ref().expect("a violation");
    assert!(v.key.is_some());
    assert!(v.cut.is_some(), "the prefix was shrunk");
    let text = a.explain_text();
    assert!(text.contains("NOT LINEARIZABLE at key"), "{text}");
    assert!(text.contains("Longest partial linearization"), "{text}");
    assert!(text.contains("History around it"), "{text}");
    // The blocked operation completes at or before the cut.
    let blocked = &a.operations[v.blocked];
    assert!(blocked.call <= v.cut.unwrap());
}

#[test]
fn html_timelines_are_self_contained() {
    for (set, file) in
        [(ETCD, "jepsen-etcd/etcd_000.log"), (ETCD, "jepsen-etcd/etcd_002.log"), (KV, "kv/c10-bad.txt")]
    {
        let a = check_file(set, &testdata_dir().join(file), BUDGET, true);
        let page = synod_check::html::render(file, &a);
        assert!(page.starts_with("<!DOCTYPE html>") && page.trim_end().ends_with("</html>"));
        assert!(!page.contains("http://") && !page.contains("https://"), "{file}: fetches something");
        assert!(!page.contains("<script src") && !page.contains("<link"), "{file}: external resource");
        assert!(page.contains(&a.verdict.to_string()));
        if a.verdict == Verdict::NotLinearizable {
            assert!(
                page.contains("class=\"op blocked") || page.contains(" blocked"),
                "{file}: no failure point"
            );
            assert!(page.contains("class=\"cut\""), "{file}: no cut line");
        }
    }
}

/// Key "0" of c50-bad alone takes the search longer than any sane budget (its failure
/// needs an exhaustive search of a huge space): the answer must be `unknown`, on time.
#[test]
fn a_history_past_its_budget_is_unknown_not_a_guess() {
    let path = testdata_dir().join("kv/c50-bad.txt");
    let text = std::fs::read_to_string(path).unwrap();
    let parsed = synod_check::formats::parse(KV.format, &text).unwrap();
    let key0: Vec<_> = parsed.events.into_iter().filter(|e| e.key.as_deref() == Some("0")).collect();
    let opts = synod_check::CheckOptions { budget: Duration::from_millis(300), kv_missing_is_empty: true };
    let started = std::time::Instant::now();
    let report = synod_check::check(KV.model, &key0, &opts);
    assert_eq!(report.verdict, Verdict::Unknown);
    assert!(report.explanation.unwrap().contains("budget"));
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
}
