//! `veil completions` and `veil man`: the bash script, loaded in a real bash as a user's
//! start-up file would, completes subcommands, `veil up` configs by path, and (as root, with a
//! socket file in /var/run/wireguard as a running interface has) interface names for `show`
//! and `down`; the zsh and fish scripts are produced; the man pages cover every subcommand.

use std::path::{Path, PathBuf};
use std::process::Command;

fn veil() -> &'static str {
    env!("CARGO_BIN_EXE_veil")
}

/// A fresh directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("veil-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What bash offers for the command line `words` (the last word is the one completed), with
/// `veil completions bash` sourced and this build's veil first on PATH, run in `cwd`.
fn bash_complete(words: &[&str], cwd: &Path) -> Vec<String> {
    let bin_dir = Path::new(veil()).parent().unwrap();
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let script = format!(
        r#"source <(veil completions bash) || exit 3
words=({words})
COMP_WORDS=("${{words[@]}}")
COMP_CWORD=$(( ${{#words[@]}} - 1 ))
COMP_LINE="${{words[*]}}"
COMP_POINT=${{#COMP_LINE}}
COMP_TYPE=9
# The function `complete -p veil` names, called as bash calls it: command, word, previous word.
fn=$(complete -p veil | sed -E 's/.* -F ([^ ]+) .*/\1/')
"$fn" veil "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
printf '%s\n' "${{COMPREPLY[@]}}""#,
        words = quoted.join(" ")
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(cwd)
        .env("PATH", format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default()))
        .output()
        .unwrap();
    assert!(out.status.success(), "bash: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.is_empty()).map(str::to_string).collect()
}

#[test]
fn bash_completes_subcommands_and_config_files() {
    let scratch = Scratch::new("complete");
    assert_eq!(bash_complete(&["veil", "sh"], &scratch.0), ["show"]);
    let all = bash_complete(&["veil", ""], &scratch.0);
    for sub in ["up", "down", "show", "genkey", "completions", "man"] {
        assert!(all.contains(&sub.to_string()), "`veil <TAB>` does not offer {sub}: {all:?}");
    }
    assert_eq!(bash_complete(&["veil", "show", "--j"], &scratch.0), ["--json"]);
    assert_eq!(bash_complete(&["veil", "completions", "f"], &scratch.0), ["fish"]);
    // `veil up` takes a .conf file (or a name in /etc/wireguard): other files are not offered.
    std::fs::write(scratch.0.join("site-b.conf"), "").unwrap();
    std::fs::write(scratch.0.join("site-notes.txt"), "").unwrap();
    assert_eq!(bash_complete(&["veil", "up", "site"], &scratch.0), ["site-b.conf"]);
}

#[test]
fn bash_completes_running_interface_names() {
    let root = std::fs::read_to_string("/proc/self/status")
        .is_ok_and(|s| s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0")));
    if !root {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("bash_completes_running_interface_names: needs root (/var/run/wireguard), and CI=true: a failure");
        }
        eprintln!("\n!!!!! SKIPPED bash_completes_running_interface_names: needs root (/var/run/wireguard) !!!!!\n");
        return;
    }
    // What a running interface leaves for `wg` and `veil show` to find: its socket file.
    let name = format!("vcmp{}", std::process::id() % 100000);
    std::fs::create_dir_all("/var/run/wireguard").unwrap();
    let socket = PathBuf::from(format!("/var/run/wireguard/{name}.sock"));
    struct Remove(PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let _remove = Remove(socket);
    let scratch = Scratch::new("complete-if");
    let offered = bash_complete(&["veil", "show", "vcmp"], &scratch.0);
    assert!(offered.contains(&name), "`veil show vcmp<TAB>` does not offer {name}: {offered:?}");
    assert_eq!(bash_complete(&["veil", "show", &name[..name.len() - 1]], &scratch.0), [name.as_str()]);
    let offered = bash_complete(&["veil", "down", "vcmp"], &scratch.0);
    assert!(offered.contains(&name), "`veil down vcmp<TAB>` does not offer {name}: {offered:?}");
}

#[test]
fn zsh_and_fish_scripts_are_written_and_other_shells_refused() {
    let script = |shell: &str| Command::new(veil()).args(["completions", shell]).output().unwrap();
    let zsh = String::from_utf8(script("zsh").stdout).unwrap();
    assert!(zsh.starts_with("#compdef veil") && zsh.contains("compdef "), "{zsh}");
    let fish = String::from_utf8(script("fish").stdout).unwrap();
    assert!(fish.contains("complete ") && fish.contains("--command veil"), "{fish}");
    assert!(!script("tcsh").status.success());
}

#[test]
fn man_pages_cover_veil_and_every_subcommand() {
    let scratch = Scratch::new("man");
    let dir = scratch.0.join("man1");
    let out = Command::new(veil()).arg("man").arg(&dir).output().unwrap();
    assert!(out.status.success(), "veil man: {}", String::from_utf8_lossy(&out.stderr));
    for page in ["veil", "veil-up", "veil-down", "veil-show", "veil-genkey", "veil-completions", "veil-man"] {
        let text = std::fs::read_to_string(dir.join(format!("{page}.1"))).unwrap_or_else(|e| panic!("{page}.1: {e}"));
        assert!(text.contains(".TH "), "{page}.1 is not a man page");
    }
    // The pages say what --help says.
    let up = std::fs::read_to_string(dir.join("veil-up.1")).unwrap();
    assert!(up.contains("wg\\-quick config file"), "veil-up.1 lacks its help text:\n{up}");
}
