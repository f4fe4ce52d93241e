-- A call that ended is a row of its room's log (kind `call`, `id` the call
-- id, `user_id`/`username` the caller, `created_at_ms` when it ended), and
-- what that row cannot hold is kept here.
CREATE TABLE calls (
    call_id       TEXT   PRIMARY KEY,
    room_id       TEXT   NOT NULL,
    -- audio | video
    media         TEXT   NOT NULL,
    started_at_ms BIGINT NOT NULL,
    -- From the first accept to the end; 0 if nobody accepted.
    duration_secs BIGINT NOT NULL,
    -- hangup | declined | missed | failed
    reason        TEXT   NOT NULL
);

-- Everyone called, in the order they were (the caller first), as they were
-- when the call ended: left | declined | missed.
CREATE TABLE call_participants (
    call_id  TEXT   NOT NULL,
    position BIGINT NOT NULL,
    user_id  TEXT   NOT NULL,
    username TEXT   NOT NULL,
    state    TEXT   NOT NULL,
    PRIMARY KEY (call_id, position)
);
