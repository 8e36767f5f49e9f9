#!/usr/bin/env bash
# Benchmark (not a test): `pitr restore --jobs N` of a large base backup
# (about 1 GB of data.tar, uncompressed) over a simulated WAN link, side by
# side in one run. Between pitr and the Ceph RGW sits the fault proxy
# (tests/fault-proxy) adding a round-trip time and a bandwidth cap per TCP
# connection, which is what an object store across a network looks like: one
# stream is limited by its connection, N ranged GETs use N connections.
# Without the proxy (the "direct" variants) RGW shares this machine's cores
# with pitr, so the link is not the limit and --jobs cannot show a gain.
#
#   bash bench/restore-jobs.sh                    # as root on a Debian machine like CI's
#   BENCH_RUNS=3 BENCH_JOBS="1 4 8" bash bench/restore-jobs.sh
#
# Settings (environment):
#   BENCH_SCALE      pgbench scale factor (default 70: a 1.05 GB data.tar)
#   BENCH_RUNS       rounds; the table shows medians (default 3)
#   BENCH_JOBS       --jobs values through the proxy (default "1 4 8")
#   BENCH_DIRECT_JOBS  --jobs values straight to RGW (default "1 4"; "" for none)
#   BENCH_RTT_MS     round-trip time the proxy adds (default 30)
#   BENCH_BANDWIDTH  bytes per second per connection and direction (default
#                    16777216: 16 MiB/s, about 134 Mbit/s)
#   PITR_BIN         a pitr binary to use instead of `cargo build --release`
#   FAULT_PROXY_BIN  a fault-proxy binary instead of `cargo build --release -p fault-proxy`
#   BENCH_OUT        a directory to keep the raw results and logs in
#   PG_BIN           PostgreSQL 15 binaries (default /usr/lib/postgresql/15/bin)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SUPPORT=$ROOT/tests/support
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
BENCH_SCALE=${BENCH_SCALE:-70}
BENCH_RUNS=${BENCH_RUNS:-3}
BENCH_JOBS=${BENCH_JOBS:-1 4 8}
BENCH_DIRECT_JOBS=${BENCH_DIRECT_JOBS-1 4}
BENCH_RTT_MS=${BENCH_RTT_MS:-30}
BENCH_BANDWIDTH=${BENCH_BANDWIDTH:-16777216}
PITR_BUCKET=pitr-jbench
SERVER=bench

WORK="" RGW_DIR="" PGDATA="" SOCK="" PORT="" PITR="" PROXY_PID="" RESULTS="" BACKUP_ID=""

log() { echo "bench: $*" >&2; }
die() { log "$*"; exit 1; }
calc() { awk "BEGIN { printf \"%.2f\", $1 }"; }
AS_PG=()
[[ $(id -u) -ne 0 ]] || AS_PG=(runuser -u postgres --)
as_pg() { "${AS_PG[@]}" "$@"; }

setup() {
    [[ -x $PG_BIN/initdb ]] || die "PostgreSQL 15 is missing at $PG_BIN"
    WORK=$(mktemp -d /var/tmp/pitr-jbench.XXXXXX)
    chmod 755 "$WORK"
    mkdir -p "$WORK/bin" "$WORK/logs" "$WORK/sock" "$WORK/restore"
    [[ $(id -u) -ne 0 ]] || chown postgres: "$WORK/logs" "$WORK/sock" "$WORK/restore"
    RGW_DIR=$WORK/rgw SOCK=$WORK/sock RESULTS=$WORK/results.tsv
    : >"$RESULTS"
    build_pitr
    local proxy=${FAULT_PROXY_BIN:-}
    if [[ -z $proxy ]]; then
        log "cargo build --release -p fault-proxy"
        (cd "$ROOT" && cargo build --release --quiet -p fault-proxy)
        proxy=$ROOT/target/release/fault-proxy
    fi
    install -m 755 "$proxy" "$WORK/bin/fault-proxy"
    log "starting a throw-away Ceph RGW in $RGW_DIR"
    bash "$SUPPORT/ceph-rgw.sh" start "$RGW_DIR" >/dev/null
    # shellcheck disable=SC1091
    source "$RGW_DIR/env.sh"
    bash "$SUPPORT/ceph-rgw.sh" mkbucket "$RGW_DIR" "$PITR_BUCKET"
}

start_primary() {
    PGDATA=$WORK/pgdata PORT=$(free_port)
    mkdir -p "$PGDATA"
    [[ $(id -u) -ne 0 ]] || chown postgres: "$PGDATA"
    chmod 700 "$PGDATA"
    as_pg "$PG_BIN/initdb" -D "$PGDATA" -A trust -U postgres >"$WORK/logs/initdb.log"
    cat >>"$PGDATA/postgresql.conf" <<EOF

# bench/restore-jobs.sh
listen_addresses = ''
port = $PORT
unix_socket_directories = '$SOCK'
archive_mode = on
archive_command = '$PITR wal-push %p'
max_wal_size = 4GB
synchronous_commit = off
EOF
    local env
    mapfile -t env < <(pitr_env)
    as_pg env "${env[@]}" PITR_COMPRESSION=none "$PG_BIN/pg_ctl" -D "$PGDATA" \
        -l "$WORK/logs/primary.log" -w -t 120 start >/dev/null
}

stop_primary() {
    [[ -n $PGDATA && -f $PGDATA/postmaster.pid ]] || return 0
    as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null 2>&1 || true
}

