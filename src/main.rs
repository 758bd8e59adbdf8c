//! The `veil` command: the tunnel daemon and its tools.

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use clap_complete::engine::ArgValueCompleter;
use veil::control::completion;

/// veil: a user-space WireGuard tunnel.
///
/// With an interface name, runs the tunnel daemon for it (as `wireguard-go IFNAME` does; by exec
/// of `veil-daemon` from the same directory where it is there):
/// creates the TUN device and /var/run/wireguard/IFNAME.sock, goes to the background and serves
/// `wg` requests. The subcommands below do everything else.
#[derive(Parser)]
#[command(
    name = "veil",
    version,
    args_conflicts_with_subcommands = true,
    after_long_help = "Environment for the daemon:\n  WG_PROCESS_FOREGROUND=1      stay in the foreground (as wireguard-go)\n  VEIL_USER=USER               as --user (how wg-quick and `veil up` can ask for it)\n  VEIL_SOCKET_DIR=DIR          the UAPI socket in DIR, not /var/run/wireguard (also for `veil\n                               show`; an unprivileged user in a user namespace needs it)\n  VEIL_METRICS_LISTEN=ADDR:PORT\n                               as --metrics-listen (for wg-quick and `veil up`)\n  NOTIFY_SOCKET                set by systemd (Type=notify): with --foreground, READY=1 once\n                               the socket serves, STOPPING=1 when the daemon stops\n  LOG_LEVEL=silent|error|warn|info|verbose|trace\n                               how much it logs on stderr (default info; verbose, or debug:\n                               handshakes and refused handshake messages). Detached, the daemon logs to\n                               the stderr it was started with only when LOG_LEVEL is set (as\n                               wireguard-go); otherwise nowhere\n  VEIL_REKEY_AFTER_TIME_MS, VEIL_REJECT_AFTER_TIME_MS, VEIL_REKEY_TIMEOUT_MS,\n  VEIL_KEEPALIVE_TIMEOUT_MS, VEIL_REKEY_ATTEMPT_TIME_MS,\n  VEIL_REKEY_AFTER_MESSAGES, VEIL_REJECT_AFTER_MESSAGES\n                               override WireGuard's timer constants for this tunnel (tests)\n  VEIL_CRYPTO_HELPERS=N        threads that seal and open besides the TUN and UDP threads\n                               (default: one per core beyond two, at most 16; 0: none)\n  VEIL_AEAD=ring               seal and open data with ring's ChaCha20-Poly1305 only (default:\n                               veil's AVX-512 code for messages of 640 bytes and more where the\n                               CPU has AVX-512 F/BW/VL and IFMA)"
)]
struct Cli {
    /// Stay in the foreground instead of detaching.
    #[arg(short, long)]
    foreground: bool,
    /// Run the daemon as USER (a name or a uid) once the TUN device and its socket exist,
    /// keeping only CAP_NET_ADMIN (and CAP_NET_BIND_SERVICE for a port below 1024); also
    /// VEIL_USER. As root, the daemon keeps only those capabilities either way.
    #[arg(long, value_name = "USER")]
    user: Option<String>,
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics (for example 127.0.0.1:9586); also
    /// VEIL_METRICS_LISTEN. Off by default: nothing listens unless asked.
    #[arg(long, value_name = "ADDR:PORT")]
    metrics_listen: Option<String>,
    /// The interface to create and serve.
    interface: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Print a new private key (base64), like `wg genkey`.
    Genkey,
    /// Read a private key on standard input, print its public key, like `wg pubkey`.
    Pubkey,
    /// Print a new preshared key, like `wg genpsk`.
    Genpsk,
    /// Show interfaces as `wg show` does (all veil/wg userspace interfaces by default).
    Show {
        /// Only this interface.
        #[arg(add = ArgValueCompleter::new(completion::interfaces))]
        interface: Option<String>,
        /// Print JSON (fields and units in docs/status.md; no keys but public ones).
        #[arg(long)]
        json: bool,
    },
    /// Print Prometheus metrics of the interfaces (all by default), for node_exporter's
    /// textfile collector; names and labels in docs/status.md.
    Metrics {
        /// Only this interface.
        interface: Option<String>,
        /// Write to FILE (through a temporary file renamed over it, as the textfile collector
        /// wants) instead of standard output.
        #[arg(long, short, value_name = "FILE")]
        output: Option<std::path::PathBuf>,
    },
    /// Bring up an interface from a wg-quick config file (a path, or NAME for
    /// /etc/wireguard/NAME.conf), as `wg-quick up` does, with veil as the implementation:
    /// addresses, MTU, DNS (through resolvconf), routes, the /0 policy routing, hooks.
    /// An endpoint's host name that fails to resolve for a temporary reason is tried again as
    /// `wg` does (1 s, then 1.2x longer each time up to 20 s), WG_ENDPOINT_RESOLUTION_RETRIES
    /// times (15 by default, `infinity` allowed). Under systemd's Type=notify (NOTIFY_SOCKET set,
    /// as in dist/systemd/veil@.service) the daemon stays in the foreground and READY=1 goes
    /// out once the tunnel is configured, with the daemon as MAINPID (see docs/install.md).
    Up {
        #[arg(add = ArgValueCompleter::new(completion::configs))]
        config: String,
    },
    /// Take down an interface brought up with `veil up` (or with wg-quick and a userspace
    /// implementation), following what the live interface has, not the file.
    Down {
        #[arg(add = ArgValueCompleter::new(completion::interfaces_or_configs))]
        config: String,
    },
    /// Bring up a tunnel between two network namespaces, send traffic through it, show the
    /// peers, and clean up (needs root).
    Demo,
    /// Print the completion script for SHELL; load it in the shell's start-up file (see
    /// docs/install.md). It completes subcommands, options and, through `veil` itself, the
    /// running interfaces (`show`, `down`) and the configs in /etc/wireguard (`up`).
    Completions {
        #[arg(value_parser = completion::SHELLS)]
        shell: String,
    },
    /// Write the man pages (veil.1 and one per subcommand, veil-up.1, ...) into DIR, for
    /// example /usr/local/share/man/man1.
    Man { dir: std::path::PathBuf },
    /// A netns lab for tests: namespaces, veth links and tunnels from a topology file
    /// (docs/lab.md). Works as root and, without root, inside `unshare -Urn`.
    Lab {
        #[command(subcommand)]
        command: LabCommand,
    },
}

