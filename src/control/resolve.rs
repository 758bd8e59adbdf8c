//! Resolving the host names of peers' endpoints for `veil up`, as `wg` does it: a failure the
//! resolver calls temporary (no network yet at boot, a DNS server not answering) is retried,
//! after 1 s and then 1.2 times longer each time up to 20 s between tries, as many times as
//! `WG_ENDPOINT_RESOLUTION_RETRIES` says (15 by default, `infinity` for no limit); a permanent
//! one (no such name, no address for it, a non-recoverable failure) ends at once.

use std::net::SocketAddr;
use std::time::Duration;

use dns_lookup::{AddrInfoHints, LookupError, LookupErrorKind, SockType};

/// How many times a temporary failure is retried by default.
pub const DEFAULT_RETRIES: u32 = 15;
const FIRST_DELAY: Duration = Duration::from_secs(1);
const MAX_DELAY: Duration = Duration::from_secs(20);

/// How many retries: `None` for no limit.
pub fn retries_from_env() -> Result<Option<u32>, String> {
    match std::env::var("WG_ENDPOINT_RESOLUTION_RETRIES") {
        Err(_) => Ok(Some(DEFAULT_RETRIES)),
        Ok(v) => parse_retries(&v),
    }
}

/// `WG_ENDPOINT_RESOLUTION_RETRIES`: a number, or `infinity` (`None`).
pub fn parse_retries(v: &str) -> Result<Option<u32>, String> {
    if v == "infinity" {
        return Ok(None);
    }
    v.parse().map(Some).map_err(|_| format!("WG_ENDPOINT_RESOLUTION_RETRIES={v:?} is neither a number nor infinity"))
}

/// The waits between tries: 1 s, then 1.2 times the last, at most 20 s, `retries` of them.
pub fn delays(retries: Option<u32>) -> impl Iterator<Item = Duration> {
    let mut next = FIRST_DELAY;
    std::iter::from_fn(move || {
        let d = next;
        next = (next * 6 / 5).min(MAX_DELAY);
        Some(d)
    })
    .take(retries.map_or(usize::MAX, |r| r as usize))
}

/// Whether trying again could help (glibc: EAI_NONAME, EAI_NODATA and EAI_FAIL are permanent).
pub fn is_temporary(kind: LookupErrorKind) -> bool {
    !matches!(kind, LookupErrorKind::NoName | LookupErrorKind::NoData | LookupErrorKind::Fail)
}

/// Resolves `host` (without brackets) and `port` to the first address, retrying temporary
/// failures after each of `delays`; `wait` sleeps (and may stop the retries with an error,
/// when a signal came). `note` hears of each retry.
pub fn resolve(
    host: &str,
    port: u16,
    delays: impl IntoIterator<Item = Duration>,
    mut wait: impl FnMut(Duration) -> Result<(), String>,
    mut note: impl FnMut(&str),
) -> Result<SocketAddr, String> {
    let hints = AddrInfoHints { socktype: SockType::DGram.into(), ..AddrInfoHints::default() };
    let mut delays = delays.into_iter();
    loop {
        let err: LookupError = match dns_lookup::getaddrinfo(Some(host), Some(&port.to_string()), Some(hints)) {
            Ok(mut found) => match found.find_map(|a| a.ok()) {
                Some(a) => return Ok(a.sockaddr),
                None => return Err(format!("{host} resolves to no address")),
            },
            Err(e) => e,
        };
        let delay = match delays.next() {
            Some(d) if is_temporary(err.kind()) => d,
            _ => return Err(format!("cannot resolve {host}: {err}")),
        };
        note(&format!("{err}: `{host}'. Trying again in {:.2} seconds...", delay.as_secs_f64()));
        wait(delay)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_by_a_fifth_up_to_20_seconds_and_stop_after_the_retries() {
        let d: Vec<f64> = delays(Some(DEFAULT_RETRIES)).map(|d| d.as_secs_f64()).collect();
        assert_eq!(d.len(), 15);
        assert_eq!(d[0], 1.0);
        assert!((d[1] - 1.2).abs() < 1e-9 && (d[2] - 1.44).abs() < 1e-9);
        assert!((d[14] - 1.2f64.powi(14)).abs() < 1e-6, "the 15th wait is 1.2^14 s: {}", d[14]);
        assert_eq!(delays(Some(30)).last().unwrap(), Duration::from_secs(20), "capped at 20 s");
        assert_eq!(delays(Some(0)).count(), 0);
        assert_eq!(delays(None).take(1000).count(), 1000, "infinity");
    }

    #[test]
    fn retries_come_from_the_environment_as_wg_reads_them() {
        assert_eq!(parse_retries("3"), Ok(Some(3)));
        assert_eq!(parse_retries("infinity"), Ok(None));
        assert!(parse_retries("lots").is_err());
    }

    #[test]
    fn only_the_permanent_failures_are_final() {
        assert!(!is_temporary(LookupErrorKind::NoName));
        assert!(!is_temporary(LookupErrorKind::NoData));
        assert!(!is_temporary(LookupErrorKind::Fail));
        assert!(is_temporary(LookupErrorKind::Again));
        assert!(is_temporary(LookupErrorKind::System));
    }

    #[test]
    fn literals_resolve_without_retrying() {
        let mut waited = 0;
        let a = resolve(
            "127.0.0.1",
            51820,
            delays(Some(3)),
            |_| {
                waited += 1;
                Ok(())
            },
            |_| {},
        )
        .unwrap();
        assert_eq!(a, "127.0.0.1:51820".parse().unwrap());
        assert_eq!(waited, 0);
    }
}
