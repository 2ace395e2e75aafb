-- Cuttle schema 9 (SQL Server): the built-in package repository's metadata. The bytes are files
-- in the shared store (`file`, relative to its `Packages/` folder, named after the content's
-- hash); this table says which versions exist. Ids and versions are unique per space whatever
-- their case, and versions whatever their build metadata (`package_key`, `version_key`).
CREATE TABLE packages (
    seq         BIGINT IDENTITY(1, 1) NOT NULL CONSTRAINT packages_pk PRIMARY KEY,
    space       NVARCHAR(50) NOT NULL,
    package_id  NVARCHAR(100) NOT NULL,
    package_key NVARCHAR(100) NOT NULL,
    version     NVARCHAR(100) NOT NULL,
    version_key NVARCHAR(100) NOT NULL,
    format      NVARCHAR(10) NOT NULL,
    size_bytes  BIGINT NOT NULL,
    sha256      NVARCHAR(64) NOT NULL,
    [file]      NVARCHAR(400) NOT NULL,
    uploaded_by NVARCHAR(MAX) NOT NULL,
    uploaded_at DATETIME2(3) NOT NULL,
    CONSTRAINT packages_version_uq UNIQUE (space, package_key, version_key)
);
