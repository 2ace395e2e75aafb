-- Cuttle schema 1 (SQL Server 2016+, and Babelfish for PostgreSQL: no MERGE, no DML through a
-- CTE, filtered indexes with IN only). Times are DATETIME2(3) in UTC from the database clock
-- (SYSUTCDATETIME()); text is NVARCHAR; bounded lengths only where a column is indexed, and each
-- bound is at least what the API accepts.
CREATE TABLE settings (
    [key] NVARCHAR(200) NOT NULL CONSTRAINT settings_pk PRIMARY KEY,
    value NVARCHAR(MAX) NOT NULL
);

CREATE TABLE api_keys (
    id         BIGINT IDENTITY(1, 1) NOT NULL CONSTRAINT api_keys_pk PRIMARY KEY,
    name       NVARCHAR(MAX) NOT NULL,
    key_hash   NVARCHAR(128) NOT NULL CONSTRAINT api_keys_key_hash_uq UNIQUE,
    created_at DATETIME2(3) NOT NULL
);

CREATE TABLE nodes (
    name            NVARCHAR(200) NOT NULL CONSTRAINT nodes_pk PRIMARY KEY,
    roles           NVARCHAR(MAX) NOT NULL,
    version         NVARCHAR(MAX) NOT NULL,
    http_address    NVARCHAR(MAX) NOT NULL,
    grpc_address    NVARCHAR(MAX) NOT NULL,
    gateway_address NVARCHAR(MAX) NULL,
    task_cap        INT NOT NULL CONSTRAINT nodes_task_cap_ck CHECK (task_cap >= 0),
    draining        BIT NOT NULL CONSTRAINT nodes_draining_df DEFAULT 0,
    started_at      DATETIME2(3) NOT NULL,
    last_seen       DATETIME2(3) NOT NULL,
    -- set once by the scheduler that handled this node's loss; cleared by its next heartbeat
    lost_at         DATETIME2(3) NULL
);

CREATE TABLE tasks (
    seq             BIGINT IDENTITY(1, 1) NOT NULL CONSTRAINT tasks_pk PRIMARY KEY,
    kind            NVARCHAR(100) NOT NULL,
    arguments       NVARCHAR(MAX) NOT NULL,
    description     NVARCHAR(MAX) NOT NULL,
    concurrency_tag NVARCHAR(200) NULL,
    state           NVARCHAR(20) NOT NULL CONSTRAINT tasks_state_ck CHECK (state IN
                    (N'Queued', N'Executing', N'Cancelling', N'Success', N'Failed', N'Canceled',
                     N'TimedOut')),
    node            NVARCHAR(200) NULL,
    claim_epoch     BIGINT NOT NULL CONSTRAINT tasks_claim_epoch_df DEFAULT 0,
    retry_safe      BIT NOT NULL CONSTRAINT tasks_retry_safe_df DEFAULT 0,
    queued_at       DATETIME2(3) NOT NULL,
    started_at      DATETIME2(3) NULL,
    completed_at    DATETIME2(3) NULL,
    error           NVARCHAR(MAX) NULL
);

CREATE INDEX tasks_queue ON tasks (queued_at, seq) WHERE state = N'Queued';
CREATE INDEX tasks_running_by_node ON tasks (node) WHERE state IN (N'Executing', N'Cancelling');
CREATE INDEX tasks_tag ON tasks (concurrency_tag, state) WHERE concurrency_tag IS NOT NULL;
CREATE INDEX tasks_state ON tasks (state, seq);
-- the database itself guarantees that two tasks with one tag never run at once
CREATE UNIQUE INDEX tasks_one_running_per_tag ON tasks (concurrency_tag)
    WHERE concurrency_tag IS NOT NULL AND state IN (N'Executing', N'Cancelling');
