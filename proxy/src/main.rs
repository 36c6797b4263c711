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
            // SAFETY: no other thread exists yet (logging and config validation start none;
            // the runtime is built below), as mallopt(3) requires.
            let heap = unsafe { ferrule_proxy::memory::tune_heap() };
            let trim = ferrule_proxy::memory::TRIM_THRESHOLD;
            let mmap = ferrule_proxy::memory::MMAP_THRESHOLD;
            if heap == ferrule_proxy::memory::HeapTuning::Applied {
                tracing::debug!(
                    ?heap,
                    trim_threshold = trim,
                    mmap_threshold = mmap,
                    "heap tuning"
                );
            } else {
                tracing::info!(
                    ?heap,
                    "heap tuning not applied in full: allocator defaults or the operator's settings"
                );
            }
            let flavor = match ferrule_proxy::runtime::flavor_from_env() {
                Ok(f) => f,
                Err(e) => {
                    eprintln!("ferrule-proxy: configuration error: {e}");
                    return ExitCode::from(64);
                }
            };
            let rt = match ferrule_proxy::runtime::build(flavor) {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("ferrule-proxy: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            tracing::info!(?flavor, "runtime");
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
