#!/usr/bin/env bash
# Benchmark (not a test): archiving under a burst of WAL, and what one
# segment costs, for pitr, barman-cloud and pgBackRest in the same run,
# against one throw-away Ceph RGW over HTTPS. Prints medians of BENCH_RUNS
# rounds with the 1-minute load beside them, and the ratios pitr/peer.
#
#   bash bench/burst.sh                      # as root on a Debian machine like CI's
#   BENCH_MODE=segment bash bench/burst.sh   # the per-segment part only
#
# 1. Burst archiving (BENCH_MODE burst or all). One PostgreSQL 15 cluster
#    (16 MiB segments, archive_mode off) is loaded once with
#    `pgbench -i -s BENCH_SCALE`, checkpointed and stopped: the template.
#    For every variant and round, a copy of the template (the same data, a
#    fresh pg_wal history for the archiver: no .ready files) starts with
#    archive_mode = on and that variant's archive_command, then runs
#    `pgbench -n -c BENCH_CLIENTS -j 2 -T BENCH_SECONDS`, then
#    pg_switch_wal(): the segment it closes is the last one. The clock of
#    the drain runs from that switch until pg_stat_archiver.last_archived_wal
#    reaches that segment and pg_wal/archive_status holds no .ready file.
#    The .ready count is sampled every second. Variants, each into its own
#    bucket (emptied after every run), every round under its own prefix:
#      pitr         pitr wal-push %p (look-ahead on, its default
#                   --archive-concurrency 8)
#      barman       barman-cloud-wal-archive --gzip
#      pgbr-async2  pgbackrest archive-push %p, archive-async=y, process-max=2
#      pgbr-async4  the same with process-max=4
#      pgbr-sync    pgbackrest archive-push %p (synchronous, one process)
# 2. Per-segment cost (BENCH_MODE segment or all). BENCH_CALLS + 1 real
#    16 MiB segments of pgbench load are copied out of a cluster that does
#    not archive (no .ready files beside them, so no look-ahead). Each round,
#    under a new prefix, each tool pushes them one at a time, a new process
#    per segment (the tools interleaved, call by call), then fetches them
#    back one at a time into an empty directory: pitr wal-push / wal-fetch
#    --prefetch 0, barman-cloud-wal-archive --gzip / barman-cloud-wal-restore,
#    pgbackrest archive-push / archive-get (synchronous). The first push of
#    a round is reported apart (pitr then checks the repository's identity
#    and conditional PUTs and remembers them; pgBackRest and barman have
#    their own first-call work); the table shows the median of the others.
#    Every fetched segment is compared with the original.
#
# Settings (environment):
#   BENCH_MODE      all (default), burst or segment
#   BENCH_RUNS      rounds (default 3); the tables show medians
#   BENCH_SCALE     pgbench scale of the template (default 50, about 750 MB)
#   BENCH_SECONDS   length of the pgbench write load (default 60)
#   BENCH_CLIENTS   pgbench clients (default 4)
#   BENCH_RATE      pgbench -R (transactions per second; default unthrottled)
#   BENCH_BACKLOG   1: archive nothing during the load (archive_mode = on,
#                   archive_command empty: the .ready files pile up), then
#                   set the variant's archive_command (ALTER SYSTEM, reload)
#                   at the switch: the drain is a backlog of every segment of
#                   the load, the tools' raw throughput
#   BENCH_VARIANTS  the burst variants to run (default: all five, in order)
#   BENCH_DRAIN_MAX seconds to wait for the archive to drain (default 600;
#                   past it the run is reported "timeout" with its backlog)
#   BENCH_CALLS     timed calls per tool and round in the per-segment part
#                   (default 5)
#   BENCH_RGW_NODELAY 1: restart the RGW with tcp_nodelay=1 on its beast
#                   frontend (see bench/restore.sh; the default costs about
#                   40 ms per request)
#   PITR_BIN        a pitr binary to use instead of `cargo build --release`
#   BENCH_OUT       a directory to keep the raw results, samples and logs in
#   BARMAN_VENV     barman-cloud venv (default /opt/pitr-test/barman-venv)
#   PG_BIN          PostgreSQL 15 binaries (default /usr/lib/postgresql/15/bin)
#
# Everything it starts (PostgreSQL servers, a Ceph RGW, pgBackRest's async
# processes, temporary directories) is stopped and removed on exit. See
# docs/benchmarks.md.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SUPPORT=$ROOT/tests/support
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
BENCH_MODE=${BENCH_MODE:-all}
BENCH_RUNS=${BENCH_RUNS:-3}
BENCH_SCALE=${BENCH_SCALE:-50}
BENCH_SECONDS=${BENCH_SECONDS:-60}
BENCH_CLIENTS=${BENCH_CLIENTS:-4}
BENCH_RATE=${BENCH_RATE:-}
BENCH_BACKLOG=${BENCH_BACKLOG:-0}
BENCH_DRAIN_MAX=${BENCH_DRAIN_MAX:-600}
BENCH_CALLS=${BENCH_CALLS:-5}
BENCH_RGW_NODELAY=${BENCH_RGW_NODELAY:-0}
BARMAN_VENV=${BARMAN_VENV:-/opt/pitr-test/barman-venv}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
read -r -a VARIANTS <<<"${BENCH_VARIANTS:-pitr barman pgbr-async2 pgbr-async4 pgbr-sync}"
SEG_TOOLS=(pitr barman pgbr)
SERVER=bench              # barman server name, pitr server name, pgBackRest stanza
PITR_BUCKET=burst-pitr    # pitr_env's (run_burst and push_one set their own)
PITR_PREFIX=r0
SEG_BYTES=$((16 * 1048576))

