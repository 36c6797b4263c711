//! `ferrulectl`: the Ferrule admin CLI. See `ferrule_control_plane::ctl`.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = ferrule_control_plane::ctl::Cli::parse();
    ferrule_control_plane::ctl::run(cli).await
}
