//! Resource limits of a sandbox's commands, as rlimits set in the child between fork and exec
//! (after it dropped to the sandbox's uid) and inherited by everything it starts.
//!
//! `max_processes` is `RLIMIT_NPROC`, which the kernel counts per real uid: it bounds a
//! sandbox's processes only because each sandbox runs as its own uid (sandboxd running as root),
//! and it is not set otherwise (it would count sandboxd's own threads).

use std::io;

use crate::template::ProcessLimits;

/// The rlimits to set, computed before fork (nothing is allocated in the child).
#[derive(Debug, Clone)]
pub(super) struct Rlimits(Vec<(libc::__rlimit_resource_t, u64)>);

impl Rlimits {
    pub(super) fn new(limits: &ProcessLimits, per_sandbox_uid: bool) -> Self {
        let mut all = vec![
            (libc::RLIMIT_AS, limits.address_space_bytes),
            (libc::RLIMIT_CPU, limits.cpu_seconds),
            (libc::RLIMIT_FSIZE, limits.file_size_bytes),
            (libc::RLIMIT_NOFILE, limits.open_files),
        ];
        if per_sandbox_uid {
            all.push((libc::RLIMIT_NPROC, limits.max_processes));
        }
        Self(all)
    }

    /// Sets every limit (soft and hard). Async-signal-safe: only `setrlimit` calls.
    pub(super) fn apply(&self) -> io::Result<()> {
        for (resource, value) in &self.0 {
            let limit = libc::rlimit { rlim_cur: *value, rlim_max: *value };
            // SAFETY: setrlimit reads the struct we pass and has no other effect on memory.
            if unsafe { libc::setrlimit(*resource, &limit) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nproc_is_left_out_without_a_sandbox_uid() {
        let limits = ProcessLimits::default();
        let nproc = |rlimits: &Rlimits| rlimits.0.iter().any(|(r, _)| *r == libc::RLIMIT_NPROC);
        assert!(nproc(&Rlimits::new(&limits, true)));
        assert!(!nproc(&Rlimits::new(&limits, false)));
    }
}