WORK=""          # everything temporary lives here
RGW_DIR=""       # the throw-away Ceph RGW
TEMPLATE=""      # the loaded, stopped cluster every run copies
PGDATA=""        # the cluster running now
SOCK=""          # Unix socket directory of every server here
PORT=""          # its port
PITR=""          # the pitr binary (a copy in WORK)
SAMPLER=""       # pid of the .ready sampler
RESULTS=""       # one TSV line per burst run (lib.sh's median reads RESULTS)
BURST=""         # the burst results
SEGRES=""        # one TSV line per per-segment call
SEGS=()          # the per-segment part's segments, in $WORK/walsrc/pg_wal
DB_BYTES=0

log() { echo "bench: $*" >&2; }
calc() { awk "BEGIN { printf \"%.2f\", $1 }"; }
die() { log "$*"; exit 1; }
load1() { cut -d' ' -f1 /proc/loadavg; }

AS_PG=()
[[ $(id -u) -ne 0 ]] || AS_PG=(runuser -u postgres --)
as_pg() { "${AS_PG[@]}" "$@"; }

# ---------------------------------------------------------------- set-up

check_prereqs() {
    [[ -x $PG_BIN/initdb ]] || die "PostgreSQL 15 is missing at $PG_BIN (apt-get install postgresql-15)"
    [[ $(id -u) -ne 0 ]] || id postgres >/dev/null 2>&1 || die "no postgres OS user"
    case $BENCH_MODE in all | burst | segment) ;; *) die "BENCH_MODE: all, burst or segment" ;; esac
    ensure_pgbackrest
}

make_workdir() {
    # Not on tmpfs (bluestore uses O_DIRECT) and short (Ceph's unix sockets).
    WORK=$(mktemp -d /var/tmp/pitr-burst.XXXXXX)
    chmod 755 "$WORK"
    mkdir -p "$WORK/bin" "$WORK/logs" "$WORK/samples" "$WORK/sock" "$WORK/spool" "$WORK/pg" \
        "$WORK/pgbackrest/log" "$WORK/pgbackrest/lock" "$WORK/walsrc/pg_wal" "$WORK/fetch"
    RGW_DIR=$WORK/rgw
    SOCK=$WORK/sock
    BURST=$WORK/burst.tsv
    SEGRES=$WORK/segment.tsv
    : >"$BURST"; : >"$SEGRES"
    [[ $(id -u) -ne 0 ]] || chown -R postgres: "$WORK/logs" "$WORK/sock" "$WORK/spool" "$WORK/pg" \
        "$WORK/pgbackrest" "$WORK/walsrc" "$WORK/fetch"
}

start_rgw() {
    log "starting a throw-away Ceph RGW in $RGW_DIR"
    bash "$SUPPORT/ceph-rgw.sh" start "$RGW_DIR" >/dev/null
    # shellcheck disable=SC1091
    source "$RGW_DIR/env.sh"
    [[ $BENCH_RGW_NODELAY != 1 ]] || restart_rgw_nodelay
}

