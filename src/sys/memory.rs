//! Keeping the daemon's secrets in its memory: no core file, no ptrace by other users, no page
//! written to swap.
//!
//! The keys live in many places: our own types (zeroized on drop), snow's handshake state and
//! ring's AEAD keys among them, on the heap and on thread stacks. Rather than chase each of
//! them into a dedicated arena, the whole process is locked: `mlockall(MCL_CURRENT |
//! MCL_FUTURE | MCL_ONFAULT)`. With `MCL_ONFAULT` a page is locked when it is first touched,
//! not when it is mapped, so the resident set stays what the daemon actually uses (the idle
//! figure before and after is in docs/security.md); nothing of it can be swapped out. This
//! needs the locked-memory limit lifted (CAP_SYS_RESOURCE, which a root daemon normally has);
//! without it the daemon says so and runs unlocked.
//! `PR_SET_DUMPABLE 0` keeps every page out of core files and /proc/PID/mem of other users.

use std::io;

/// Marks the process non-dumpable: no core file on a crash, and only a process with
/// CAP_SYS_PTRACE may attach to it or read its memory (even one of the same user may not).
pub fn set_non_dumpable() -> io::Result<()> {
    // SAFETY: PR_SET_DUMPABLE takes one integer argument and touches no memory of ours.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Locks every page of the process that is or will be touched against swapping. The limit on
/// locked memory is lifted first while the process may still do so (CAP_SYS_RESOURCE). Where it
/// cannot be lifted, nothing is locked and the error says why: once capabilities are dropped,
/// a limit would make later allocations (a thread's stack, a malloc arena) fail outright
/// rather than go unlocked.
pub fn lock_all() -> Result<(), String> {
    let unlimited = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: setrlimit reads the one rlimit struct passed by reference.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        let e = io::Error::last_os_error();
        let mut now = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit writes the one rlimit struct passed by reference.
        let known = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut now) } == 0;
        if !known || now.rlim_cur != libc::RLIM_INFINITY {
            // In words, not as a raw errno: the log is read by people.
            let why = match e.raw_os_error() {
                Some(libc::EPERM) => "without CAP_SYS_RESOURCE".to_string(),
                _ => e.kind().to_string(),
            };
            return Err(format!("the locked-memory limit ({} KiB) cannot be lifted {why}", now.rlim_cur / 1024));
        }
    }
    // SAFETY: mlockall changes how the kernel pages this process's memory, not its contents.
    if unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE | libc::MCL_ONFAULT) } != 0 {
        return Err(format!("locking failed: {}", io::Error::last_os_error().kind()));
    }
    Ok(())
}
