-- How far each user has read each room. Markers only move forward.
CREATE TABLE read_markers (
    room_id TEXT   NOT NULL,
    user_id TEXT   NOT NULL,
    seq     BIGINT NOT NULL,
    PRIMARY KEY (room_id, user_id)
);
