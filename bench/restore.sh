#!/usr/bin/env bash
# Benchmark (not a test): restore the same database to the same target time
# with pitr, barman-cloud and pgBackRest in one run, and print the time until
# the restored server accepts connections as a promoted primary, the WAL
# segments it replayed, and the ratios against pitr. Variants: pitr with and
# without prefetch, pitr with --jobs 1 (one ranged GET at a time) against its default
# --jobs 4 (ranged GETs in flight per tar), pitr restoring barman-cloud's own backup and WAL,
# barman-cloud with and without --parallel, pgBackRest with and without
# process-max=2 + async archive-get, and the floor: a local tar and the same
# WAL on local disk (restore_command = cp).
#
#   bash bench/restore.sh                # as root on a Debian machine like CI's
#   BENCH_RUNS=3 bash bench/restore.sh   # medians of 3 restores of each variant
#
# Settings (environment):
#   BENCH_SCALE     pgbench scale factor of the base backup (default 20, about 300 MB)
#   BENCH_SEGMENTS  WAL segments of pgbench load between the backups and the
#                   target (default 40)
#   BENCH_RUNS      restores of each variant; the table shows medians (default 1)
#   BENCH_VARIANTS  the variants to run, in order (default: all of VARIANTS below)
#   BENCH_PITR_BACKUP_ARGS  extra arguments of `pitr backup`, e.g.
#                   "--compression none" (a large tar, for restore --jobs)
#   BENCH_RGW_NODELAY  1: restart the RGW with `tcp_nodelay=1` on its beast
#                   frontend (Ceph's default, and tests/support's, is off: then
#                   every response's last packet waits for a delayed ACK,
#                   about 40 ms per request)
#   PITR_BIN        a pitr binary to use instead of `cargo build --release`
#   BENCH_OUT       a directory to keep the raw results and every tool's log in
#   BARMAN_VENV     barman-cloud venv (default /opt/pitr-test/barman-venv)
#   PG_BIN          PostgreSQL 15 binaries (default /usr/lib/postgresql/15/bin)
#
# One primary archives every segment into all three repositories (one Ceph
# RGW over HTTPS, a bucket each) and a local directory; each tool takes one
# base backup of it; then the load, a marker row, the target time, one more
# row that must not be restored. Each variant restores into a fresh
# directory and starts PostgreSQL; the clock runs from the start of the
# restore command until pg_isready succeeds and pg_is_in_recovery() is f.
#
# Everything it starts (PostgreSQL servers, a Ceph RGW, temporary
# directories) is stopped and removed on exit. See docs/benchmarks.md.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SUPPORT=$ROOT/tests/support
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
BENCH_SCALE=${BENCH_SCALE:-20}
BENCH_SEGMENTS=${BENCH_SEGMENTS:-40}
BENCH_RUNS=${BENCH_RUNS:-1}
BENCH_RGW_NODELAY=${BENCH_RGW_NODELAY:-0}
BARMAN_VENV=${BARMAN_VENV:-/opt/pitr-test/barman-venv}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PITR_BUCKET=pitr-rbench
BARMAN_BUCKET=barman-rbench
PGBR_BUCKET=pgbr-rbench
SERVER=bench              # barman server name, pitr server name, pgBackRest stanza
SEG_BYTES=$((16 * 1048576))

WORK=""          # everything temporary lives here
RGW_DIR=""       # the throw-away Ceph RGW
PGDATA=""        # the primary
SOCK=""          # Unix socket directory of every server here
PORT=""          # the primary's port
PITR=""          # the pitr binary (a copy in WORK, so a rebuild cannot swap it mid-run)
PGBR_CONF=""     # pgBackRest settings of the primary (archive-push, backup)
TARGET=""        # the target time, 'YYYY-MM-DD HH:MM:SS.ffffff+00'
BARMAN_ID=""     # barman-cloud's backup id
DB_BYTES=0
WAL_SEGMENTS=0   # segments the load produced
RESULTS=""       # one TSV line per measured restore
RESTORED=""      # PGDATA of the restored server running now (for cleanup)

log() { echo "bench: $*" >&2; }
# calc EXPR: floating-point arithmetic, two decimals (awk: no bc needed).
calc() { awk "BEGIN { printf \"%.2f\", $1 }"; }
die() { log "$*"; exit 1; }

