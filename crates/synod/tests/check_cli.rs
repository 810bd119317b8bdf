//! `synod check` on its inputs: a history with no operations is an input error, not a
//! verdict, and the exit codes say so.

use std::path::{Path, PathBuf};
use std::process::Command;

fn synod_check(args: &[&str], file: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_synod"))
        .arg("check")
        .args(args)
        .arg(file)
        .output()
        .expect("run synod check");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn scratch(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("synod-check-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn an_empty_history_is_an_input_error_with_exit_code_2() {
    let file = scratch("empty.log", "");
    let (code, stdout, stderr) = synod_check(&["--format", "jepsen"], &file);
    assert_eq!(code, 2, "stdout: {stdout}\nstderr: {stderr}");
    assert!(stderr.contains("no operations found"), "{stderr}");
    assert!(!stdout.contains("\tlinearizable"), "{stdout}");
}

#[test]
fn a_file_of_lines_in_another_format_is_an_input_error() {
    let file = scratch("other.log", "hello world\nthis is not a jepsen history\n");
    let (code, _, stderr) = synod_check(&["--format", "jepsen"], &file);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("no operations found in 2 non-empty lines"), "{stderr}");
}

#[test]
fn allow_empty_accepts_a_run_that_recorded_nothing() {
    let file = scratch("empty-ok.log", "");
    let (code, stdout, _) = synod_check(&["--format", "jepsen", "--allow-empty"], &file);
    assert_eq!(code, 0);
    assert!(stdout.contains("\tlinearizable"), "{stdout}");
}

#[test]
fn a_real_history_is_checked_with_exit_code_0() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/jepsen-etcd/etcd_000.log");
    let (code, stdout, stderr) = synod_check(&["--format", "jepsen"], &file);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("etcd_000.log\t"), "{stdout}");
}
