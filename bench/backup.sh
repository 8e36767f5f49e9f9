#!/usr/bin/env bash
# Benchmark (not a test): back up the same pgbench database with pitr,
# barman-cloud-backup and pg_basebackup in one run, and print wall time,
# CPU, peak RSS, stored size and the ratios against pitr. Compressions:
# gzip (level 1 and 9; pitr compresses a backup's gzip on every core), zstd
# (multi-threaded), lz4 and snappy for pitr; gzip, lz4 and snappy for
# barman-cloud-backup (BENCH_SLOW=1 adds bzip2 for both, and xz for pitr).
#
#   bash bench/backup.sh                 # as root on a Debian machine like CI's
#   BENCH_SCALE=10 BENCH_RUNS=3 bash bench/backup.sh
#
# Settings (environment):
#   BENCH_SCALE   pgbench scale factor (default 50, about 750 MB)
#   BENCH_RUNS    rounds; each round runs every variant once (default 1);
#                 the table shows medians
#   BENCH_SLOW    1 adds the single-threaded slow compressions (bzip2, xz)
#   PITR_BIN      a pitr binary to use instead of `cargo build --release`
#   BENCH_OUT     a directory to keep the raw results and every tool's log in
#   BARMAN_VENV   barman-cloud venv (default /opt/pitr-test/barman-venv)
#   PG_BIN        PostgreSQL 15 binaries (default /usr/lib/postgresql/15/bin)
#
# Everything it starts (PostgreSQL, a Ceph RGW, temporary directories) is
# stopped and removed on exit. See docs/benchmarks.md for results.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SUPPORT=$ROOT/tests/support
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
BENCH_SCALE=${BENCH_SCALE:-50}
BENCH_RUNS=${BENCH_RUNS:-1}
BARMAN_VENV=${BARMAN_VENV:-/opt/pitr-test/barman-venv}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PITR_BUCKET=pitr-bench
BARMAN_BUCKET=barman-bench
SERVER=bench

WORK=""       # everything temporary lives here
RGW_DIR=""    # the throw-away Ceph RGW
PGDATA=""
SOCK=""
PORT=""
PITR=""       # the pitr binary (a copy in WORK, so a rebuild cannot swap it mid-run)
DB_BYTES=0    # size of the databases, what every tool has to copy
RESULTS=""    # one TSV line per measured run

log() { echo "bench: $*" >&2; }
# calc EXPR: floating-point arithmetic, two decimals (awk: no bc needed).
calc() { awk "BEGIN { printf \"%.2f\", $1 }"; }
die() { log "$*"; exit 1; }

# Commands run as the postgres OS user when we are root (PostgreSQL refuses
# to run as root, and barman-cloud-backup reads PGDATA), as ourselves otherwise.
AS_PG=()
[[ $(id -u) -ne 0 ]] || AS_PG=(runuser -u postgres --)
as_pg() { "${AS_PG[@]}" "$@"; }

# ---------------------------------------------------------------- set-up

check_prereqs() {
    [[ -x $PG_BIN/initdb ]] || die "PostgreSQL 15 is missing at $PG_BIN (apt-get install postgresql-15)"
    if [[ ! -x /usr/bin/time ]]; then
        [[ $(id -u) -eq 0 ]] || die "/usr/bin/time is missing; as root: apt-get install time"
        log "installing the Debian package 'time'"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null
    fi
    [[ $(id -u) -ne 0 ]] || id postgres >/dev/null 2>&1 || die "no postgres OS user"
}

make_workdir() {
    # Not on tmpfs (bluestore uses O_DIRECT) and short (Ceph's unix sockets).
    WORK=$(mktemp -d /var/tmp/pitr-bench.XXXXXX)
    chmod 755 "$WORK"
    mkdir -p "$WORK/bin" "$WORK/logs" "$WORK/pgbb"
    RGW_DIR=$WORK/rgw
    RESULTS=$WORK/results.tsv
    : >"$RESULTS"
    [[ $(id -u) -ne 0 ]] || chown postgres: "$WORK/logs" "$WORK/pgbb"
}

start_rgw() {
    log "starting a throw-away Ceph RGW in $RGW_DIR"
    bash "$SUPPORT/ceph-rgw.sh" start "$RGW_DIR" >/dev/null
    # shellcheck disable=SC1091
    source "$RGW_DIR/env.sh"
    bash "$SUPPORT/ceph-rgw.sh" mkbucket "$RGW_DIR" "$PITR_BUCKET"
    bash "$SUPPORT/ceph-rgw.sh" mkbucket "$RGW_DIR" "$BARMAN_BUCKET"
}

