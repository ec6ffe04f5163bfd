//! What can stop a training run before it ends on its own.

use std::path::PathBuf;

use ditbench_common::exit;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("invalid run config: {0}")]
    Config(String),
    #[error(transparent)]
    Model(#[from] ditbench_model::ModelError),
    #[error(transparent)]
    Diffusion(#[from] ditbench_diffusion::DiffusionError),
    #[error(transparent)]
    Data(#[from] ditbench_data::DataError),
    #[error(transparent)]
    Store(#[from] ditbench_track::Error),
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    #[error(transparent)]
    TorchExt(#[from] ditbench_torchext::Error),
    /// The same words as any other invalid setting: `train.device` is one.
    #[error("invalid run config: {0}")]
    Device(#[from] ditbench_torchext::DeviceError),
    #[error(transparent)]
    Generate(#[from] ditbench_generate::Error),
    #[error(transparent)]
    Dist(#[from] ditbench_c10d::DistError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("evaluation: {0}")]
    Eval(String),
    #[error(
        "cannot read image {}: {reason} (data.fail_on_bad_image is set, so an unreadable image stops the run; \
         without it the image is skipped, reported and counted in the metric data/bad_images)",
        path.display()
    )]
    UnreadableImage { path: PathBuf, reason: String },
    /// A write the run needs failed for a reason of the filesystem (see
    /// [`TrainError::io_failure`]): says in words what failed and what was being
    /// written, e.g. "disk full while writing the checkpoint of step 6: …".
    #[error("{failure} while writing {what}: {source}")]
    Write {
        /// "disk full", "disk quota exceeded", ...
        failure: &'static str,
        /// What was being written ("the checkpoint of step 6", "the metrics of step 40").
        what: String,
        source: Box<TrainError>,
    },
    /// Another process took the run's lease over while this one trained (this one
    /// looked dead to it: a heartbeat that could not be renewed for too long). This
    /// process stopped without writing anything more to the run.
    #[error(
        "run {run:?} was taken over by another process ({holder}) because this one looked dead; \
         stopped without writing more"
    )]
    LeaseLost { run: String, holder: String },
}

/// EIO: the same number on Linux and every other Unix; Rust gives it no `ErrorKind`.
const EIO: i32 = 5;

/// What an OS error says about the filesystem, in words, when it is one that stops
/// a run's writes whatever the run does (a full disk, a quota, a read-only or
/// unreachable filesystem, a permission taken away, a failing device). `None` for
/// everything else (a missing file is a wrong path, not a broken filesystem).
fn failure_words(e: &std::io::Error) -> Option<&'static str> {
    use std::io::ErrorKind as K;
    // Wrappers such as ditbench_common::write_atomic keep an OS error's kind and text
    // but not its number; the text still ends in "(os error N)".
    let code = e.raw_os_error().or_else(|| os_code_in(&e.to_string()));
    let kind = code.map_or(e.kind(), |c| std::io::Error::from_raw_os_error(c).kind());
    Some(match kind {
        K::StorageFull => "disk full",
        K::QuotaExceeded => "disk quota exceeded",
        K::ReadOnlyFilesystem => "read-only file system",
        K::PermissionDenied => "permission denied",
        K::FileTooLarge => "file too large",
        K::StaleNetworkFileHandle => "stale network file handle",
        _ if code == Some(EIO) => "I/O error",
        _ => return None,
    })
}

/// The N of the last "(os error N)" in an error's text.
fn os_code_in(text: &str) -> Option<i32> {
    let start = text.rfind("(os error ")? + "(os error ".len();
    let rest = &text[start..];
    rest[..rest.find(')')?].parse().ok()
}

impl TrainError {
    /// The OS error under this one, wherever it is wrapped (a checkpoint's write, a
    /// metric segment's flush, a Parquet compaction, a grid's PNG), when it is a
    /// failure of the filesystem: that error and its description in words.
    pub fn io_failure(&self) -> Option<(&std::io::Error, &'static str)> {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = cause {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                if let Some(words) = failure_words(io) {
                    return Some((io, words));
                }
            }
            cause = e.source();
        }
        None
    }

    /// Whether the run stopped on a failure of the filesystem (disk full, quota,
    /// read-only, permission, EIO): the CLI exits with `exit::IO_FAILED`, which
    /// launchers retry after a pause.
    pub fn is_io(&self) -> bool {
        matches!(self, TrainError::Write { .. }) || self.io_failure().is_some()
    }

    /// Whether another live process holds the run (its lease was refused, or taken
    /// over while this process trained): nothing more was written.
    pub fn is_busy(&self) -> bool {
        matches!(self, TrainError::Store(ditbench_track::Error::RunLocked { .. }) | TrainError::LeaseLost { .. })
    }

    /// Says what was being written when this error is a failure of the filesystem
    /// (see [`TrainError::Write`]); any other error is returned as it is.
    pub fn writing(self, what: impl FnOnce() -> String) -> TrainError {
        if matches!(self, TrainError::Write { .. }) {
            return self;
        }
        match self.io_failure().map(|(_, words)| words) {
            Some(failure) => TrainError::Write { failure, what: what(), source: Box::new(self) },
            None => self,
        }
    }

    /// The exit code of `ditbench train` for this error, when it is not bad input:
    /// `BUSY` (another process trains the run), `IO_FAILED` (the filesystem failed),
    /// `FAILED` (a rank was lost). `None`: the caller reports bad input.
    pub fn exit_code(&self) -> Option<i32> {
        if self.is_busy() {
            Some(exit::BUSY)
        } else if self.is_io() {
            Some(exit::IO_FAILED)
        } else if matches!(self, TrainError::Dist(_)) {
            Some(exit::FAILED)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Error as IoError, ErrorKind};

    fn os(code: i32) -> IoError {
        IoError::from_raw_os_error(code)
    }

    /// As ditbench_common::write_atomic reports a failed write: the kind and the text
    /// of the OS error under a message naming the file, its number gone.
    fn rewrapped(e: IoError) -> IoError {
        IoError::new(e.kind(), format!("write /run/.0000006.safetensors.tmp-1-0: {e}"))
    }

    #[test]
    fn filesystem_failures_are_io_wherever_they_are_wrapped() {
        // Linux errno values, written out: ENOSPC, EDQUOT, EROFS, EACCES, EPERM, EIO, EFBIG.
        let cases = [
            (28, "disk full"),
            (122, "disk quota exceeded"),
            (30, "read-only file system"),
            (13, "permission denied"),
            (1, "permission denied"),
            (5, "I/O error"),
            (27, "file too large"),
        ];
        for (code, words) in cases {
            let direct = TrainError::Io { path: "log.txt".into(), source: os(code) };
            assert!(direct.is_io(), "errno {code}");
            assert_eq!(direct.io_failure().unwrap().1, words);
            // A checkpoint written through write_atomic: model error, text only.
            let model = TrainError::Model(ditbench_model::ModelError::Io { path: "ckpt".into(), source: rewrapped(os(code)) });
            assert_eq!(model.io_failure().map(|f| f.1), Some(words), "errno {code} through write_atomic");
            // A metric segment's flush in the run store.
            let store = TrainError::Store(ditbench_track::Error::Io { op: "write segment", path: "m/1.arrows".into(), source: os(code) });
            assert_eq!(store.io_failure().map(|f| f.1), Some(words));
            // A Parquet compaction (parquet wraps the OS error as an external error).
            let parquet = TrainError::Store(ditbench_track::Error::Parquet {
                path: "metrics.parquet".into(),
                source: os(code).into(),
            });
            assert_eq!(parquet.io_failure().map(|f| f.1), Some(words));
            // A grid's PNG, two crates down.
            let grid = TrainError::Generate(ditbench_generate::Error::Data(ditbench_data::DataError::Io {
                path: "samples/0000006.png".into(),
                source: os(code),
            }));
            assert_eq!(grid.io_failure().map(|f| f.1), Some(words));
            assert_eq!(grid.exit_code(), Some(exit::IO_FAILED));
        }
    }

    #[test]
    fn other_errors_are_not_io() {
        for e in [
            TrainError::Io { path: "config.toml".into(), source: IoError::from(ErrorKind::NotFound) },
            TrainError::Io { path: "x".into(), source: os(2) }, // ENOENT: a wrong path
            TrainError::Io { path: "x".into(), source: IoError::new(ErrorKind::InvalidData, "bad cursor") },
            TrainError::Config("train.steps must be positive".into()),
            TrainError::Eval("no reference statistics".into()),
            TrainError::Store(ditbench_track::Error::UnknownRun("r".into())),
        ] {
            assert!(!e.is_io(), "{e}");
            assert_eq!(e.exit_code(), None, "{e}");
        }
        // "(os error N)" is read from the end of a message only when it is a number.
        assert_eq!(os_code_in("write x: No space left on device (os error 28)"), Some(28));
        assert_eq!(os_code_in("(os error twelve)"), None);
    }

    #[test]
    fn writing_names_what_failed_and_keeps_other_errors() {
        let full = TrainError::Io { path: "/r/checkpoints/0000006.safetensors".into(), source: os(28) };
        let e = full.writing(|| "the checkpoint of step 6".into());
        let msg = e.to_string();
        assert!(msg.starts_with("disk full while writing the checkpoint of step 6: /r/checkpoints/0000006.safetensors: "), "{msg}");
        assert!(e.is_io() && !e.is_busy());
        assert_eq!(e.exit_code(), Some(exit::IO_FAILED));
        // Named once: a second wrapper keeps the first.
        let again = e.writing(|| "something else".into()).to_string();
        assert_eq!(again, msg);
        // Not a filesystem failure: unchanged.
        let other = TrainError::Config("bad".into()).writing(|| "the checkpoint of step 6".into());
        assert!(matches!(other, TrainError::Config(_)));
    }

    #[test]
    fn a_held_or_lost_lease_is_busy() {
        let locked = TrainError::Store(ditbench_track::Error::RunLocked { run: "r".into(), holder: "host h pid 1".into() });
        assert!(locked.is_busy() && !locked.is_io());
        assert_eq!(locked.exit_code(), Some(exit::BUSY));
        let lost = TrainError::LeaseLost { run: "r".into(), holder: "host h pid 2".into() };
        assert_eq!(lost.exit_code(), Some(exit::BUSY));
        assert!(lost.to_string().contains("host h pid 2"));
    }
}