mkbucket() { bash "$SUPPORT/ceph-rgw.sh" mkbucket "$RGW_DIR" "$1" >/dev/null; }

# Empties and removes a bucket (the RGW's 10 GB block file would not hold
# every run's WAL).
rmbucket() {
    CEPH_CONF=$RGW_DIR/ceph.conf radosgw-admin -c "$RGW_DIR/ceph.conf" bucket rm \
        --bucket="$1" --purge-objects >>"$WORK/logs/rmbucket.log" 2>&1 \
        || log "could not remove bucket $1 (see logs/rmbucket.log)"
}

ensure_barman() {
    bash "$SUPPORT/barman-venv.sh" "$BARMAN_VENV" >/dev/null
    log "barman: $("$BARMAN_VENV/bin/barman-cloud-wal-archive" --version 2>&1)"
}

psql_q() {
    as_pg "$PG_BIN/psql" -h "$SOCK" -p "$PORT" -U postgres -d postgres -X -A -t -q \
        -v ON_ERROR_STOP=1 -c "$1"
}

start_server() {  # start_server LOGFILE: PGDATA on PORT, with every tool's environment
    local env
    mapfile -t env < <(pitr_env; barman_env)
    as_pg env "${env[@]}" "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$1" -w -t 120 start >/dev/null
}

stop_server() {  # stop_server PGDATA [MODE]: fast by default
    [[ -n $1 && -f $1/postmaster.pid ]] || return 0
    as_pg "$PG_BIN/pg_ctl" -D "$1" -m "${2:-fast}" -w -t 300 stop >/dev/null 2>&1 || true
}

# The template: initdb, pgbench -i, checkpoint, stopped. No archiving, so
# it holds no .ready file; every run starts from a copy of it.
make_template() {
    TEMPLATE=$WORK/template
    PGDATA=$TEMPLATE
    PORT=$(free_port)
    mkdir -m 700 "$TEMPLATE"
    [[ $(id -u) -ne 0 ]] || chown postgres: "$TEMPLATE"
    as_pg "$PG_BIN/initdb" -D "$TEMPLATE" -A trust -U postgres >"$WORK/logs/initdb.log"
    # max_wal_size and checkpoint_timeout: no checkpoint during a load, so
    # every run writes the same full-page images.
    cat >>"$TEMPLATE/postgresql.conf" <<EOF

# bench/burst.sh
listen_addresses = ''
unix_socket_directories = '$SOCK'
port = $PORT
archive_mode = off
max_wal_size = 8GB
checkpoint_timeout = 1h
synchronous_commit = off
EOF
    start_server "$WORK/logs/template.log"
    log "pgbench -i -s $BENCH_SCALE (the template)"
    local t0=$SECONDS
    as_pg "$PG_BIN/pgbench" -h "$SOCK" -p "$PORT" -U postgres -i -q -s "$BENCH_SCALE" postgres \
        >"$WORK/logs/pgbench-init.log" 2>&1 || { cat "$WORK/logs/pgbench-init.log" >&2; die "pgbench -i failed"; }
    DB_BYTES=$(psql_q "select sum(pg_database_size(oid)) from pg_database")
    psql_q "checkpoint"
    stop_server "$TEMPLATE"
    log "template: $((DB_BYTES / 1048576)) MB of databases in $((SECONDS - t0)) s;" \
        "$(du -sm "$TEMPLATE" | cut -f1) MB on disk"
}

# A copy of the template in $WORK/pg/NAME, as PGDATA, on a new port.
copy_template() {
    PGDATA=$WORK/pg/$1
    PORT=$(free_port)
    cp -a "$TEMPLATE" "$PGDATA"
    rm -f "$PGDATA/postmaster.pid"
    echo "port = $PORT" >>"$PGDATA/postgresql.conf"
}

