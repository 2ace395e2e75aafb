-- Cuttle schema 1 (SQLite). Times are Unix milliseconds from the database clock.
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE api_keys (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    name          TEXT NOT NULL,
    key_hash      TEXT NOT NULL UNIQUE,
    created_at_ms INTEGER NOT NULL
);

CREATE TABLE nodes (
    name            TEXT PRIMARY KEY,
    roles           TEXT NOT NULL,
    version         TEXT NOT NULL,
    http_address    TEXT NOT NULL,
    grpc_address    TEXT NOT NULL,
    gateway_address TEXT,
    task_cap        INTEGER NOT NULL CHECK (task_cap >= 0),
    draining        INTEGER NOT NULL DEFAULT 0,
    started_at_ms   INTEGER NOT NULL,
    last_seen_ms    INTEGER NOT NULL,
    -- set once by the scheduler that handled this node's loss; cleared by its next heartbeat
    lost_at_ms      INTEGER
);

CREATE TABLE tasks (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    kind            TEXT NOT NULL,
    arguments       TEXT NOT NULL,
    description     TEXT NOT NULL,
    concurrency_tag TEXT,
    state           TEXT NOT NULL CHECK (state IN
                    ('Queued','Executing','Cancelling','Success','Failed','Canceled','TimedOut')),
    node            TEXT,
    claim_epoch     INTEGER NOT NULL DEFAULT 0,
    retry_safe      INTEGER NOT NULL DEFAULT 0,
    queued_at_ms    INTEGER NOT NULL,
    started_at_ms   INTEGER,
    completed_at_ms INTEGER,
    error           TEXT
);

CREATE INDEX tasks_queue ON tasks (queued_at_ms, seq) WHERE state = 'Queued';
CREATE INDEX tasks_running_by_node ON tasks (node) WHERE state IN ('Executing', 'Cancelling');
CREATE INDEX tasks_tag ON tasks (concurrency_tag, state) WHERE concurrency_tag IS NOT NULL;
CREATE INDEX tasks_state ON tasks (state, seq);
-- the database itself guarantees that two tasks with one tag never run at once
CREATE UNIQUE INDEX tasks_one_running_per_tag ON tasks (concurrency_tag)
    WHERE concurrency_tag IS NOT NULL AND state IN ('Executing', 'Cancelling');
