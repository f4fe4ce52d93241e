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
