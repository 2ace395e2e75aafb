-- Cuttle schema 9 (postgres): the built-in package repository's metadata. The bytes are files in
-- the shared store (`file`, relative to its `Packages/` folder, named after the content's hash);
-- this table says which versions exist. Ids and versions are unique per space whatever their
-- case, and versions whatever their build metadata (`package_key`, `version_key`).
CREATE TABLE packages (
    seq            BIGSERIAL PRIMARY KEY,
    space          TEXT NOT NULL,
    package_id     TEXT NOT NULL,
    package_key    TEXT NOT NULL,
    version        TEXT NOT NULL,
    version_key    TEXT NOT NULL,
    format         TEXT NOT NULL,
    size_bytes     BIGINT NOT NULL,
    sha256         TEXT NOT NULL,
    file           TEXT NOT NULL,
    uploaded_by    TEXT NOT NULL,
    uploaded_at_ms BIGINT NOT NULL,
    UNIQUE (space, package_key, version_key)
);
