//! The one error type of the crate. Every variant names the file or record involved, so a
//! failed import says what is wrong without a debugger.

use std::path::PathBuf;

/// Why a file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The operating system refused a read or an open.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Neither a zip archive holding `data.pkl` nor a legacy file starting with PyTorch's magic
    /// number pickle.
    #[error("{} is not a PyTorch file: {reason}", path.display())]
    NotATorchFile { path: PathBuf, reason: String },

    /// The file ends before the data it announces (a download cut short, a partial copy).
    #[error("{} is truncated: {what}", path.display())]
    Truncated { path: PathBuf, what: String },

    /// A pickle opcode this reader does not implement (the byte offset is within `context`).
    #[error(
        "unsupported pickle opcode {name} (0x{opcode:02x}) at byte offset {offset} of {context}"
    )]
    UnsupportedOpcode {
        opcode: u8,
        name: &'static str,
        offset: u64,
        context: String,
    },

    /// The pickle stream is well-formed bytes but not a program this reader can run
    /// (stack underflow, wrong argument types, unknown persistent id, ...).
    #[error("invalid pickle at byte offset {offset} of {context}: {message}")]
    InvalidPickle {
        offset: u64,
        context: String,
        message: String,
    },

    /// A tensor refers to a storage that the file does not contain.
    #[error("{}: missing storage record {record}", path.display())]
    MissingStorage { path: PathBuf, record: String },

    /// `load_state_dict(.., Some(key))` with a key the top-level dict does not have.
    #[error("key {key:?} is not in the top-level dict; it has {available:?}")]
    MissingKey { key: String, available: Vec<String> },

    /// A state dict was asked for but the selected value is something else.
    #[error("expected a dict of tensors, found {found}")]
    NotADict { found: String },

    /// A tensor or storage of a dtype this crate does not convert (complex, float8, ...).
    #[error("unsupported tensor dtype {name}")]
    UnsupportedDtype { name: String },

    /// Sizes, strides and offset of a tensor that do not fit its storage, or similar.
    #[error("{}: invalid tensor: {message}", path.display())]
    InvalidTensor { path: PathBuf, message: String },

    /// The zip layer failed on an archive whose end record is present (corrupt archive).
    #[error("{}: zip archive error: {source}", path.display())]
    Zip {
        path: PathBuf,
        #[source]
        source: zip::result::ZipError,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
