//! The Markdown table of a run. With two systems it sets Synod beside etcd point by
//! point, with the ratio Synod/etcd of throughput, p99 latency and server CPU per 1,000
//! operations; a workload only Synod runs gets "—" where etcd's numbers would be.

use std::fmt::Write;

use super::report::Row;

/// What a reader needs to read the ratios: which way is better.
pub(super) const RATIO_LEGEND: &str = "Ratios are Synod/etcd: above 1 is better for throughput, below 1 is \
                                       better for p99 latency and for CPU per operation.";

const MISSING: &str = "—";

/// The points of a run, each (workload, clients) once, in the order they first ran.
pub(super) fn points(rows: &[Row]) -> Vec<(&'static str, usize)> {
    let mut points = Vec::new();
    for row in rows {
        if !points.contains(&(row.workload, row.clients)) {
            points.push((row.workload, row.clients));
        }
    }
    points
}

fn find<'a>(rows: &'a [Row], system: &str, workload: &str, clients: usize) -> Option<&'a Row> {
    rows.iter().find(|r| r.system == system && r.workload == workload && r.clients == clients)
}

/// `synod / other`, when both are known and the quotient means something.
pub(super) fn ratio(synod: Option<f64>, other: Option<f64>) -> Option<f64> {
    let (synod, other) = (synod?, other?);
    let quotient = synod / other;
    (other > 0.0 && quotient.is_finite()).then_some(quotient)
}

/// `12,345` for people; throughput has no useful decimals at these rates.
fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// Milliseconds with about three significant digits.
fn millis(value: f64) -> String {
    match value {
        v if v < 10.0 => format!("{v:.2}"),
        v if v < 100.0 => format!("{v:.1}"),
        v => format!("{v:.0}"),
    }
}

fn or_missing<T>(value: Option<T>, format: impl Fn(T) -> String) -> String {
    value.map_or(MISSING.to_string(), format)
}

/// A ratio with about three significant digits: `0.013×` and `141×` both say something.
fn times(value: Option<f64>) -> String {
    or_missing(value, |v| match v {
        v if v >= 100.0 => format!("{v:.0}×"),
        v if v >= 10.0 => format!("{v:.1}×"),
        v if v >= 0.1 => format!("{v:.2}×"),
        v => format!("{v:.3}×"),
    })
}

/// The table: Synod beside etcd when the run measured etcd, else one line per row.
pub(super) fn markdown(rows: &[Row]) -> String {
    if rows.iter().any(|r| r.system == "etcd") {
        comparison(rows)
    } else {
        single(rows)
    }
}

fn comparison(rows: &[Row]) -> String {
    let mut out = String::new();
    out.push_str(
        "| workload | clients | Synod ops/s | etcd ops/s | Synod/etcd | Synod p99 ms | etcd p99 ms \
         | Synod/etcd | Synod CPU s/1k ops | etcd CPU s/1k ops | Synod/etcd |\n",
    );
    out.push_str("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
    for (workload, clients) in points(rows) {
        let synod = find(rows, "synod", workload, clients);
        let etcd = find(rows, "etcd", workload, clients);
        let throughput = |r: Option<&Row>| r.map(|r| r.throughput_ops_s);
        let p99 = |r: Option<&Row>| r.map(|r| r.p99_ms);
        let cpu = |r: Option<&Row>| r.and_then(|r| r.cpu_s_per_1k_ops);
        let _ = writeln!(
            out,
            "| {workload} | {clients} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            or_missing(throughput(synod), thousands),
            or_missing(throughput(etcd), thousands),
            times(ratio(throughput(synod), throughput(etcd))),
            or_missing(p99(synod), millis),
            or_missing(p99(etcd), millis),
            times(ratio(p99(synod), p99(etcd))),
            or_missing(cpu(synod), |v| format!("{v:.3}")),
            or_missing(cpu(etcd), |v| format!("{v:.3}")),
            times(ratio(cpu(synod), cpu(etcd))),
        );
    }
    out
}

fn single(rows: &[Row]) -> String {
    let mut out = String::new();
    out.push_str("| system | workload | clients | ops/s | p50 ms | p99 ms | p99.9 ms | CPU s/1k ops |\n");
    out.push_str("|---|---|--:|--:|--:|--:|--:|--:|\n");
    for row in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            row.system,
            row.workload,
            row.clients,
            thousands(row.throughput_ops_s),
            millis(row.p50_ms),
            millis(row.p99_ms),
            millis(row.p999_ms),
            or_missing(row.cpu_s_per_1k_ops, |v| format!("{v:.3}")),
        );
    }
    out
}

