//! Shell completion for `veil`: the scripts that `veil completions bash|zsh|fish` prints, and
//! the candidates for arguments that name an interface or a config.
//!
//! The scripts are clap_complete's dynamic ones: at each TAB the shell runs
//! `COMPLETE=SHELL veil -- WORDS...` and veil answers from its own clap definitions, so the
//! subcommands and options never go stale and interface names come from the running system
//! (the socket files in /var/run/wireguard, the configs in /etc/wireguard). A static script
//! could not know the interfaces.

use std::ffi::OsStr;
use std::path::Path;

use clap_complete::engine::{CompletionCandidate, PathCompleter, ValueCompleter};
use clap_complete::env::Shells;

/// The variable that turns a run of `veil` into a completion request.
pub const VAR: &str = "COMPLETE";

/// The shells `veil completions` writes a script for.
pub const SHELLS: [&str; 3] = ["bash", "zsh", "fish"];

/// Answers a completion request and exits, when the shell's script asked for one (`COMPLETE`
/// set); otherwise returns at once. Call first thing in `main`, before anything is printed.
pub fn answer_if_asked(cli: fn() -> clap::Command) {
    clap_complete::CompleteEnv::with_factory(cli).var(VAR).shells(Shells(&SHELL_COMPLETERS)).complete();
}

const SHELL_COMPLETERS: [&dyn clap_complete::env::EnvCompleter; 3] =
    [&clap_complete::env::Bash, &clap_complete::env::Zsh, &clap_complete::env::Fish];

/// Writes the completion script for `shell` (one of [`SHELLS`]). The script calls `veil` as
/// found on PATH.
pub fn write_script(shell: &str, out: &mut dyn std::io::Write) -> Result<(), String> {
    let completer = Shells(&SHELL_COMPLETERS)
        .completer(shell)
        .ok_or_else(|| format!("no completions for {shell:?}: choose one of {}", SHELLS.join(", ")))?;
    completer.write_registration(VAR, "veil", "veil", "veil", out).map_err(|e| e.to_string())
}

/// The running interfaces (a socket in /var/run/wireguard), as `veil show` lists them.
pub fn interfaces(current: &OsStr) -> Vec<CompletionCandidate> {
    let current = current.to_string_lossy();
    super::uapi_client::interfaces()
        .into_iter()
        .filter(|name| name.starts_with(current.as_ref()))
        .map(|name| CompletionCandidate::new(name).help(Some("running interface".into())))
        .collect()
}

/// A config for `veil up`: NAME for /etc/wireguard/NAME.conf, or a path to a `.conf` file.
pub fn configs(current: &OsStr) -> Vec<CompletionCandidate> {
    let prefix = current.to_string_lossy();
    let mut candidates: Vec<CompletionCandidate> = Vec::new();
    if !prefix.contains('/') {
        let mut names: Vec<String> = std::fs::read_dir(super::quick::CONFIG_DIR)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".conf")).map(str::to_string))
                    .filter(|n| n.starts_with(prefix.as_ref()))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        candidates.extend(names.into_iter().map(|n| {
            let help = format!("{}/{n}.conf", super::quick::CONFIG_DIR);
            CompletionCandidate::new(n).help(Some(help.into()))
        }));
    }
    let is_conf = |p: &Path| p.is_dir() || p.extension().is_some_and(|e| e == "conf");
    candidates.extend(PathCompleter::any().filter(is_conf).complete(current));
    candidates
}

/// For `veil down`: the running interfaces, then configs as for `veil up`.
pub fn interfaces_or_configs(current: &OsStr) -> Vec<CompletionCandidate> {
    let mut candidates = interfaces(current);
    let running: Vec<_> = candidates.iter().map(|c| c.get_value().to_owned()).collect();
    candidates.extend(configs(current).into_iter().filter(|c| !running.iter().any(|r| r == c.get_value())));
    candidates
}