# segno NAME: the segment number of a WAL file name (16 MiB segments).
segno() { echo $((16#${1:8:8} * 256 + 16#${1:16:8})); }

# ---------------------------------------------------------------- burst

# archive_command VARIANT ROUND: also writes pgBackRest's settings.
archive_command_of() {
    local v=$1 r=$2 conf=$WORK/pgbackrest/$1-$2.conf
    local PGBR_BUCKET=burst-$v PGBR_PATH=/r$r
    case $v in
    pitr) echo "$PITR wal-push %p" ;;
    barman)
        echo "$BARMAN_VENV/bin/barman-cloud-wal-archive --endpoint-url $PITR_TEST_S3_ENDPOINT --gzip s3://burst-barman/r$r $SERVER %p" ;;
    pgbr-async2 | pgbr-async4)
        as_pg mkdir -p "$WORK/spool/$v-$r"
        pgbackrest_conf "$conf" archive-async=y "process-max=${v#pgbr-async}" "spool-path=$WORK/spool/$v-$r"
        echo "pgbackrest --config=$conf --stanza=$SERVER archive-push %p" ;;
    pgbr-sync)
        pgbackrest_conf "$conf"
        echo "pgbackrest --config=$conf --stanza=$SERVER archive-push %p" ;;
    *) die "unknown variant $v" ;;
    esac
}

ready_count() { find "$PGDATA/pg_wal/archive_status" -name '*.ready' 2>/dev/null | wc -l; }

# Every second: time, .ready files, archived_count, failed_count, last archived.
sampler() {
    local out=$1
    while :; do
        printf '%s\t%s\t%s\n' "$EPOCHREALTIME" "$(ready_count)" \
            "$(psql_q "select archived_count || E'\t' || failed_count || E'\t' || coalesce(last_archived_wal, '-') from pg_stat_archiver" 2>/dev/null || echo)" \
            >>"$out"
        sleep 1
    done
}

# run_burst VARIANT ROUND: one measured burst; appends a line to BURST.
run_burst() {
    local v=$1 r=$2 name=$1-$2 cmd load first last t_load t_end t_done status=ok
    local ready_end archived_end archived_done failed produced tps peak left=0 samples
    local PITR_BUCKET=burst-pitr PITR_PREFIX=r$2
    mkbucket "burst-$v"
    copy_template "$name"
    cmd=$(archive_command_of "$v" "$r")
    cat >>"$PGDATA/postgresql.conf" <<EOF
archive_mode = on
archive_command = '$([[ $BENCH_BACKLOG == 1 ]] || echo "$cmd")'
EOF
    start_server "$WORK/logs/$name.postgres.log"
    if [[ $v == pgbr-* ]]; then
        # archive-push fails until the stanza exists; nothing is archived before the load.
        as_pg pgbackrest --config="$WORK/pgbackrest/$name.conf" --stanza="$SERVER" stanza-create \
            >"$WORK/logs/$name.stanza.log" 2>&1 || { cat "$WORK/logs/$name.stanza.log" >&2; die "stanza-create failed"; }
    fi
    load=$(load1)
    samples=$WORK/samples/$name.tsv
    : >"$samples"
    sampler "$samples" &
    SAMPLER=$!
    first=$(psql_q "select pg_walfile_name(pg_current_wal_insert_lsn())")
    local rate=()
    [[ -z $BENCH_RATE ]] || rate=(-R "$BENCH_RATE")
    t_load=$EPOCHREALTIME
    as_pg "$PG_BIN/pgbench" -h "$SOCK" -p "$PORT" -U postgres -n -c "$BENCH_CLIENTS" -j 2 \
        -T "$BENCH_SECONDS" "${rate[@]}" postgres >"$WORK/logs/$name.pgbench.log" 2>&1 \
        || { tail -5 "$WORK/logs/$name.pgbench.log" >&2; die "pgbench failed"; }
    last=$(psql_q "select pg_walfile_name(pg_switch_wal())")
    if [[ $BENCH_BACKLOG == 1 ]]; then
        sleep 0.5  # the .ready file of the last segment
        ready_end=$(ready_count)
        psql_q "alter system set archive_command = '$cmd'"
        psql_q "select pg_reload_conf()" >/dev/null
        t_end=$EPOCHREALTIME
    else
        t_end=$EPOCHREALTIME
        ready_end=$(ready_count)
    fi
    archived_end=$(psql_q "select archived_count from pg_stat_archiver")
    tps=$(grep -o 'tps = [0-9]*' "$WORK/logs/$name.pgbench.log" | tail -1 | cut -d' ' -f3)
    produced=$(($(segno "$last") - $(segno "$first") + 1))
    local lastarch i=0
    while :; do
        lastarch=$(psql_q "select coalesce(last_archived_wal, '') from pg_stat_archiver")
        if [[ -n $lastarch && ! $lastarch < $last ]] && (($(ready_count) == 0)); then break; fi
        if awk -v a="$EPOCHREALTIME" -v b="$t_end" -v m="$BENCH_DRAIN_MAX" 'BEGIN { exit !(a - b > m) }'; then
            status=timeout
            left=$(ready_count)
            break
        fi
        sleep 0.2
    done
    t_done=$EPOCHREALTIME
    archived_done=$(psql_q "select archived_count from pg_stat_archiver")
    failed=$(psql_q "select failed_count from pg_stat_archiver")
    kill "$SAMPLER" 2>/dev/null || true
    wait "$SAMPLER" 2>/dev/null || true
    SAMPLER=""
    peak=$(awk -F'\t' -v e="$ready_end" 'BEGIN { m = e } $2 > m { m = $2 } END { print m }' "$samples")
    stop_server "$PGDATA"
    [[ $status == ok ]] || log "$name: $status after ${BENCH_DRAIN_MAX} s: $left .ready files left" \
        "(last archived ${lastarch:-none}, last segment $last)"
    local drain drain_rate whole
    drain=$(calc "$t_done - $t_end")
    drain_rate=$(calc "($archived_done - $archived_end) / ($t_done - $t_end)")
    whole=$(calc "$archived_done / ($t_done - $t_load)")
    # variant round produced tps peak ready_end drain_s drain_seg/s whole_seg/s failed left load status
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$v" "$r" "$produced" "${tps:-0}" \
        "$peak" "$ready_end" "$drain" "$drain_rate" "$whole" "$failed" "$left" "$load" "$status" >>"$BURST"
    log "$(printf '%-12s round %s: %3d segments (%s tps), .ready peak %3d, at end %3d; drained in %6.1f s (%5.2f seg/s; %5.2f seg/s overall); %s failures; load %s; %s' \
        "$v" "$r" "$produced" "${tps:-?}" "$peak" "$ready_end" "$drain" "$drain_rate" "$whole" "$failed" "$load" "$status")"
    rm -rf "$PGDATA" "$WORK/spool/$v-$r"
    rmbucket "burst-$v"
}

