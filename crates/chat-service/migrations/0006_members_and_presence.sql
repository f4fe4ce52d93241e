-- Who may be in a members-only room (`private:` rooms, managed by the
-- application; `dm:` rooms, their two participants).
CREATE TABLE room_members (
    room_id     TEXT   NOT NULL,
    user_id     TEXT   NOT NULL,
    added_at_ms BIGINT NOT NULL,
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX room_members_user ON room_members (user_id);

-- Each participant's view of a direct conversation: who it is with, and
-- when it was last written to (the order of their list).
CREATE TABLE direct_messages (
    room_id          TEXT   NOT NULL,
    user_id          TEXT   NOT NULL,
    peer_id          TEXT   NOT NULL,
    last_activity_ms BIGINT NOT NULL,
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX direct_messages_recent ON direct_messages (user_id, last_activity_ms);

-- `user_id` takes no direct messages from `blocked_id`.
CREATE TABLE blocks (
    user_id       TEXT   NOT NULL,
    blocked_id    TEXT   NOT NULL,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (user_id, blocked_id)
);

-- When each user's last connection closed.
CREATE TABLE presence (
    user_id      TEXT   PRIMARY KEY,
    last_seen_ms BIGINT NOT NULL
);
