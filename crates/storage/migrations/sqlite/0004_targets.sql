-- Cuttle schema 4 (sqlite): deployment targets, and which gateways hold a live session with
-- each polling tentacle.
CREATE TABLE targets (
    seq                  INTEGER PRIMARY KEY AUTOINCREMENT,
    name                 TEXT NOT NULL UNIQUE,
    environments         TEXT NOT NULL, -- JSON array of names
    roles                TEXT NOT NULL, -- JSON array of names
    comms                TEXT NOT NULL,
    endpoint             TEXT,
    thumbprint           TEXT NOT NULL UNIQUE,
    health               TEXT NOT NULL DEFAULT 'Unknown',
    health_reason        TEXT,
    last_health_check_ms INTEGER,
    created_at_ms        INTEGER NOT NULL
);

-- Rows of a deleted target are removed by the code (foreign keys are off by default here).
CREATE TABLE target_sessions (
    target_seq      INTEGER NOT NULL REFERENCES targets (seq) ON DELETE CASCADE,
    node            TEXT NOT NULL,
    connected_at_ms INTEGER NOT NULL,
    PRIMARY KEY (target_seq, node)
);
