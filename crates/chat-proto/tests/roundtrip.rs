//! Property tests: what a client can send parses back to what it meant,
//! what the server encodes decodes to the same fields, and no input makes
//! the parser panic or answer with a code outside the documented set.

use std::sync::Arc;

use chat_proto::call::{CallId, CallMedia, CallRequest};
use chat_proto::client::EventKind;
use chat_proto::{
    parse_client_frame, ChatMessage, ClientEvent, ErrorCode, MessageId, ProtoLimits, RoomId,
    ServerEvent,
};
use proptest::prelude::*;
use serde_json::{json, Value};
use strum::IntoEnumIterator;

fn limits() -> ProtoLimits {
    ProtoLimits::default()
}

fn room_id() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_.:-]{1,128}"
}

/// Message text as the parser keeps it: no surrounding whitespace, no
/// control characters but `\n` and `\t`, within the limit.
fn message_text() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        any::<char>().prop_filter("no controls but \\n and \\t", |c| {
            !c.is_control() || *c == '\n' || *c == '\t'
        }),
        1..200,
    )
    .prop_map(|chars| chars.into_iter().collect::<String>().trim().to_owned())
    .prop_filter("not blank", |text| !text.is_empty())
}

fn client_event() -> impl Strategy<Value = ClientEvent> {
    let room = || room_id().prop_map(|id| RoomId::parse(&id, &limits()).unwrap());
    // Names the parser keeps unchanged: visible characters, no spaces at the ends.
    let name =
        || proptest::option::of("[A-Za-z0-9李雷éü😀][A-Za-z0-9 李雷éü😀]{0,40}[A-Za-z0-9李雷éü😀]");
    prop_oneof![
        (room(), proptest::option::of(any::<u64>()))
            .prop_map(|(room_id, since)| ClientEvent::Join { room_id, since }),
        room().prop_map(|room_id| ClientEvent::Leave { room_id }),
        (
            room(),
            message_text(),
            name(),
            proptest::option::of("[!-~]{1,64}")
        )
            .prop_map(
                |(room_id, message, username, client_id)| ClientEvent::Message {
                    room_id,
                    message,
                    username,
                    client_id,
                    attachments: Vec::new(),
                }
            ),
        (room(), name(), any::<bool>()).prop_map(|(room_id, username, is_typing)| {
            ClientEvent::Typing {
                room_id,
                username,
                is_typing,
            }
        }),
        (room(), proptest::option::of(any::<u64>()), 1u32..=100).prop_map(
            |(room_id, before, limit)| ClientEvent::History {
                room_id,
                before,
                limit
            }
        ),
        (room(), any::<u64>()).prop_map(|(room_id, seq)| ClientEvent::Read { room_id, seq }),
        room().prop_map(|room_id| ClientEvent::Receipts { room_id }),
        (room(), message_id(), message_text()).prop_map(|(room_id, message_id, message)| {
            ClientEvent::Edit {
                room_id,
                message_id,
                message,
            }
        }),
        (room(), message_id()).prop_map(|(room_id, message_id)| ClientEvent::Delete {
            room_id,
            message_id
        }),
        (room(), message_id(), "[😀👍🎉a-z+]{1,8}", any::<bool>()).prop_map(
            |(room_id, message_id, emoji, added)| ClientEvent::React {
                room_id,
                message_id,
                emoji,
                added,
            }
        ),
        user().prop_map(|user_id| ClientEvent::DmOpen { user_id }),
        (proptest::option::of(0i64..8_000_000_000_000), 1u32..=100)
            .prop_map(|(before, limit)| ClientEvent::DmList { before, limit }),
        any::<bool>().prop_map(|away| ClientEvent::Status { away }),
        (
            proptest::collection::vec(user(), 0..5),
            proptest::option::of(any::<bool>())
        )
            .prop_map(|(user_ids, subscribe)| ClientEvent::Presence {
                user_ids,
                subscribe
            }),
        room().prop_map(|room_id| ClientEvent::Members { room_id }),
        (room(), any::<bool>()).prop_map(|(room_id, video)| ClientEvent::Call(
            CallRequest::Start {
                room_id,
                media: if video {
                    CallMedia::Video
                } else {
                    CallMedia::Audio
                },
            }
        )),
        ("[!-~]{1,128}", 0..3u8).prop_map(|(id, answer)| {
            let call_id = CallId::parse(&id).unwrap();
            ClientEvent::Call(match answer {
                0 => CallRequest::Accept { call_id },
                1 => CallRequest::Decline { call_id },
                _ => CallRequest::Hangup { call_id },
            })
        }),
    ]
}