ensure_barman() {
    bash "$SUPPORT/barman-venv.sh" "$BARMAN_VENV" >/dev/null
    log "barman: $("$BARMAN_VENV/bin/barman-cloud-backup" --version 2>&1)"
}

# A throw-away PostgreSQL on a Unix socket only, archiving with pitr.
start_pg() {
    PGDATA=$WORK/pgdata
    SOCK=$WORK/sock
    mkdir -p "$PGDATA" "$SOCK"
    [[ $(id -u) -ne 0 ]] || chown postgres: "$PGDATA" "$SOCK"
    chmod 700 "$PGDATA"
    as_pg "$PG_BIN/initdb" -D "$PGDATA" -A trust -U postgres >"$WORK/logs/initdb.log"
    PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    # Secrets stay in pg_ctl's environment, never in postgresql.conf.
    cat >>"$PGDATA/postgresql.conf" <<EOF

# bench/backup.sh
listen_addresses = ''
port = $PORT
unix_socket_directories = '$SOCK'
archive_mode = on
archive_command = '$PITR wal-push %p'
max_wal_size = 4GB
EOF
    local env
    mapfile -t env < <(pitr_env)
    as_pg env "${env[@]}" "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$WORK/logs/postgres.log" \
        -w -t 120 start >/dev/null
}

stop_pg() {
    [[ -n $PGDATA && -f $PGDATA/postmaster.pid ]] || return 0
    as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null || true
}

psql_q() {
    as_pg "$PG_BIN/psql" -h "$SOCK" -p "$PORT" -U postgres -d postgres -X -A -t -q \
        -v ON_ERROR_STOP=1 -c "$1"
}

load_pgbench() {
    log "pgbench -i -s $BENCH_SCALE"
    local t0=$SECONDS
    as_pg "$PG_BIN/pgbench" -h "$SOCK" -p "$PORT" -U postgres -i -q -s "$BENCH_SCALE" postgres \
        >"$WORK/logs/pgbench.log" 2>&1 || { cat "$WORK/logs/pgbench.log" >&2; die "pgbench -i failed"; }
    DB_BYTES=$(psql_q "select sum(pg_database_size(oid)) from pg_database")
    log "databases: $((DB_BYTES / 1048576)) MB, loaded in $((SECONDS - t0)) s"
}

# Waits until the archiver has nothing left to do (so that one run's WAL
# does not land in the next run's time). Fails on archive errors.
wait_archive_idle() {
    local i ready failed
    for ((i = 0; i < 3000; i++)); do
        ready=$(psql_q "select count(*) from pg_ls_archive_statusdir() where name like '%.ready'")
        ((ready == 0)) && return 0
        sleep 0.2
    done
    failed=$(psql_q "select failed_count || ' failures, last ' || coalesce(last_failed_wal, '-') from pg_stat_archiver")
    tail -20 "$WORK/logs/postgres.log" >&2
    die "archiver still has $ready segments after 10 min ($failed)"
}

# ---------------------------------------------------------------- measuring

# CPU seconds (user+system, own) of the given pids, summed.
cpu_of() {
    local pid stat f total=0 tck
    tck=$(getconf CLK_TCK)
    for pid in "$@"; do
        stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
        read -ra f <<<"${stat##*) }"   # f[0] is field 3 (state): utime is f[11]
        total=$((total + f[11] + f[12]))
    done
    calc "$total / $tck"
}

# CPU seconds of the postmaster's exited children (backends, the walsender
# that streams BASE_BACKUP): cutime+cstime. The archiver is not included.
pg_children_cpu() {
    local pid stat f tck
    tck=$(getconf CLK_TCK)
    pid=$(head -1 "$PGDATA/postmaster.pid")
    stat=$(cat "/proc/$pid/stat")
    read -ra f <<<"${stat##*) }"
    calc "$((f[13] + f[14])) / $tck"
}