# ---------------------------------------------------------------- per segment

# BENCH_CALLS + 1 finished segments of pgbench load in $WORK/walsrc/pg_wal,
# from a copy of the template that does not archive (it keeps running:
# pgBackRest reads its pg_control and connects to it).
make_segments() {
    copy_template segsrc
    start_server "$WORK/logs/segsrc.postgres.log"
    local n=$((BENCH_CALLS + 1)) seg
    SEGS=()
    log "making $n segments of pgbench load for the per-segment part"
    psql_q "select pg_switch_wal()" >/dev/null
    while ((${#SEGS[@]} < n)); do
        as_pg "$PG_BIN/pgbench" -h "$SOCK" -p "$PORT" -U postgres -n -c 2 -j 2 -t 500 postgres \
            >>"$WORK/logs/segsrc.pgbench.log" 2>&1 || die "pgbench failed"
        if (($(psql_q "select pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::bigint % $SEG_BYTES") \
            > SEG_BYTES - SEG_BYTES / 16)); then
            seg=$(psql_q "select pg_walfile_name(pg_switch_wal())")
            as_pg cp "$PGDATA/pg_wal/$seg" "$WORK/walsrc/pg_wal/$seg"
            SEGS+=("$seg")
        fi
    done
}

# timed KEY ROUND SEG CMD...: runs CMD (as postgres), appends
# "key round seg wall user sys load status" to SEGRES.
timed() {
    local key=$1 r=$2 seg=$3 t0 t1 rc=0 cpu load
    shift 3
    local TIMEFORMAT='%3U %3S'
    load=$(load1)
    t0=$EPOCHREALTIME
    { time as_pg "$@" >>"$WORK/logs/seg-$key.log" 2>&1; } 2>"$WORK/time.out" || rc=$?
    t1=$EPOCHREALTIME
    cpu=$(tail -1 "$WORK/time.out")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$key" "$r" "$seg" "$(calc "($t1 - $t0) * 1000")" \
        "$(awk -v u="${cpu% *}" -v s="${cpu#* }" 'BEGIN { printf "%.0f", (u + s) * 1000 }')" \
        "$load" "$([[ $rc -eq 0 ]] && echo ok || echo "exit-$rc")" >>"$SEGRES"
}

# push_one TOOL ROUND SEG, fetch_one TOOL ROUND SEG
push_one() {
    local t=$1 r=$2 seg=$3 key=$1-push src=$WORK/walsrc/pg_wal/$3 env
    local PITR_BUCKET=seg-pitr PITR_PREFIX=r$2
    [[ $seg != "${SEGS[0]}" ]] || key=$1-push-first
    case $t in
    pitr)
        mapfile -t env < <(pitr_env)
        timed "$key" "$r" "$seg" env "${env[@]}" "$PITR" wal-push "$src" ;;
    barman)
        mapfile -t env < <(barman_env)
        timed "$key" "$r" "$seg" env "${env[@]}" "$BARMAN_VENV/bin/barman-cloud-wal-archive" \
            --endpoint-url "$PITR_TEST_S3_ENDPOINT" --gzip "s3://seg-barman/r$r" "$SERVER" "$src" ;;
    pgbr)
        timed "$key" "$r" "$seg" pgbackrest --config="$WORK/pgbackrest/seg-$r.conf" \
            --stanza="$SERVER" archive-push "$src" ;;
    esac
}

