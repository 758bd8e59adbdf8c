//! `veil show --json`: the snapshot as JSON (serde), an array with one object per interface.
//! Field names and units: docs/status.md; the schema is pinned by `tests/status_schema.rs`.

use super::Interface;

/// The interfaces as a JSON array (pretty-printed, one field a line).
pub fn render(interfaces: &[Interface]) -> String {
    serde_json::to_string_pretty(interfaces).expect("the status model always serializes")
}
