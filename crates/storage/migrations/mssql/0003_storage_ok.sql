-- Cuttle schema 3 (SQL Server): each node reports whether it can write the shared store.
ALTER TABLE nodes ADD storage_ok BIT NOT NULL CONSTRAINT nodes_storage_ok_df DEFAULT 1;
