//! dist/systemd: `systemd-analyze verify` accepts the veil@.service template as an instance
//! (veil@wg0, its ExecStart pointed at this build) without a single warning, the man pages it
//! names included, and the drop-in that makes wireguard-tools' wg-quick@ run veil. Needs no
//! root and no running systemd; without systemd-analyze it is a loud skip, and under CI=true
//! (where .ci/run installs Debian's systemd) a failure.

use std::path::{Path, PathBuf};
use std::process::Command;

const INSTALLED: &str = "/usr/local/bin/veil";

fn dist(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("dist/systemd").join(path)
}

fn have_systemd_analyze(test: &str) -> bool {
    if Command::new("systemd-analyze").arg("--version").output().is_ok_and(|o| o.status.success()) {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: systemd-analyze is missing and CI=true (.ci/run installs Debian's systemd): a failure");
    }
    eprintln!("\n!!!!! SKIPPED {test}: systemd-analyze not found (apt-get install systemd) !!!!!\n");
    false
}

/// A fresh directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("veil-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("units")).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `systemd-analyze verify UNIT` with the scratch units first in the unit path (drop-ins
/// included) and its man pages on MANPATH: (success, everything it said).
fn verify(scratch: &Scratch, unit: &str, man: bool) -> (bool, String) {
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--man={}", if man { "yes" } else { "no" }))
        .arg(scratch.0.join("units").join(unit))
        .env("SYSTEMD_UNIT_PATH", format!("{}:", scratch.0.join("units").display()))
        .env("MANPATH", scratch.0.join("man"))
        .output()
        .unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), said)
}

/// The template as installed for instance `name`, running `veil` at `veil`.
fn instance(scratch: &Scratch, name: &str, veil: &str) {
    let text = std::fs::read_to_string(dist("veil@.service")).unwrap();
    std::fs::write(scratch.0.join("units").join(format!("veil@{name}.service")), text.replace(INSTALLED, veil))
        .unwrap();
}

#[test]
fn the_unit_runs_veil_up_and_down_for_its_instance_as_a_notify_service() {
    let text = std::fs::read_to_string(dist("veil@.service")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    for expected in [
        "Type=notify",
        "NotifyAccess=main",
        "ExecStart=/usr/local/bin/veil up %i",
        "ExecStop=/usr/local/bin/veil down %i",
        "WantedBy=multi-user.target",
    ] {
        assert!(lines.contains(&expected), "veil@.service has no line {expected:?}");
    }
}

#[test]
fn systemd_analyze_verifies_the_unit_without_a_warning() {
    if !have_systemd_analyze("systemd_analyze_verifies_the_unit_without_a_warning") {
        return;
    }
    let scratch = Scratch::new("unit");
    let veil = env!("CARGO_BIN_EXE_veil");
    let man = Command::new(veil).arg("man").arg(scratch.0.join("man/man1")).output().unwrap();
    assert!(man.status.success(), "veil man: {}", String::from_utf8_lossy(&man.stderr));
    instance(&scratch, "wg0", veil);
    let (ok, said) = verify(&scratch, "veil@wg0.service", true);
    assert!(ok && said.trim().is_empty(), "systemd-analyze verify veil@wg0.service:\n{said}");

    // The check has teeth: a unit whose veil is missing, or with a misspelt setting, is refused.
    instance(&scratch, "wg1", "/nonexistent/veil");
    let (ok, said) = verify(&scratch, "veil@wg1.service", true);
    assert!(!ok && said.contains("/nonexistent/veil"), "a missing ExecStart binary went unnoticed:\n{said}");
    let text = std::fs::read_to_string(dist("veil@.service")).unwrap().replace(INSTALLED, veil);
    std::fs::write(scratch.0.join("units/veil@wg2.service"), text.replace("Type=notify", "Type=notifyy")).unwrap();
    let (_, said) = verify(&scratch, "veil@wg2.service", true);
    assert!(said.contains("notifyy"), "a bad Type went unnoticed:\n{said}");
}

#[test]
fn systemd_analyze_verifies_wg_quick_at_with_the_veil_drop_in() {
    if !have_systemd_analyze("systemd_analyze_verifies_wg_quick_at_with_the_veil_drop_in") {
        return;
    }
    let Ok(wg_quick) = std::fs::read_to_string("/lib/systemd/system/wg-quick@.service") else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("wg-quick@.service is missing and CI=true (.ci/run installs wireguard-tools): a failure");
        }
        eprintln!("\n!!!!! SKIPPED: no wg-quick@.service (apt-get install wireguard-tools) !!!!!\n");
        return;
    };
    let scratch = Scratch::new("wg-quick");
    std::fs::write(scratch.0.join("units/wg-quick@wg0.service"), wg_quick).unwrap();
    std::fs::create_dir_all(scratch.0.join("units/wg-quick@.service.d")).unwrap();
    let drop_in = std::fs::read_to_string(dist("wg-quick@.service.d/veil.conf")).unwrap();
    assert!(drop_in.lines().any(|l| l == "Environment=WG_QUICK_USERSPACE_IMPLEMENTATION=veil"));
    // With a misspelt key first, to see that the drop-in is read at all.
    std::fs::write(scratch.0.join("units/wg-quick@.service.d/veil.conf"), format!("{drop_in}Environmentt=X\n"))
        .unwrap();
    let (_, said) = verify(&scratch, "wg-quick@wg0.service", false);
    assert!(said.contains("Environmentt"), "the drop-in was not read:\n{said}");
    std::fs::write(scratch.0.join("units/wg-quick@.service.d/veil.conf"), drop_in).unwrap();
    // wireguard-tools' own man pages may be left out of a slim image: not ours to check.
    let (ok, said) = verify(&scratch, "wg-quick@wg0.service", false);
    assert!(ok && said.trim().is_empty(), "systemd-analyze verify wg-quick@wg0.service with veil.conf:\n{said}");
}
