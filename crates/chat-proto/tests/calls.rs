//! Call requests parse into what the service acts on, each failure with
//! its own code; the events the service sends have the documented shape.

use chat_proto::call::{
    CallMedia, CallParticipant, CallPhase, CallRequest, CallRing, CallStateEvent, EndReason,
    ParticipantState, RelayedSignal, MAX_SIGNAL_BYTES,
};
use chat_proto::client::EventKind;
use chat_proto::rate::CALL_SIGNAL_EVENT;
use chat_proto::{parse_client_frame, ClientEvent, ErrorCode, ProtoLimits, ServerEvent};
use serde_json::{json, Value};

fn parse(frame: Value) -> Result<CallRequest, ErrorCode> {
    match parse_client_frame(&frame.to_string(), &ProtoLimits::default()) {
        Ok(ClientEvent::Call(request)) => Ok(request),
        Ok(other) => panic!("not a call request: {other:?}"),
        Err(error) => Err(error.code),
    }
}

fn frame(event: &str, data: Value) -> Value {
    json!({"event": event, "data": data})
}

#[test]
fn the_signal_event_is_the_one_the_gateway_limits_apart() {
    assert_eq!(EventKind::CallSignal.name(), CALL_SIGNAL_EVENT);
}

#[test]
fn start_names_a_room_and_the_media() {
    match parse(frame(
        "chat.call.start",
        json!({"roomId": "r", "media": "video"}),
    )) {
        Ok(CallRequest::Start { room_id, media }) => {
            assert_eq!(room_id.as_str(), "r");
            assert_eq!(media, CallMedia::Video);
        }
        other => panic!("{other:?}"),
    }
    for (data, code) in [
        (json!({"roomId": "r"}), ErrorCode::InvalidFormat),
        (
            json!({"roomId": "r", "media": "screen"}),
            ErrorCode::InvalidFormat,
        ),
        (json!({"roomId": "r", "media": 1}), ErrorCode::InvalidFormat),
        (json!({"media": "audio"}), ErrorCode::InvalidRoom),
        (
            json!({"roomId": "bad room", "media": "audio"}),
            ErrorCode::InvalidRoom,
        ),
    ] {
        assert_eq!(
            parse(frame("chat.call.start", data.clone())),
            Err(code),
            "{data}"
        );
    }
}

#[test]
fn answers_name_the_call() {
    for (event, want) in [
        ("chat.call.accept", EventKind::CallAccept),
        ("chat.call.decline", EventKind::CallDecline),
        ("chat.call.hangup", EventKind::CallHangup),
    ] {
        let text = frame(event, json!({"callId": "c-1"})).to_string();
        let parsed = parse_client_frame(&text, &ProtoLimits::default()).unwrap();
        assert_eq!(parsed.kind(), want);
        for bad in [
            json!({}),
            json!({"callId": ""}),
            json!({"callId": 7}),
            json!({"callId": "a\u{1}"}),
        ] {
            assert_eq!(
                parse(frame(event, bad.clone())),
                Err(ErrorCode::InvalidFormat),
                "{bad}"
            );
        }
    }
}

#[test]
fn signals_keep_their_bytes_and_are_bounded() {
    let text = r#"{"event":"chat.call.signal","data":{"callId":"c","toUserId":"李雷","signal":{"type":"offer", "sdp":"v=0\r\n"}}}"#;
    match parse_client_frame(text, &ProtoLimits::default()) {
        Ok(ClientEvent::Call(CallRequest::Signal {
            call_id,
            to_user_id,
            signal,
        })) => {
            assert_eq!(call_id.as_str(), "c");
            assert_eq!(to_user_id, "李雷");
            assert_eq!(signal.raw().get(), r#"{"type":"offer", "sdp":"v=0\r\n"}"#);
        }
        other => panic!("{other:?}"),
    }
    let signal = |signal: Value| {
        frame(
            "chat.call.signal",
            json!({"callId": "c", "toUserId": "u", "signal": signal}),
        )
    };
    assert_eq!(parse(signal(json!("offer"))), Err(ErrorCode::InvalidFormat));
    assert_eq!(
        parse(signal(json!({"type": "offer"}))),
        Err(ErrorCode::InvalidFormat)
    );
    assert_eq!(parse(signal(Value::Null)), Err(ErrorCode::InvalidFormat));
    let sdp = "x".repeat(MAX_SIGNAL_BYTES);
    assert_eq!(
        parse(signal(json!({"type": "offer", "sdp": sdp}))),
        Err(ErrorCode::SignalTooLarge)
    );
    let missing_to = frame(
        "chat.call.signal",
        json!({"callId": "c", "signal": {"type": "candidate", "candidate": null}}),
    );
    assert_eq!(parse(missing_to), Err(ErrorCode::InvalidUser));
}

#[test]
fn server_events_have_their_documented_shape() {
    let participants = [
        CallParticipant {
            user_id: "ann".into(),
            username: "Ann".into(),
            state: ParticipantState::Joined,
        },
        CallParticipant {
            user_id: "bob".into(),
            username: "Bob".into(),
            state: ParticipantState::Ringing,
        },
    ];
    let state = CallStateEvent {
        call_id: "c",
        room_id: "r",
        state: CallPhase::Ringing,
        media: CallMedia::Audio,
        participants: &participants,
        reason: None,
        you: "bob",
    };
    let value: Value = serde_json::from_str(&ServerEvent::CallState(&state).to_frame()).unwrap();
    assert_eq!(
        value,
        json!({"event": "chat.call.state", "data": {"callId": "c", "roomId": "r", "state": "ringing",
            "media": "audio", "you": "bob", "participants": [
                {"userId": "ann", "username": "Ann", "state": "joined"},
                {"userId": "bob", "username": "Bob", "state": "ringing"}]}})
    );
    let ended = CallStateEvent {
        state: CallPhase::Ended,
        reason: Some(EndReason::Missed),
        ..state
    };
    let value: Value = serde_json::from_str(&ServerEvent::CallState(&ended).to_frame()).unwrap();
    assert_eq!(value["data"]["reason"], "missed");

    let ring = CallRing {
        call_id: "c",
        room_id: "r",
        user_id: "ann",
        username: "Ann",
        media: CallMedia::Video,
    };
    let value: Value = serde_json::from_str(&ServerEvent::CallRing(&ring).to_frame()).unwrap();
    assert_eq!(
        value,
        json!({"event": "chat.call.ring", "data": {"callId": "c", "roomId": "r", "userId": "ann",
            "username": "Ann", "media": "video"}})
    );

    let raw = serde_json::value::RawValue::from_string(
        r#"{"type":"candidate", "candidate":null}"#.into(),
    )
    .unwrap();
    let relayed = RelayedSignal {
        call_id: "c",
        from_user_id: "ann",
        signal: &raw,
    };
    assert_eq!(
        ServerEvent::CallSignal(&relayed).to_frame(),
        r#"{"event":"chat.call.signal","data":{"callId":"c","fromUserId":"ann","signal":{"type":"candidate", "candidate":null}}}"#
    );
}
