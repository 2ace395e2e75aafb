-- Cuttle schema 2 (SQLite): audit events.
CREATE TABLE events (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    occurred_at_ms INTEGER NOT NULL,
    actor          TEXT NOT NULL,
    action         TEXT NOT NULL,
    target         TEXT NOT NULL,
    client_address TEXT NOT NULL,
    details        TEXT NOT NULL
);
