-- Cuttle schema 7 (sqlite): releases. A release numbers a project's process and variables as
-- they were when it was made (`snapshot`, JSON; sensitive values stay encrypted), so editing the
-- project later never changes what a release deploys. Versions are unique per project whatever
-- their case (`version_key`).
CREATE TABLE releases (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    space         TEXT NOT NULL,
    project       INTEGER NOT NULL,
    version       TEXT NOT NULL,
    version_key   TEXT NOT NULL,
    notes         TEXT NOT NULL,
    snapshot      TEXT NOT NULL,
    created_by    TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    UNIQUE (project, version_key)
);
