-- System messages (from the internal API) are stored in the room's log like
-- users' messages, taking the room's next seq: `user` or `system`.
ALTER TABLE messages ADD COLUMN kind TEXT NOT NULL DEFAULT 'user';