# CPU seconds of the Ceph daemons (radosgw, OSD, monitor) so far.
store_cpu() {
    local pids=() f
    for f in "$RGW_DIR"/run/*.pid; do pids+=("$(<"$f")"); done
    cpu_of "${pids[@]}"
}

# Object store helper on the barman venv's boto3: list a prefix
# ("size<TAB>key" lines) or print one object.
s3() {
    local env
    mapfile -t env < <(barman_env)
    env "${env[@]}" "$BARMAN_VENV/bin/python" - "$PITR_TEST_S3_ENDPOINT" "$@" <<'EOF'
import sys, boto3
endpoint, op, bucket, arg = sys.argv[1:5]
s3 = boto3.client("s3", endpoint_url=endpoint)
if op == "ls":
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=arg):
        for o in page.get("Contents", []):
            print(f"{o['Size']}\t{o['Key']}")
else:
    sys.stdout.write(s3.get_object(Bucket=bucket, Key=arg)["Body"].read().decode())
EOF
}

# Parses /usr/bin/time -v output: prints "wall_s cpu_s maxrss_kb".
parse_time() {
    awk -F': ' '
        /Elapsed \(wall clock\)/ { n = split($2, t, ":"); w = 0
                                   for (i = 1; i <= n; i++) w = w * 60 + t[i] }
        /User time/   { c += $2 }
        /System time/ { c += $2 }
        /Maximum resident set size/ { r = $2 }
        END { printf "%.2f %.2f %d\n", w, c, r }' "$1"
}

# measure NAME CMD...: runs CMD (as postgres; CMD must be a program) under /usr/bin/time -v after a
# checkpoint and an idle archiver, and prints "wall cpu rss pgcpu storecpu load rc".
measure() {
    local name=$1; shift
    local tfile=$WORK/logs/$name.time out=$WORK/logs/$name.out err=$WORK/logs/$name.err
    psql_q "checkpoint"
    wait_archive_idle
    local load pg0 st0 rc=0
    load=$(cut -d' ' -f1 /proc/loadavg)
    pg0=$(pg_children_cpu)
    st0=$(store_cpu)
    /usr/bin/time -v -o "$tfile" "${AS_PG[@]}" "$@" >"$out" 2>"$err" || rc=$?
    local pg1 st1
    pg1=$(pg_children_cpu)
    st1=$(store_cpu)
    if ((rc != 0)); then
        log "$name exited $rc; last lines of its output:"
        tail -5 "$err" >&2
    fi
    echo "$(parse_time "$tfile") $(calc "$pg1 - $pg0") $(calc "$st1 - $st0") $load $rc"
}

# Keys under the given prefixes of a bucket, "size<TAB>key", sorted.
snapshot() {
    local bucket=$1; shift
    local p
    for p in "$@"; do s3 ls "$bucket" "$p"; done | LC_ALL=C sort
}

# What a run stored: the keys that are new since $2 (a snapshot). Prints
# "bytes status", status from the new backup.info (DONE when all is well).
stored_since() {
    local bucket=$1 before=$2 after=$3 bytes info status
    bytes=$(LC_ALL=C comm -13 "$before" "$after" | awk -F'\t' '{ s += $1 } END { print s + 0 }')
    info=$(LC_ALL=C comm -13 "$before" "$after" | cut -f2 | grep '/backup\.info$' | head -1 || true)
    if [[ -n $info ]]; then
        status=$(s3 get "$bucket" "$info" | sed -n 's/^status=//p')
    fi
    echo "$bytes ${status:-no-backup.info}"
}

record() {  # record KEY ROUND "wall cpu rss pgcpu storecpu load rc" "bytes status"
    local key=$1 round=$2 m=$3 s=$4
    local wall cpu rss pgcpu stcpu load rc bytes status
    read -r wall cpu rss pgcpu stcpu load rc <<<"$m"
    read -r bytes status <<<"$s"
    ((rc == 0)) || status="exit-$rc"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$key" "$round" "$wall" "$cpu" "$rss" \
        "$bytes" "$pgcpu" "$stcpu" "$load" "$status" >>"$RESULTS"
    log "$(printf '%-16s round %s: %6.1f s wall, %6.1f s CPU, %4d MB RSS, %5d MB stored, %s' \
        "$key" "$round" "$wall" "$cpu" "$((rss / 1024))" "$((bytes / 1048576))" "$status")"
}

# ---------------------------------------------------------------- the runs

# pitr backup into the pitr bucket; extra flags in "$@".
run_pitr() {
    local key=$1 round=$2; shift 2
    local env m before=$WORK/before after=$WORK/after
    local prefixes=("pg/$SERVER/base/" "pg/$SERVER/pitr/backups/")
    mapfile -t env < <(pitr_env)
    snapshot "$PITR_BUCKET" "${prefixes[@]}" >"$before"
    m=$(measure "$key-$round" env "${env[@]}" "$PITR" backup \
        -d "host=$SOCK port=$PORT user=postgres" "$@")
    snapshot "$PITR_BUCKET" "${prefixes[@]}" >"$after"
    record "$key" "$round" "$m" "$(stored_since "$PITR_BUCKET" "$before" "$after")"
}

# barman-cloud-backup into its own bucket; extra flags in "$@".
run_barman() {
    local key=$1 round=$2; shift 2
    local env m before=$WORK/before after=$WORK/after
    mapfile -t env < <(barman_env)
    snapshot "$BARMAN_BUCKET" "barman/$SERVER/base/" >"$before"
    m=$(measure "$key-$round" env "${env[@]}" "$BARMAN_VENV/bin/barman-cloud-backup" \
        --endpoint-url "$PITR_TEST_S3_ENDPOINT" -h "$SOCK" -p "$PORT" -U postgres \
        --immediate-checkpoint "$@" "s3://$BARMAN_BUCKET/barman" "$SERVER")
    snapshot "$BARMAN_BUCKET" "barman/$SERVER/base/" >"$after"
    record "$key" "$round" "$m" "$(stored_since "$BARMAN_BUCKET" "$before" "$after")"
}

# pg_basebackup -Ft to local disk (the physical reference); extra flags in "$@".
run_pgbb() {
    local key=$1 round=$2; shift 2
    local dir=$WORK/pgbb/$key-$round m
    m=$(measure "$key-$round" "$PG_BIN/pg_basebackup" -h "$SOCK" -p "$PORT" -U postgres \
        -Ft -D "$dir" -X none -c fast "$@")
    record "$key" "$round" "$m" "$(du -sb "$dir" 2>/dev/null | cut -f1 || echo 0) ok"
    rm -rf "$dir"
}

# One round: every variant once, on the same database.
run_round() {
    local r=$1
    log "round $r of $BENCH_RUNS (load: $(cut -d' ' -f1-3 /proc/loadavg))"
    run_pitr pitr-gzip "$r"
    run_barman barman-gzip "$r" --gzip
    run_pitr pitr-gzip9 "$r" --compression-level 9
    run_barman barman-none "$r"
    run_pitr pitr-none "$r" --compression none
    run_pgbb pgbb-tar "$r"
    run_pgbb pgbb-tar-gz "$r" -z
    run_pitr pitr-zstd "$r" --compression zstd
    run_pitr pitr-zstd9 "$r" --compression zstd --compression-level 9
    run_pitr pitr-lz4 "$r" --compression lz4
    run_barman barman-lz4 "$r" --lz4
    run_pitr pitr-snappy "$r" --compression snappy
    run_barman barman-snappy "$r" --snappy
    if [[ ${BENCH_SLOW:-0} == 1 ]]; then
        run_pitr pitr-bzip2 "$r" --compression bzip2
        run_barman barman-bzip2 "$r" --bzip2
        run_pitr pitr-xz "$r" --compression xz
    fi
}

# ---------------------------------------------------------------- report

label() {
    case $1 in
    pitr-gzip) echo "pitr backup|gzip -1 (default)" ;;
    pitr-gzip9) echo "pitr backup|--compression-level 9" ;;
    pitr-none) echo "pitr backup|--compression none" ;;
    barman-gzip) echo "barman-cloud-backup|--gzip (level 9)" ;;
    barman-none) echo "barman-cloud-backup|uncompressed" ;;
    pgbb-tar) echo "pg_basebackup -Ft|local disk" ;;
    pgbb-tar-gz) echo "pg_basebackup -Ft -z|local disk, gzip -6" ;;
    pitr-zstd) echo "pitr backup|zstd -3, multi-threaded" ;;
    pitr-zstd9) echo "pitr backup|zstd -9, multi-threaded" ;;
    pitr-lz4) echo "pitr backup|lz4" ;;
    barman-lz4) echo "barman-cloud-backup|--lz4" ;;
    pitr-snappy) echo "pitr backup|snappy" ;;
    barman-snappy) echo "barman-cloud-backup|--snappy" ;;
    pitr-bzip2) echo "pitr backup|bzip2 -9" ;;
    barman-bzip2) echo "barman-cloud-backup|--bzip2" ;;
    pitr-xz) echo "pitr backup|xz -3" ;;
    esac
}

statuses() {
    awk -F'\t' -v k="$1" '$1 == k { print $10 }' "$RESULTS" | sort -u | paste -sd,
}

print_table() {
    local key tool variant wall cpu rss bytes pgcpu stcpu
    local mb=$((DB_BYTES / 1048576))
    echo
    echo "Databases: $mb MB (pgbench -s $BENCH_SCALE); $BENCH_RUNS round(s), medians;" \
        "$(nproc) CPUs; 1-min load before each run: $(cut -f9 "$RESULTS" | paste -sd' ')"
    echo
    printf '| %-20s | %-22s | %7s | %7s | %7s | %7s | %7s | %7s | %7s | %-6s |\n' \
        tool variant "wall s" "CPU s" "RSS MB" "stored" "MB/s" "PG CPU" "S3 CPU" status
    printf '|%s|%s|%s:|%s:|%s:|%s:|%s:|%s:|%s:|%s|\n' \
        "$(printf -- '-%.0s' {1..22})" "$(printf -- '-%.0s' {1..24})" \
        "$(printf -- '-%.0s' {1..8})" "$(printf -- '-%.0s' {1..8})" "$(printf -- '-%.0s' {1..8})" \
        "$(printf -- '-%.0s' {1..8})" "$(printf -- '-%.0s' {1..8})" "$(printf -- '-%.0s' {1..8})" \
        "$(printf -- '-%.0s' {1..8})" "$(printf -- '-%.0s' {1..8})"
    local keys=(pitr-gzip pitr-gzip9 barman-gzip pgbb-tar-gz pitr-zstd pitr-zstd9 pitr-lz4
        barman-lz4 pitr-snappy barman-snappy pitr-bzip2 barman-bzip2 pitr-xz
        pitr-none barman-none pgbb-tar)
    for key in "${keys[@]}"; do
        grep -q "^$key"$'\t' "$RESULTS" || continue
        IFS='|' read -r tool variant <<<"$(label "$key")"
        wall=$(median "$key" 3); cpu=$(median "$key" 4); rss=$(median "$key" 5)
        bytes=$(median "$key" 6); pgcpu=$(median "$key" 7); stcpu=$(median "$key" 8)
        printf '| %-20s | %-22s | %7.1f | %7.1f | %7.0f | %7.0f | %7.1f | %7.1f | %7.1f | %-6s |\n' \
            "$tool" "$variant" "$wall" "$cpu" "$(calc "$rss / 1024")" \
            "$(calc "$bytes / 1048576")" "$(calc "$mb / $wall")" \
            "$pgcpu" "$stcpu" "$(statuses "$key")"
    done
}

ratio_line() {  # ratio_line KEY PITR_KEY
    local key=$1 ref=$2 tool variant
    IFS='|' read -r tool variant <<<"$(label "$key")"
    awk -v name="$tool $variant" -v w="$(median "$key" 3)" -v pw="$(median "$ref" 3)" \
        -v r="$(median "$key" 5)" -v pr="$(median "$ref" 5)" \
        -v s="$(median "$key" 6)" -v ps="$(median "$ref" 6)" -v ref="$ref" 'BEGIN {
        t = w / pw
        if (t >= 1) speed = sprintf("%.1fx slower than pitr", t)
        else speed = sprintf("%.1fx faster than pitr", 1 / t)
        printf "- %s: %s (%s); %.1fx pitr'"'"'s peak RSS; %.2fx its stored size\n",
               name, speed, ref, r / pr, s / ps }'
}

print_ratios() {
    echo
    echo "Ratios (same run, medians; compressed against pitr-gzip (and gzip -9 against"
    echo "pitr-gzip9, the like-for-like level), uncompressed against pitr-none):"
    ratio_line barman-gzip pitr-gzip
    ratio_line barman-gzip pitr-gzip9
    ratio_line pgbb-tar-gz pitr-gzip
    ratio_line barman-none pitr-none
    ratio_line pgbb-tar pitr-none
    ratio_line barman-lz4 pitr-lz4
    ratio_line barman-snappy pitr-snappy
    ratio_line pgbb-tar-gz pitr-zstd
    if grep -q "^barman-bzip2"$'\t' "$RESULTS"; then ratio_line barman-bzip2 pitr-bzip2; fi
}

# ---------------------------------------------------------------- main

cleanup() {
    local rc=$?
    stop_pg
    [[ -z $RGW_DIR ]] || bash "$SUPPORT/ceph-rgw.sh" stop "$RGW_DIR" >/dev/null 2>&1 || true
    if [[ -n ${BENCH_OUT:-} && -n $WORK ]]; then
        mkdir -p "$BENCH_OUT"
        cp -r "$WORK/logs" "$BENCH_OUT/" 2>/dev/null || true
        cp "$RESULTS" "$BENCH_OUT/" 2>/dev/null || true
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
    start_pg
    load_pgbench
    local r
    for ((r = 1; r <= BENCH_RUNS; r++)); do run_round "$r"; done
    print_table
    print_ratios
}

main "$@"
