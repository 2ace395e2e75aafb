-- Cuttle schema 6 (SQL Server): configuration documents (spaces, environments, lifecycles,
-- projects, runbooks…), each a versioned JSON body behind one generic API. `space` is the id of
-- the space holding it ('' for spaces themselves); names are unique per space and kind whatever
-- their case (`name_key` is the lower-cased name); `position` orders a kind within its space.
CREATE TABLE documents (
    seq         BIGINT IDENTITY(1, 1) NOT NULL CONSTRAINT documents_pk PRIMARY KEY,
    space       NVARCHAR(50) NOT NULL,
    kind        NVARCHAR(50) NOT NULL,
    name        NVARCHAR(200) NOT NULL,
    name_key    NVARCHAR(200) NOT NULL,
    position    BIGINT NOT NULL,
    version     BIGINT NOT NULL,
    body        NVARCHAR(MAX) NOT NULL,
    created_at  DATETIME2(3) NOT NULL,
    modified_at DATETIME2(3) NOT NULL,
    CONSTRAINT documents_name_uq UNIQUE (space, kind, name_key)
);
CREATE INDEX documents_by_kind ON documents (space, kind, position);

-- Every cluster starts with one space.
INSERT INTO documents (space, kind, name, name_key, position, version, body, created_at, modified_at)
VALUES (N'', N'Space', N'Default', N'default', 1, 1, N'{"description":"The default space"}',
        SYSUTCDATETIME(), SYSUTCDATETIME());
