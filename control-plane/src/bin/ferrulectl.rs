//! `ferrulectl`: the Ferrule admin CLI. See `ferrule_control_plane::ctl`.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = match ferrule_control_plane::ctl::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // Usage errors exit 64 (EX_USAGE); --help and --version exit 0.
            let code = if e.use_stderr() {
                ferrule_control_plane::ctl::EXIT_USAGE
            } else {
                0
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    ferrule_control_plane::ctl::run(cli).await
}