#[derive(Subcommand)]
enum LabCommand {
    /// Bring up the lab of a topology file and stay in the foreground as its owner: Ctrl-C,
    /// SIGTERM or `veil lab down FILE` take it down, and so does the owner's death.
    Up {
        /// The topology file (TOML).
        file: std::path::PathBuf,
        /// Go to the background once the lab is up (the background process is the owner).
        #[arg(short, long)]
        detach: bool,
    },
    /// Take down the lab of a topology file (or of that name).
    Down {
        /// The topology file, or the lab's name.
        lab: String,
    },
    /// Run a command inside a node of a lab, e.g. `veil lab exec a -- ping 10.100.0.2`.
    Exec {
        /// The lab: its topology file or name (needed only when several labs are up).
        #[arg(short, long)]
        lab: Option<String>,
        /// The node.
        node: String,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// List the labs that are up.
    List,
    /// (internal) Wait for a lab's owner to end, then tear down what it left.
    #[command(hide = true)]
    Guard { state: std::path::PathBuf },
}

fn lab(command: LabCommand) -> Result<(), String> {
    use veil::lab;
    let dir = lab::default_dir();
    match command {
        LabCommand::Up { file, detach: true } => lab_detach(&file),
        LabCommand::Up { file, detach: false } => {
            use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
            // Caught before the lab exists, so a signal during set-up still tears it down.
            let mut signals =
                signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]).map_err(|e| e.to_string())?;
            let topology = lab::Topology::from_file(&file)?;
            let veil = std::env::current_exe().map_err(|e| format!("cannot find the veil program: {e}"))?;
            let started = std::time::Instant::now();
            let mut running = lab::Lab::up(&topology, &lab::Options::new(veil))?;
            let took = started.elapsed();
            use std::io::Write;
            let mut out = std::io::stdout();
            let _ = write!(out, "{}", lab::summary(&running));
            let _ = writeln!(
                out,
                "lab {} is up ({} nodes, {} ms)",
                running.name(),
                running.nodes().len(),
                took.as_millis()
            );
            let _ = out.flush();
            signals.forever().next();
            running.down();
            let _ = writeln!(std::io::stderr(), "lab {} is down", running.name());
            Ok(())
        }
        LabCommand::Down { lab } => {
            let name = lab::resolve(&dir, Some(&lab))?;
            lab::down_by_name(&dir, &name)
        }
        LabCommand::Exec { lab, node, command } => {
            let name = lab::resolve(&dir, lab.as_deref())?;
            let state = lab::State::load(&dir, &name)?;
            Err(lab::exec(&state, &node, &command))
        }
        LabCommand::List => {
            for name in lab::State::list(&dir) {
                println!("{name}");
            }
            Ok(())
        }
        LabCommand::Guard { state } => lab::guard(&state),
    }
}

/// `veil lab up --detach`: runs `veil lab up FILE` in a new session, passes on what it prints
/// until the lab is up, and leaves it running.
fn lab_detach(file: &std::path::Path) -> Result<(), String> {
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    let veil = std::env::current_exe().map_err(|e| format!("cannot find the veil program: {e}"))?;
    let mut cmd = std::process::Command::new(veil);
    // Both outputs through pipes that this process passes on while the lab comes up and that
    // close when it leaves: the owner keeps none of the caller's descriptors, so a caller
    // reading them (`$(veil lab up -d FILE)`, a CI step) is not kept waiting until `down`.
    cmd.args(["lab", "up"])
        .arg(file)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    // SAFETY: only setsid (async-signal-safe) runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| e.to_string())?;
    let out = child.stdout.take().expect("piped");
    let err = child.stderr.take().expect("piped");
    let relay = std::thread::spawn(move || {
        for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            let _ = writeln!(std::io::stderr(), "{line}");
        }
    });
    // Not println!: a reader that went away (`| head -1`) must not turn success into a panic.
    use std::io::Write;
    let mut stdout = std::io::stdout();
    for line in std::io::BufReader::new(out).lines() {
        let line = line.map_err(|e| e.to_string())?;
        let _ = writeln!(stdout, "{line}");
        if line.starts_with("lab ") && line.contains(" is up (") {
            let _ = writeln!(stdout, "owner pid {}", child.id());
            return Ok(());
        }
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    let _ = relay.join(); // everything it said about why
    Err(format!("the lab did not come up ({status})"))
}

