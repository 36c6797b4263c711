//! Heap tuning for the data path: how glibc's allocator returns memory to the kernel.
//!
//! Relaying a bulk transfer, a proxy holds bursts of buffers and frees them together: on a
//! pooled hop, the DATA frames of a stream wait in h2 (up to a stream window,
//! [`STREAM_WINDOW`]) until the application takes them. With glibc's defaults (trim
//! threshold 128 KiB, raised only when a block above the 128 KiB `mmap` threshold is
//! freed, which our ≤ 64 KiB buffers never are), each burst freed at the top of the heap is
//! handed back to the kernel and faulted back in by the next: measured ~140 page faults
//! per MiB on the decrypting proxy, 10–25 % of its CPU (benches/README.md, "Heap trimming").
//! [`tune_heap`] keeps up to [`TRIM_THRESHOLD`] free at the top of each heap instead.
//!
//! The cost is resident memory after a burst: at most [`TRIM_THRESHOLD`] per malloc arena
//! (about one per worker thread), nothing on an idle proxy. An operator who sets any
//! `glibc.malloc.*` tunable in `GLIBC_TUNABLES` keeps their own settings. Only on glibc;
//! other C libraries keep their allocator's defaults.

use crate::hop::mux::STREAM_WINDOW;

/// Free memory kept at the top of a heap before it is returned to the kernel: two stream
/// windows, so one stream's burst and the next fit without a trim.
pub const TRIM_THRESHOLD: usize = 2 * STREAM_WINDOW as usize;
/// Blocks at least this large get their own `mmap`. Fixed (setting the trim threshold turns
/// off glibc's adaptive thresholds), above the proxy's largest buffers.
pub const MMAP_THRESHOLD: usize = 1 << 20;

/// What [`tune_heap`] did, for the start-up log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeapTuning {
    /// Both thresholds set.
    Applied,
    /// `GLIBC_TUNABLES` names a `glibc.malloc.*` tunable: left to the operator.
    OperatorTunables,
    /// The C library refused a setting (or is not glibc).
    Unsupported,
}

/// Whether a `GLIBC_TUNABLES` value sets any of the allocator's tunables.
pub fn operator_sets_malloc(tunables: Option<&str>) -> bool {
    tunables.is_some_and(|t| {
        t.split(':')
            .any(|kv| kv.trim_start().starts_with("glibc.malloc."))
    })
}

/// Applies [`TRIM_THRESHOLD`] and [`MMAP_THRESHOLD`]. Call once at start, before the runtime
/// spawns its threads.
pub fn tune_heap() -> HeapTuning {
    if operator_sets_malloc(std::env::var("GLIBC_TUNABLES").ok().as_deref()) {
        return HeapTuning::OperatorTunables;
    }
    if set_thresholds() {
        HeapTuning::Applied
    } else {
        HeapTuning::Unsupported
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_thresholds() -> bool {
    let trim = libc::c_int::try_from(TRIM_THRESHOLD).unwrap_or(libc::c_int::MAX);
    let mmap = libc::c_int::try_from(MMAP_THRESHOLD).unwrap_or(libc::c_int::MAX);
    // SAFETY: mallopt(3) takes two integers and changes allocator parameters under the
    // allocator's own lock; it touches no memory of ours. It returns 1 on success, 0 on error.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, trim) == 1
            && libc::mallopt(libc::M_MMAP_THRESHOLD, mmap) == 1
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_thresholds() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operator_malloc_tunables_are_left_alone() {
        assert!(operator_sets_malloc(Some("glibc.malloc.trim_threshold=1")));
        assert!(operator_sets_malloc(Some(
            "glibc.cpu.hwcaps=-AVX2:glibc.malloc.arena_max=2"
        )));
        assert!(!operator_sets_malloc(Some("glibc.cpu.hwcaps=-AVX2")));
        assert!(!operator_sets_malloc(Some("")));
        assert!(!operator_sets_malloc(None));
    }

    #[test]
    fn thresholds_fit_the_buffers_they_protect() {
        // A burst is at most a stream window of DATA frames; both must fit under the trim
        // threshold, and a single frame buffer must stay below the mmap threshold.
        assert!(TRIM_THRESHOLD >= 2 * STREAM_WINDOW as usize);
        assert!(MMAP_THRESHOLD > crate::hop::mux::MAX_FRAME as usize);
        assert!(libc::c_int::try_from(TRIM_THRESHOLD).is_ok());
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn glibc_accepts_the_thresholds() {
        assert!(set_thresholds());
    }
}
