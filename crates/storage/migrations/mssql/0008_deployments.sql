-- Cuttle schema 8 (SQL Server): deployments. Each is a release going to an environment, run by
-- its Deploy task (written in the same transaction); its state is the task's.
CREATE TABLE deployments (
    seq         BIGINT IDENTITY(1, 1) NOT NULL CONSTRAINT deployments_pk PRIMARY KEY,
    space       NVARCHAR(50) NOT NULL,
    project     BIGINT NOT NULL,
    [release]   BIGINT NOT NULL,
    environment NVARCHAR(100) NOT NULL,
    task        BIGINT NOT NULL,
    created_by  NVARCHAR(MAX) NOT NULL,
    created_at  DATETIME2(3) NOT NULL
);
CREATE INDEX deployments_by_release ON deployments ([release]);
CREATE INDEX deployments_by_space ON deployments (space, seq);
