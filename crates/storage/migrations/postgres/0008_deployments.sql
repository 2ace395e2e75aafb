-- Cuttle schema 8 (postgres): deployments. Each is a release going to an environment, run by
-- its Deploy task (written in the same transaction); its state is the task's.
CREATE TABLE deployments (
    seq           BIGSERIAL PRIMARY KEY,
    space         TEXT NOT NULL,
    project       BIGINT NOT NULL,
    release       BIGINT NOT NULL,
    environment   TEXT NOT NULL,
    task          BIGINT NOT NULL,
    created_by    TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX deployments_by_release ON deployments (release);
CREATE INDEX deployments_by_space ON deployments (space, seq);