fetch_one() {
    local t=$1 r=$2 seg=$3 key=$1-fetch dest=$WORK/fetch/$1/$3 env
    local PITR_BUCKET=seg-pitr PITR_PREFIX=r$2
    [[ $seg != "${SEGS[0]}" ]] || key=$1-fetch-first
    case $t in
    pitr)
        mapfile -t env < <(pitr_env)
        timed "$key" "$r" "$seg" env "${env[@]}" "$PITR" wal-fetch --prefetch 0 "$seg" "$dest" ;;
    barman)
        mapfile -t env < <(barman_env)
        timed "$key" "$r" "$seg" env "${env[@]}" "$BARMAN_VENV/bin/barman-cloud-wal-restore" \
            --endpoint-url "$PITR_TEST_S3_ENDPOINT" "s3://seg-barman/r$r" "$SERVER" "$seg" "$dest" ;;
    pgbr)
        timed "$key" "$r" "$seg" pgbackrest --config="$WORK/pgbackrest/seg-$r.conf" \
            --stanza="$SERVER" archive-get "$seg" "$dest" ;;
    esac
    if ! cmp -s "$dest" "$WORK/walsrc/pg_wal/$seg"; then
        log "$t round $r: fetched $seg differs from the original (or is missing)"
        sed -i '$ s/\tok$/\twrong-data/' "$SEGRES"
    fi
    rm -f "$dest"
}

