//! `synod check` (in progress).

use std::process::ExitCode;

#[derive(clap::Args)]
pub struct CheckArgs {}

pub fn run(_args: CheckArgs) -> ExitCode {
    eprintln!("synod check: not built yet");
    ExitCode::FAILURE
}
