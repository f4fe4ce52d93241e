//! The one error type of this crate, with the HTTP status and the stable
//! code the HTTP edge puts in its `{"error", "code"}` body.

use http::StatusCode;

/// Everything that can go wrong storing, checking or serving a file.
///
/// [`FileError::status`] and [`FileError::code`] say how to answer; the
/// `Display` text is the human-readable `error` (it never holds file
/// contents, and names only what the client itself sent).
#[derive(Debug, thiserror::Error, strum::EnumDiscriminants)]
#[strum_discriminants(
    name(FileErrorCode),
    derive(strum::IntoStaticStr, strum::Display, strum::EnumIter, Hash),
    strum(serialize_all = "snake_case")
)]
pub enum FileError {
    /// The upload is over `max_upload_bytes` (by its `Content-Length`, or
    /// while it was read). 413.
    #[error("the file is larger than the limit of {limit} bytes")]
    FileTooLarge { limit: u64 },
    /// An image whose header claims more pixels than `max_image_pixels`
    /// (a decompression bomb, or just too big to thumbnail). 413.
    #[error("the image is {width}x{height} pixels, more than the limit of {max_pixels}")]
    ImageTooLarge {
        width: u32,
        height: u32,
        max_pixels: u64,
    },
    /// The content is of a type that is not accepted, or not the type the
    /// part's `Content-Type` claims. 415.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Not a well-formed upload: not multipart, no `file` part, an extra
    /// part, an empty file, a truncated body, an image that cannot be read.
    /// 400.
    #[error("{0}")]
    InvalidUpload(String),
    /// No such blob in the store. 404.
    #[error("file not found")]
    NotFound,
    /// The store (disk or S3) failed; nothing was stored. 503.
    #[error("the file store is unavailable: {0}")]
    StoreUnavailable(String),
    /// A store URL or setting that cannot work; reported at startup. 500.
    #[error("invalid file store configuration: {0}")]
    InvalidConfig(String),
}

impl FileError {
    /// The stable snake_case code, e.g. `file_too_large`.
    pub fn code(&self) -> FileErrorCode {
        FileErrorCode::from(self)
    }

    /// The HTTP status to answer with.
    pub fn status(&self) -> StatusCode {
        self.code().status()
    }

    pub(crate) fn store(error: impl std::fmt::Display) -> FileError {
        FileError::StoreUnavailable(error.to_string())
    }

    /// An I/O error while reading a blob: a missing file is `NotFound`.
    pub(crate) fn reading(error: std::io::Error) -> FileError {
        if error.kind() == std::io::ErrorKind::NotFound {
            FileError::NotFound
        } else {
            FileError::store(error)
        }
    }

    pub(crate) fn invalid(reason: impl Into<String>) -> FileError {
        FileError::InvalidUpload(reason.into())
    }

    pub(crate) fn unsupported(reason: impl Into<String>) -> FileError {
        FileError::UnsupportedMediaType(reason.into())
    }
}

impl FileErrorCode {
    /// The code as sent to clients.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn status(self) -> StatusCode {
        match self {
            FileErrorCode::FileTooLarge | FileErrorCode::ImageTooLarge => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            FileErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            FileErrorCode::InvalidUpload => StatusCode::BAD_REQUEST,
            FileErrorCode::NotFound => StatusCode::NOT_FOUND,
            FileErrorCode::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            FileErrorCode::InvalidConfig => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Every I/O failure is the store's: a missing blob is told apart where a
/// blob is read ([`FileError::reading`]), never where one is written.
impl From<std::io::Error> for FileError {
    fn from(error: std::io::Error) -> FileError {
        FileError::store(error)
    }
}

impl From<object_store::Error> for FileError {
    fn from(error: object_store::Error) -> FileError {
        match error {
            object_store::Error::NotFound { .. } => FileError::NotFound,
            other => FileError::store(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strum::IntoEnumIterator;

    #[test]
    fn codes_are_stable_snake_case() {
        let codes: Vec<(&str, u16)> = FileErrorCode::iter()
            .map(|code| (code.as_str(), code.status().as_u16()))
            .collect();
        assert_eq!(
            codes,
            [
                ("file_too_large", 413),
                ("image_too_large", 413),
                ("unsupported_media_type", 415),
                ("invalid_upload", 400),
                ("not_found", 404),
                ("store_unavailable", 503),
                ("invalid_config", 500),
            ]
        );
        let error = FileError::FileTooLarge { limit: 10 };
        assert_eq!(error.code().as_str(), "file_too_large");
        assert_eq!(error.code().to_string(), "file_too_large");
        assert_eq!(error.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }
}