segment_round() {
    local r=$1 i j t n=${#SEG_TOOLS[@]}
    local PGBR_BUCKET=seg-pgbr PGBR_PATH=/r$1
    log "per-segment round $r of $BENCH_RUNS (load: $(cut -d' ' -f1-3 /proc/loadavg))"
    pgbackrest_conf "$WORK/pgbackrest/seg-$r.conf"
    as_pg pgbackrest --config="$WORK/pgbackrest/seg-$r.conf" --stanza="$SERVER" stanza-create \
        >"$WORK/logs/seg-$r.stanza.log" 2>&1 || { cat "$WORK/logs/seg-$r.stanza.log" >&2; die "stanza-create failed"; }
    # A new prefix: pitr's remembered verification is for the last one.
    rm -rf "$WORK/walsrc/pg_wal/.pitr-archived"
    for t in "${SEG_TOOLS[@]}"; do as_pg mkdir -p "$WORK/fetch/$t"; done
    for ((i = 0; i < ${#SEGS[@]}; i++)); do
        for ((j = 0; j < n; j++)); do push_one "${SEG_TOOLS[(i + j + r) % n]}" "$r" "${SEGS[i]}"; done
    done
    for ((i = 0; i < ${#SEGS[@]}; i++)); do
        for ((j = 0; j < n; j++)); do fetch_one "${SEG_TOOLS[(i + j + r) % n]}" "$r" "${SEGS[i]}"; done
    done
}

run_segments() {
    local b r
    for b in seg-pitr seg-barman seg-pgbr; do mkbucket "$b"; done
    make_segments
    for ((r = 1; r <= BENCH_RUNS; r++)); do segment_round "$r"; done
    stop_server "$PGDATA"
}

# ---------------------------------------------------------------- report

burst_label() {
    case $1 in
    pitr) echo "pitr wal-push (look-ahead 8)" ;;
    barman) echo "barman-cloud-wal-archive --gzip" ;;
    pgbr-async2) echo "pgBackRest async, process-max 2" ;;
    pgbr-async4) echo "pgBackRest async, process-max 4" ;;
    pgbr-sync) echo "pgBackRest archive-push (sync)" ;;
    esac
}

col_of() { awk -F'\t' -v k="$1" -v c="$2" '$1 == k { print $c }' "$RESULTS" | paste -sd/ | sed 's#/# / #g'; }
statuses() { awk -F'\t' -v k="$1" -v c="$2" '$1 == k { print $c }' "$RESULTS" | sort -u | paste -sd,; }

print_burst() {
    RESULTS=$BURST
    local v
    echo
    echo "Burst archiving: pgbench -i -s $BENCH_SCALE ($((DB_BYTES / 1048576)) MB), then" \
        "pgbench -c $BENCH_CLIENTS -j 2 -T $BENCH_SECONDS${BENCH_RATE:+ -R $BENCH_RATE};" \
        "$([[ $BENCH_BACKLOG == 1 ]] && echo "archiving off during the load, then on (BENCH_BACKLOG=1);")" \
        "$BENCH_RUNS round(s), medians;" \
        "$(nproc) CPUs; 1-min load before each run: $(cut -f12 "$BURST" | paste -sd' ')"
    echo
    printf '| %-32s | %8s | %6s | %10s | %10s | %7s | %9s | %9s | %8s | %-7s |\n' \
        variant segments tps "peak ready" "end ready" "drain s" "drain s/s" "all seg/s" failures status
    printf '|%s|%s:|%s:|%s:|%s:|%s:|%s:|%s:|%s:|%s|\n' "$(printf -- '-%.0s' {1..34})" \
        "$(printf -- '-%.0s' {1..9})" "$(printf -- '-%.0s' {1..7})" "$(printf -- '-%.0s' {1..11})" \
        "$(printf -- '-%.0s' {1..11})" "$(printf -- '-%.0s' {1..8})" "$(printf -- '-%.0s' {1..10})" \
        "$(printf -- '-%.0s' {1..10})" "$(printf -- '-%.0s' {1..9})" "$(printf -- '-%.0s' {1..9})"
    for v in "${VARIANTS[@]}"; do
        printf '| %-32s | %8.0f | %6.0f | %10.0f | %10.0f | %7.1f | %9.2f | %9.2f | %8.0f | %-7s |\n' \
            "$(burst_label "$v")" "$(median "$v" 3)" "$(median "$v" 4)" "$(median "$v" 5)" \
            "$(median "$v" 6)" "$(median "$v" 7)" "$(median "$v" 8)" "$(median "$v" 9)" \
            "$(median "$v" 10)" "$(statuses "$v" 13)"
    done
    echo
    echo "Each round (segments; drain s; peak ready / at end):"
    for v in "${VARIANTS[@]}"; do
        printf -- '- %-12s %s; %s s; %s\n' "$v" "$(col_of "$v" 3)" "$(col_of "$v" 7)" \
            "$(paste -d/ <(awk -F'\t' -v k="$v" '$1 == k { print $5 }' "$BURST") \
                <(awk -F'\t' -v k="$v" '$1 == k { print $6 }' "$BURST") | paste -sd' ')"
    done
    [[ " ${VARIANTS[*]} " == *" pitr "* ]] || return 0
    echo
    echo "Ratios pitr/peer (same run, medians):"
    for v in "${VARIANTS[@]}"; do
        [[ $v != pitr ]] || continue
        awk -v n="$(burst_label "$v")" -v pd="$(median pitr 7)" -v d="$(median "$v" 7)" \
            -v pr="$(median pitr 8)" -v r="$(median "$v" 8)" -v pa="$(median pitr 9)" -v a="$(median "$v" 9)" \
            -v pe="$(median pitr 6)" -v e="$(median "$v" 6)" 'BEGIN {
            printf "- %s: drain time pitr/peer %.2f (%s s against %s s)", n, (d > 0 ? pd / d : 0), pd, d
            printf "; drain rate %.1fx; overall rate %.1fx", (r > 0 ? pr / r : 0), (a > 0 ? pa / a : 0)
            printf "; .ready at end %d against %d\n", pe, e }'
    done
}

print_segments() {
    RESULTS=$SEGRES
    local k
    echo
    echo "Per-segment cost: one new process per 16 MiB segment; $BENCH_RUNS round(s) x $BENCH_CALLS calls" \
        "per tool (the first push and fetch of a round apart); medians; 1-min load: $(cut -f6 "$SEGRES" | sort -g | sed -n '1p;$p' | paste -sd-)"
    echo
    printf '| %-46s | %7s | %11s | %5s | %-6s |\n' call "wall ms" "CPU ms" calls status
    printf '|%s|%s:|%s:|%s:|%s|\n' "$(printf -- '-%.0s' {1..48})" "$(printf -- '-%.0s' {1..9})" \
        "$(printf -- '-%.0s' {1..13})" "$(printf -- '-%.0s' {1..7})" "$(printf -- '-%.0s' {1..8})"
    for k in pitr-push barman-push pgbr-push pitr-push-first barman-push-first pgbr-push-first \
        pitr-fetch barman-fetch pgbr-fetch; do
        printf '| %-46s | %7.0f | %11.0f | %5d | %-6s |\n' "$(seg_label "$k")" "$(median "$k" 4)" \
            "$(median "$k" 5)" "$(awk -F'\t' -v k="$k" '$1 == k' "$SEGRES" | wc -l)" "$(statuses "$k" 7)"
    done
    echo
    echo "Ratios pitr/peer (wall time, medians):"
    local op peer
    for op in push fetch; do
        for peer in barman pgbr; do
            awk -v n="$(seg_label "$peer-$op")" -v p="$(median "pitr-$op" 4)" -v q="$(median "$peer-$op" 4)" \
                'BEGIN { printf "- %s: pitr/peer %.2f (%.0f ms against %.0f ms)\n", n, (q > 0 ? p / q : 0), p, q }'
        done
    done
}

seg_label() {
    case $1 in
    pitr-push) echo "pitr wal-push" ;;
    barman-push) echo "barman-cloud-wal-archive --gzip" ;;
    pgbr-push) echo "pgbackrest archive-push" ;;
    pitr-push-first) echo "pitr wal-push, first of a round (verifies)" ;;
    barman-push-first) echo "barman-cloud-wal-archive, first of a round" ;;
    pgbr-push-first) echo "pgbackrest archive-push, first of a round" ;;
    pitr-fetch) echo "pitr wal-fetch --prefetch 0" ;;
    barman-fetch) echo "barman-cloud-wal-restore" ;;
    pgbr-fetch) echo "pgbackrest archive-get" ;;
    esac
}

