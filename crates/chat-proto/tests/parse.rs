//! Every shape of bad input maps to a precise error code.

use chat_proto::{parse_client_frame, ClientEvent, ErrorCode, ProtoLimits};

fn code_of(frame: &str) -> ErrorCode {
    parse_client_frame(frame, &ProtoLimits::default())
        .expect_err(frame)
        .code
}

fn parse(frame: &str) -> ClientEvent {
    parse_client_frame(frame, &ProtoLimits::default()).expect(frame)
}

#[test]
fn seed_examples_parse() {
    assert!(matches!(
        parse(r#"{"event":"chat.join","data":{"roomId":"room123"}}"#),
        ClientEvent::Join { since: None, .. }
    ));
    assert!(matches!(
        parse(r#"{"event":"chat.leave","data":{"roomId":"room123"}}"#),
        ClientEvent::Leave { .. }
    ));
    match parse(
        r#"{"event":"chat.message","data":{"roomId":"room123","message":"Hello world!","username":"John"}}"#,
    ) {
        ClientEvent::Message {
            room_id,
            message,
            username,
            client_id,
            attachments,
        } => {
            assert_eq!(client_id, None);
            assert!(attachments.is_empty());
            assert_eq!(room_id.as_str(), "room123");
            assert_eq!(message, "Hello world!");
            assert_eq!(username.as_deref(), Some("John"));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        parse(
            r#"{"event":"chat.typing","data":{"roomId":"room123","username":"John","isTyping":true}}"#
        ),
        ClientEvent::Typing {
            is_typing: true,
            ..
        }
    ));
}

#[test]
fn structural_errors_are_invalid_format() {
    for frame in [
        "not json",
        "[]",
        "[1,2]",
        "42",
        "null",
        r#""chat.join""#,
        r#"{"data":{"roomId":"r"}}"#,
        r#"{"event":7,"data":{"roomId":"r"}}"#,
        r#"{"event":"chat.join"}"#,
        r#"{"event":"chat.join","data":"r"}"#,
        r#"{"event":"chat.join","data":["r"]}"#,
        r#"{"event":"chat.join","data":{"roomId":"r","since":-1}}"#,
        r#"{"event":"chat.join","data":{"roomId":"r","since":"5"}}"#,
        r#"{"event":"chat.typing","data":{"roomId":"r"}}"#,
        r#"{"event":"chat.typing","data":{"roomId":"r","isTyping":"yes"}}"#,
        r#"{"event":"chat.message","data":{"roomId":"r","message":"hi","username":5}}"#,
        r#"{"event":"chat.history","data":{"roomId":"r","limit":0}}"#,
        r#"{"event":"chat.history","data":{"roomId":"r","limit":101}}"#,
        r#"{"event":"chat.history","data":{"roomId":"r","before":1.5}}"#,
    ] {
        assert_eq!(code_of(frame), ErrorCode::InvalidFormat, "{frame}");
    }
}

#[test]
fn unknown_events_are_named() {
    let err = parse_client_frame(
        r#"{"event":"chat.explode","data":{}}"#,
        &ProtoLimits::default(),
    )
    .unwrap_err();
    assert_eq!(err.code, ErrorCode::UnknownEvent);
    assert!(err.message.contains("chat.explode"));
}

#[test]
fn room_ids_are_validated() {
    let long = "a".repeat(129);
    for room in ["", "has space", "emoji😀", "slash/room", &long] {
        let frame = serde_json::json!({"event": "chat.join", "data": {"roomId": room}}).to_string();
        assert_eq!(code_of(&frame), ErrorCode::InvalidRoom, "{room}");
    }
    assert_eq!(
        code_of(r#"{"event":"chat.join","data":{"roomId":5}}"#),
        ErrorCode::InvalidRoom
    );
    assert_eq!(
        code_of(r#"{"event":"chat.join","data":{}}"#),
        ErrorCode::InvalidRoom
    );
    let max = "a".repeat(128);
    let frame = serde_json::json!({"event": "chat.join", "data": {"roomId": format!("{}", max)}});
    parse(&frame.to_string());
    parse(r#"{"event":"chat.join","data":{"roomId":"A-z_0.9:x"}}"#);
}

#[test]
fn message_text_is_trimmed_and_bounded() {
    assert_eq!(
        code_of(r#"{"event":"chat.message","data":{"roomId":"r","message":"   "}}"#),
        ErrorCode::InvalidMessage
    );
    assert_eq!(
        code_of(r#"{"event":"chat.message","data":{"roomId":"r"}}"#),
        ErrorCode::InvalidMessage
    );
    assert_eq!(
        code_of(r#"{"event":"chat.message","data":{"roomId":"r","message":{"a":1}}}"#),
        ErrorCode::InvalidMessage
    );
    let at_limit = "é".repeat(4000);
    let frame = serde_json::json!({"event": "chat.message", "data": {"roomId": "r", "message": format!("  {at_limit}  ")}});
    match parse(&frame.to_string()) {
        ClientEvent::Message { message, .. } => assert_eq!(message, at_limit),
        other => panic!("{other:?}"),
    }
    let over = "x".repeat(4001);
    let frame =
        serde_json::json!({"event": "chat.message", "data": {"roomId": "r", "message": over}});
    assert_eq!(code_of(&frame.to_string()), ErrorCode::MessageTooLong);
}

#[test]
fn usernames_are_trimmed_and_shortened() {
    let long = "李".repeat(80);
    let frame = serde_json::json!({"event": "chat.message", "data": {"roomId": "r", "message": "hi", "username": format!(" {long} ")}});
    match parse(&frame.to_string()) {
        ClientEvent::Message { username, .. } => {
            assert_eq!(username.unwrap().chars().count(), 64)
        }
        other => panic!("{other:?}"),
    }
    match parse(r#"{"event":"chat.message","data":{"roomId":"r","message":"hi","username":"  "}}"#)
    {
        ClientEvent::Message { username, .. } => assert_eq!(username, None),
        other => panic!("{other:?}"),
    }
}

#[test]
fn recovery_and_history_fields() {
    assert_eq!(
        parse(r#"{"event":"chat.join","data":{"roomId":"r","since":12}}"#),
        ClientEvent::Join {
            room_id: chat_proto::RoomId::parse("r", &ProtoLimits::default()).unwrap(),
            since: Some(12)
        }
    );
    match parse(r#"{"event":"chat.history","data":{"roomId":"r"}}"#) {
        ClientEvent::History { before, limit, .. } => {
            assert_eq!(before, None);
            assert_eq!(limit, 50);
        }
        other => panic!("{other:?}"),
    }
    match parse(r#"{"event":"chat.history","data":{"roomId":"r","before":9,"limit":100}}"#) {
        ClientEvent::History { before, limit, .. } => {
            assert_eq!(before, Some(9));
            assert_eq!(limit, 100);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unknown_fields_are_ignored() {
    parse(r#"{"event":"chat.join","data":{"roomId":"r","extra":[1,2,{"x":null}]},"id":5}"#);
}

#[test]
fn control_characters_in_messages_are_refused() {
    for text in [
        "a\u{0}b",
        "nul at end\u{0}x",
        "bell\u{7}",
        "esc\u{1b}[31m",
        "del\u{7f}",
        "c1\u{85}x",
        "c1\u{9f}x",
        "cr\rinside",
    ] {
        let frame =
            serde_json::json!({"event": "chat.message", "data": {"roomId": "r", "message": text}});
        let error = parse_client_frame(&frame.to_string(), &ProtoLimits::default()).unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidMessage, "{text:?}");
        assert!(
            error.message.contains("control characters"),
            "{}",
            error.message
        );
    }
    let frame = serde_json::json!({"event": "chat.message", "data": {"roomId": "r", "message": "line one\nline\ttwo"}});
    match parse(&frame.to_string()) {
        ClientEvent::Message { message, .. } => assert_eq!(message, "line one\nline\ttwo"),
        other => panic!("{other:?}"),
    }
    // The same rule holds for text that does not come from a frame.
    let limits = ProtoLimits::default();
    assert_eq!(
        chat_proto::client::message_text("x\u{0}".into(), &limits)
            .unwrap_err()
            .code,
        ErrorCode::InvalidMessage
    );
}

#[test]
fn control_characters_in_client_names_are_refused() {
    for name in ["al\u{0}ice", "bob\nforged", "tab\tname"] {
        for event in ["chat.message", "chat.typing"] {
            let frame = serde_json::json!({"event": event, "data": {"roomId": "r", "message": "hi", "isTyping": true, "username": name}});
            let error =
                parse_client_frame(&frame.to_string(), &ProtoLimits::default()).unwrap_err();
            assert_eq!(error.code, ErrorCode::InvalidMessage, "{event} {name:?}");
            assert!(error.message.contains("username"), "{}", error.message);
        }
    }
}

#[test]
fn display_names_cannot_spoof() {
    use chat_proto::client::display_name;
    // Bidirectional overrides and isolates, marks, zero-width and other
    // invisible format characters are removed wherever they stand.
    assert_eq!(display_name("alice\u{202e}", 64).as_deref(), Some("alice"));
    assert_eq!(display_name("\u{202e}ecila", 64).as_deref(), Some("ecila"));
    for hidden in [
        '\u{61c}', '\u{200b}', '\u{200c}', '\u{200d}', '\u{200e}', '\u{200f}', '\u{202a}',
        '\u{202b}', '\u{202c}', '\u{202d}', '\u{2060}', '\u{2064}', '\u{2066}', '\u{2069}',
        '\u{feff}', '\u{ad}', '\u{180e}', '\u{2028}', '\u{2029}', '\u{0}', '\u{1b}', '\u{85}',
    ] {
        let name = format!("ad{hidden}min");
        assert_eq!(
            display_name(&name, 64).as_deref(),
            Some("admin"),
            "{hidden:?}"
        );
    }
    // Nothing left but invisible characters and spaces: no name at all.
    assert_eq!(display_name(" \u{200b}\u{202e} ", 64), None);
    // Trimmed after cleaning, and shortened to the limit.
    assert_eq!(
        display_name("\u{200b} bob \u{200b}", 64).as_deref(),
        Some("bob")
    );
    assert_eq!(
        display_name(&"é".repeat(100), 64).unwrap().chars().count(),
        64
    );
    // Ordinary scripts, emoji and their joiners' visible parts stay.
    assert_eq!(
        display_name("李雷 José 😀", 64).as_deref(),
        Some("李雷 José 😀")
    );
}

#[test]
fn every_event_name_parses_to_its_own_kind() {
    use chat_proto::client::EventKind;
    use strum::IntoEnumIterator;
    for kind in EventKind::iter() {
        let frame = serde_json::json!({"event": kind.name(), "data": {
            "roomId": "r", "message": "hi", "isTyping": false, "seq": 1,
            "messageId": "m1", "emoji": "👍", "userId": "u", "status": "away", "userIds": [],
            "media": "audio", "callId": "c1", "toUserId": "u",
            "signal": {"type": "candidate", "candidate": null}}});
        let event = parse(&frame.to_string());
        assert_eq!(event.kind(), kind, "{}", kind.name());
        assert_eq!(event.name(), kind.name());
    }
}

#[test]
fn client_ids_are_kept_and_checked() {
    match parse(
        r#"{"event":"chat.message","data":{"roomId":"r","message":"hi","clientId":"tab1-0042"}}"#,
    ) {
        ClientEvent::Message { client_id, .. } => {
            assert_eq!(client_id.as_deref(), Some("tab1-0042"))
        }
        other => panic!("{other:?}"),
    }
    let long = "c".repeat(65);
    for bad in [
        json_str(""),
        json_str(&long),
        json_str("a\nb"),
        "5".to_owned(),
    ] {
        let frame = format!(
            r#"{{"event":"chat.message","data":{{"roomId":"r","message":"hi","clientId":{bad}}}}}"#
        );
        assert_eq!(code_of(&frame), ErrorCode::InvalidFormat, "{bad}");
    }
    let at_limit = format!(
        r#"{{"event":"chat.message","data":{{"roomId":"r","message":"hi","clientId":{}}}}}"#,
        json_str(&"c".repeat(64))
    );
    parse(&at_limit);
}

fn json_str(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

#[test]
fn edits_deletes_and_reactions_name_a_message() {
    match parse(
        r#"{"event":"chat.edit","data":{"roomId":"r","messageId":"m1","message":"  new  "}}"#,
    ) {
        ClientEvent::Edit {
            message_id,
            message,
            ..
        } => {
            assert_eq!(message_id.as_str(), "m1");
            assert_eq!(message, "new", "edits follow the text rules of messages");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        parse(r#"{"event":"chat.unreact","data":{"roomId":"r","messageId":"m1","emoji":"👨‍👩‍👧‍👦"}}"#),
        ClientEvent::React { added: false, .. }
    ));
    assert_eq!(
        code_of(r#"{"event":"chat.edit","data":{"roomId":"r","messageId":"m1","message":" "}}"#),
        ErrorCode::InvalidMessage
    );
    assert_eq!(
        code_of(
            r#"{"event":"chat.edit","data":{"roomId":"r","messageId":"m1","message":"a\u0000"}}"#
        ),
        ErrorCode::InvalidMessage
    );
    let long_id = "m".repeat(129);
    for bad_id in ["", "a\nb", long_id.as_str()] {
        let frame =
            format!(r#"{{"event":"chat.delete","data":{{"roomId":"r","messageId":"{bad_id}"}}}}"#);
        assert_eq!(code_of(&frame), ErrorCode::InvalidFormat, "{frame}");
    }
    assert_eq!(
        code_of(r#"{"event":"chat.delete","data":{"roomId":"r","messageId":7}}"#),
        ErrorCode::InvalidFormat
    );
    assert_eq!(
        code_of(r#"{"event":"chat.delete","data":{"messageId":"m1"}}"#),
        ErrorCode::InvalidRoom
    );
}

#[test]
fn emoji_are_short_and_have_no_spaces() {
    let react = |emoji: &str| {
        format!(
            r#"{{"event":"chat.react","data":{{"roomId":"r","messageId":"m1","emoji":{}}}}}"#,
            serde_json::to_string(emoji).unwrap()
        )
    };
    for good in ["👍", "+1", "🏳️‍🌈", &"x".repeat(32)] {
        assert!(
            matches!(parse(&react(good)), ClientEvent::React { added: true, ref emoji, .. } if emoji == good),
            "{good}"
        );
    }
    for bad in [
        "",
        " ",
        "👍 ",
        "a\tb",
        "\u{7}",
        "\u{a0}",
        &"x".repeat(33),
        "😀😀😀😀😀😀😀😀😀",
    ] {
        let frame = react(bad);
        assert_eq!(code_of(&frame), ErrorCode::InvalidFormat, "{bad:?}");
    }
    assert_eq!(
        code_of(r#"{"event":"chat.react","data":{"roomId":"r","messageId":"m1"}}"#),
        ErrorCode::InvalidFormat
    );
}

#[test]
fn shortened_names_end_on_a_visible_character() {
    assert_eq!(
        chat_proto::client::display_name("A0𝔖A𐻂aⴭ 𛲀", 8).as_deref(),
        Some("A0𝔖A𐻂aⴭ")
    );
}

#[test]
fn attachments_are_distinct_file_ids_and_make_text_optional() {
    let frame = |data: &str| format!(r#"{{"event":"chat.message","data":{data}}}"#);
    match parse(&frame(r#"{"roomId":"r","attachments":["f1","f2"]}"#)) {
        ClientEvent::Message {
            message,
            attachments,
            ..
        } => {
            assert_eq!(message, "");
            assert_eq!(attachments, ["f1", "f2"]);
        }
        other => panic!("{other:?}"),
    }
    match parse(&frame(
        r#"{"roomId":"r","message":"  look  ","attachments":["f1"]}"#,
    )) {
        ClientEvent::Message {
            message,
            attachments,
            ..
        } => assert_eq!((message.as_str(), attachments.len()), ("look", 1)),
        other => panic!("{other:?}"),
    }
    match parse(&frame(
        r#"{"roomId":"r","message":" \n ","attachments":["f1"]}"#,
    )) {
        ClientEvent::Message { message, .. } => assert_eq!(message, ""),
        other => panic!("{other:?}"),
    }
    // No files: the text rules as ever.
    for data in [
        r#"{"roomId":"r","attachments":[]}"#,
        r#"{"roomId":"r","message":" ","attachments":[]}"#,
        r#"{"roomId":"r","attachments":null}"#,
    ] {
        assert_eq!(code_of(&frame(data)), ErrorCode::InvalidMessage, "{data}");
    }
    let eleven: Vec<String> = (0..11).map(|i| format!("\"f{i}\"")).collect();
    let ten = &eleven[..10];
    assert!(matches!(
        parse(&frame(&format!(r#"{{"roomId":"r","attachments":[{}]}}"#, ten.join(",")))),
        ClientEvent::Message { attachments, .. } if attachments.len() == 10
    ));
    for data in [
        format!(r#"{{"roomId":"r","attachments":[{}]}}"#, eleven.join(",")),
        r#"{"roomId":"r","attachments":["f1","f1"]}"#.to_owned(),
        r#"{"roomId":"r","attachments":[""]}"#.to_owned(),
        format!(r#"{{"roomId":"r","attachments":["{}"]}}"#, "x".repeat(129)),
        r#"{"roomId":"r","attachments":["a\u0000b"]}"#.to_owned(),
    ] {
        assert_eq!(
            code_of(&frame(&data)),
            ErrorCode::InvalidAttachment,
            "{data}"
        );
    }
    for data in [
        r#"{"roomId":"r","message":"hi","attachments":"f1"}"#,
        r#"{"roomId":"r","message":"hi","attachments":[1]}"#,
        r#"{"roomId":"r","message":"hi","attachments":{"id":"f1"}}"#,
    ] {
        assert_eq!(code_of(&frame(data)), ErrorCode::InvalidFormat, "{data}");
    }
    // The message's own rules still apply to text sent with files.
    assert_eq!(
        code_of(&frame(&format!(
            r#"{{"roomId":"r","message":"{}","attachments":["f1"]}}"#,
            "x".repeat(4001)
        ))),
        ErrorCode::MessageTooLong
    );
    assert_eq!(
        code_of(&frame(r#"{"roomId":"bad room","attachments":["f1"]}"#)),
        ErrorCode::InvalidRoom
    );
}
