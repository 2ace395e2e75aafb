-- Cuttle schema 4 (PostgreSQL): deployment targets, and which gateways hold a live session with
-- each polling tentacle.
CREATE TABLE targets (
    seq                  BIGSERIAL PRIMARY KEY,
    name                 TEXT NOT NULL UNIQUE,
    environments         TEXT NOT NULL, -- JSON array of names
    roles                TEXT NOT NULL, -- JSON array of names
    comms                TEXT NOT NULL,
    endpoint             TEXT,
    thumbprint           TEXT NOT NULL UNIQUE,
    health               TEXT NOT NULL DEFAULT 'Unknown',
    health_reason        TEXT,
    last_health_check_ms BIGINT,
    created_at_ms        BIGINT NOT NULL
);

CREATE TABLE target_sessions (
    target_seq      BIGINT NOT NULL REFERENCES targets (seq) ON DELETE CASCADE,
    node            TEXT NOT NULL,
    connected_at_ms BIGINT NOT NULL,
    PRIMARY KEY (target_seq, node)
);
