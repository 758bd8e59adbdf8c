//! The engine's clock: an `Instant` that advances with CLOCK_BOOTTIME, which keeps counting
//! while the machine is suspended (CLOCK_MONOTONIC, behind `Instant::now`, stops). The kernel's
//! WireGuard ages sessions on the boot-time clock for the same reason: after a laptop sleeps for
//! an hour, its sessions are an hour older and must not seal another packet (REJECT_AFTER_TIME),
//! where a monotonic clock would use them until the 15 s no-reply timer fired.
//!
//! The core takes `Instant`s; this one is the process's first reading of `Instant::now()` plus
//! the boot time elapsed since, so it is ordinary to compare and subtract, and only ever moves
//! forward.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// CLOCK_BOOTTIME, if the kernel has it (Linux 2.6.39 on).
fn boottime() -> Option<Duration> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into the live local `ts`.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    (r == 0).then(|| Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

/// `Instant::now()` and CLOCK_BOOTTIME, read once, together.
static START: OnceLock<(Instant, Option<Duration>)> = OnceLock::new();

/// Now, on the boot-time clock (see the module doc; the monotonic clock where there is none).
pub fn now() -> Instant {
    let (base, boot0) = *START.get_or_init(|| (Instant::now(), boottime()));
    match (boot0, boottime()) {
        (Some(b0), Some(b)) => base + b.saturating_sub(b0),
        _ => Instant::now(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advances_with_real_time_and_never_backwards() {
        let a = now();
        let m = Instant::now();
        std::thread::sleep(Duration::from_millis(30));
        let b = now();
        let elapsed = b - a;
        assert!(elapsed >= Duration::from_millis(30), "{elapsed:?}");
        // Without a suspend, boot time and monotonic time advance together.
        let mono = m.elapsed();
        assert!(elapsed.abs_diff(mono) < Duration::from_millis(20), "{elapsed:?} vs {mono:?}");
        assert!(now() >= b);
    }
}
