-- Every durable room event (messages, system messages, edits, deletions,
-- reactions) is a row of one per-room log and takes the room's next seq.
-- Message rows also keep the message's current state.
ALTER TABLE messages RENAME TO room_events;
ALTER TABLE room_events RENAME COLUMN message TO body;
-- `kind`: user | system (messages), edit | delete | reaction.
-- The message an edit, deletion or reaction is about.
ALTER TABLE room_events ADD COLUMN target_id TEXT;
-- Message rows: when the text was last replaced; whether deleted (the text
-- of a deleted message, and of its edits, is erased).
ALTER TABLE room_events ADD COLUMN edited_at_ms BIGINT;
ALTER TABLE room_events ADD COLUMN deleted BIGINT NOT NULL DEFAULT 0;
-- Reaction rows: 1 added, 0 removed.
ALTER TABLE room_events ADD COLUMN added BIGINT;
CREATE INDEX room_events_target ON room_events (target_id);

-- Who reacts how to each message now; `seq` is the reaction's event.
CREATE TABLE reactions (
    room_id     TEXT   NOT NULL,
    message_seq BIGINT NOT NULL,
    message_id  TEXT   NOT NULL,
    emoji       TEXT   NOT NULL,
    user_id     TEXT   NOT NULL,
    seq         BIGINT NOT NULL,
    PRIMARY KEY (message_id, emoji, user_id)
);
CREATE INDEX reactions_room ON reactions (room_id, message_seq);