# Commands run as the postgres OS user when we are root (PostgreSQL refuses
# to run as root), as ourselves otherwise.
AS_PG=()
[[ $(id -u) -ne 0 ]] || AS_PG=(runuser -u postgres --)
as_pg() { "${AS_PG[@]}" "$@"; }

# ---------------------------------------------------------------- set-up

check_prereqs() {
    [[ -x $PG_BIN/initdb ]] || die "PostgreSQL 15 is missing at $PG_BIN (apt-get install postgresql-15)"
    [[ $(id -u) -ne 0 ]] || id postgres >/dev/null 2>&1 || die "no postgres OS user"
    ensure_pgbackrest
}

make_workdir() {
    # Not on tmpfs (bluestore uses O_DIRECT) and short (Ceph's unix sockets).
    WORK=$(mktemp -d /var/tmp/pitr-rbench.XXXXXX)
    chmod 755 "$WORK"
    mkdir -p "$WORK/bin" "$WORK/logs" "$WORK/wal" "$WORK/pgbb" "$WORK/restore" \
        "$WORK/sock" "$WORK/spool" "$WORK/pgbackrest/log" "$WORK/pgbackrest/lock"
    RGW_DIR=$WORK/rgw
    SOCK=$WORK/sock
    RESULTS=$WORK/results.tsv
    : >"$RESULTS"
    [[ $(id -u) -ne 0 ]] || chown -R postgres: "$WORK/logs" "$WORK/wal" "$WORK/pgbb" \
        "$WORK/restore" "$WORK/sock" "$WORK/spool" "$WORK/pgbackrest"
}

start_rgw() {
    log "starting a throw-away Ceph RGW in $RGW_DIR"
    bash "$SUPPORT/ceph-rgw.sh" start "$RGW_DIR" >/dev/null
    # shellcheck disable=SC1091
    source "$RGW_DIR/env.sh"
    [[ $BENCH_RGW_NODELAY != 1 ]] || restart_rgw_nodelay
    local b
    for b in "$PITR_BUCKET" "$BARMAN_BUCKET" "$PGBR_BUCKET"; do
        bash "$SUPPORT/ceph-rgw.sh" mkbucket "$RGW_DIR" "$b"
    done
}

# restart_rgw_nodelay comes from bench/lib.sh.

ensure_barman() {
    bash "$SUPPORT/barman-venv.sh" "$BARMAN_VENV" >/dev/null
    log "barman: $("$BARMAN_VENV/bin/barman-cloud-restore" --version 2>&1)"
}

# pgbackrest_conf comes from bench/lib.sh.

# The primary's archive_command: every segment into pitr's, barman's and
# pgBackRest's repository, and a copy in $WORK/wal (the floor's archive).
# The tools run one after another; a failure makes PostgreSQL retry all of
# them, which each of them accepts for a segment it already has. The name
# must contain "pgbackrest": pgbackrest backup refuses to run otherwise
# ("[068]: archive_command ... must contain pgbackrest").
ARCHIVE_SCRIPT=archive-pitr-barman-pgbackrest
write_archive_script() {
    cat >"$WORK/bin/$ARCHIVE_SCRIPT" <<EOF
#!/usr/bin/env bash
# $ARCHIVE_SCRIPT %p %f (bench/restore.sh)
set -euo pipefail
p=\$1 f=\$2
$PITR wal-push "\$p"
$BARMAN_VENV/bin/barman-cloud-wal-archive --endpoint-url $PITR_TEST_S3_ENDPOINT --gzip \\
    s3://$BARMAN_BUCKET/barman $SERVER "\$p"
pgbackrest --config=$PGBR_CONF --stanza=$SERVER archive-push "\$p"
if [[ ! -e $WORK/wal/\$f ]]; then
    cp "\$p" $WORK/wal/\$f.tmp && mv $WORK/wal/\$f.tmp $WORK/wal/\$f
fi
EOF
    chmod 755 "$WORK/bin/$ARCHIVE_SCRIPT"
}

# free_port comes from bench/lib.sh.

