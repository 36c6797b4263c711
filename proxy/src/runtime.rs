//! The tokio runtime the proxy runs on.
//!
//! One worker thread per CPU the process may use (`std::thread::available_parallelism`,
//! which honours CPU affinity and cgroup CPU quotas), or `TOKIO_WORKER_THREADS`, tokio's own
//! knob, when it is set. With a single worker the proxy runs on a current-thread runtime
//! rather than a one-worker multi-thread one, as linkerd2-proxy does: with one worker there
//! is nobody to steal work from, and the multi-thread scheduler's bookkeeping (atomics, its
//! injection queue, handing the I/O driver between threads) costs CPU on every wake-up of
//! every connection. The proxy's tasks are the same either way: all of them are spawned,
//! none blocks its thread (`block_in_place` would not run on a current-thread runtime).

use std::num::NonZeroUsize;

/// Tokio's environment variable for the number of worker threads.
pub const WORKERS_ENV: &str = "TOKIO_WORKER_THREADS";

/// Which scheduler the runtime uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// One thread runs every task (one worker).
    CurrentThread,
    /// Work-stealing scheduler with this many worker threads (two or more).
    MultiThread(usize),
}

/// A `TOKIO_WORKER_THREADS` value that is not a positive integer (tokio itself would panic).
#[derive(Debug, thiserror::Error)]
#[error("{WORKERS_ENV}={0:?}: expected a positive integer (the number of worker threads)")]
pub struct BadWorkers(pub String);

/// The scheduler for `env` (the value of `TOKIO_WORKER_THREADS`, if set) on a machine that
/// lets the process use `cpus` CPUs.
pub fn flavor(env: Option<&str>, cpus: NonZeroUsize) -> Result<Flavor, BadWorkers> {
    let workers = match env {
        None => cpus.get(),
        Some(v) => match v.trim().parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => return Err(BadWorkers(v.to_owned())),
        },
    };
    Ok(if workers == 1 {
        Flavor::CurrentThread
    } else {
        Flavor::MultiThread(workers)
    })
}

/// The flavor for this process: its environment and CPUs.
pub fn flavor_from_env() -> Result<Flavor, BadWorkers> {
    let env = std::env::var_os(WORKERS_ENV).map(|v| v.to_string_lossy().into_owned());
    let cpus = std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN);
    flavor(env.as_deref(), cpus)
}

/// Builds a runtime of `flavor`, with I/O and timers.
pub fn build(flavor: Flavor) -> std::io::Result<tokio::runtime::Runtime> {
    match flavor {
        Flavor::CurrentThread => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Flavor::MultiThread(n) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpus(n: usize) -> NonZeroUsize {
        NonZeroUsize::new(n).unwrap()
    }

    #[test]
    fn one_worker_runs_on_the_current_thread() {
        assert_eq!(flavor(None, cpus(1)).unwrap(), Flavor::CurrentThread);
        assert_eq!(flavor(Some("1"), cpus(8)).unwrap(), Flavor::CurrentThread);
    }

    #[test]
    fn several_workers_run_multi_threaded() {
        assert_eq!(flavor(None, cpus(2)).unwrap(), Flavor::MultiThread(2));
        assert_eq!(flavor(Some("3"), cpus(1)).unwrap(), Flavor::MultiThread(3));
        assert_eq!(
            flavor(Some(" 4 "), cpus(1)).unwrap(),
            Flavor::MultiThread(4)
        );
    }

    #[test]
    fn refuses_what_tokio_would_panic_on() {
        for bad in ["0", "", "two", "-1", "1.5"] {
            let e = flavor(Some(bad), cpus(2)).unwrap_err();
            assert!(e.to_string().contains(WORKERS_ENV), "{e}");
        }
    }

    #[test]
    fn both_flavors_run_tasks() {
        for f in [Flavor::CurrentThread, Flavor::MultiThread(2)] {
            let rt = build(f).unwrap();
            let n = rt.block_on(async { tokio::spawn(async { 21 * 2 }).await.unwrap() });
            assert_eq!(n, 42);
        }
    }
}
