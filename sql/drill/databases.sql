-- pitr drill check: every database that accepts connections is there and
-- none is left half-dropped. Passes when each query returns true.
select count(*) >= 1 from pg_database where datallowconn and not datistemplate;
select not exists (select 1 from pg_database where datconnlimit = -2);
