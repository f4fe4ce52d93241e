-- Files uploaded to rooms. The bytes are in the file store, named by their
-- SHA-256 (the same bytes are stored once however often uploaded); a row
-- here is one upload of them: who sent it where, under what name, and the
-- message it was attached to (none yet: an upload waiting to be sent, which
-- is removed once it is older than the orphan age).
CREATE TABLE files (
    id             TEXT   PRIMARY KEY,
    room_id        TEXT   NOT NULL,
    uploader_id    TEXT   NOT NULL,
    name           TEXT   NOT NULL,
    content_type   TEXT   NOT NULL,
    size           BIGINT NOT NULL,
    sha256         TEXT   NOT NULL,
    width          BIGINT,
    height         BIGINT,
    -- The thumbnail's length in bytes, for images; NULL: no thumbnail.
    thumbnail_size BIGINT,
    created_at_ms  BIGINT NOT NULL,
    -- The message the file was sent with, its seq, and the file's place
    -- among the message's attachments.
    message_id     TEXT,
    message_seq    BIGINT,
    ordinal        BIGINT
);
CREATE INDEX files_message ON files (room_id, message_seq);
CREATE INDEX files_message_id ON files (message_id);
CREATE INDEX files_created_at ON files (created_at_ms);

-- Each stored blob and how many file rows refer to it. A blob whose last
-- row is gone is `condemned` and deleted from the file store outside any
-- transaction; until its row here is removed, no new upload may refer to
-- it (the service asks that one to be sent again), so a blob is never
-- deleted from under a file that uses it.
CREATE TABLE blobs (
    sha256    TEXT   PRIMARY KEY,
    refs      BIGINT NOT NULL,
    condemned BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX blobs_condemned ON blobs (condemned);
