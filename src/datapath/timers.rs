//! The timer thread: sleeps until the core's next deadline (a condition variable on the core's
//! lock, woken early when a call moves the deadline earlier) and fires what is due. It never
//! polls: with no timer armed it sleeps for an hour.

use std::sync::Arc;
use std::time::Duration;

use crate::device::{Io, NoOutput, Shared};

pub(crate) fn run(shared: Arc<Shared>) {
    let mut core = shared.lock();
    loop {
        if shared.stopping() {
            return;
        }
        let now = crate::sys::clock::now();
        if core.has_key {
            let sockets = shared.sockets();
            let mut io = Io { sockets: &sockets, shared: &shared, reply: None };
            core.iface.tick(now, &mut io);
        } else {
            // Without a private key nothing may be sent, but due timers still run (and clear).
            core.iface.tick(now, &mut NoOutput);
        }
        // Initiations the timers started (retries, new handshakes) are written unlocked.
        core = shared.finish_initiations(core);
        let next = core.iface.next_deadline();
        core.timer_wake = next;
        let wait =
            next.map(|t| t.saturating_duration_since(crate::sys::clock::now())).unwrap_or(Duration::from_secs(3600));
        core = shared.timer_cv.wait_timeout(core, wait).unwrap_or_else(|e| e.into_inner()).0;
    }
}