fn user() -> impl Strategy<Value = String> {
    "[a-z李雷:é]{1,20}( [a-z]{1,5})?"
}

fn message_id() -> impl Strategy<Value = MessageId> {
    "[!-~]{1,128}".prop_map(|id| MessageId::parse(id).unwrap())
}

/// The frame a client would send for `event`.
fn client_frame(event: &ClientEvent) -> String {
    let (name, data) = match event {
        ClientEvent::Join { room_id, since } => (
            "chat.join",
            json!({"roomId": room_id.as_str(), "since": since}),
        ),
        ClientEvent::Leave { room_id } => ("chat.leave", json!({"roomId": room_id.as_str()})),
        ClientEvent::Message {
            room_id,
            message,
            username,
            client_id,
            attachments,
        } => (
            "chat.message",
            json!({"roomId": room_id.as_str(), "message": message, "username": username, "clientId": client_id, "attachments": attachments}),
        ),
        ClientEvent::Typing {
            room_id,
            username,
            is_typing,
        } => (
            "chat.typing",
            json!({"roomId": room_id.as_str(), "username": username, "isTyping": is_typing}),
        ),
        ClientEvent::History {
            room_id,
            before,
            limit,
        } => (
            "chat.history",
            json!({"roomId": room_id.as_str(), "before": before, "limit": limit}),
        ),
        ClientEvent::Read { room_id, seq } => {
            ("chat.read", json!({"roomId": room_id.as_str(), "seq": seq}))
        }
        ClientEvent::Receipts { room_id } => ("chat.receipts", json!({"roomId": room_id.as_str()})),
        ClientEvent::Edit {
            room_id,
            message_id,
            message,
        } => (
            "chat.edit",
            json!({"roomId": room_id.as_str(), "messageId": message_id.as_str(), "message": message}),
        ),
        ClientEvent::Delete {
            room_id,
            message_id,
        } => (
            "chat.delete",
            json!({"roomId": room_id.as_str(), "messageId": message_id.as_str()}),
        ),
        ClientEvent::React {
            room_id,
            message_id,
            emoji,
            added,
        } => (
            if *added { "chat.react" } else { "chat.unreact" },
            json!({"roomId": room_id.as_str(), "messageId": message_id.as_str(), "emoji": emoji}),
        ),
        ClientEvent::DmOpen { user_id } => ("chat.dm.open", json!({"userId": user_id})),
        ClientEvent::DmList { before, limit } => (
            "chat.dm.list",
            json!({"before": before.map(chat_proto::time::iso_millis), "limit": limit}),
        ),
        ClientEvent::Status { away } => (
            "chat.status",
            json!({"status": if *away { "away" } else { "online" }}),
        ),
        ClientEvent::Presence {
            user_ids,
            subscribe,
        } => (
            "chat.presence",
            json!({"userIds": user_ids, "subscribe": subscribe}),
        ),
        ClientEvent::Members { room_id } => ("chat.members", json!({"roomId": room_id.as_str()})),
        ClientEvent::Call(request) => match request {
            CallRequest::Start { room_id, media } => (
                "chat.call.start",
                json!({"roomId": room_id.as_str(), "media": media.as_str()}),
            ),
            CallRequest::Accept { call_id } => {
                ("chat.call.accept", json!({"callId": call_id.as_str()}))
            }
            CallRequest::Decline { call_id } => {
                ("chat.call.decline", json!({"callId": call_id.as_str()}))
            }
            CallRequest::Hangup { call_id } => {
                ("chat.call.hangup", json!({"callId": call_id.as_str()}))
            }
            CallRequest::Signal {
                call_id,
                to_user_id,
                signal,
            } => (
                "chat.call.signal",
                json!({"callId": call_id.as_str(), "toUserId": to_user_id,
                    "signal": serde_json::from_str::<Value>(signal.raw().get()).unwrap()}),
            ),
        },
    };
    let mut data = data;
    // An absent optional field is left out, as clients do.
    data.as_object_mut()
        .unwrap()
        .retain(|_, value| !value.is_null());
    json!({"event": name, "data": data}).to_string()
}

