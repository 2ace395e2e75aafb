-- Cuttle schema 1 (PostgreSQL). Times are Unix milliseconds from the database clock.
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE api_keys (
    id            BIGSERIAL PRIMARY KEY,
    name          TEXT NOT NULL,
    key_hash      TEXT NOT NULL UNIQUE,
    created_at_ms BIGINT NOT NULL
);

CREATE TABLE nodes (
    name            TEXT PRIMARY KEY,
    roles           TEXT NOT NULL,
    version         TEXT NOT NULL,
    http_address    TEXT NOT NULL,
    grpc_address    TEXT NOT NULL,
    gateway_address TEXT,
    task_cap        INTEGER NOT NULL CHECK (task_cap >= 0),
    draining        BOOLEAN NOT NULL DEFAULT FALSE,
    started_at_ms   BIGINT NOT NULL,
    last_seen_ms    BIGINT NOT NULL,
    -- set once by the scheduler that handled this node's loss; cleared by its next heartbeat
    lost_at_ms      BIGINT
);

CREATE TABLE tasks (
    seq             BIGSERIAL PRIMARY KEY,
    kind            TEXT NOT NULL,
    arguments       TEXT NOT NULL,
    description     TEXT NOT NULL,
    concurrency_tag TEXT,
    state           TEXT NOT NULL CHECK (state IN
                    ('Queued','Executing','Cancelling','Success','Failed','Canceled','TimedOut')),
    node            TEXT,
    claim_epoch     BIGINT NOT NULL DEFAULT 0,
    retry_safe      BOOLEAN NOT NULL DEFAULT FALSE,
    queued_at_ms    BIGINT NOT NULL,
    started_at_ms   BIGINT,
    completed_at_ms BIGINT,
    error           TEXT
);

CREATE INDEX tasks_queue ON tasks (queued_at_ms, seq) WHERE state = 'Queued';
CREATE INDEX tasks_running_by_node ON tasks (node) WHERE state IN ('Executing', 'Cancelling');
CREATE INDEX tasks_tag ON tasks (concurrency_tag, state) WHERE concurrency_tag IS NOT NULL;
CREATE INDEX tasks_state ON tasks (state, seq);
-- the database itself guarantees that two tasks with one tag never run at once
CREATE UNIQUE INDEX tasks_one_running_per_tag ON tasks (concurrency_tag)
    WHERE concurrency_tag IS NOT NULL AND state IN ('Executing', 'Cancelling');

-- A queue table churns: every task is updated twice. Vacuum it early so the claim's index scan
-- does not wade through dead entries as a backlog drains.
ALTER TABLE tasks SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_threshold = 1000,
                       autovacuum_analyze_scale_factor = 0.05);