# ---------------------------------------------------------------- main

cleanup() {
    local rc=$? d
    [[ -z $SAMPLER ]] || kill "$SAMPLER" 2>/dev/null || true
    for d in "$WORK"/pg/*; do [[ -d $d ]] && stop_server "$d" immediate; done
    [[ -z $RGW_DIR ]] || bash "$SUPPORT/ceph-rgw.sh" stop "$RGW_DIR" >/dev/null 2>&1 || true
    if [[ -n ${BENCH_OUT:-} && -n $WORK ]]; then
        mkdir -p "$BENCH_OUT/logs/pgbackrest"
        cp -r "$WORK/logs" "$WORK/samples" "$BENCH_OUT/" 2>/dev/null || true
        cp -r "$WORK/pgbackrest/log/." "$BENCH_OUT/logs/pgbackrest/" 2>/dev/null || true
        cp "$BURST" "$SEGRES" "$BENCH_OUT/" 2>/dev/null || true
    fi
    [[ -z $WORK ]] || rm -rf "$WORK"
    exit "$rc"
}

main() {
    check_prereqs
    make_workdir
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    build_pitr
    ensure_barman
    start_rgw
    log "start: $(uptime)"
    make_template
    local r v
    if [[ $BENCH_MODE != segment ]]; then
        for ((r = 1; r <= BENCH_RUNS; r++)); do
            log "burst round $r of $BENCH_RUNS (load: $(cut -d' ' -f1-3 /proc/loadavg))"
            for v in "${VARIANTS[@]}"; do run_burst "$v" "$r"; done
        done
    fi
    [[ $BENCH_MODE == burst ]] || run_segments
    log "end: $(uptime)"
    [[ $BENCH_MODE == segment ]] || print_burst
    [[ $BENCH_MODE == burst ]] || print_segments
}

main "$@"
