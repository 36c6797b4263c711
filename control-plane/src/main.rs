//! `ferrule-control-plane`: see the crate docs of `ferrule_control_plane`.

use std::process::ExitCode;

use clap::Parser;
use ferrule_control_plane::{app, config::Args};

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            // Usage errors exit 64 (EX_USAGE); --help and --version exit 0.
            let code = if e.use_stderr() { 64 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let log_json = args.log_format == "json";
    ferrule_control_plane::telemetry::init_logging(log_json);
    let config = match args.validate() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ferrule-control-plane: configuration error: {e}");
            return ExitCode::from(64);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ferrule-control-plane: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(app::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "control plane stopped");
            eprintln!("ferrule-control-plane: {e:#}");
            ExitCode::FAILURE
        }
    }
}