/// Replaces this process with `veil-daemon` from this program's directory, which serves the
/// interface with less resident memory (src/daemon_main.rs says why). Returns only where there
/// is no such program or it cannot be executed.
fn exec_daemon(ifname: &str, foreground: bool, user: Option<&str>, metrics_listen: Option<&str>) {
    use std::os::unix::process::CommandExt;
    let Some(daemon) = std::env::current_exe().ok().and_then(|e| Some(e.parent()?.join("veil-daemon"))) else {
        return;
    };
    if !daemon.is_file() {
        return;
    }
    let mut cmd = std::process::Command::new(&daemon);
    if foreground {
        cmd.arg("--foreground");
    }
    if let Some(user) = user {
        cmd.args(["--user", user]);
    }
    if let Some(addr) = metrics_listen {
        cmd.args(["--metrics-listen", addr]);
    }
    let err = cmd.arg(ifname).exec();
    eprintln!("veil: cannot run {} ({err}); serving {ifname} from veil itself", daemon.display());
}

fn report(what: &str, r: Result<(), String>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Not eprintln!: it panics where stderr is gone (a hung-up terminal).
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "veil {what}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints what a status command produced, and its errors; fails if any interface failed.
fn print_status((out, errors): (String, Vec<String>), what: &str, output: Option<&std::path::Path>) -> ExitCode {
    use std::io::Write;
    let mut failed = !errors.is_empty();
    for e in errors {
        let _ = writeln!(std::io::stderr(), "veil {what}: {e}");
    }
    let written = match output {
        Some(path) => write_replacing(path, &out),
        None => std::io::stdout().write_all(out.as_bytes()).map_err(|e| e.to_string()),
    };
    if let Err(e) = written {
        let _ = writeln!(std::io::stderr(), "veil {what}: {e}");
        failed = true;
    }
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

/// Writes `text` to a temporary file beside `path` and renames it over `path`, so a reader
/// never sees half a file.
fn write_replacing(path: &std::path::Path, text: &str) -> Result<(), String> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = std::path::PathBuf::from(tmp);
    std::fs::write(&tmp, text).and_then(|_| std::fs::rename(&tmp, path)).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot write {}: {e}", path.display())
    })
}

fn main() -> ExitCode {
    completion::answer_if_asked(Cli::command);
    let cli = Cli::parse();
    match (cli.command, cli.interface) {
        (Some(Command::Genkey), _) => {
            println!("{}", veil::control::keys::genkey());
            ExitCode::SUCCESS
        }
        (Some(Command::Genpsk), _) => {
            println!("{}", veil::control::keys::genpsk());
            ExitCode::SUCCESS
        }
        (Some(Command::Pubkey), _) => match veil::control::keys::pubkey_stdio() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("veil pubkey: {e}");
                ExitCode::FAILURE
            }
        },
        (Some(Command::Demo), _) => report("demo", veil::control::demo::run()),
        (Some(Command::Lab { command }), _) => report("lab", lab(command)),
        (Some(Command::Up { config }), _) => report("up", veil::control::quick::up(&config)),
        (Some(Command::Down { config }), _) => report("down", veil::control::quick::down(&config)),
        (Some(Command::Show { interface, json }), _) => {
            print_status(veil::control::show::show(interface.as_deref(), json), "show", None)
        }
        (Some(Command::Metrics { interface, output }), _) => {
            print_status(veil::control::show::metrics(interface.as_deref()), "metrics", output.as_deref())
        }
        (Some(Command::Completions { shell }), _) => {
            report("completions", completion::write_script(&shell, &mut std::io::stdout()))
        }
        (Some(Command::Man { dir }), _) => report(
            "man",
            veil::control::manpages::write(Cli::command(), &dir)
                .map(|pages| pages.iter().for_each(|p| println!("{}", p.display()))),
        ),
        (None, Some(ifname)) => {
            exec_daemon(&ifname, cli.foreground, cli.user.as_deref(), cli.metrics_listen.as_deref());
            // No veil-daemon next to this program (or it would not start): run it here.
            let options = veil::control::daemon::Options {
                foreground: cli.foreground,
                user: cli.user,
                metrics_listen: cli.metrics_listen,
            };
            match veil::control::daemon::run(&ifname, options) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("veil: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        (None, None) => {
            eprintln!("veil: give an interface name to run the daemon, or a command (see `veil --help`)");
            ExitCode::from(2)
        }
    }
}
