//! Logging set-up and small helpers shared by the proxy's background tasks.

use std::time::Duration;

use tracing_subscriber::EnvFilter;

/// Changes the log filter at run time (the admin endpoint's `PUT /log-level`).
#[derive(Clone)]
pub struct LogLevel(std::sync::Arc<SetFilter>);

/// Applies a filter directive, or says why it cannot.
type SetFilter = dyn Fn(&str) -> Result<(), String> + Send + Sync;

impl LogLevel {
    /// Applies a new filter directive such as `debug` or `info,ferrule_proxy=trace`.
    pub fn set(&self, directives: &str) -> Result<(), String> {
        (self.0)(directives)
    }

    /// A handle that changes nothing (tests, embedding).
    pub fn noop() -> Self {
        Self(std::sync::Arc::new(|_| {
            Err("log level cannot be changed here".into())
        }))
    }
}

/// Installs the global subscriber: text by default, JSON on request; level from
/// `RUST_LOG` (default `info`), changeable later through the returned handle.
pub fn init_logging(json: bool) -> LogLevel {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    if json {
        registry.with(fmt.json()).init();
    } else {
        registry.with(fmt).init();
    }
    LogLevel(std::sync::Arc::new(move |d: &str| {
        let f = EnvFilter::try_new(d).map_err(|e| format!("invalid filter {d:?}: {e}"))?;
        handle.reload(f).map_err(|e| e.to_string())
    }))
}

/// `error: cause: cause ...`, skipping repeated messages: for logs and messages whose
/// top-level error alone says too little (hyper's "http2 error", tonic's "transport
/// error").
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let msg = c.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        cur = c.source();
    }
    out
}

/// Capped exponential backoff with full jitter.
#[derive(Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    /// Starts at `min`, doubling up to `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            current: min,
        }
    }

    /// The next delay: a random value in `[current/2, current]`, then doubles `current`.
    pub fn next_delay(&mut self) -> Duration {
        let cur = self.current;
        self.current = (self.current * 2).min(self.max);
        let half = cur / 2;
        half + half.mul_f64(rand::random::<f64>())
    }

    /// Back to the minimum after a success.
    pub fn reset(&mut self) {
        self.current = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
        let delays: Vec<_> = (0..6).map(|_| b.next_delay()).collect();
        assert!(delays[0] <= Duration::from_millis(100));
        assert!(delays[0] >= Duration::from_millis(50));
        for d in &delays {
            assert!(*d <= Duration::from_millis(800));
        }
        assert!(delays[5] >= Duration::from_millis(400));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
