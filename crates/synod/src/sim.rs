//! `synod sim` (in progress).

use std::process::ExitCode;

#[derive(clap::Args)]
pub struct SimArgs {}

pub fn run(_args: SimArgs) -> ExitCode {
    eprintln!("synod sim: not built yet");
    ExitCode::FAILURE
}
