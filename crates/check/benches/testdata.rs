//! `cargo bench -p synod-check`: times checking all of the Jepsen test data, per set and
//! in total, the way `synod check` does it (files in parallel on all cores, one budget
//! each). Each measurement is repeated; the minimum and the median are printed.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{check_file, files, Set, ETCD, KV};
use rayon::prelude::*;
use synod_check::Verdict;

const REPEATS: usize = 7;
const BUDGET: Duration = Duration::from_secs(10);

fn run_set(set: Set, files: &[PathBuf], explain: bool) -> (Duration, usize) {
    let started = Instant::now();
    let unknown = files
        .par_iter()
        .map(|f| check_file(set, f, BUDGET, explain).verdict)
        .filter(|v| *v == Verdict::Unknown)
        .count();
    (started.elapsed(), unknown)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument is a filter we do not support.
    let sets = [("jepsen-etcd", ETCD), ("kv", KV)];
    println!("threads: {}", rayon::current_num_threads());
    for explain in [false, true] {
        let mode = if explain { "with explanations" } else { "verdicts only" };
        let mut totals = Vec::new();
        let mut per_set: Vec<Vec<Duration>> = vec![Vec::new(); sets.len()];
        for _ in 0..REPEATS {
            let mut total = Duration::ZERO;
            for (i, (name, set)) in sets.iter().enumerate() {
                let fs = files(*set);
                let (d, unknown) = run_set(*set, &fs, explain);
                assert_eq!(unknown, 0, "{name}: {unknown} unknown verdicts");
                per_set[i].push(d);
                total += d;
            }
            totals.push(total);
        }
        for (i, (name, set)) in sets.iter().enumerate() {
            let v = &mut per_set[i];
            v.sort();
            println!(
                "{mode:<18} {name:<12} {:>3} files  min {:>7.1} ms  median {:>7.1} ms",
                files(*set).len(),
                ms(v[0]),
                ms(v[REPEATS / 2])
            );
        }
        totals.sort();
        println!(
            "{mode:<18} {:<12} {:>3}        min {:>7.1} ms  median {:>7.1} ms",
            "total",
            "",
            ms(totals[0]),
            ms(totals[REPEATS / 2])
        );
    }
}