# A throw-away PostgreSQL on a Unix socket only, archiving with all three tools.
start_primary() {
    PGDATA=$WORK/pgdata
    PORT=$(free_port)
    mkdir -p "$PGDATA"
    [[ $(id -u) -ne 0 ]] || chown postgres: "$PGDATA"
    chmod 700 "$PGDATA"
    PGBR_CONF=$WORK/pgbackrest/primary.conf
    pgbackrest_conf "$PGBR_CONF"
    write_archive_script
    as_pg "$PG_BIN/initdb" -D "$PGDATA" -A trust -U postgres >"$WORK/logs/initdb.log"
    # Secrets stay in pg_ctl's environment (and pgBackRest's 0600 file),
    # never in postgresql.conf.
    cat >>"$PGDATA/postgresql.conf" <<EOF

# bench/restore.sh
listen_addresses = ''
port = $PORT
unix_socket_directories = '$SOCK'
archive_mode = on
archive_command = '$WORK/bin/$ARCHIVE_SCRIPT %p %f'
max_wal_size = 4GB
synchronous_commit = off
EOF
    local env
    mapfile -t env < <(pitr_env; barman_env)
    as_pg env "${env[@]}" "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$WORK/logs/primary.log" \
        -w -t 120 start >/dev/null
    # pgBackRest's archive-push refuses to work before its stanza exists
    # (and the first segment is not finished before pgbench -i).
    as_pg pgbackrest --config="$PGBR_CONF" --stanza="$SERVER" stanza-create \
        >"$WORK/logs/pgbackrest-stanza.log" 2>&1 || { cat "$WORK/logs/pgbackrest-stanza.log" >&2; die "pgbackrest stanza-create failed"; }
}

stop_server() {  # stop_server PGDATA [MODE]: fast by default
    [[ -n $1 && -f $1/postmaster.pid ]] || return 0
    as_pg "$PG_BIN/pg_ctl" -D "$1" -m "${2:-fast}" -w stop >/dev/null 2>&1 || true
}

psql_at() {  # psql_at PORT SQL
    as_pg "$PG_BIN/psql" -h "$SOCK" -p "$1" -U postgres -d postgres -X -A -t -q \
        -v ON_ERROR_STOP=1 -c "$2"
}
psql_q() { psql_at "$PORT" "$1"; }

load_pgbench() {
    log "pgbench -i -s $BENCH_SCALE"
    local t0=$SECONDS
    as_pg "$PG_BIN/pgbench" -h "$SOCK" -p "$PORT" -U postgres -i -q -s "$BENCH_SCALE" postgres \
        >"$WORK/logs/pgbench-init.log" 2>&1 || { cat "$WORK/logs/pgbench-init.log" >&2; die "pgbench -i failed"; }
    psql_q "create table bench_marker (tag text primary key, at timestamptz default clock_timestamp())"
    DB_BYTES=$(psql_q "select sum(pg_database_size(oid)) from pg_database")
    log "databases: $((DB_BYTES / 1048576)) MB, loaded in $((SECONDS - t0)) s"
}

# wait_archived SEGMENT: until the archiver has stored SEGMENT (and so every
# segment before it) in all repositories. Fails on a stuck archiver.
wait_archived() {
    local want=$1 i last=""
    for ((i = 0; i < 6000; i++)); do
        last=$(psql_q "select coalesce(last_archived_wal, '') from pg_stat_archiver")
        # Segment names of one timeline sort as they follow each other.
        [[ -n $last && ! $last < $want ]] && return 0
        sleep 0.2
    done
    tail -20 "$WORK/logs/primary.log" >&2
    die "archiver has not stored $want after 20 min (last: ${last:-none})"
}

# Switches to a new segment and waits until the finished one is archived everywhere.
switch_and_wait() {
    local seg
    seg=$(psql_q "select pg_walfile_name(pg_switch_wal())")
    wait_archived "$seg"
}

# ---------------------------------------------------------------- base backups

