//! `synod bench` (in progress).

use std::process::ExitCode;

#[derive(clap::Args)]
pub struct BenchArgs {}

pub fn run(_args: BenchArgs) -> ExitCode {
    eprintln!("synod bench: not built yet");
    ExitCode::FAILURE
}
