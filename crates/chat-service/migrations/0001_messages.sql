-- Written in the SQL common to SQLite and PostgreSQL: one schema, two engines.

-- The last `seq` handed out per room. Incremented inside the same
-- transaction that inserts the messages, so concurrent writers (even in
-- different processes) serialize on the room's row and never share a seq.
CREATE TABLE room_seq (
    room_id  TEXT   PRIMARY KEY,
    last_seq BIGINT NOT NULL
);

CREATE TABLE messages (
    room_id       TEXT   NOT NULL,
    seq           BIGINT NOT NULL,
    id            TEXT   NOT NULL UNIQUE,
    user_id       TEXT   NOT NULL,
    username      TEXT   NOT NULL,
    message       TEXT   NOT NULL,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (room_id, seq)
);

CREATE INDEX messages_created_at ON messages (created_at_ms);
