/// Shortest `INTERNAL_API_KEY` the gateway and the service accept. The key
/// is all that separates the service's port from anyone who can reach it.
pub const MIN_INTERNAL_API_KEY_BYTES: usize = 16;

/// Checks the key the gateway presents to the service; the error is one
/// line saying what to do.
pub fn check_internal_api_key(key: &str) -> Result<(), String> {
    if key.len() < MIN_INTERNAL_API_KEY_BYTES {
        return Err(format!(
            "INTERNAL_API_KEY must be at least {MIN_INTERNAL_API_KEY_BYTES} bytes (it has {}); \
             use a long random value, e.g. `openssl rand -hex 32`",
            key.len()
        ));
    }
    Ok(())
}

/// Largest file an upload may carry by default, in bytes (`MAX_UPLOAD_BYTES`).
/// The service checks it while reading an upload; the gateway refuses, before
/// reading any of it, a request whose declared length cannot fit.
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 10 * 1024 * 1024;

/// What the framing of a `multipart/form-data` body (boundary lines, part
/// headers) may add to the file's own bytes before the body counts as too
/// large.
pub const MULTIPART_OVERHEAD_BYTES: u64 = 16 * 1024;

/// The largest request body an upload of at most `max_upload_bytes` may
/// take: the file and its multipart framing.
pub fn upload_body_limit(max_upload_bytes: u64) -> u64 {
    max_upload_bytes.saturating_add(MULTIPART_OVERHEAD_BYTES)
}

/// Bounds enforced while validating client events. Defaults match the
/// documented protocol; every one is configurable on the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtoLimits {
    /// Longest message text, in characters, after trimming.
    pub max_message_chars: usize,
    /// Longest room id, in characters.
    pub max_room_id_chars: usize,
    /// Display names longer than this are shortened, not rejected.
    pub max_username_chars: usize,
    /// Largest page a `chat.history` request may ask for.
    pub max_history_limit: u32,
    /// Page size when `chat.history` gives no `limit`.
    pub default_history_limit: u32,
}

impl Default for ProtoLimits {
    fn default() -> Self {
        ProtoLimits {
            max_message_chars: 4000,
            max_room_id_chars: 128,
            max_username_chars: 64,
            max_history_limit: 100,
            default_history_limit: 50,
        }
    }
}
