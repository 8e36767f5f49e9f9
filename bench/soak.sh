#!/usr/bin/env bash
# Soak (not a test): a pgbench write load archived through the fault proxy
# for a bounded time while backups, backup verifies and restores run, with
# the proxy resetting a connection every few seconds (alternately a request
# and an answer, once it has carried a few KiB). At the end: `pitr archive
# verify` must be clean, every usable backup must verify, and a restore of
# the newest backup replayed to the end of the archive must hold the last
# row committed before the end. Prints the figures: faults injected, failed
# attempts pitr logged (each one retried), archiver failures, backups
# taken and failed, what was lost.
#
#   bash bench/soak.sh                       # as root; 10 minutes
#   SOAK_SECONDS=300 bash bench/soak.sh      # 5 minutes
#
# Settings (environment):
#   SOAK_SECONDS       duration of the load (default 600)
#   SOAK_RESET_EVERY   seconds between resets (default 5)
#   SOAK_RESET_AFTER   bytes a connection carries before its reset (default 16384)
#   SOAK_BACKUP_EVERY  seconds between backup + verify + restore cycles (default 90)
#   SOAK_SCALE         pgbench scale factor (default 10)
#   SOAK_RATE          pgbench transactions per second (default 300)
#   PITR_BIN, FAULT_PROXY_BIN, PG_BIN, BENCH_OUT as in bench/restore-jobs.sh
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SUPPORT=$ROOT/tests/support
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
SOAK_SECONDS=${SOAK_SECONDS:-600}
SOAK_RESET_EVERY=${SOAK_RESET_EVERY:-5}
SOAK_RESET_AFTER=${SOAK_RESET_AFTER:-16384}
SOAK_BACKUP_EVERY=${SOAK_BACKUP_EVERY:-90}
SOAK_SCALE=${SOAK_SCALE:-10}
SOAK_RATE=${SOAK_RATE:-300}
PITR_BUCKET=pitr-soak
SERVER=soak

WORK="" RGW_DIR="" PGDATA="" SOCK="" PORT="" PITR="" PROXY_PID="" PROXY_URL="" RESTORED=""
BACKUPS_OK=0 BACKUPS_FAILED=0 VERIFIES_OK=0 VERIFIES_FAILED=0 RESTORES_OK=0 RESTORES_FAILED=0

log() { echo "soak: $*" >&2; }
die() { log "$*"; exit 1; }
AS_PG=()
[[ $(id -u) -ne 0 ]] || AS_PG=(runuser -u postgres --)
as_pg() { "${AS_PG[@]}" "$@"; }

# pitr's environment through the proxy (or, with "direct", straight to RGW).
soak_env() {
    if [[ ${1:-} == direct ]]; then
        pitr_env
    else
        pitr_env | sed "s|^PITR_ENDPOINT_URL=.*|PITR_ENDPOINT_URL=$PROXY_URL|"
    fi
    echo "PITR_S3_ATTEMPTS=5"
}

setup() {
    [[ -x $PG_BIN/initdb ]] || die "PostgreSQL 15 is missing at $PG_BIN"
    WORK=$(mktemp -d /var/tmp/pitr-soak.XXXXXX)
    chmod 755 "$WORK"
    mkdir -p "$WORK/bin" "$WORK/logs" "$WORK/sock" "$WORK/restore"
    [[ $(id -u) -ne 0 ]] || chown postgres: "$WORK/logs" "$WORK/sock" "$WORK/restore"
    RGW_DIR=$WORK/rgw SOCK=$WORK/sock
    build_pitr
    local proxy=${FAULT_PROXY_BIN:-}
    if [[ -z $proxy ]]; then
        (cd "$ROOT" && cargo build --release --quiet -p fault-proxy)
        proxy=$ROOT/target/release/fault-proxy
    fi
    install -m 755 "$proxy" "$WORK/bin/fault-proxy"
    bash "$SUPPORT/ceph-rgw.sh" start "$RGW_DIR" >/dev/null
    # shellcheck disable=SC1091
    source "$RGW_DIR/env.sh"
    bash "$SUPPORT/ceph-rgw.sh" mkbucket "$RGW_DIR" "$PITR_BUCKET"
    "$WORK/bin/fault-proxy" --upstream "$PITR_TEST_S3_ENDPOINT" \
        --reset-every "$SOAK_RESET_EVERY" --reset-after-bytes "$SOAK_RESET_AFTER" \
        --stats "$WORK/proxy.stats" >"$WORK/proxy.out" 2>"$WORK/logs/proxy.log" &
    PROXY_PID=$!
    local i
    for ((i = 0; i < 100; i++)); do [[ -s $WORK/proxy.out ]] && break; sleep 0.1; done
    PROXY_URL=https://$(awk '/^listening/ { print $2 }' "$WORK/proxy.out")
    log "fault proxy at $PROXY_URL, a reset every $SOAK_RESET_EVERY s"
}

