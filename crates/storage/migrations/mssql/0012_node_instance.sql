-- Cuttle schema 12 (SQL Server): which process holds a node's name. Each `cuttle-server run` picks a random
-- instance id and writes it when it registers and at every heartbeat; a second live process
-- with the same name is refused, and a process whose name was taken over stops. NULL: no
-- process holds it (stopped cleanly, or a node from before schema 12).
ALTER TABLE nodes ADD instance NVARCHAR(64) NULL;
