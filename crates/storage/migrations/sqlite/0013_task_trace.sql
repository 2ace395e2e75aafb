-- Cuttle schema 13 (sqlite): the W3C trace context (`traceparent`) of the request that queued
-- a task, so the worker that runs it, on any node, continues that trace. NULL: queued outside
-- any trace (or by a node from before schema 13).
ALTER TABLE tasks ADD COLUMN trace_parent TEXT NULL;