psql_at() { as_pg "$PG_BIN/psql" -h "$SOCK" -p "$1" -U postgres -d postgres -X -A -t -q -v ON_ERROR_STOP=1 -c "$2"; }
psql_q() { psql_at "$PORT" "$1"; }

start_primary() {
    PGDATA=$WORK/pgdata PORT=$(free_port)
    mkdir -p "$PGDATA"
    [[ $(id -u) -ne 0 ]] || chown postgres: "$PGDATA"
    chmod 700 "$PGDATA"
    as_pg "$PG_BIN/initdb" -D "$PGDATA" -A trust -U postgres >"$WORK/logs/initdb.log"
    printf '%s\n' "" "# bench/soak.sh" "listen_addresses = ''" "port = $PORT" \
        "unix_socket_directories = '$SOCK'" "archive_mode = on" \
        "archive_command = '$PITR wal-push %p'" "archive_timeout = 30" \
        "max_wal_size = 2GB" >>"$PGDATA/postgresql.conf"
    local env
    mapfile -t env < <(soak_env)
    as_pg env "${env[@]}" "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$WORK/logs/primary.log" -w -t 120 start >/dev/null
    as_pg "$PG_BIN/pgbench" -h "$SOCK" -p "$PORT" -U postgres -i -s "$SOAK_SCALE" -q postgres >"$WORK/logs/pgbench-init.log" 2>&1
    psql_q "create table soak_marker (id bigserial primary key, at timestamptz default now())"
}

stop_server() {
    [[ -n ${1:-} && -f $1/postmaster.pid ]] || return 0
    as_pg "$PG_BIN/pg_ctl" -D "$1" -m "${2:-fast}" -w stop >/dev/null 2>&1 || true
}

# pitr_cmd LOG ARGS...: pitr through the proxy; its stderr appended to LOG.
pitr_cmd() {
    local logf=$1 env; shift
    mapfile -t env < <(soak_env)
    env "${env[@]}" "$PITR" "$@" 2>>"$WORK/logs/$logf"
}

cycle() {
    local n=$1 id dir=$WORK/restore/cycle
    if id=$(pitr_cmd backups.log backup -d "host=$SOCK port=$PORT user=postgres" --wal-timeout 120); then
        BACKUPS_OK=$((BACKUPS_OK + 1))
        log "cycle $n: backup $id DONE"
        if pitr_cmd verifies.log backup verify "$id" >/dev/null; then
            VERIFIES_OK=$((VERIFIES_OK + 1))
        else
            VERIFIES_FAILED=$((VERIFIES_FAILED + 1)); log "cycle $n: backup verify $id failed"
        fi
    else
        BACKUPS_FAILED=$((BACKUPS_FAILED + 1)); log "cycle $n: backup failed (see logs/backups.log)"
    fi
    rm -rf "$dir"
    if pitr_cmd restores.log restore --pgdata "$dir" --jobs 4 >/dev/null; then
        RESTORES_OK=$((RESTORES_OK + 1))
    else
        RESTORES_FAILED=$((RESTORES_FAILED + 1)); log "cycle $n: restore failed (see logs/restores.log)"
    fi
    rm -rf "$dir"
}

final_checks() {
    local last env dir=$WORK/restore/final rows
    # The last commit of the load, archived.
    last=$(psql_q "insert into soak_marker default values returning id")
    local lsn_wal
    lsn_wal=$(psql_q "select pg_walfile_name(pg_current_wal_lsn())")
    psql_q "select pg_switch_wal()" >/dev/null
    local i archived=""
    for ((i = 0; i < 600; i++)); do
        archived=$(psql_q "select coalesce(last_archived_wal, '') from pg_stat_archiver")
        [[ -n $archived && ! $archived < "$lsn_wal" ]] && break
        sleep 0.5
    done
    ARCHIVER=$(psql_q "select archived_count || ' archived, ' || failed_count || ' failed attempts' from pg_stat_archiver")
    stop_server "$PGDATA"
    log "last commit: soak_marker id $last in $lsn_wal; archiver: $ARCHIVER"

    VERIFY_ARCHIVE=0
    pitr_cmd final.log archive verify >"$WORK/logs/archive-verify.out" || VERIFY_ARCHIVE=$?
    local ids bad=0 id
    ids=$(pitr_cmd final.log backup list --format json | python3 -c 'import json,sys; print(" ".join(b["backup_id"] for b in json.load(sys.stdin)["backups"] if b.get("usable")))')
    for id in $ids; do pitr_cmd final.log backup verify "$id" >/dev/null || bad=$((bad + 1)); done
    BACKUPS_USABLE=$(wc -w <<<"$ids") BACKUPS_BAD=$bad

    # Restore the newest backup to the end of the archive, through the proxy.
    pitr_cmd final.log restore --pgdata "$dir" --jobs 4 >/dev/null || die "final restore failed"
    printf '%s\n' "archive_mode = off" >>"$dir/postgresql.conf"
    [[ $(id -u) -ne 0 ]] || chown -R postgres: "$dir"
    mapfile -t env < <(soak_env)
    RESTORED=$dir
    as_pg env "${env[@]}" "$PG_BIN/pg_ctl" -D "$dir" -l "$WORK/logs/restored.log" start >/dev/null
    for ((i = 0; i < 600; i++)); do
        [[ $(psql_q "select pg_is_in_recovery()" 2>/dev/null || echo) == f ]] && break
        sleep 0.5
    done
    rows=$(psql_q "select max(id) from soak_marker")
    stop_server "$dir"
    RESTORED=""
    LAST=$last RECOVERED=$rows
}

