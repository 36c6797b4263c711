//! Heap tuning for the data path: how glibc's allocator returns memory to the kernel.
//!
//! Relaying a bulk transfer, a proxy holds bursts of buffers and frees them together: on a
//! pooled hop, the DATA frames of a stream wait in h2 (up to a stream window,
//! [`STREAM_WINDOW`]) until the application takes them. With glibc's defaults the trim
//! threshold stays at 128 KiB (glibc raises it only when a block above the 128 KiB `mmap`
//! threshold is freed, and the relay's buffers are at most 64 KiB), so each burst freed at the
//! top of the heap was handed back to the kernel and faulted back in by the next: 42–149 minor
//! page faults per MiB on the decrypting proxy, 8 % of its `perf` samples
//! (benches/README.md, "Heap trimming"). [`tune_heap`] keeps up to [`TRIM_THRESHOLD`] free at
//! the top of each heap instead.
//!
//! The cost is resident memory: a proxy that relayed a burst and went idle keeps up to
//! [`TRIM_THRESHOLD`] of freed memory per malloc arena (about one per thread that allocates),
//! plus whatever fragmentation leaves below the top; blocks of 128 KiB to 1 MiB now come from
//! the heap rather than their own `mmap`. A proxy that never relayed a burst keeps nothing.
//!
//! An operator who tunes the allocator (any `glibc.malloc.*` in `GLIBC_TUNABLES`, or one of
//! glibc's older `MALLOC_*_` variables) keeps their own settings. Only on glibc; other C
//! libraries keep their allocator's defaults.

use crate::hop::mux::STREAM_WINDOW;

/// Free memory kept at the top of a heap before it is returned to the kernel: two stream
/// windows, so one stream's burst and the next fit without a trim.
pub const TRIM_THRESHOLD: usize = 2 * STREAM_WINDOW as usize;
/// Blocks at least this large get their own `mmap`. Fixed (setting the trim threshold turns
/// off glibc's adaptive thresholds), above the proxy's largest buffers.
pub const MMAP_THRESHOLD: usize = 1 << 20;

/// glibc's older environment variables (before `GLIBC_TUNABLES`) for its allocator's parameters.
const MALLOC_ENV: [&str; 5] = [
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TOP_PAD_",
    "MALLOC_MMAP_MAX_",
    "MALLOC_ARENA_MAX",
];

/// What [`tune_heap`] did, for the start-up log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeapTuning {
    /// Both thresholds set.
    Applied,
    /// The operator tunes the allocator through the environment: left alone.
    OperatorTunables,
    /// Not glibc, or glibc refused the `mmap` threshold: nothing changed.
    Unsupported,
    /// The `mmap` threshold is set, the trim threshold was refused.
    Partial,
}

/// Whether the environment tunes glibc's allocator: a `glibc.malloc.*` entry in the
/// `GLIBC_TUNABLES` value `tunables`, or one of [`MALLOC_ENV`] among `names`.
pub fn operator_tunes_malloc<'a>(
    tunables: Option<&str>,
    mut names: impl Iterator<Item = &'a str>,
) -> bool {
    let in_tunables = tunables.is_some_and(|t| {
        t.split(':')
            .any(|kv| kv.trim_start().starts_with("glibc.malloc."))
    });
    in_tunables || names.any(|n| MALLOC_ENV.contains(&n))
}

/// Applies [`MMAP_THRESHOLD`] and [`TRIM_THRESHOLD`] unless the operator tunes the allocator.
///
/// # Safety
///
/// Call it before the process starts any other thread: `mallopt(3)` writes allocator
/// parameters that other threads' arenas read without a lock (glibc documents it as
/// MT-Unsafe).
pub unsafe fn tune_heap() -> HeapTuning {
    let names: Vec<String> = std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .collect();
    let tunables = std::env::var("GLIBC_TUNABLES").ok();
    if operator_tunes_malloc(tunables.as_deref(), names.iter().map(String::as_str)) {
        return HeapTuning::OperatorTunables;
    }
    // SAFETY: the caller runs this before any other thread exists (this function's contract).
    unsafe { set_thresholds() }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
unsafe fn set_thresholds() -> HeapTuning {
    let trim = libc::c_int::try_from(TRIM_THRESHOLD).unwrap_or(libc::c_int::MAX);
    let mmap = libc::c_int::try_from(MMAP_THRESHOLD).unwrap_or(libc::c_int::MAX);
    // SAFETY: mallopt(3) takes two integers and touches no memory of ours; it is MT-Unsafe,
    // and our caller guarantees no other thread exists yet. It returns 1 on success.
    unsafe {
        if libc::mallopt(libc::M_MMAP_THRESHOLD, mmap) != 1 {
            return HeapTuning::Unsupported;
        }
        if libc::mallopt(libc::M_TRIM_THRESHOLD, trim) != 1 {
            return HeapTuning::Partial;
        }
    }
    HeapTuning::Applied
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
unsafe fn set_thresholds() -> HeapTuning {
    HeapTuning::Unsupported
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operator_malloc_settings_are_left_alone() {
        let none = || std::iter::empty::<&str>();
        assert!(operator_tunes_malloc(
            Some("glibc.malloc.trim_threshold=1"),
            none()
        ));
        assert!(operator_tunes_malloc(
            Some("glibc.cpu.hwcaps=-AVX2:glibc.malloc.arena_max=2"),
            none()
        ));
        assert!(operator_tunes_malloc(
            None,
            ["PATH", "MALLOC_TRIM_THRESHOLD_"].into_iter()
        ));
        assert!(!operator_tunes_malloc(
            Some("glibc.cpu.hwcaps=-AVX2"),
            ["PATH", "MALLOC_CHECK"].into_iter()
        ));
        assert!(!operator_tunes_malloc(Some(""), none()));
        assert!(!operator_tunes_malloc(None, none()));
    }

    #[test]
    fn thresholds_fit_the_buffers_they_protect() {
        // Every relay buffer stays below the mmap threshold (so it is reused from the heap),
        // and a full stream window of them fits under the trim threshold.
        for buf in [
            crate::io::copy::BUF_SIZE,
            crate::hop::mux::MAX_FRAME as usize,
            crate::hop::mux::BULK_READ,
        ] {
            assert!(buf < MMAP_THRESHOLD, "{buf} would be mmapped");
        }
        assert!(STREAM_WINDOW as usize + MMAP_THRESHOLD <= TRIM_THRESHOLD);
        assert!(libc::c_int::try_from(TRIM_THRESHOLD).is_ok());
    }
}
