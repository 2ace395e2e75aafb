-- Cuttle schema 7 (SQL Server): releases. A release numbers a project's process and variables
-- as they were when it was made (`snapshot`, JSON; sensitive values stay encrypted), so editing
-- the project later never changes what a release deploys. Versions are unique per project
-- whatever their case (`version_key`).
CREATE TABLE releases (
    seq         BIGINT IDENTITY(1, 1) NOT NULL CONSTRAINT releases_pk PRIMARY KEY,
    space       NVARCHAR(50) NOT NULL,
    project     BIGINT NOT NULL,
    version     NVARCHAR(100) NOT NULL,
    version_key NVARCHAR(100) NOT NULL,
    notes       NVARCHAR(MAX) NOT NULL,
    snapshot    NVARCHAR(MAX) NOT NULL,
    created_by  NVARCHAR(MAX) NOT NULL,
    created_at  DATETIME2(3) NOT NULL,
    CONSTRAINT releases_version_uq UNIQUE (project, version_key)
);
