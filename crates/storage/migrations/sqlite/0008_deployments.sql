-- Cuttle schema 8 (sqlite): deployments. Each is a release going to an environment, run by its
-- Deploy task (written in the same transaction); its state is the task's.
CREATE TABLE deployments (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    space         TEXT NOT NULL,
    project       INTEGER NOT NULL,
    release       INTEGER NOT NULL,
    environment   TEXT NOT NULL,
    task          INTEGER NOT NULL,
    created_by    TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
);
CREATE INDEX deployments_by_release ON deployments (release);
CREATE INDEX deployments_by_space ON deployments (space, seq);
