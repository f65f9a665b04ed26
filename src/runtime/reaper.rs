//! Reaping what bubblewrap leaves behind. Under an unprivileged user namespace, bubblewrap's
//! outer process exits without waiting for the sandbox's PID 1 (its own child); that process
//! is then an orphaned zombie, reparented to the host's init. An init that does not reap (a
//! container's entry point often does not) would keep one zombie per command, and the zombies
//! count against the sandbox uid's process limit until no command can start. So sandboxd makes
//! itself the subreaper of its descendants and reaps every zombie child it did not spawn
//! itself, after every exec and once a second (`ProcessRuntime`'s sweep); the children it
//! spawned are reaped by tokio when their exec ends.
//!
//! One set of "our" children for the whole process (several servers may share one, as in
//! tests): a command is spawned and registered under its lock, and orphans are reaped under it,
//! so an orphan sweep never takes a child whose exec is still waiting for it.

use std::{
    collections::HashSet,
    sync::{Mutex, MutexGuard, PoisonError},
};

static SPAWNED: Mutex<Option<HashSet<u32>>> = Mutex::new(None);

fn spawned() -> MutexGuard<'static, Option<HashSet<u32>>> {
    SPAWNED.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Makes this process the reaper of its orphaned descendants (`PR_SET_CHILD_SUBREAPER`).
pub fn become_subreaper() -> std::io::Result<()> {
    // SAFETY: prctl with these arguments only sets a flag of this process.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Spawns through `spawn` with the child registered as ours before any sweep can see it.
pub fn spawn_registered<T>(
    spawn: impl FnOnce() -> std::io::Result<T>,
    pid_of: impl Fn(&T) -> Option<u32>,
) -> std::io::Result<T> {
    let mut guard = spawned();
    let child = spawn()?;
    if let Some(pid) = pid_of(&child) {
        guard.get_or_insert_with(HashSet::new).insert(pid);
    }
    Ok(child)
}

/// Forgets a child of ours once it has been waited for, then reaps orphaned zombies.
pub fn release(pid: Option<u32>) {
    if let Some(pid) = pid
        && let Some(set) = spawned().as_mut()
    {
        set.remove(&pid);
    }
    reap_orphans();
}

/// Reaps every zombie child of this process that it did not spawn itself. Children in this
/// process's own process group are never taken: they were spawned by other code here (git on
/// the host, a test's helper processes) that waits for them itself; sandbox commands and what
/// they leave behind run in process groups of their own (`process_group(0)`, bubblewrap's
/// `--new-session`).
pub fn reap_orphans() {
    let guard = spawned();
    let ours = guard.as_ref();
    let me = std::process::id();
    // SAFETY: getpgrp has no preconditions.
    let my_group = unsafe { libc::getpgrp() };
    let Ok(entries) = std::fs::read_dir("/proc") else { return };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        if ours.is_some_and(|ours| ours.contains(&pid)) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so parse after
        // the last ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else { continue };
        let mut fields = rest.split_whitespace();
        let (Some(state), Some(ppid), Some(group)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if state == "Z" && ppid.parse::<u32>() == Ok(me) && group.parse::<i32>() != Ok(my_group) {
            let Ok(pid) = i32::try_from(pid) else { continue };
            let mut status = 0;
            // SAFETY: waitpid on a zombie child of ours, writing into a local.
            unsafe {
                libc::waitpid(pid, &mut status, libc::WNOHANG);
            }
        }
    }
}
