-- Cuttle schema 11: web UI sessions kept by the cluster. The browser holds a random id; the row
-- holds its HMAC (id_hash), who signed in (the HMAC of the API key they used, or a user's id and
-- the version of their record), and an expiry fixed when it was made. Signing out deletes it.
CREATE TABLE ui_sessions (
    id_hash TEXT PRIMARY KEY,
    key_hash TEXT NULL,
    user_id INTEGER NULL,
    user_version INTEGER NULL,
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL
);
CREATE INDEX ui_sessions_expiry ON ui_sessions (expires_at_ms);
