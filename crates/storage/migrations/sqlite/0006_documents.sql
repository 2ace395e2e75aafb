-- Cuttle schema 6 (sqlite): configuration documents (spaces, environments, lifecycles, projects,
-- runbooks…), each a versioned JSON body behind one generic API. `space` is the id of the space
-- holding it ('' for spaces themselves); names are unique per space and kind whatever their
-- case (`name_key` is the lower-cased name); `position` orders a kind within its space.
CREATE TABLE documents (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    space          TEXT NOT NULL,
    kind           TEXT NOT NULL,
    name           TEXT NOT NULL,
    name_key       TEXT NOT NULL,
    position       INTEGER NOT NULL,
    version        INTEGER NOT NULL,
    body           TEXT NOT NULL,
    created_at_ms  INTEGER NOT NULL,
    modified_at_ms INTEGER NOT NULL,
    UNIQUE (space, kind, name_key)
);
CREATE INDEX documents_by_kind ON documents (space, kind, position);

-- Every cluster starts with one space.
INSERT INTO documents (space, kind, name, name_key, position, version, body, created_at_ms, modified_at_ms)
VALUES ('', 'Space', 'Default', 'default', 1, 1, '{"description":"The default space"}',
        CAST(unixepoch('subsec') * 1000 AS INTEGER), CAST(unixepoch('subsec') * 1000 AS INTEGER));
