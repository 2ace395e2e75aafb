-- Cuttle schema 11: web UI sessions kept by the cluster. The browser holds a random id; the row
-- holds its HMAC (id_hash), who signed in (the HMAC of the API key they used, or a user's id and
-- the version of their record), and an expiry fixed when it was made. Signing out deletes it.
CREATE TABLE ui_sessions (
    id_hash NVARCHAR(128) NOT NULL PRIMARY KEY,
    key_hash NVARCHAR(128) NULL,
    user_id BIGINT NULL,
    user_version BIGINT NULL,
    created_at DATETIME2(3) NOT NULL,
    expires_at DATETIME2(3) NOT NULL
);
CREATE INDEX ui_sessions_expiry ON ui_sessions (expires_at);
