-- The sender's own id for a message: a resend with the same id (same room,
-- same user, within a day) is answered with the original instead of being
-- stored again. Not unique: the same id may come back after the window.
ALTER TABLE messages ADD COLUMN client_id TEXT;
CREATE INDEX messages_client_id ON messages (room_id, user_id, client_id);
