//! Any bytes a client can put in a text frame: parsing never panics, every
//! refusal carries a documented code, and what is accepted obeys the rules
//! the rest of the service relies on.
#![no_main]

use chat_proto::{parse_client_frame, ClientEvent, ErrorCode, ProtoLimits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Text frames are UTF-8 by the time the service sees them.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let limits = ProtoLimits::default();
    match parse_client_frame(text, &limits) {
        Err(error) => {
            assert!(ErrorCode::ALL.contains(&error.code));
            assert!(!error.message.is_empty());
        }
        Ok(event) => {
            assert!(event.name().starts_with("chat."));
            let (room, text, name) = match &event {
                ClientEvent::Message {
                    room_id,
                    message,
                    username,
                    attachments,
                    ..
                } => {
                    // Text may be empty only beside attachments.
                    assert!(!message.is_empty() || !attachments.is_empty());
                    (Some(room_id), Some(message), username.as_ref())
                }
                ClientEvent::Edit { room_id, message, .. } => (Some(room_id), Some(message), None),
                ClientEvent::Typing { room_id, username, .. } => {
                    (Some(room_id), None, username.as_ref())
                }
                ClientEvent::Join { room_id, .. }
                | ClientEvent::Leave { room_id }
                | ClientEvent::History { room_id, .. }
                | ClientEvent::Read { room_id, .. }
                | ClientEvent::Receipts { room_id }
                | ClientEvent::Delete { room_id, .. }
                | ClientEvent::React { room_id, .. }
                | ClientEvent::Members { room_id } => (Some(room_id), None, None),
                ClientEvent::DmOpen { user_id } => {
                    assert!(chat_proto::api::valid_user_id(user_id));
                    (None, None, None)
                }
                ClientEvent::Presence { user_ids, .. } => {
                    assert!(user_ids.iter().all(|u| chat_proto::api::valid_user_id(u)));
                    (None, None, None)
                }
                ClientEvent::DmList { .. } | ClientEvent::Status { .. } | ClientEvent::Call(_) => {
                    (None, None, None)
                }
            };
            if let Some(room) = room {
                assert!(
                    !room.as_str().is_empty() && room.as_str().len() <= limits.max_room_id_chars
                );
            }
            if let Some(text) = text.filter(|text| !text.is_empty()) {
                assert_eq!(text.trim(), text.as_str());
                assert!(text.chars().count() <= limits.max_message_chars);
                assert!(!text.chars().any(|c| c.is_control() && c != '\n' && c != '\t'));
            }
            if let Some(name) = name {
                assert!(!name.is_empty() && name.chars().count() <= limits.max_username_chars);
                assert!(!name.chars().any(char::is_control));
            }
        }
    }
});
