-- 0003: finishing an execution updates its row in place.
--
-- Every execution is written twice (claimed, then finished). With `status` indexed, no update
-- could be HOT: each finish added entries to every index and left a dead tuple, so the table and
-- its indexes bloated under load and throughput fell as a run went on. Listing by status scans
-- the created_at index and filters (it is an operator's query, not the hot path); the remaining
-- indexed columns never change after the claim, and free space on each page (fillfactor) lets
-- the finished row stay where the claimed one was.
DROP INDEX IF EXISTS function_executions_status_idx;
ALTER TABLE function_executions SET (fillfactor = 70);