report() {
    local stats fails
    stats=$(cat "$WORK/proxy.stats" 2>/dev/null || echo "-")
    fails=$(cat "$WORK"/logs/*.log 2>/dev/null | grep -c "attempt failed" || true)
    local pushfails
    pushfails=$(grep -c "attempt failed" "$WORK/logs/primary.log" "$WORK/logs/restored.log" 2>/dev/null | awk -F: '{ s += $2 } END { print s + 0 }')
    echo
    echo "soak: ${SOAK_SECONDS} s of pgbench at $SOAK_RATE tps (scale $SOAK_SCALE), a reset every ${SOAK_RESET_EVERY} s"
    echo "| figure | value |"
    echo "|---|---|"
    echo "| proxy | $stats |"
    echo "| failed S3 attempts logged (retried), all commands | $fails |"
    echo "| of them by wal-push/wal-fetch (PostgreSQL logs) | $pushfails |"
    echo "| ranges fetched again (restore, backup verify) | $(cat "$WORK"/logs/*.log 2>/dev/null | grep -c "fetching the range again" || true) |"
    echo "| archiver (pg_stat_archiver) | $ARCHIVER |"
    echo "| backups DONE / failed | $BACKUPS_OK / $BACKUPS_FAILED |"
    echo "| backup verifies OK / failed (during the load) | $VERIFIES_OK / $VERIFIES_FAILED |"
    echo "| restores OK / failed (during the load) | $RESTORES_OK / $RESTORES_FAILED |"
    echo "| archive verify exit code | $VERIFY_ARCHIVE |"
    echo "| usable backups at the end / failing verify | $BACKUPS_USABLE / $BACKUPS_BAD |"
    echo "| last committed marker / recovered marker | $LAST / $RECOVERED |"
    echo "| load average at the end | $(cut -d' ' -f1-3 /proc/loadavg) |"
    if [[ $VERIFY_ARCHIVE == 0 && $BACKUPS_BAD == 0 && $LAST == "$RECOVERED" ]]; then
        echo "nothing lost"
    else
        echo "PROBLEM: see the logs (BENCH_OUT keeps them)"
    fi
}

cleanup() {
    local rc=$?
    [[ -z $PGBENCH_PID ]] || kill "$PGBENCH_PID" 2>/dev/null || true
    [[ -z $MARKER_PID ]] || kill "$MARKER_PID" 2>/dev/null || true
    [[ -z $RESTORED ]] || stop_server "$RESTORED" immediate
    stop_server "$PGDATA"
    [[ -z $PROXY_PID ]] || kill "$PROXY_PID" 2>/dev/null || true
    [[ -z $RGW_DIR ]] || bash "$SUPPORT/ceph-rgw.sh" stop "$RGW_DIR" >/dev/null 2>&1 || true
    if [[ -n ${BENCH_OUT:-} && -n $WORK ]]; then
        mkdir -p "$BENCH_OUT"
        cp -r "$WORK/logs" "$WORK/proxy.stats" "$BENCH_OUT/" 2>/dev/null || true
    fi
    [[ -z $WORK ]] || rm -rf "$WORK"
    exit "$rc"
}

PGBENCH_PID="" MARKER_PID=""
main() {
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    setup
    start_primary
    log "load for $SOAK_SECONDS s"
    as_pg "$PG_BIN/pgbench" -h "$SOCK" -p "$PORT" -U postgres -n -c 2 -R "$SOAK_RATE" -T "$SOAK_SECONDS" postgres \
        >"$WORK/logs/pgbench.log" 2>&1 &
    PGBENCH_PID=$!
    ( while kill -0 "$PGBENCH_PID" 2>/dev/null; do
          psql_q "insert into soak_marker default values" >/dev/null 2>&1 || true
          sleep 1
      done ) &
    MARKER_PID=$!
    local n=0 start=$SECONDS
    while ((SECONDS - start < SOAK_SECONDS)); do
        n=$((n + 1))
        cycle "$n"
        local next=$((start + n * SOAK_BACKUP_EVERY))
        while ((SECONDS < next && SECONDS - start < SOAK_SECONDS)); do sleep 1; done
    done
    wait "$PGBENCH_PID" || true
    PGBENCH_PID=""
    wait "$MARKER_PID" 2>/dev/null || true
    MARKER_PID=""
    final_checks
    report
}

main "$@"