# One base backup with each tool, back to back, so their starting points
# (and the WAL each replays) are close.
take_backups() {
    local env t0
    psql_q "checkpoint"
    switch_and_wait

    t0=$SECONDS
    mapfile -t env < <(pitr_env)
    local extra=()
    [[ -z ${BENCH_PITR_BACKUP_ARGS:-} ]] || read -r -a extra <<<"$BENCH_PITR_BACKUP_ARGS"
    as_pg env "${env[@]}" "$PITR" backup -d "host=$SOCK port=$PORT user=postgres" "${extra[@]}" \
        >"$WORK/logs/backup-pitr.log" 2>&1 || { tail "$WORK/logs/backup-pitr.log" >&2; die "pitr backup failed"; }
    log "pitr backup ${BENCH_PITR_BACKUP_ARGS:-}: $((SECONDS - t0)) s"

    t0=$SECONDS
    mapfile -t env < <(barman_env)
    as_pg env "${env[@]}" "$BARMAN_VENV/bin/barman-cloud-backup" \
        --endpoint-url "$PITR_TEST_S3_ENDPOINT" -h "$SOCK" -p "$PORT" -U postgres \
        --immediate-checkpoint --gzip "s3://$BARMAN_BUCKET/barman" "$SERVER" \
        >"$WORK/logs/backup-barman.log" 2>&1 || { tail "$WORK/logs/backup-barman.log" >&2; die "barman-cloud-backup failed"; }
    BARMAN_ID=$(as_pg env "${env[@]}" "$BARMAN_VENV/bin/barman-cloud-backup-list" \
        --endpoint-url "$PITR_TEST_S3_ENDPOINT" --format json "s3://$BARMAN_BUCKET/barman" "$SERVER" \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["backups_list"][-1]["backup_id"])')
    log "barman-cloud-backup --gzip: $((SECONDS - t0)) s (backup id $BARMAN_ID)"

    t0=$SECONDS
    as_pg pgbackrest --config="$PGBR_CONF" --stanza="$SERVER" --type=full backup \
        >"$WORK/logs/backup-pgbackrest.log" 2>&1 || { tail "$WORK/logs/backup-pgbackrest.log" >&2; die "pgbackrest backup failed"; }
    log "pgbackrest backup --type=full: $((SECONDS - t0)) s"

    # The floor's base: a plain tar on local disk (its WAL is in $WORK/wal).
    as_pg "$PG_BIN/pg_basebackup" -h "$SOCK" -p "$PORT" -U postgres -Ft -X none -c fast \
        -D "$WORK/pgbb/base" >"$WORK/logs/backup-pgbb.log" 2>&1 || die "pg_basebackup failed"
    log "pg_basebackup -Ft: done"
}

# ---------------------------------------------------------------- WAL, target

lsn_segno() {  # the number of the segment the current insert position is in
    psql_q "select floor(pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0') / $SEG_BYTES)::bigint"
}
lsn_offset() {  # bytes into the current segment
    psql_q "select pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::bigint % $SEG_BYTES"
}

# BENCH_SEGMENTS segments of pgbench transactions: batches of pgbench -t,
# with pg_switch_wal once a segment is nearly full, so the count is exact
# and every segment is mostly real load.
generate_wal() {
    local start now batch=1000 t0=$SECONDS
    start=$(lsn_segno)
    log "generating $BENCH_SEGMENTS segments of pgbench load"
    while now=$(lsn_segno); ((now - start < BENCH_SEGMENTS)); do
        as_pg "$PG_BIN/pgbench" -h "$SOCK" -p "$PORT" -U postgres -n -c 2 -j 2 -t "$batch" postgres \
            >>"$WORK/logs/pgbench-load.log" 2>&1 || die "pgbench failed (see $WORK/logs/pgbench-load.log)"
        if (($(lsn_offset) > SEG_BYTES - SEG_BYTES / 16)); then
            psql_q "select pg_switch_wal()" >/dev/null
        fi
    done
    WAL_SEGMENTS=$(($(lsn_segno) - start))
    log "load: $WAL_SEGMENTS segments in $((SECONDS - t0)) s"
}

# The marker row, the target time right after its commit, then one more
# commit (a restore to the target must have it absent; PostgreSQL also needs
# a commit after the target to know it has been reached).
set_target() {
    psql_q "insert into bench_marker (tag) values ('target')"
    TARGET=$(psql_q "select to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'")
    sleep 0.2
    psql_q "insert into bench_marker (tag) values ('after')"
    log "target time: $TARGET"
    switch_and_wait
    log "everything archived in all repositories (pg_stat_archiver: $(psql_q \
        "select archived_count || ' archived, ' || failed_count || ' failures' from pg_stat_archiver"))"
}

# ---------------------------------------------------------------- restores

