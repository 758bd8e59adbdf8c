//! `veil man DIR`: man pages generated from the command-line definitions (clap_mangen), one
//! for `veil` (veil.1) and one per subcommand (veil-up.1, veil-show.1, ...), so they say what
//! `--help` says.

use std::path::{Path, PathBuf};

/// Writes the pages for `cli` and its subcommands into `dir` (created if missing) and returns
/// the files written.
pub fn write(cli: clap::Command, dir: &Path) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut cli = cli.disable_help_subcommand(true);
    cli.build();
    let mut written = Vec::new();
    let mut pending = vec![cli];
    while let Some(cmd) = pending.pop() {
        pending.extend(cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
        let page = clap_mangen::Man::new(cmd);
        let path = page
            .generate_to(dir)
            .map_err(|e| format!("cannot write {}: {e}", dir.join(page.get_filename()).display()))?;
        written.push(path);
    }
    written.sort();
    Ok(written)
}
