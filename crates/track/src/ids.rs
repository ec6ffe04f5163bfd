//! Validation of the identifiers that become directory and file names.

use crate::error::{Error, Result};

/// Longest accepted identifier, in bytes.
pub const MAX_ID_LEN: usize = 200;

/// Checks that `id` can safely name a directory inside the store: non-empty, at
/// most [`MAX_ID_LEN`] bytes, no `/` or `\`, no `..`, no leading `.`, no control
/// characters, no leading or trailing whitespace. `kind` ("run id", "sweep name")
/// is used in the error message.
///
/// This is the store's floor (nothing may escape the store folder), not the naming
/// rule for new sweeps and runs: that is `ditbench_runconfig::validate_name` (ASCII
/// letters, digits, '-', '_', '.'), a strict subset checked before anything is
/// written. The store stays looser so that it keeps opening stores whose names predate
/// the strict rule (e.g. a `--sweep "sweep 1"` of an older ditbench).
pub fn validate_id(kind: &'static str, id: &str) -> Result<()> {
    let bad = |reason| {
        Err(Error::InvalidId {
            kind,
            id: id.to_string(),
            reason,
        })
    };
    if id.is_empty() {
        return bad("it is empty");
    }
    if id.len() > MAX_ID_LEN {
        return bad("it is longer than 200 bytes");
    }
    if id.contains('/') || id.contains('\\') {
        return bad("it contains a path separator ('/' or '\\')");
    }
    if id.contains("..") {
        return bad("it contains '..'");
    }
    if id.starts_with('.') {
        return bad("it starts with '.'");
    }
    if id.chars().any(char::is_control) {
        return bad("it contains a control character");
    }
    if id.trim() != id {
        return bad("it has leading or trailing whitespace");
    }
    Ok(())
}

/// Checks a metric or eval name: non-empty, at most 200 bytes, no control characters.
pub fn validate_metric_name(name: &str) -> Result<()> {
    let bad = |reason| {
        Err(Error::InvalidId {
            kind: "metric name",
            id: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > MAX_ID_LEN {
        return bad("it is longer than 200 bytes");
    }
    if name.chars().any(char::is_control) {
        return bad("it contains a control character");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_normal_ids() {
        for id in ["DiT-XL-2_s0", "a", "r.1", "x=1,y=2", "sweep 1", "Ü-modell"] {
            validate_id("run id", id).unwrap();
        }
    }

    #[test]
    fn rejects_unsafe_ids() {
        for id in [
            "", "a/b", "..", "a..b", "../x", ".hidden", "a\\b", "a\nb", "a\0b", " a", "a ",
            "\u{7f}",
        ] {
            let e = validate_id("run id", id).unwrap_err();
            assert!(matches!(e, Error::InvalidId { .. }), "{id:?}: {e}");
        }
        let long = "x".repeat(MAX_ID_LEN + 1);
        assert!(validate_id("run id", &long).is_err());
    }
}