# Each restore_* function restores into $1 (an empty directory owned by
# postgres) and leaves it ready for pg_ctl start with recovery settings;
# restore_env_* prints the environment the server needs for its
# restore_command. Extra arguments select a variant.

restore_pitr() {  # restore_pitr DIR [EXTRA-ARG...]
    local dir=$1 env
    shift
    mapfile -t env < <(pitr_env)
    as_pg env "${env[@]}" "$PITR" restore --pgdata "$dir" --target-time "$TARGET" "$@"
}

# pitr restoring barman-cloud's backup and WAL: the very objects the
# barman-cloud rows read (pitr's restore_command then names that repository).
restore_pitr_on_barman() {
    local dir=$1 env
    mapfile -t env < <(pitr_env)
    as_pg env "${env[@]}" "$PITR" restore --repo "s3://$BARMAN_BUCKET/barman" \
        --backup-id "$BARMAN_ID" --pgdata "$dir" --target-time "$TARGET"
}

restore_barman() {
    local dir=$1 spool=${2:-} env rc
    mapfile -t env < <(barman_env)
    as_pg env "${env[@]}" "$BARMAN_VENV/bin/barman-cloud-restore" \
        --endpoint-url "$PITR_TEST_S3_ENDPOINT" "s3://$BARMAN_BUCKET/barman" "$SERVER" \
        "$BARMAN_ID" "$dir" || return
    rc="$BARMAN_VENV/bin/barman-cloud-wal-restore --endpoint-url $PITR_TEST_S3_ENDPOINT"
    [[ -z $spool ]] || rc+=" --parallel 8 --spool-dir $spool"
    rc+=" s3://$BARMAN_BUCKET/barman $SERVER %f %p"
    write_recovery "$dir" "$rc" || return
}

# restore_pgbackrest DIR CONF: pgBackRest writes restore_command (with its
# --config) and the target settings itself.
restore_pgbackrest() {
    local dir=$1 conf=$2
    as_pg pgbackrest --config="$conf" --stanza="$SERVER" --pg1-path="$dir" \
        --type=time --target="$TARGET" --target-action=promote restore
}

# The floor: the local tar, and the WAL copied from the local directory.
restore_floor() {
    local dir=$1
    as_pg tar -xf "$WORK/pgbb/base/base.tar" -C "$dir" || return
    write_recovery "$dir" "cp $WORK/wal/%f %p" || return
}

# write_recovery DIR RESTORE_COMMAND: what barman-cloud leaves to the user.
write_recovery() {
    as_pg touch "$1/recovery.signal" || return
    as_pg tee -a "$1/postgresql.auto.conf" >/dev/null <<EOF || return
restore_command = '$2'
recovery_target_time = '$TARGET'
recovery_target_action = 'promote'
EOF
}

# Settings of every restored server: its own port, no archiving (promotion
# would archive a new timeline into the repositories the next restore reads).
configure_restored() {
    as_pg tee -a "$1/postgresql.auto.conf" >/dev/null <<EOF || return
port = $2
listen_addresses = ''
unix_socket_directories = '$SOCK'
archive_mode = off
EOF
}

# wait_promoted PORT DIR: until the server accepts connections and is out of
# recovery (promoted). Fails if the server stops, or after 20 minutes.
wait_promoted() {
    local port=$1 dir=$2 i
    for ((i = 0; i < 24000; i++)); do
        if "$PG_BIN/pg_isready" -q -h "$SOCK" -p "$port" -U postgres -d postgres \
            && [[ $(psql_at "$port" "select pg_is_in_recovery()" 2>/dev/null) == f ]]; then
            return 0
        fi
        # No postmaster.pid (after it was written): the server gave up.
        ((i < 50)) || [[ -f $dir/postmaster.pid ]] || return 1
        sleep 0.05
    done
    return 1
}

# The restored data: the target's marker present, the later row absent.
check_marker() {
    [[ $(psql_at "$1" "select string_agg(tag, ',' order by tag) from bench_marker") == target ]]
}

