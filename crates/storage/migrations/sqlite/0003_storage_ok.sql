-- Cuttle schema 3 (sqlite): each node reports whether it can write the shared store.
ALTER TABLE nodes ADD COLUMN storage_ok INTEGER NOT NULL DEFAULT 1;
