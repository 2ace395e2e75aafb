-- Cuttle schema 5 (sqlite): what each API key may do (scope), until when (expires_at_ms), the one
-- target a register-target key may register (target_name), the start of the key kept in clear
-- for display (prefix), and which hash the key is stored under (algorithm: keys made before
-- schema 5 are bare SHA-256 and are re-hashed to HMAC-SHA-256 at their next use).
ALTER TABLE api_keys ADD COLUMN scope TEXT NOT NULL DEFAULT 'admin';
ALTER TABLE api_keys ADD COLUMN prefix TEXT NOT NULL DEFAULT '';
ALTER TABLE api_keys ADD COLUMN algorithm TEXT NOT NULL DEFAULT 'sha256';
ALTER TABLE api_keys ADD COLUMN expires_at_ms INTEGER NULL;
ALTER TABLE api_keys ADD COLUMN target_name TEXT NULL;

-- The cluster certificates each target's tentacle said it trusts at its last health check (JSON
-- array of thumbprints): a new cluster certificate is activated only once every target trusts it.
ALTER TABLE targets ADD COLUMN cluster_trust TEXT NOT NULL DEFAULT '[]';
