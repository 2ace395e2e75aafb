-- Cuttle schema 5 (SQL Server): what each API key may do (scope), until when (expires_at), the
-- one target a register-target key may register (target_name), the start of the key kept in
-- clear for display (prefix), and which hash the key is stored under (algorithm: keys made
-- before schema 5 are bare SHA-256 and are re-hashed to HMAC-SHA-256 at their next use).
ALTER TABLE api_keys ADD scope NVARCHAR(20) NOT NULL CONSTRAINT api_keys_scope_df DEFAULT N'admin';
ALTER TABLE api_keys ADD prefix NVARCHAR(16) NOT NULL CONSTRAINT api_keys_prefix_df DEFAULT N'';
ALTER TABLE api_keys ADD algorithm NVARCHAR(20) NOT NULL CONSTRAINT api_keys_algorithm_df DEFAULT N'sha256';
ALTER TABLE api_keys ADD expires_at DATETIME2(3) NULL;
ALTER TABLE api_keys ADD target_name NVARCHAR(200) NULL;

-- The cluster certificates each target's tentacle said it trusts at its last health check (JSON
-- array of thumbprints): a new cluster certificate is activated only once every target trusts it.
ALTER TABLE targets ADD cluster_trust NVARCHAR(MAX) NOT NULL CONSTRAINT targets_cluster_trust_df DEFAULT N'[]';