# run_variant KEY ROUND: one measured restore. Prints nothing; appends to RESULTS.
run_variant() {
    local key=$1 round=$2
    local dir=$WORK/restore/$key-$round port env=() rlog=$WORK/logs/$key-$round
    local t0 t1 t2 status=ok load segs
    port=$(free_port)
    as_pg mkdir -m 700 "$dir"
    RESTORED=$dir
    load=$(cut -d' ' -f1 /proc/loadavg)
    sync
    t0=$EPOCHREALTIME
    case $key in
    pitr | pitr-noprefetch) restore_pitr "$dir" >"$rlog.restore.log" 2>&1 ;;
    pitr-jobs1) restore_pitr "$dir" --jobs 1 >"$rlog.restore.log" 2>&1 ;;
    pitr-on-barman) restore_pitr_on_barman "$dir" >"$rlog.restore.log" 2>&1 ;;
    barman) restore_barman "$dir" >"$rlog.restore.log" 2>&1 ;;
    barman-p8) restore_barman "$dir" "$WORK/spool/$key-$round" >"$rlog.restore.log" 2>&1 ;;
    pgbackrest) restore_pgbackrest "$dir" "$WORK/pgbackrest/default.conf" >"$rlog.restore.log" 2>&1 ;;
    pgbackrest-async)
        pgbackrest_conf "$WORK/pgbackrest/$key-$round.conf" process-max=2 archive-async=y \
            "spool-path=$WORK/spool/$key-$round"
        restore_pgbackrest "$dir" "$WORK/pgbackrest/$key-$round.conf" >"$rlog.restore.log" 2>&1 ;;
    floor) restore_floor "$dir" >"$rlog.restore.log" 2>&1 ;;
    esac || status="restore-failed"
    [[ $status != ok ]] || configure_restored "$dir" "$port" || status="restore-failed"
    t1=$EPOCHREALTIME
    case $key in
    pitr | pitr-jobs1 | pitr-on-barman) mapfile -t env < <(pitr_env) ;;
    pitr-noprefetch) mapfile -t env < <(pitr_env; echo PITR_PREFETCH=0) ;;
    barman*) mapfile -t env < <(barman_env) ;;
    esac
    if [[ $status == ok ]]; then
        as_pg env "${env[@]}" "$PG_BIN/pg_ctl" -D "$dir" -l "$rlog.postgres.log" start \
            >/dev/null 2>&1 || status="start-failed"
    fi
    [[ $status != ok ]] || wait_promoted "$port" "$dir" || status="not-promoted"
    t2=$EPOCHREALTIME
    [[ $status != ok ]] || check_marker "$port" || status="wrong-data"
    segs=$(grep -o 'restored log file "[0-9A-F]\{24\}"' "$rlog.postgres.log" 2>/dev/null | sort -u | wc -l)
    if [[ -d $dir/pg_wal/.pitr-prefetch ]]; then
        log "$key round $round: pg_wal/.pitr-prefetch is still there after promotion:" \
            "$(find "$dir/pg_wal/.pitr-prefetch" -mindepth 1 -printf "%f (%s bytes) ")"
    fi
    stop_server "$dir" immediate
    RESTORED=""
    if [[ $status != ok ]]; then
        log "$key round $round: $status; last lines of its logs:"
        tail -5 "$rlog.restore.log" "$rlog.postgres.log" >&2 2>/dev/null || true
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$key" "$round" "$(calc "$t2 - $t0")" \
        "$(calc "$t1 - $t0")" "$(calc "$t2 - $t1")" "$segs" "$load" "$status" >>"$RESULTS"
    log "$(printf '%-16s round %s: %6.1f s (restore %5.1f s, start to promoted %5.1f s), %3d segments, %s' \
        "$key" "$round" "$(calc "$t2 - $t0")" "$(calc "$t1 - $t0")" "$(calc "$t2 - $t1")" "$segs" "$status")"
    rm -rf "$dir" "$WORK/spool/$key-$round"
}

VARIANTS=(pitr pitr-jobs1 pitr-noprefetch pitr-on-barman barman barman-p8 pgbackrest pgbackrest-async floor)
[[ -z ${BENCH_VARIANTS:-} ]] || read -r -a VARIANTS <<<"$BENCH_VARIANTS"

run_round() {
    local r=$1 key
    log "round $r of $BENCH_RUNS (load: $(cut -d' ' -f1-3 /proc/loadavg))"
    for key in "${VARIANTS[@]}"; do run_variant "$key" "$r"; done
}

# ---------------------------------------------------------------- report

