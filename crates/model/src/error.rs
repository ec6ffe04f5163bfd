use thiserror::Error;

#[derive(Debug, Error)]
pub enum ModelError {
    #[error("unknown model `{name}`; valid names: {valid}")]
    UnknownModel { name: String, valid: String },
    #[error("invalid DiT config: {0}")]
    InvalidConfig(String),
    #[error("invalid VAE config: {0}")]
    InvalidVaeConfig(String),
    #[error("checkpoint {path}: {problem}")]
    Checkpoint { path: String, problem: String },
    #[error(transparent)]
    Config(#[from] ditbench_family::ConfigError),
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
}
