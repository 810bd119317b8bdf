//! `synod bench` end to end: it starts its own cluster, runs every workload briefly and
//! writes the comparison's rows. Numbers are not checked here (two shared cores make
//! them noise); shapes and the absence of errors are.

use std::process::Command;
use std::time::Instant;

use serde_json::Value;

#[test]
fn bench_runs_every_workload_against_a_cluster_it_starts_and_writes_json_rows() {
    let dir = std::env::temp_dir().join(format!("synod-it-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json_path = dir.join("rows.json");
    let (markdown_path, plot_path) = (dir.join("table.md"), dir.join("plot.svg"));
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_synod"))
        .args(["bench", "--start-cluster", "--workload", "write,read,mixed,transfer,transfer-batch"])
        .args(["--clients", "1,4", "--duration", "300ms", "--warmup", "100ms"])
        .args(["--keys", "300", "--accounts", "20", "--batch", "10"])
        .arg("--json")
        .arg(&json_path)
        .arg("--markdown")
        .arg(&markdown_path)
        .arg("--plot")
        .arg(&plot_path)
        .output()
        .expect("run synod bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "synod bench failed: {}\n{stdout}\n{stderr}", output.status);
    eprintln!("{stdout}");
    eprintln!("bench run took {} ms", started.elapsed().as_millis());

    let rows: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    let markdown = std::fs::read_to_string(&markdown_path).unwrap();
    let svg = std::fs::read_to_string(&plot_path).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    // Header, rule, and one line per row; two panels per workload in the picture.
    assert_eq!(markdown.lines().count(), 2 + 10, "{markdown}");
    assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
    assert_eq!(svg.matches("clients (log scale)").count(), 10);
    assert_eq!(rows.len(), 10, "one row per workload and client count");
    for row in &rows {
        assert_eq!(row["system"], "synod");
        for field in ["throughput_ops_s", "p50_ms", "p99_ms", "p999_ms"] {
            assert!(row[field].as_f64().is_some_and(|v| v > 0.0), "{field} in {row}");
        }
        // Known (we started the servers), though a short point may round to zero ticks.
        assert!(row["cpu_s_per_1k_ops"].as_f64().is_some_and(|v| v >= 0.0), "{row}");
        assert!(row["p50_ms"].as_f64() <= row["p99_ms"].as_f64(), "{row}");
        assert!(row["p99_ms"].as_f64() <= row["p999_ms"].as_f64(), "{row}");
        assert_eq!(row["errors"], serde_json::json!({}), "{row}");
        let (ops_s, transfers_s) = (row["throughput_ops_s"].as_f64().unwrap(), row["transfers_s"].as_f64());
        let per_request = match row["workload"].as_str().unwrap() {
            "transfer-batch" => Some(10.0),
            "transfer" => Some(1.0),
            _ => None,
        };
        match per_request {
            Some(n) => assert!((transfers_s.unwrap() - n * ops_s).abs() < 1e-6 * ops_s, "{row}"),
            None => assert!(transfers_s.is_none(), "{row}"),
        }
    }
    let workloads: Vec<&str> = rows.iter().map(|r| r["workload"].as_str().unwrap()).collect();
    assert_eq!(
        workloads,
        [
            "write",
            "write",
            "read",
            "read",
            "mixed",
            "mixed",
            "transfer",
            "transfer",
            "transfer-batch",
            "transfer-batch"
        ]
    );
    // The table for people names every workload too.
    for workload in ["write", "read", "mixed", "transfer", "transfer-batch"] {
        assert!(stdout.contains(workload), "{stdout}");
    }
}

#[test]
fn bench_refuses_unbounded_requests_with_a_reason() {
    for (flag, value, reason) in [
        ("--clients", "2001", "--clients 2001"),
        ("--duration", "11m", "--duration"),
        ("--batch", "0", "--batch"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_synod")).args(["bench", flag, value]).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{flag} {value}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(reason), "{flag} {value}: {stderr}");
    }
}

#[cfg(not(feature = "etcd"))]
#[test]
fn comparing_with_etcd_in_a_build_without_its_client_says_how_to_build_one() {
    let output = Command::new(env!("CARGO_BIN_EXE_synod"))
        .args(["bench", "--compare", "etcd", "--quick"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for hint in ["--features etcd", "protobuf-compiler", "etcd-server"] {
        assert!(stderr.contains(hint), "{hint}: {stderr}");
    }
}

/// The comparison end to end: both clusters, every workload, the ratio table. Skips
/// where no `etcd` program is installed, unless SYNOD_REQUIRE_ETCD=1.
#[cfg(feature = "etcd")]
#[test]
fn compare_with_etcd_measures_both_systems_in_one_run_and_prints_the_ratios() {
    let have_etcd = Command::new("etcd").arg("--version").output().is_ok_and(|o| o.status.success());
    if !have_etcd {
        assert!(
            std::env::var("SYNOD_REQUIRE_ETCD").as_deref() != Ok("1"),
            "SYNOD_REQUIRE_ETCD=1 but no etcd program (apt-get install -y etcd-server)"
        );
        eprintln!("skipped: etcd unavailable");
        return;
    }
    let dir = std::env::temp_dir().join(format!("synod-it-bench-etcd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json_path = dir.join("rows.json");
    let output = Command::new(env!("CARGO_BIN_EXE_synod"))
        .args(["bench", "--compare", "etcd", "--quick", "--clients", "1,4"])
        .args([
            "--duration",
            "300ms",
            "--warmup",
            "200ms",
            "--keys",
            "300",
            "--accounts",
            "20",
            "--batch",
            "10",
        ])
        .arg("--json")
        .arg(&json_path)
        .output()
        .expect("run synod bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "synod bench failed: {}\n{stdout}\n{stderr}", output.status);
    let rows: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    // Synod: 5 workloads x 2 counts; etcd: all but transfer-batch.
    let count = |system: &str| rows.iter().filter(|r| r["system"] == system).count();
    assert_eq!((count("synod"), count("etcd")), (10, 8));
    for row in &rows {
        assert!(row["throughput_ops_s"].as_f64().is_some_and(|v| v > 0.0), "{row}");
        assert!(row["cpu_s_per_1k_ops"].as_f64().is_some(), "both servers' CPU is known: {row}");
        assert_eq!(row["errors"], serde_json::json!({}), "{row}");
    }
    assert!(rows.iter().all(|r| r["system"] == "synod" || r["workload"] != "transfer-batch"));
    // The ratio table: a line per point, and transfer-batch with "—" for etcd.
    let table: Vec<&str> = stdout.lines().filter(|l| l.starts_with("| ")).collect();
    assert_eq!(table.len(), 1 + 10, "{stdout}");
    assert!(table.iter().any(|l| l.starts_with("| transfer-batch | 4 |") && l.contains("—")), "{stdout}");
    assert!(stdout.contains("Ratios are Synod/etcd"), "{stdout}");
    // Nothing of either cluster outlives the run.
    assert!(!stderr.contains("panicked"), "{stderr}");
}
