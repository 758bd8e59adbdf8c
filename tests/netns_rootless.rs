//! veil without root: an unprivileged user (nobody) in a user namespace of its own
//! (`unshare -Urn`) brings up a two-node lab with `veil lab up`, pings through the tunnel, reads
//! the tunnel with `veil show`, and takes the lab down, leaving nothing behind. Root is needed
//! only to become that user (`setpriv`); everything after runs without it.
mod netns;
use netns::*;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

/// The unprivileged user: nobody.
const UID: u32 = 65534;

const TOPOLOGY: &str = r#"
name = "rootless"

[[nodes]]
name = "a"
subnets = ["192.168.1.0/24"]

[[nodes]]
name = "b"

[[links]]
nodes = ["a", "b"]

[[tunnels]]
nodes = ["a", "b"]
psk = true
"#;

/// `setpriv` to nobody, with no groups, then `unshare -Urn sh -c SCRIPT`.
fn as_nobody_in_a_user_namespace(script: &str, env: &[(&str, &str)]) -> std::process::Output {
    Command::new("setpriv")
        .args([format!("--reuid={UID}"), format!("--regid={UID}"), "--clear-groups".into()])
        .args(["unshare", "-Urn", "sh", "-c", script])
        .envs(env.iter().copied())
        .current_dir("/")
        .output()
        .expect("setpriv")
}

/// True when an unprivileged user can make a user namespace here; a loud skip where it cannot,
/// a failure under CI=true.
fn require_user_namespaces(test: &str) -> bool {
    if have("setpriv") && have("unshare") && as_nobody_in_a_user_namespace("true", &[]).status.success() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: an unprivileged user cannot run `unshare -Urn` here (or setpriv is missing), and CI=true");
    }
    eprintln!("\n!!!!! SKIPPED {test}: an unprivileged user cannot run `unshare -Urn` here !!!!!\n");
    false
}

#[test]
fn an_unprivileged_user_in_a_user_namespace_pings_through_a_two_node_lab() {
    let test = "an_unprivileged_user_in_a_user_namespace_pings_through_a_two_node_lab";
    if !require_root(test) || !require_user_namespaces(test) {
        return;
    }
    // A directory nobody can use: the program (copied where the build directory is not open to
    // other users), the topology, and the labs' state.
    let dir = std::env::temp_dir().join(unique("veil-rootless-"));
    std::fs::create_dir_all(dir.join("labs")).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let veil = if as_nobody_in_a_user_namespace(&format!("test -x {}", veil_bin().display()), &[]).status.success() {
        veil_bin()
    } else {
        let copy = dir.join("veil");
        std::fs::copy(veil_bin(), &copy).unwrap();
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
        copy
    };
    std::fs::write(dir.join("rootless.toml"), TOPOLOGY).unwrap();
    std::os::unix::fs::chown(dir.join("labs"), Some(UID), Some(UID)).unwrap();
    let labs = dir.join("labs");

    let script = format!(
        "set -e
         cat /proc/self/uid_map
         V={veil}
         $V lab up {topology} --detach
         $V lab exec a -- ping -c 3 -i 0.2 -W 5 10.100.0.2
         $V lab exec b -- ping -c 2 -i 0.2 -W 5 192.168.1.7
         $V lab exec a -- $V show wg-a
         $V lab down rootless
         test ! -e {labs}/rootless && echo LAB-GONE",
        veil = veil.display(),
        topology = dir.join("rootless.toml").display(),
        labs = labs.display(),
    );
    let out = as_nobody_in_a_user_namespace(&script, &[("VEIL_LAB_DIR", labs.to_str().unwrap())]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "{test}: the script failed ({:?})\nstdout:\n{stdout}\nstderr:\n{stderr}", out.status);
    // Root inside is nobody outside: the whole lab ran without any privilege of the host's.
    let map: Vec<&str> = stdout.lines().next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(map, ["0", &UID.to_string(), "1"], "{test}: not in a user namespace of nobody's: {stdout}");
    assert!(stdout.contains("lab rootless is up (2 nodes"), "{test}: {stdout}");
    assert!(stdout.contains("3 packets transmitted, 3 received"), "{test}: pings a -> b: {stdout}");
    assert!(stdout.contains("2 packets transmitted, 2 received"), "{test}: pings b -> a's subnet: {stdout}");
    assert!(stdout.contains("latest handshake:") && stdout.contains("preshared key: (hidden)"), "{test}: {stdout}");
    assert!(stdout.contains("LAB-GONE"), "{test}: the lab's state is left behind: {stdout}");
}
