//! Small durable-file helpers: the store's error type around ditbench-common's.

use std::fs::File;
use std::path::Path;

use crate::error::{IoContext, Result};

/// A fresh temporary sibling path, unique to this process and call.
pub(crate) use ditbench_common::temp_sibling;

/// fsyncs a directory so that a file created, renamed or removed in it persists.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .ctx("sync directory", dir)
}

/// Writes `bytes` to `path` atomically (ditbench-common): readers see either the old
/// content or the new, never a mix, even after a crash.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    ditbench_common::write_atomic(path, bytes).ctx("write atomically", path)
}