#[cfg(test)]
pub(super) mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// A row with the numbers that matter here; the rest plausible.
    pub(crate) fn row(
        system: &'static str,
        workload: &'static str,
        clients: usize,
        ops_s: f64,
        p99_ms: f64,
    ) -> Row {
        Row {
            system,
            workload,
            clients,
            duration_s: 10.0,
            ops: (ops_s * 10.0) as u64,
            throughput_ops_s: ops_s,
            transfers_s: None,
            p50_ms: p99_ms / 4.0,
            p99_ms,
            p999_ms: p99_ms * 2.0,
            mean_ms: p99_ms / 3.0,
            max_ms: p99_ms * 3.0,
            cpu_s_per_1k_ops: Some(ops_s / 100_000.0),
            client_cpu_s_per_1k_ops: Some(0.01),
            errors: BTreeMap::new(),
            server: None,
        }
    }

    fn cells(line: &str) -> Vec<&str> {
        line.trim_matches('|').split('|').map(str::trim).collect()
    }

    #[test]
    fn each_point_sets_synod_beside_etcd_with_the_ratio_synod_over_etcd() {
        let rows = [
            row("synod", "write", 1000, 20_000.0, 50.0),
            row("etcd", "write", 1000, 4_000.0, 500.0),
            row("synod", "transfer-batch", 1000, 300.0, 900.0),
        ];
        let table = markdown(&rows);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "header, rule, one line per point:\n{table}");
        assert_eq!(cells(lines[0]).len(), 11);
        assert_eq!(
            cells(lines[2]),
            ["write", "1000", "20,000", "4,000", "5.00×", "50.0", "500", "0.10×", "0.200", "0.040", "5.00×"]
        );
        // Synod's alone: etcd's cells and every ratio are "—".
        let batch = cells(lines[3]);
        assert_eq!(&batch[..3], ["transfer-batch", "1000", "300"]);
        assert_eq!(batch.iter().filter(|&&c| c == MISSING).count(), 6, "{batch:?}");
    }

    #[test]
    fn a_ratio_needs_both_numbers_and_a_denominator_above_zero() {
        assert_eq!(ratio(Some(3.0), Some(1.5)), Some(2.0));
        assert_eq!(ratio(Some(3.0), Some(0.0)), None);
        assert_eq!(ratio(None, Some(1.0)), None);
        assert_eq!(ratio(Some(1.0), None), None);
    }

    #[test]
    fn a_run_of_synod_alone_gets_one_line_per_row() {
        let table = markdown(&[row("synod", "read", 16, 1234.4, 2.4)]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(cells(lines[2]), ["synod", "read", "16", "1,234", "0.60", "2.40", "4.80", "0.012"]);
    }

    #[test]
    fn numbers_read_like_people_write_them() {
        assert_eq!(thousands(0.4), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1_000.0), "1,000");
        assert_eq!(thousands(1_234_567.0), "1,234,567");
        assert_eq!(
            (millis(0.123), millis(12.34), millis(123.4)),
            ("0.12".into(), "12.3".into(), "123".into())
        );
    }

    #[test]
    fn json_rows_carry_the_fields_the_issue_names() {
        let value = serde_json::to_value(row("etcd", "mixed", 64, 5_000.0, 12.0)).unwrap();
        for field in [
            "system",
            "workload",
            "clients",
            "throughput_ops_s",
            "p50_ms",
            "p99_ms",
            "p999_ms",
            "cpu_s_per_1k_ops",
        ] {
            assert!(!value[field].is_null(), "{field} in {value}");
        }
        assert_eq!(value["system"], "etcd");
        assert_eq!(value["clients"], 64);
    }
}