take_backup() {
    log "pgbench -i -s $BENCH_SCALE"
    as_pg "$PG_BIN/pgbench" -h "$SOCK" -p "$PORT" -U postgres -i -s "$BENCH_SCALE" -q postgres \
        >"$WORK/logs/pgbench.log" 2>&1
    local env t0=$SECONDS
    mapfile -t env < <(pitr_env)
    BACKUP_ID=$(env "${env[@]}" "$PITR" backup --compression none \
        -d "host=$SOCK port=$PORT user=postgres" 2>"$WORK/logs/backup.log") \
        || { tail "$WORK/logs/backup.log" >&2; die "pitr backup failed"; }
    log "backup $BACKUP_ID taken in $((SECONDS - t0)) s"
}

start_proxy() {
    "$WORK/bin/fault-proxy" --upstream "$PITR_TEST_S3_ENDPOINT" --rtt-ms "$BENCH_RTT_MS" \
        --bandwidth "$BENCH_BANDWIDTH" --stats "$WORK/proxy.stats" >"$WORK/proxy.out" \
        2>"$WORK/logs/proxy.log" &
    PROXY_PID=$!
    local i
    for ((i = 0; i < 100; i++)); do [[ -s $WORK/proxy.out ]] && break; sleep 0.1; done
    PROXY_URL=https://$(awk '/^listening/ { print $2 }' "$WORK/proxy.out")
    [[ $PROXY_URL != https:// ]] || die "the fault proxy did not start"
    log "fault proxy at $PROXY_URL: RTT $BENCH_RTT_MS ms, $BENCH_BANDWIDTH bytes/s per connection"
}

# restore_once VARIANT ENDPOINT JOBS ROUND: one timed restore into a fresh directory.
restore_once() {
    local variant=$1 endpoint=$2 jobs=$3 round=$4 dir=$WORK/restore/r env t0 t1 secs
    rm -rf "$dir"
    mapfile -t env < <(pitr_env | sed "s|^PITR_ENDPOINT_URL=.*|PITR_ENDPOINT_URL=$endpoint|")
    sync
    echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
    t0=$(date +%s.%N)
    env "${env[@]}" "$PITR" restore --pgdata "$dir" --backup-id "$BACKUP_ID" --jobs "$jobs" \
        >"$WORK/logs/restore-$variant-$round.log" 2>&1 \
        || { tail "$WORK/logs/restore-$variant-$round.log" >&2; die "restore $variant failed"; }
    t1=$(date +%s.%N)
    secs=$(calc "$t1 - $t0")
    printf '%s\t%s\t%s\t%s\n' "$variant" "$round" "$secs" "$(cut -d' ' -f1 /proc/loadavg)" >>"$RESULTS"
    log "round $round $variant: $secs s (load $(cut -d' ' -f1 /proc/loadavg))"
    rm -rf "$dir"
}

variants() {
    local j
    for j in $BENCH_JOBS; do echo "wan-jobs$j $PROXY_URL $j"; done
    for j in $BENCH_DIRECT_JOBS; do echo "direct-jobs$j $PITR_TEST_S3_ENDPOINT $j"; done
}

print_table() {
    echo
    echo "restore --jobs N of backup $BACKUP_ID (pgbench -s $BENCH_SCALE, --compression none),"
    echo "medians of $BENCH_RUNS rounds; WAN: RTT $BENCH_RTT_MS ms, $BENCH_BANDWIDTH bytes/s per connection"
    echo
    echo "| variant | median s | min s | max s | vs --jobs 1 (same link) |"
    echo "|---|---|---|---|---|"
    local v e j base med mn mx
    while read -r v e j; do
        med=$(median "$v" 3)
        mn=$(awk -F'\t' -v k="$v" '$1 == k { print $3 }' "$RESULTS" | sort -g | head -1)
        mx=$(awk -F'\t' -v k="$v" '$1 == k { print $3 }' "$RESULTS" | sort -g | tail -1)
        base=$(median "${v%jobs*}jobs1" 3)
        echo "| $v | $med | $mn | $mx | $(calc "$base / $med")x |"
    done < <(variants)
    echo
    echo "1-minute load average at the end of each restore: $(cut -f4 "$RESULTS" | sort -g | sed -n '1p;$p' | paste -sd' ' | sed 's/ / .. /')"
}

cleanup() {
    local rc=$?
    [[ -z $PROXY_PID ]] || kill "$PROXY_PID" 2>/dev/null || true
    stop_primary
    [[ -z $RGW_DIR ]] || bash "$SUPPORT/ceph-rgw.sh" stop "$RGW_DIR" >/dev/null 2>&1 || true
    if [[ -n ${BENCH_OUT:-} && -n $WORK ]]; then
        mkdir -p "$BENCH_OUT"
        cp -r "$WORK/logs" "$RESULTS" "$BENCH_OUT/" 2>/dev/null || true
    fi
    [[ -z $WORK ]] || rm -rf "$WORK"
    exit "$rc"
}

main() {
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    setup
    start_primary
    take_backup
    stop_primary
    start_proxy
    local r v e j
    for ((r = 1; r <= BENCH_RUNS; r++)); do
        # Alternate the order between rounds: neither side always runs first.
        if ((r % 2)); then
            while read -r v e j; do restore_once "$v" "$e" "$j" "$r"; done < <(variants)
        else
            while read -r v e j; do restore_once "$v" "$e" "$j" "$r"; done < <(variants | tac)
        fi
    done
    print_table
}

main "$@"
