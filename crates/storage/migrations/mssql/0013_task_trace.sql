-- Cuttle schema 13 (SQL Server): the W3C trace context (`traceparent`) of the request that
-- queued a task, so the worker that runs it, on any node, continues that trace. NULL: queued
-- outside any trace (or by a node from before schema 13).
ALTER TABLE tasks ADD trace_parent VARCHAR(64) NULL;
