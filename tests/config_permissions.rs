//! `veil up` warns, with wg-quick's words, when the config file holds a private key and is open
//! to others (some permission for others on both the file and its directory). No root needed:
//! the file is named `lo.conf`, so `up` stops right after reading it ("lo already exists").

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A directory of its own under the temporary directory, removed on drop.
struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `veil up` on `lo.conf` with `content`, the file with mode `file` in a directory with
/// mode `dir`; returns its stderr and the file's canonical path.
fn up(tag: &str, content: &str, file: u32, dir: u32) -> (String, String) {
    let d = Dir(std::env::temp_dir().join(format!("veil-perm-{}-{tag}", std::process::id())));
    std::fs::create_dir_all(&d.0).unwrap();
    let conf = d.0.join("lo.conf");
    std::fs::write(&conf, content).unwrap();
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(file)).unwrap();
    std::fs::set_permissions(&d.0, std::fs::Permissions::from_mode(dir)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_veil")).args(["up", conf.to_str().unwrap()]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "up must stop at `lo already exists`: {stderr}");
    assert!(stderr.contains("lo already exists"), "{stderr}");
    let real = std::fs::canonicalize(&conf).unwrap().display().to_string();
    (stderr, real)
}

fn config(private_key: bool) -> String {
    let key = if private_key { "PrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\n" } else { "" };
    format!("[Interface]\n{key}ListenPort = 51820\n")
}

fn warning(path: &str) -> String {
    format!("Warning: `{path}' is world accessible")
}

#[test]
fn a_private_key_readable_by_others_is_warned_about() {
    let (stderr, path) = up("open", &config(true), 0o644, 0o755);
    assert!(stderr.contains(&warning(&path)), "no warning for a 0644 file in a 0755 directory: {stderr}");
    assert!(Path::new(&path).is_absolute());
}

#[test]
fn a_private_file_or_directory_or_a_file_without_a_key_is_not() {
    for (tag, content, file, dir) in [
        ("private", config(true), 0o600, 0o755),
        ("group", config(true), 0o640, 0o755),
        ("closed-dir", config(true), 0o644, 0o700),
        ("no-key", config(false), 0o644, 0o755),
    ] {
        let (stderr, _) = up(tag, &content, file, dir);
        assert!(!stderr.contains("world accessible"), "{tag}: warned: {stderr}");
    }
}
