//! The daemon's log: lines on standard error, as wireguard-go writes them. `LOG_LEVEL` picks how
//! much (wireguard-go's names work): `silent`, `error`, `info` (the default), `verbose` or
//! `debug` (handshakes, refused datagrams), `trace` (also every refused data message).

use tracing::level_filters::LevelFilter;

/// The level `LOG_LEVEL` asks for; an unknown value is an error so a typo is not silent.
pub fn level_from_env() -> Result<LevelFilter, String> {
    match std::env::var("LOG_LEVEL") {
        Err(_) => Ok(LevelFilter::INFO),
        Ok(v) => parse_level(&v)
            .ok_or_else(|| format!("LOG_LEVEL={v:?}: use silent, error, info, verbose (or debug) or trace")),
    }
}

/// Whether the user asked for a log: `LOG_LEVEL` set, to `level` (from [`level_from_env`]),
/// which is not `silent`. A detached daemon then keeps writing to the standard error it was
/// started with, as wireguard-go does; otherwise its log goes nowhere (under a service manager
/// it stays in the foreground instead, see docs/install.md).
pub fn asked_for(level: LevelFilter) -> bool {
    level != LevelFilter::OFF && std::env::var_os("LOG_LEVEL").is_some()
}

fn parse_level(v: &str) -> Option<LevelFilter> {
    Some(match v.to_ascii_lowercase().as_str() {
        "silent" | "off" => LevelFilter::OFF,
        "error" => LevelFilter::ERROR,
        "warn" => LevelFilter::WARN,
        "" | "info" => LevelFilter::INFO,
        "verbose" | "debug" => LevelFilter::DEBUG,
        "trace" => LevelFilter::TRACE,
        _ => return None,
    })
}

/// Installs the logger for this process (the first call wins).
pub fn init(level: LevelFilter) {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_ansi(false)
        .with_target(false)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wireguard_go_level_names_are_understood() {
        assert_eq!(parse_level("verbose"), Some(LevelFilter::DEBUG));
        assert_eq!(parse_level("error"), Some(LevelFilter::ERROR));
        assert_eq!(parse_level("silent"), Some(LevelFilter::OFF));
        assert_eq!(parse_level("INFO"), Some(LevelFilter::INFO));
        assert_eq!(parse_level("loud"), None);
    }
}
