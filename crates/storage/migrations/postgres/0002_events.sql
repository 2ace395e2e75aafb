-- Cuttle schema 2 (PostgreSQL): audit events.
CREATE TABLE events (
    seq            BIGSERIAL PRIMARY KEY,
    occurred_at_ms BIGINT NOT NULL,
    actor          TEXT NOT NULL,
    action         TEXT NOT NULL,
    target         TEXT NOT NULL,
    client_address TEXT NOT NULL,
    details        TEXT NOT NULL
);
