-- pitr drill check: no index is marked invalid (a CREATE INDEX
-- CONCURRENTLY that failed, or damage). Checks the database psql is
-- connected to (postgres); add "\connect yourdb" lines to check others:
--   \connect app
--   select not exists (select 1 from pg_index where not indisvalid);
select not exists (select 1 from pg_index where not indisvalid);
