use thiserror::Error;

/// Every error names the file or input it is about and what would be valid.
#[derive(Debug, Error)]
pub enum EvalError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    /// Input that cannot be evaluated: wrong shape or dtype, missing keys, NaN…
    #[error("{what}: {problem}")]
    BadInput { what: String, problem: String },
    /// Feature-network weights missing or not matching the network.
    #[error("{0}")]
    Weights(String),
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}
