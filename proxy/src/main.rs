//! `ferrule-proxy`: see the crate docs of `ferrule_proxy`.

use std::process::ExitCode;

use clap::Parser;
use ferrule_proxy::config::{Cli, Command};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // Usage errors exit 64 (EX_USAGE); --help and --version exit 0.
            let code = if e.use_stderr() { 64 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match cli.command {
        // Exit 0, 1 on failure, 64 on a bad flag value; see `ferrule_proxy::intercept`.
        Command::Init(args) => ferrule_proxy::intercept::run_init(args),
        Command::Run(args) => {
            let log_level = ferrule_proxy::telemetry::init_logging(args.log_format == "json");
            let config = match args.validate() {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("ferrule-proxy: configuration error: {e}");
                    return ExitCode::from(64);
                }
            };
            // Before the runtime's threads exist (each gets its own malloc arena).
            let heap = ferrule_proxy::memory::tune_heap();
            tracing::debug!(
                ?heap,
                trim_threshold = ferrule_proxy::memory::TRIM_THRESHOLD,
                mmap_threshold = ferrule_proxy::memory::MMAP_THRESHOLD,
                "heap tuning"
            );
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("ferrule-proxy: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(ferrule_proxy::app::run(config, log_level)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("ferrule-proxy: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
