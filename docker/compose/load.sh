#!/usr/bin/env bash
# The compose drill's load (docker/compose.yaml, service load): against the
# primary, a base backup with `pitr backup`, then pgbench load and changes
# at known times t1, t2, t3 (docker/drill-workload.sh); waits until the
# primary archived it all, and leaves the plan for the drill service in
# /plan: target_time, t2_rows.sql (the check that holds only for exactly the
# rows committed by t2) and ready; or failed, with the reason. Then it
# stays up (docker-compose's --abort-on-container-exit stops the whole run
# when any container exits), so the healthcheck can look for those files.
set -euo pipefail
shopt -s inherit_errexit

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PLAN=${DRILL_PLAN_DIR:-/plan}
PRIMARY="host=${PGHOST:-primary} port=${PGPORT:-5432} user=postgres dbname=postgres"
unset PGHOST PGPORT

say() { printf 'load: %s\n' "$*"; }
die() {
    printf 'load: FAILED: %s\n' "$*" >&2
    printf '%s\n' "$*" >"$PLAN/failed.why"
    exit 1
}
sql() { "$PG_BIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 -d "$PRIMARY" -c "$1"; }
pgbench() { "$PG_BIN/pgbench" "$@" "$PRIMARY"; }

# shellcheck source=docker/drill-workload.sh
source /usr/share/pitr/drill-workload.sh

main() {
    rm -f "$PLAN/ready" "$PLAN/failed" "$PLAN/failed.why"
    drill_schema
    local backup_id
    backup_id=$(pitr backup -d "$PRIMARY" --name compose-drill --wal-timeout 120) ||
        die "pitr backup failed"
    say "took base backup $backup_id with \`pitr backup\`"
    drill_load
    drill_timed_changes "$PLAN/t2_rows.sql"
    drill_wait_archived 120
    printf '%s\n' "$TARGET_TIME" >"$PLAN/target_time"
    touch "$PLAN/ready"
    say "ready: the drill restores to $TARGET_TIME"
}

# The body runs in a subshell with errexit, so that any failure lands here.
set +e
(set -e; main)
rc=$?
set -e
if ((rc != 0)); then
    { echo "the load exited $rc: $(cat "$PLAN/failed.why" 2>/dev/null || echo 'see its log')"; } >"$PLAN/failed"
    say "failed; the drill service reports it"
fi
# Stay up until compose stops us.
trap 'exit 0' TERM INT
sleep infinity &
wait $!
