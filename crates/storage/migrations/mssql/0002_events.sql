-- Cuttle schema 2 (SQL Server): audit events.
CREATE TABLE events (
    seq            BIGINT IDENTITY(1, 1) NOT NULL CONSTRAINT events_pk PRIMARY KEY,
    occurred_at    DATETIME2(3) NOT NULL,
    actor          NVARCHAR(MAX) NOT NULL,
    [action]       NVARCHAR(MAX) NOT NULL,
    target         NVARCHAR(MAX) NOT NULL,
    client_address NVARCHAR(MAX) NOT NULL,
    details        NVARCHAR(MAX) NOT NULL
);
