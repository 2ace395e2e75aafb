-- Cuttle schema 4 (SQL Server): deployment targets, and which gateways hold a live session with
-- each polling tentacle.
CREATE TABLE targets (
    seq               BIGINT IDENTITY(1, 1) NOT NULL CONSTRAINT targets_pk PRIMARY KEY,
    name              NVARCHAR(200) NOT NULL CONSTRAINT targets_name_uq UNIQUE,
    environments      NVARCHAR(MAX) NOT NULL, -- JSON array of names
    roles             NVARCHAR(MAX) NOT NULL, -- JSON array of names
    comms             NVARCHAR(20) NOT NULL,
    endpoint          NVARCHAR(MAX) NULL,
    thumbprint        NVARCHAR(64) NOT NULL CONSTRAINT targets_thumbprint_uq UNIQUE,
    health            NVARCHAR(20) NOT NULL CONSTRAINT targets_health_df DEFAULT N'Unknown',
    health_reason     NVARCHAR(MAX) NULL,
    last_health_check DATETIME2(3) NULL,
    created_at        DATETIME2(3) NOT NULL
);

CREATE TABLE target_sessions (
    target_seq   BIGINT NOT NULL CONSTRAINT target_sessions_target_fk
                 REFERENCES targets (seq) ON DELETE CASCADE,
    node         NVARCHAR(200) NOT NULL,
    connected_at DATETIME2(3) NOT NULL,
    CONSTRAINT target_sessions_pk PRIMARY KEY (target_seq, node)
);
