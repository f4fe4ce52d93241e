use crate::store::StoreError;

/// Why the service could not start or keep serving.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("message store: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Config(String),
    #[error("file store: {0}")]
    Files(#[from] chat_files::FileError),
    #[error("serving HTTP: {0}")]
    Io(#[from] std::io::Error),
}