proptest! {
    #[test]
    fn client_events_round_trip(event in client_event()) {
        let frame = client_frame(&event);
        prop_assert_eq!(parse_client_frame(&frame, &limits()), Ok(event));
    }

    #[test]
    fn parser_never_panics_and_names_a_known_code(text in any::<String>()) {
        if let Err(error) = parse_client_frame(&text, &limits()) {
            prop_assert!(ErrorCode::ALL.contains(&error.code));
        }
    }

    #[test]
    fn parser_survives_arbitrary_data_objects(
        event in prop_oneof![
            proptest::sample::select(EventKind::iter().map(|kind| kind.name().to_owned()).collect::<Vec<_>>()),
            "[a-z.]{0,12}",
        ],
        data in arbitrary_json(),
    ) {
        let frame = json!({"event": event, "data": data}).to_string();
        match parse_client_frame(&frame, &limits()) {
            Ok(parsed) => prop_assert_eq!(parsed.name(), event),
            Err(error) => prop_assert!(ErrorCode::ALL.contains(&error.code)),
        }
    }

    #[test]
    fn server_messages_encode_to_what_they_hold(
        text in any::<String>(),
        name in any::<String>(),
        user in any::<String>(),
        seq in any::<u64>(),
        timestamp_ms in 0i64..=8_000_000_000_000,
    ) {
        let message = ChatMessage {
            id: "m".into(),
            seq,
            room_id: "room".into(),
            user_id: Arc::from(user.as_str()),
            username: Arc::from(name.as_str()),
            message: text.clone(),
            timestamp_ms,
            client_id: (seq % 2 == 0).then(|| name.clone()),
            kind: chat_proto::MessageKind::User,
            edited_at_ms: None,
            deleted: false,
            reactions: None,
            attachments: Vec::new(),
        };
        let frame: Value = serde_json::from_str(&ServerEvent::Message(&message).to_frame()).unwrap();
        prop_assert_eq!(&frame["event"], "chat.message");
        let data = &frame["data"];
        prop_assert_eq!(data["message"].as_str(), Some(text.as_str()));
        prop_assert_eq!(data["username"].as_str(), Some(name.as_str()));
        prop_assert_eq!(data["userId"].as_str(), Some(user.as_str()));
        prop_assert_eq!(data["seq"].as_u64(), Some(seq));
        prop_assert_eq!(data.get("clientId").and_then(Value::as_str), message.client_id.as_deref());
        prop_assert_eq!(
            data["timestamp"].as_str().map(str::to_owned),
            Some(chat_proto::time::iso_millis(timestamp_ms))
        );
    }

    #[test]
    fn error_events_encode_to_what_they_hold(text in any::<String>(), index in 0..ErrorCode::ALL.len()) {
        let code = ErrorCode::ALL[index];
        let frame: Value = serde_json::from_str(
            &ServerEvent::Error { message: &text, code }.to_frame(),
        ).unwrap();
        prop_assert_eq!(frame["data"]["message"].as_str(), Some(text.as_str()));
        prop_assert_eq!(frame["data"]["code"].as_str(), Some(code.as_str()));
    }

    #[test]
    fn cleaned_names_hide_nothing_and_fit(raw in any::<String>(), max in 1usize..80) {
        if let Some(name) = chat_proto::client::display_name(&raw, max) {
            prop_assert!(name.chars().count() <= max);
            prop_assert_eq!(name.trim(), name.as_str());
            prop_assert!(!name.is_empty());
            for c in name.chars() {
                prop_assert!(!c.is_control(), "{:?}", c);
                prop_assert!(!matches!(c, '\u{61c}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}'
                    | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{feff}' | '\u{2028}' | '\u{2029}'), "{:?}", c);
            }
        }
    }
}

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ];
    let value = leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            proptest::collection::btree_map("[a-zA-Z]{1,8}", inner, 0..4)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    });
    let field =
        |name: &'static str| proptest::option::of(value.clone()).prop_map(move |v| (name, v));
    (
        field("roomId"),
        field("message"),
        field("username"),
        field("isTyping"),
        field("since"),
        field("before"),
        field("limit"),
    )
        .prop_map(|fields| {
            let (a, b, c, d, e, f, g) = fields;
            let mut object = serde_json::Map::new();
            for (name, value) in [a, b, c, d, e, f, g] {
                if let Some(value) = value {
                    object.insert(name.to_owned(), value);
                }
            }
            Value::Object(object)
        })
}
