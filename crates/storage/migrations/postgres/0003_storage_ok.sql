-- Cuttle schema 3 (postgres): each node reports whether it can write the shared store.
ALTER TABLE nodes ADD COLUMN storage_ok BOOLEAN NOT NULL DEFAULT TRUE;
