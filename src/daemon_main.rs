//! `veil-daemon`: the tunnel daemon alone, which `veil IFNAME` runs (by exec, so it keeps the
//! process) when it sits next to `veil`.
//!
//! Why a binary of its own: a daemon's resident memory is mostly the pages of program text it
//! has touched, and the kernel maps them in 64 KiB windows around each one used. In one binary
//! with the whole command line (clap's parser of every subcommand, the lab, the status renderers,
//! completions), an idle daemon measured 4.7 MiB; this one has none of that code.
//!
//! Usage: `veil-daemon [-f|--foreground] [--user USER] [--metrics-listen ADDR:PORT] IFNAME`, the
//! daemon form of `veil` (see `veil --help`; the same environment applies).

use std::process::ExitCode;

const USAGE: &str = "usage: veil-daemon [-f|--foreground] [--user USER] [--metrics-listen ADDR:PORT] IFNAME";

fn main() -> ExitCode {
    let mut options = veil::control::daemon::Options { foreground: false, user: None, metrics_listen: None };
    let mut ifname = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag.to_string(), Some(value.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = || inline.clone().or_else(|| args.next());
        let fail = |e: String| {
            eprintln!("veil-daemon: {e}\n{USAGE}");
            ExitCode::from(2)
        };
        match flag.as_str() {
            "-f" | "--foreground" => options.foreground = true,
            "--user" => match value() {
                Some(v) => options.user = Some(v),
                None => return fail("--user needs a value".into()),
            },
            "--metrics-listen" => match value() {
                Some(v) => options.metrics_listen = Some(v),
                None => return fail("--metrics-listen needs a value".into()),
            },
            "-h" | "--help" => {
                println!("{USAGE}\nThe daemon of `veil IFNAME`; see `veil --help`.");
                return ExitCode::SUCCESS;
            }
            _ if arg.starts_with('-') || ifname.is_some() => return fail(format!("unexpected argument {arg:?}")),
            _ => ifname = Some(arg),
        }
    }
    let Some(ifname) = ifname else {
        eprintln!("veil-daemon: no interface name\n{USAGE}");
        return ExitCode::from(2);
    };
    match veil::control::daemon::run(&ifname, options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("veil: {e}");
            ExitCode::FAILURE
        }
    }
}