label() {
    case $1 in
    pitr) echo "pitr|restore --jobs 4; prefetch 8" ;;
    pitr-jobs1) echo "pitr|restore --jobs 1; prefetch 8" ;;
    pitr-noprefetch) echo "pitr|PITR_PREFETCH=0" ;;
    pitr-on-barman) echo "pitr|barman-cloud's backup and WAL" ;;
    barman) echo "barman-cloud|restore; wal-restore" ;;
    barman-p8) echo "barman-cloud|wal-restore --parallel 8" ;;
    pgbackrest) echo "pgBackRest|restore; archive-get" ;;
    pgbackrest-async) echo "pgBackRest|process-max=2, async get" ;;
    floor) echo "floor|local tar; cp from local dir" ;;
    esac
}

statuses() {
    awk -F'\t' -v k="$1" '$1 == k { print $8 }' "$RESULTS" | sort -u | paste -sd,
}

print_table() {
    local key tool variant
    echo
    echo "Base: pgbench -s $BENCH_SCALE ($((DB_BYTES / 1048576)) MB of databases);" \
        "$WAL_SEGMENTS segments of load; target $TARGET; $BENCH_RUNS run(s), medians;" \
        "$(nproc) CPUs; 1-min load before each restore: $(cut -f7 "$RESULTS" | paste -sd' ')"
    echo
    printf '| %-13s | %-31s | %7s | %9s | %10s | %8s | %-6s |\n' \
        tool variant "total s" "restore s" "recovery s" segments status
    printf '|%s|%s|%s:|%s:|%s:|%s:|%s|\n' \
        "$(printf -- '-%.0s' {1..15})" "$(printf -- '-%.0s' {1..33})" "$(printf -- '-%.0s' {1..8})" \
        "$(printf -- '-%.0s' {1..10})" "$(printf -- '-%.0s' {1..11})" "$(printf -- '-%.0s' {1..9})" \
        "$(printf -- '-%.0s' {1..8})"
    for key in "${VARIANTS[@]}"; do
        IFS='|' read -r tool variant <<<"$(label "$key")"
        printf '| %-13s | %-31s | %7.1f | %9.1f | %10.1f | %8.0f | %-6s |\n' "$tool" "$variant" \
            "$(median "$key" 3)" "$(median "$key" 4)" "$(median "$key" 5)" "$(median "$key" 6)" \
            "$(statuses "$key")"
    done
}

ratio_line() {  # ratio_line KEY: total time against pitr's default
    local key=$1 tool variant
    IFS='|' read -r tool variant <<<"$(label "$key")"
    awk -v name="$tool ($variant)" -v w="$(median "$key" 3)" -v pw="$(median pitr 3)" 'BEGIN {
        if (pw <= 0 || w <= 0) { printf "- %s: no ratio (no time)\n", name; exit }
        t = w / pw
        if (t >= 1) printf "- %s: %.1fx slower than pitr\n", name, t
        else printf "- %s: %.1fx faster than pitr\n", name, 1 / t }'
}

print_ratios() {
    local key
    echo
    echo "Ratios (same run, medians of total time, against pitr with its defaults):"
    for key in "${VARIANTS[@]}"; do
        [[ $key == pitr ]] || ratio_line "$key"
    done
}

# ---------------------------------------------------------------- main

cleanup() {
    local rc=$?
    [[ -z $RESTORED ]] || stop_server "$RESTORED" immediate
    stop_server "$PGDATA"
    [[ -z $RGW_DIR ]] || bash "$SUPPORT/ceph-rgw.sh" stop "$RGW_DIR" >/dev/null 2>&1 || true
    if [[ -n ${BENCH_OUT:-} && -n $WORK ]]; then
        mkdir -p "$BENCH_OUT"
        cp -r "$WORK/logs" "$BENCH_OUT/" 2>/dev/null || true
        mkdir -p "$BENCH_OUT/logs/pgbackrest"
        cp -r "$WORK/pgbackrest/log/." "$BENCH_OUT/logs/pgbackrest/" 2>/dev/null || true
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
    start_primary
    pgbackrest_conf "$WORK/pgbackrest/default.conf"
    load_pgbench
    take_backups
    generate_wal
    set_target
    stop_server "$PGDATA"
    local r
    for ((r = 1; r <= BENCH_RUNS; r++)); do run_round "$r"; done
    print_table
    print_ratios
}

main "$@"
