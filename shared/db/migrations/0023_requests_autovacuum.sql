-- The requests table is a queue: every certificate updates its request twice (claimed, then issued), and
-- neither update can be HOT (both change indexed columns), so each leaves a dead row version and an entry
-- in every index, which the claims then step over (they scan the partial indexes of open requests oldest
-- first). With PostgreSQL's default of a vacuum once dead rows pass 20 % of the table, a table of a million
-- requests would carry 200,000 of them; bench.soak saw the median latency triple well before that. Vacuum
-- it at 5 % (and analyze at 5 %), as beat's kms.vacuum does when a server has autovacuum off.
ALTER TABLE certificate_requests SET (autovacuum_vacuum_scale_factor = 0.05, autovacuum_analyze_scale_factor = 0.05);
