-- A least-privilege role for `pitr backup` and `pitr check`.
--
--   psql -v ON_ERROR_STOP=1 -d postgres -f sql/pitr_role.sql
--   psql -d postgres -c '\password pitr'      -- then set its password
--
-- and allow it in pg_hba.conf on a `replication` line (backups and the
-- checks use a physical replication connection), plus an ordinary line
-- for the database `postgres` (the tablespace names, the WAL switch):
--
--   hostssl replication pitr 10.0.0.0/8 scram-sha-256
--   hostssl postgres    pitr 10.0.0.0/8 scram-sha-256
--
-- What each grant is for is in docs/configuration.md ("A role for pitr").
-- Run it again at will: it changes nothing that is already so.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'pitr') THEN
        CREATE ROLE pitr;
    END IF;
END
$$;

-- LOGIN: it connects. REPLICATION: BASE_BACKUP and IDENTIFY_SYSTEM over a
-- replication connection. Nothing else: not a superuser, cannot create
-- roles or databases, and is not exempt from row security.
ALTER ROLE pitr WITH LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;

-- SHOW data_directory, config_file, hba_file and ident_file, which
-- `pitr backup` records in backup.info as Barman does: PostgreSQL shows
-- these only to superusers and members of pg_read_all_settings. (The
-- settings `pitr check` reads, wal_level, archive_mode, archive_command
-- and archive_library, every role may see.)
GRANT pg_read_all_settings TO pitr;

-- `pitr check -d` forces a WAL switch and waits for that segment to reach
-- the archive, proving archiving end to end.
GRANT EXECUTE ON FUNCTION pg_catalog.pg_switch_wal() TO pitr;

-- The tablespace names for backup.info come from pg_catalog.pg_tablespace,
-- which every role can read: nothing to grant. CONNECT on the database
-- `postgres` is PUBLIC's by default; where it was revoked:
GRANT CONNECT ON DATABASE postgres TO pitr;
