#!/usr/bin/env bash
# Benchmark (not a test): what the CNPG-I plugin costs per WAL segment, and
# how much memory its sidecar needs. In one run, against one throw-away Ceph
# RGW over HTTPS, it prints medians of BENCH_RUNS rounds with the load
# average beside them:
#
#   1. archive, one segment at a time, BENCH_SEGMENTS real 16 MiB segments of
#      one PostgreSQL 15 cluster, by
#        sidecar  cnpg-instance-manager wal-archive (a new process per
#                 segment, a new connection and CloudNativePG's full load
#                 sequence, to the warm long-lived `pitr-cnpg instance`;
#                 plugin parameter archiveConcurrency 1)
#        pitr     pitr wal-push --archive-concurrency 1 (a cold process per segment)
#        barman   barman-cloud-wal-archive --gzip (a Python process per segment)
#      (no .ready files beside the segments: no look-ahead either way)
#   2. restore of the same segments, one at a time, by
#        cnpg-instance-manager wal-restore (plugin parameter prefetch 0),
#        pitr wal-fetch --prefetch 0, barman-cloud-wal-restore, and both pitr
#        ways with their default prefetch of 8 segments
#   3. the sidecar's peak RSS (VmHWM): after those rounds, while PostgreSQL
#      archives the WAL of pgbench -i -s BENCH_SCALE through it, and during a
#      base backup of that database taken through it (cnpg-instance-manager
#      backup), then of a second Backup on a freshly started sidecar; and the
#      recovery Job sidecar's (`pitr-cnpg restore`) during
#      RestoreJobHooks.Restore of that backup (cnpg-instance-manager
#      restore-job). For comparison, `pitr backup` of the same database and
#      `pitr restore` of the same backup under /usr/bin/time -v.
#
#   bash bench/cnpg.sh                        # as root, like bench/restore.sh
#   BENCH_RUNS=5 BENCH_SEGMENTS=20 bash bench/cnpg.sh
#
# Settings (environment):
#   BENCH_RUNS        rounds of the per-segment measurements (default 3); the
#                     tables show medians of the rounds
#   BENCH_SEGMENTS    segments per round and tool (default 10)
#   BENCH_SCALE       pgbench scale of the backed-up database (default 70,
#                     about 1 GB); 0 skips part 3 but the "after the rounds" line
#   BENCH_RGW_NODELAY 1: restart the RGW with tcp_nodelay=1 on its beast
#                     frontend (see bench/restore.sh: the default costs about
#                     40 ms per request)
#   PITR_BIN, PITR_CNPG_BIN, CNPG_IM_BIN
#                     the pitr, pitr-cnpg and cnpg-instance-manager binaries;
#                     default: ${CARGO_TARGET_DIR:-target}/release/ of this
#                     checkout, built with `cargo build --release --workspace`
#                     when one of them is missing
#   BENCH_OUT         a directory to keep the raw results and every log in
#   BARMAN_VENV       barman-cloud venv (default /opt/pitr-test/barman-venv)
#   PG_BIN            PostgreSQL 15 binaries (default /usr/lib/postgresql/15/bin)
#
# Every tool writes into its own bucket, and every round into its own prefix
# (so no round finds its segments already archived). Restored segments are
# compared with the originals (status "ok"). Everything it starts (the RGW,
# PostgreSQL, both sidecars, temporary directories) is stopped by pid and
# removed on exit. See docs/benchmarks.md.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SUPPORT=$ROOT/tests/support
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
BENCH_RUNS=${BENCH_RUNS:-3}
BENCH_SEGMENTS=${BENCH_SEGMENTS:-10}
BENCH_SCALE=${BENCH_SCALE:-70}
BENCH_RGW_NODELAY=${BENCH_RGW_NODELAY:-0}
BARMAN_VENV=${BARMAN_VENV:-/opt/pitr-test/barman-venv}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
BIN_DIR=${CARGO_TARGET_DIR:-$ROOT/target}/release
[[ $BIN_DIR == /* ]] || BIN_DIR=$ROOT/$BIN_DIR
SC_BUCKET=cnpg-sidecar     # the sidecar's per-segment archive, prefix r<round>
PITR_BUCKET=cnpg-pitr      # pitr wal-push's
BARMAN_BUCKET=cnpg-barman  # barman-cloud-wal-archive's
BK_BUCKET=cnpg-backup      # the backed-up cluster's archive and base backup
SERVER=bench               # server name everywhere (the Cluster's metadata.name)
PLUGIN_NAME=pitr.cnpg.io
SEG_BYTES=$((16 * 1048576))
ARCHIVE_TOOLS=(sidecar pitr barman)
# sidecar and pitr without prefetch (the per-segment cost), then both with
# their default prefetch of 8 segments.
RESTORE_TOOLS=(sidecar pitr barman sidecar-pf8 pitr-pf8)

WORK=""          # everything temporary lives here
RGW_DIR=""
PGDATA=""        # the one PostgreSQL: makes the segments, then is backed up
SOCK=""
PORT=""
PITR="" PITR_CNPG="" IM=""
SIDECAR_PID=""   # pitr-cnpg instance
JOB_PID=""       # pitr-cnpg restore (the recovery Job's sidecar)
SEGS=()          # names of the segments, in $WORK/walsrc/pg_wal
BARMAN_ENV=()    # barman-cloud's environment (lib.sh's barman_env)
BACKUP_ID=""
RESULTS=""       # one TSV line per tool, phase and round (lib.sh's median reads it)
CALLS=""         # one TSV line per call
MEM=""           # one TSV line per memory measurement
DB_BYTES=0
TICK_MS=$((1000 / $(getconf CLK_TCK)))

log() { echo "bench: $*" >&2; }
calc() { awk "BEGIN { printf \"%.2f\", $1 }"; }
die() { log "$*"; exit 1; }

# Every client and server runs as postgres, in a clean environment with
# only what it is given (no PITR_*, AWS_*, S3_* of ours leak in). setpriv
# and env exec, so the pid of `pg_exec ... &` is the program's own.
pg_exec() {
    setpriv --reuid=postgres --regid=postgres --init-groups -- \
        env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$WORK/home" LANG=C.UTF-8 "$@"
}
as_pg() { runuser -u postgres -- "$@"; }

# ---------------------------------------------------------------- set-up

check_prereqs() {
    [[ $(id -u) -eq 0 ]] || die "run as root (the servers run as the postgres OS user)"
    id postgres >/dev/null 2>&1 || die "no postgres OS user"
    [[ -x $PG_BIN/initdb ]] || die "PostgreSQL 15 is missing at $PG_BIN (apt-get install postgresql-15)"
    if [[ ! -x /usr/bin/time ]]; then
        log "installing the Debian package 'time'"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null
    fi
}

binaries() {
    PITR=${PITR_BIN:-$BIN_DIR/pitr}
    PITR_CNPG=${PITR_CNPG_BIN:-$BIN_DIR/pitr-cnpg}
    IM=${CNPG_IM_BIN:-$BIN_DIR/cnpg-instance-manager}
    if [[ ! -x $PITR || ! -x $PITR_CNPG || ! -x $IM ]]; then
        [[ -z ${PITR_BIN:-}${PITR_CNPG_BIN:-}${CNPG_IM_BIN:-} ]] \
            || die "not executable: one of $PITR $PITR_CNPG $IM"
        log "cargo build --release --workspace into $BIN_DIR (minutes the first time)"
        (cd "$ROOT" && CARGO_TARGET_DIR=${BIN_DIR%/release} cargo build --release --workspace --quiet)
    fi
    local b
    for b in "$PITR" "$PITR_CNPG" "$IM"; do
        [[ -x $b ]] || die "not an executable: $b"
        log "$(basename "$b"): $b ($(date -u -r "$b" '+built %Y-%m-%d %H:%M UTC'))"
    done
    log "pitr: $("$PITR" --version 2>/dev/null || true)"
}

make_workdir() {
    # Not on tmpfs (bluestore uses O_DIRECT) and short (Ceph's unix sockets).
    WORK=$(mktemp -d /var/tmp/pitr-cbench.XXXXXX)
    chmod 755 "$WORK"
    mkdir -p "$WORK/logs" "$WORK/sock" "$WORK/home" "$WORK/walsrc/pg_wal/archive_status" \
        "$WORK/fetch" "$WORK/plugins" "$WORK/plugins-job" "$WORK/json"
    RGW_DIR=$WORK/rgw
    SOCK=$WORK/sock
    RESULTS=$WORK/results.tsv
    CALLS=$WORK/calls.tsv
    MEM=$WORK/memory.tsv
    : >"$RESULTS"; : >"$CALLS"; : >"$MEM"
    chown -R postgres: "$WORK/logs" "$WORK/sock" "$WORK/home" "$WORK/walsrc" "$WORK/fetch" \
        "$WORK/plugins" "$WORK/plugins-job" "$WORK/json"
    chown postgres: "$WORK"
}

start_rgw() {
    log "starting a throw-away Ceph RGW in $RGW_DIR"
    bash "$SUPPORT/ceph-rgw.sh" start "$RGW_DIR" >/dev/null
    # shellcheck disable=SC1091
    source "$RGW_DIR/env.sh"
    [[ $BENCH_RGW_NODELAY != 1 ]] || restart_rgw_nodelay
    mapfile -t BARMAN_ENV < <(barman_env)
    local b
    for b in "$SC_BUCKET" "$PITR_BUCKET" "$BARMAN_BUCKET" "$BK_BUCKET"; do
        bash "$SUPPORT/ceph-rgw.sh" mkbucket "$RGW_DIR" "$b"
    done
}

ensure_barman() {
    bash "$SUPPORT/barman-venv.sh" "$BARMAN_VENV" >/dev/null
    log "barman: $("$BARMAN_VENV/bin/barman-cloud-wal-archive" --version 2>&1)"
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

psql_q() {
    as_pg "$PG_BIN/psql" -h "$SOCK" -p "$PORT" -U postgres -d postgres -X -A -t -q \
        -v ON_ERROR_STOP=1 -c "$1"
}

# ---------------------------------------------------------------- JSON

# The plugin parameters of a repository: plugin_params BUCKET PREFIX [EXTRA]
# (EXTRA: more '"name": "value"' pairs).
plugin_params() {
    printf '{"repository": "s3://%s/%s", "endpointURL": "%s", "region": "%s", "caFile": "%s"%s}' \
        "$1" "$2" "$PITR_TEST_S3_ENDPOINT" "$PITR_TEST_S3_REGION" "$PITR_TEST_S3_CA" "${3:+, $3}"
}

# cluster_json FILE BUCKET PREFIX [EXTRA]: a Cluster as CloudNativePG 1.30 sends it
# (trimmed as plugin/tests/support does), archiving with this plugin.
cluster_json() {
    cat >"$1" <<EOF
{"apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster",
 "metadata": {"name": "$SERVER", "namespace": "default", "uid": "0b7e7a4c-2d1f-4f57-9c55-6c1d3c2f9a01"},
 "spec": {"instances": 1, "imageName": "ghcr.io/cloudnative-pg/postgresql:15",
          "plugins": [{"name": "$PLUGIN_NAME", "isWALArchiver": true,
                       "parameters": $(plugin_params "$2" "$3" "${4:-}")}]},
 "status": {"currentPrimary": "$SERVER-1", "targetPrimary": "$SERVER-1"}}
EOF
    chown postgres: "$1"
}

# A new Cluster bootstrapped from $SERVER's backup (its own archive is a new,
# empty server folder, so the empty-archive check passes).
recovery_cluster_json() {
    cat >"$1" <<EOF
{"apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster",
 "metadata": {"name": "$SERVER-new", "namespace": "default"},
 "spec": {"instances": 1,
          "bootstrap": {"recovery": {"source": "origin"}},
          "externalClusters": [{"name": "origin", "plugin": {"name": "$PLUGIN_NAME",
              "parameters": $(plugin_params "$BK_BUCKET" pg "\"serverName\": \"$SERVER\"")}}],
          "plugins": [{"name": "$PLUGIN_NAME", "isWALArchiver": true,
                       "parameters": $(plugin_params "$BK_BUCKET" pg "\"serverName\": \"$SERVER-new\"")}]},
 "status": {}}
EOF
    chown postgres: "$1"
}

# ---------------------------------------------------------------- sidecars

# start_sidecar ROLE PLUGIN_PATH PGDATA POD [ENV...]: pitr-cnpg ROLE as
# postgres, as in a Pod (a child of this shell); sets STARTED_PID once it
# answers the health check.
STARTED_PID=""
start_sidecar() {
    local role=$1 path=$2 data=$3 pod=$4 pid i
    shift 4
    # Not through pg_exec: a function in the background would be a subshell
    # between us and the sidecar; a simple command is forked and exec'd.
    setpriv --reuid=postgres --regid=postgres --init-groups -- \
        env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$WORK/home" LANG=C.UTF-8 \
        PLUGIN_PATH="$path" PGDATA="$data" POD_NAME="$pod" NAMESPACE=default \
        CLUSTER_NAME="$SERVER" S3_ACCESS_KEY_ID="$PITR_TEST_S3_ACCESS_KEY" \
        S3_SECRET_ACCESS_KEY="$PITR_TEST_S3_SECRET_KEY" "$@" \
        "$PITR_CNPG" "$role" </dev/null >/dev/null 2>>"$WORK/logs/sidecar-$role.log" &
    pid=$!
    for ((i = 0; i < 200; i++)); do
        if [[ -S $path/$PLUGIN_NAME ]] \
            && pg_exec PLUGIN_PATH="$path" "$PITR_CNPG" healthcheck unix >/dev/null 2>&1; then
            [[ $(readlink "/proc/$pid/exe") == "$(readlink -f "$PITR_CNPG")" ]] \
                || die "pid $pid is $(readlink "/proc/$pid/exe"), not $PITR_CNPG"
            STARTED_PID=$pid
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    cat "$WORK/logs/sidecar-$role.log" >&2
    die "pitr-cnpg $role does not answer on $path/$PLUGIN_NAME"
}

stop_pid() {  # stop_pid PID: SIGTERM, 35 s (the sidecar gives calls 30 s), then SIGKILL
    local pid=$1 i
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 350; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# kb_of PID FIELD: VmHWM or VmRSS of a process, in kB.
kb_of() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"; }
# Resets a process's peak RSS to its current RSS (Linux >= 4.0, root).
reset_peak() { echo 5 >"/proc/$1/clear_refs"; }
# CPU time (user + system) of a process, in ms.
cpu_ms() { awk -v t="$TICK_MS" '{ sub(/^.*\) /, ""); print ($12 + $13) * t }' "/proc/$1/stat"; }
# CPU time of the children this shell has waited for, in ms.
children_cpu_ms() { awk -v t="$TICK_MS" '{ sub(/^.*\) /, ""); print ($14 + $15) * t }' "/proc/$$/stat"; }

# mem_line WHAT KB [NOTE]
mem_line() {
    printf '%s\t%s\t%s\n' "$1" "$2" "${3:-}" >>"$MEM"
    log "$(printf 'memory: %-58s %7.1f MiB %s' "$1" "$(calc "$2 / 1024")" "${3:-}")"
}

# ---------------------------------------------------------------- segments

# One PostgreSQL with archive_mode off; BENCH_SEGMENTS segments of inserts,
# each filled to 15/16 and finished with pg_switch_wal(), copied right after
# the switch (before any checkpoint could recycle it).
make_segments() {
    PGDATA=$WORK/pgdata
    PORT=$(free_port)
    as_pg mkdir -m 700 "$PGDATA"
    as_pg "$PG_BIN/initdb" -D "$PGDATA" -A trust -U postgres >"$WORK/logs/initdb.log"
    cat >>"$PGDATA/postgresql.conf" <<EOF

# bench/cnpg.sh
listen_addresses = ''
port = $PORT
unix_socket_directories = '$SOCK'
archive_mode = off
max_wal_size = 4GB
checkpoint_timeout = 1h
synchronous_commit = off
EOF
    as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$WORK/logs/postgres.log" -w -t 120 start >/dev/null
    psql_q "create table seg_load (id bigint, pad text)"
    local i seg off
    log "making $BENCH_SEGMENTS segments"
    for ((i = 0; i < BENCH_SEGMENTS; i++)); do
        while off=$(psql_q "select pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::bigint % $SEG_BYTES");
            ((off < SEG_BYTES - SEG_BYTES / 16)); do
            psql_q "insert into seg_load select g, md5(g::text) || md5(random()::text) from generate_series(1, 10000) g"
        done
        seg=$(psql_q "select pg_walfile_name(pg_switch_wal())")
        cp "$PGDATA/pg_wal/$seg" "$WORK/walsrc/pg_wal/$seg"
        SEGS+=("$seg")
    done
    chown -R postgres: "$WORK/walsrc"
    chmod 600 "$WORK/walsrc/pg_wal/"0*
    as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null
    log "segments ${SEGS[0]} .. ${SEGS[-1]}; gzip -1 of the first: $(gzip -1c "$WORK/walsrc/pg_wal/${SEGS[0]}" | wc -c) bytes"
}

# ---------------------------------------------------------------- one call

# call TOOL PHASE ROUND SEG: one archive or restore of SEG by TOOL; appends
# its wall time (microseconds) to CALLS. Nothing else forks in between, so
# the children's CPU time around a batch is the tools' own.
call() {
    local tool=$1 phase=$2 r=$3 seg=$4 t0 t1 status=ok
    local src=$WORK/walsrc/pg_wal/$seg dest=$WORK/fetch/$tool/pg_wal/$seg
    local im_env=(CNPG_CLUSTER_JSON="$WORK/json/cluster-r$r.json" CNPG_PLUGIN_PATH="$WORK/plugins")
    [[ $tool != sidecar-pf8 ]] || im_env[0]=CNPG_CLUSTER_JSON="$WORK/json/cluster-r$r-pf8.json"
    local pitr_env=(PITR_REPO="s3://$PITR_BUCKET/r$r" PITR_SERVER_NAME="$SERVER"
        PITR_ENDPOINT_URL="$PITR_TEST_S3_ENDPOINT" PITR_CA_BUNDLE="$PITR_TEST_S3_CA"
        S3_ACCESS_KEY_ID="$PITR_TEST_S3_ACCESS_KEY" S3_SECRET_ACCESS_KEY="$PITR_TEST_S3_SECRET_KEY")
    local barman=("$BARMAN_VENV/bin/barman-cloud-wal-$phase" --endpoint-url "$PITR_TEST_S3_ENDPOINT")
    local pf=0
    [[ $tool != pitr-pf8 ]] || pf=8
    local out=$WORK/logs/$phase-$tool-r$r.log
    t0=${EPOCHREALTIME/./}
    case $tool-$phase in
    # As PostgreSQL calls them: %p relative to PGDATA.
    sidecar-archive) pg_exec "${im_env[@]}" PGDATA="$WORK/walsrc" "$IM" wal-archive "pg_wal/$seg" ;;
    sidecar-restore | sidecar-pf8-restore)
        pg_exec "${im_env[@]}" PGDATA="$WORK/fetch/$tool" "$IM" wal-restore "$seg" "pg_wal/$seg" ;;
    pitr-archive) pg_exec "${pitr_env[@]}" "$PITR" wal-push --archive-concurrency 1 "$src" ;;
    pitr-restore | pitr-pf8-restore) pg_exec "${pitr_env[@]}" "$PITR" wal-fetch --prefetch "$pf" "$seg" "$dest" ;;
    barman-archive) pg_exec "${BARMAN_ENV[@]}" "${barman[@]}" --gzip "s3://$BARMAN_BUCKET/r$r" "$SERVER" "$src" ;;
    barman-restore) pg_exec "${BARMAN_ENV[@]}" "${barman[@]}" "s3://$BARMAN_BUCKET/r$r" "$SERVER" "$seg" "$dest" ;;
    esac >>"$out" 2>&1 || status=failed
    t1=${EPOCHREALTIME/./}
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$phase" "$tool" "$r" "$seg" "$((t1 - t0))" "$status" >>"$CALLS"
}

# batch TOOL PHASE ROUND: every segment, one after another; appends the
# round's mean ms per segment, client and sidecar CPU ms per segment to
# RESULTS. Restored segments are compared with the originals afterwards.
batch() {
    local tool=$1 phase=$2 r=$3 seg c0 c1 s0=0 s1=0 load n=${#SEGS[@]} status ms bad=0
    load=$(cut -d' ' -f1 /proc/loadavg)
    rm -rf "$WORK/fetch/$tool"
    as_pg mkdir -p "$WORK/fetch/$tool/pg_wal"
    [[ $tool != sidecar* ]] || s0=$(cpu_ms "$SIDECAR_PID")
    c0=$(children_cpu_ms)
    for seg in "${SEGS[@]}"; do call "$tool" "$phase" "$r" "$seg"; done
    c1=$(children_cpu_ms)
    if [[ $tool == sidecar* ]]; then
        settle_sidecar   # its background prefetch belongs to this batch
        s1=$(cpu_ms "$SIDECAR_PID")
    fi
    if [[ $phase == restore ]]; then
        wait_prefetchers "$WORK/fetch/$tool"
        for seg in "${SEGS[@]}"; do
            cmp -s "$WORK/walsrc/pg_wal/$seg" "$WORK/fetch/$tool/pg_wal/$seg" || bad=$((bad + 1))
        done
        rm -rf "$WORK/fetch/$tool"
    fi
    status=$(awk -F'\t' -v p="$phase" -v t="$tool" -v r="$r" \
        '$1 == p && $2 == t && $3 == r { print $6 }' "$CALLS" | sort -u | paste -sd,)
    ((bad == 0)) || status+=",$bad-differ"
    [[ $status == ok ]] || log "$phase by $tool, round $r: $status (see $WORK/logs/$phase-$tool-r$r.log)"
    ms=$(awk -F'\t' -v p="$phase" -v t="$tool" -v r="$r" -v n="$n" \
        '$1 == p && $2 == t && $3 == r { s += $5 } END { printf "%.1f", s / n / 1000 }' "$CALLS")
    # Children's CPU includes the two awk calls reading it (about 1 ms).
    printf '%s-%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$phase" "$tool" "$r" "$ms" \
        "$(calc "($c1 - $c0) / $n")" "$(calc "($s1 - $s0) / $n")" "$load" "$status" >>"$RESULTS"
    log "$(printf '%-7s %-7s round %s: %7.1f ms/segment (client CPU %5.1f ms, sidecar CPU %5.1f ms), load %s, %s' \
        "$phase" "$tool" "$r" "$ms" "$(calc "($c1 - $c0) / $n")" "$(calc "($s1 - $s0) / $n")" "$load" "$status")"
}

# Until the sidecar's CPU time stops growing (0.3 s without a tick), 10 s at most.
settle_sidecar() {
    local a b i
    b=$(cpu_ms "$SIDECAR_PID")
    for ((i = 0; i < 33; i++)); do
        sleep 0.3
        a=$b b=$(cpu_ms "$SIDECAR_PID")
        [[ $a != "$b" ]] || return 0
    done
}

# wait_prefetchers DIR: until no process (pitr wal-prefetch, which wal-fetch
# starts in the background) names DIR on its command line, 60 s at most.
# Only waits: they stop by themselves at the end of the archive.
wait_prefetchers() {
    local i f busy
    for ((i = 0; i < 600; i++)); do
        busy=""
        for f in /proc/[0-9]*/cmdline; do
            [[ $(tr '\0' ' ' <"$f" 2>/dev/null) == *"$1"* ]] && { busy=${f%/cmdline}; break; }
        done
        [[ -n $busy ]] || return 0
        sleep 0.1
    done
    log "a prefetcher ($busy) still runs in $1 after 60 s"
}

# One round: every tool archives every segment into the round's prefix, then
# restores them; the order of the tools rotates from round to round.
run_round() {
    local r=$1 i tool order=() rorder=() j
    for ((i = 0; i < ${#ARCHIVE_TOOLS[@]}; i++)); do
        order+=("${ARCHIVE_TOOLS[(i + r - 1) % ${#ARCHIVE_TOOLS[@]}]}")
    done
    for ((i = 0; i < ${#RESTORE_TOOLS[@]}; i++)); do
        rorder+=("${RESTORE_TOOLS[(i + r - 1) % ${#RESTORE_TOOLS[@]}]}")
    done
    log "round $r of $BENCH_RUNS, archive order ${order[*]}, restore order ${rorder[*]}; uptime:$(uptime)"
    # Like the cold pitr: no look-ahead, no prefetch (-pf8: prefetch 8, the default).
    cluster_json "$WORK/json/cluster-r$r.json" "$SC_BUCKET" "r$r" \
        '"archiveConcurrency": "1", "prefetch": "0"'
    cluster_json "$WORK/json/cluster-r$r-pf8.json" "$SC_BUCKET" "r$r" \
        '"archiveConcurrency": "1", "prefetch": "8"'
    # The sidecar is warm in a Pod: one untimed call for each of this
    # round's settings opens its repository (a Restore of a segment that is
    # not there).
    for j in "" -pf8; do
        pg_exec CNPG_CLUSTER_JSON="$WORK/json/cluster-r$r$j.json" CNPG_PLUGIN_PATH="$WORK/plugins" \
            PGDATA="$WORK/fetch" "$IM" wal-restore 00000001000000FF000000FF pg_wal/warm-up \
            >/dev/null 2>&1 || true
    done
    for tool in "${order[@]}"; do batch "$tool" archive "$r"; done
    for tool in "${rorder[@]}"; do batch "$tool" restore "$r"; done
}

# ---------------------------------------------------------------- memory

wait_archiver_idle() {
    local i n
    for ((i = 0; i < 6000; i++)); do
        n=$(psql_q "select count(*) from pg_ls_archive_statusdir() where name like '%.ready'")
        [[ $n == 0 ]] && return 0
        sleep 0.1
    done
    die "the archiver still has $n files to archive after 10 min"
}

# The same PostgreSQL, now archiving through the sidecar (as CloudNativePG
# configures it), loaded with pgbench -i; then a Backup through the sidecar.
backup_phase() {
    local cjson=$WORK/json/cluster-backup.json t0 seg
    cluster_json "$cjson" "$BK_BUCKET" pg
    cat >>"$PGDATA/postgresql.conf" <<EOF
archive_mode = on
archive_command = '$IM wal-archive %p'
EOF
    # Local replication for the backup: initdb -A trust already has
    # "local replication all trust"; make sure of it.
    grep -q '^local[[:space:]]\+replication' "$PGDATA/pg_hba.conf" \
        || echo "local replication postgres trust" >>"$PGDATA/pg_hba.conf"
    pg_exec CNPG_CLUSTER_JSON="$cjson" CNPG_PLUGIN_PATH="$WORK/plugins" PGDATA="$PGDATA" \
        "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$WORK/logs/postgres.log" -w -t 120 start >/dev/null

    reset_peak "$SIDECAR_PID"
    log "pgbench -i -s $BENCH_SCALE, archived through the sidecar"
    t0=$EPOCHREALTIME
    as_pg "$PG_BIN/pgbench" -h "$SOCK" -p "$PORT" -U postgres -i -q -s "$BENCH_SCALE" postgres \
        >"$WORK/logs/pgbench-init.log" 2>&1 || { cat "$WORK/logs/pgbench-init.log" >&2; die "pgbench -i failed"; }
    psql_q "checkpoint"
    seg=$(psql_q "select pg_walfile_name(pg_switch_wal())")
    wait_archiver_idle
    DB_BYTES=$(psql_q "select sum(pg_database_size(oid)) from pg_database")
    local archived
    archived=$(psql_q "select archived_count || ' archived, ' || failed_count || ' failed' from pg_stat_archiver")
    log "databases $((DB_BYTES / 1048576)) MiB; load and archive to $seg: $(calc "$EPOCHREALTIME - $t0") s ($archived)"
    mem_line "sidecar: archiving pgbench -i -s $BENCH_SCALE (peak)" "$(kb_of "$SIDECAR_PID" VmHWM)" \
        "($archived; archiveConcurrency 8)"

    sidecar_backup 1 "$cjson" "sidecar: Backup.Backup of $((DB_BYTES / 1048576)) MiB (peak)"
    wait_archiver_idle

    # For comparison: the pitr CLI backing up the same database into the
    # same repository (its end WAL archived by PostgreSQL through the sidecar).
    local rss
    t0=$EPOCHREALTIME
    pg_exec PITR_REPO="s3://$BK_BUCKET/pg" PITR_SERVER_NAME="$SERVER" \
        PITR_ENDPOINT_URL="$PITR_TEST_S3_ENDPOINT" PITR_CA_BUNDLE="$PITR_TEST_S3_CA" \
        S3_ACCESS_KEY_ID="$PITR_TEST_S3_ACCESS_KEY" S3_SECRET_ACCESS_KEY="$PITR_TEST_S3_SECRET_KEY" \
        /usr/bin/time -v "$PITR" backup -d "host=$SOCK port=$PORT user=postgres" \
        >"$WORK/logs/pitr-backup.log" 2>&1 || { tail -20 "$WORK/logs/pitr-backup.log" >&2; die "pitr backup failed"; }
    rss=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$WORK/logs/pitr-backup.log")
    mem_line "pitr backup CLI, same database (max RSS, /usr/bin/time -v)" "$rss" "($(calc "$EPOCHREALTIME - $t0") s)"
    wait_archiver_idle

    # The same Backup on a sidecar that has done nothing else yet.
    stop_pid "$SIDECAR_PID"
    start_sidecar instance "$WORK/plugins" "$PGDATA" "$SERVER-1" PGHOST="$SOCK" PGPORT="$PORT"
    SIDECAR_PID=$STARTED_PID
    sidecar_backup 2 "$cjson" "fresh sidecar (no earlier calls): Backup.Backup (peak)"
    wait_archiver_idle
    as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null
}

# sidecar_backup N CLUSTER_JSON WHAT: a Backup (named $SERVER-bench-N)
# through the sidecar, its peak RSS from the moment the call starts.
sidecar_backup() {
    local n=$1 cjson=$2 what=$3 bjson=$WORK/json/backup-$1.json c0 t0 b0 out before id
    cat >"$bjson" <<EOF
{"apiVersion": "postgresql.cnpg.io/v1", "kind": "Backup",
 "metadata": {"name": "$SERVER-bench-$n", "namespace": "default"},
 "spec": {"cluster": {"name": "$SERVER"}, "method": "plugin",
          "pluginConfiguration": {"name": "$PLUGIN_NAME"}}}
EOF
    chown postgres: "$bjson"
    before=$(kb_of "$SIDECAR_PID" VmRSS)
    reset_peak "$SIDECAR_PID"
    c0=$(cpu_ms "$SIDECAR_PID")
    t0=$EPOCHREALTIME
    out=$(pg_exec CNPG_CLUSTER_JSON="$cjson" CNPG_PLUGIN_PATH="$WORK/plugins" PGDATA="$PGDATA" \
        "$IM" backup "$bjson" 2>"$WORK/logs/backup-$n.log") \
        || { cat "$WORK/logs/backup-$n.log" >&2; tail -20 "$WORK/logs/sidecar-instance.log" >&2; die "backup through the sidecar failed"; }
    b0=$(calc "$EPOCHREALTIME - $t0")
    echo "$out" >"$WORK/logs/backup-$n-result.json"
    id=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["backup_id"])' "$out")
    [[ -n $BACKUP_ID ]] || BACKUP_ID=$id
    log "backup $id through the sidecar: $b0 s, sidecar CPU $(calc "($(cpu_ms "$SIDECAR_PID") - $c0) / 1000") s"
    mem_line "$what" "$(kb_of "$SIDECAR_PID" VmHWM)" \
        "(${b0} s; RSS $((before / 1024)) MiB before, $(($(kb_of "$SIDECAR_PID" VmRSS) / 1024)) after; $(kb_of "$SIDECAR_PID" Threads) threads)"
}

# The recovery Job: a fresh `pitr-cnpg restore` sidecar restores the backup
# into an empty PGDATA when cnpg-instance-manager calls RestoreJobHooks.Restore.
restore_job_phase() {
    local cjson=$WORK/json/cluster-new.json data=$WORK/job-pgdata t0 t1 out
    recovery_cluster_json "$cjson"
    start_sidecar restore "$WORK/plugins-job" "$data" "$SERVER-new-1-full-recovery" \
        CLUSTER_NAME="$SERVER-new"
    JOB_PID=$STARTED_PID
    mem_line "recovery Job sidecar: started, idle (RSS)" "$(kb_of "$JOB_PID" VmRSS)"
    t0=$EPOCHREALTIME
    out=$(pg_exec CNPG_CLUSTER_JSON="$cjson" CNPG_PLUGIN_PATH="$WORK/plugins-job" PGDATA="$data" \
        "$IM" restore-job 2>"$WORK/logs/restore-job.log") \
        || { cat "$WORK/logs/restore-job.log" >&2; tail -20 "$WORK/logs/sidecar-restore.log" >&2; die "restore-job failed"; }
    t1=$(calc "$EPOCHREALTIME - $t0")
    [[ -f $data/PG_VERSION && -f $data/recovery.signal ]] || die "restore-job left no PGDATA"
    log "RestoreJobHooks.Restore: $t1 s, $(du -sm "$data" | cut -f1) MiB in $data; restore_config: $(echo "$out" | paste -sd' ')"
    mem_line "recovery Job sidecar: RestoreJobHooks.Restore (peak)" "$(kb_of "$JOB_PID" VmHWM)" "(${t1} s)"
    stop_pid "$JOB_PID"; JOB_PID=""
    rm -rf "$data"

    # For comparison: the pitr CLI restoring the same backup.
    local dir=$WORK/pitr-restore rss
    as_pg mkdir -m 700 "$dir"
    t0=$EPOCHREALTIME
    pg_exec PITR_REPO="s3://$BK_BUCKET/pg" PITR_SERVER_NAME="$SERVER" \
        PITR_ENDPOINT_URL="$PITR_TEST_S3_ENDPOINT" PITR_CA_BUNDLE="$PITR_TEST_S3_CA" \
        S3_ACCESS_KEY_ID="$PITR_TEST_S3_ACCESS_KEY" S3_SECRET_ACCESS_KEY="$PITR_TEST_S3_SECRET_KEY" \
        /usr/bin/time -v "$PITR" restore --backup-id "$BACKUP_ID" --pgdata "$dir" \
        >"$WORK/logs/pitr-restore.log" 2>&1 || { tail -20 "$WORK/logs/pitr-restore.log" >&2; die "pitr restore failed"; }
    t1=$(calc "$EPOCHREALTIME - $t0")
    rss=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$WORK/logs/pitr-restore.log")
    mem_line "pitr restore CLI, same backup (max RSS, /usr/bin/time -v)" "$rss" "(${t1} s)"
    rm -rf "$dir"
}

# ---------------------------------------------------------------- report

label() {
    case $1 in
    archive-sidecar) echo "sidecar: cnpg-instance-manager wal-archive" ;;
    archive-pitr) echo "pitr wal-push --archive-concurrency 1" ;;
    archive-barman) echo "barman-cloud-wal-archive --gzip" ;;
    restore-sidecar) echo "sidecar: cnpg-instance-manager wal-restore" ;;
    restore-pitr) echo "pitr wal-fetch --prefetch 0" ;;
    restore-barman) echo "barman-cloud-wal-restore" ;;
    restore-sidecar-pf8) echo "sidecar, parameter prefetch 8 (default)" ;;
    restore-pitr-pf8) echo "pitr wal-fetch (prefetch 8, default)" ;;
    esac
}

statuses() {
    awk -F'\t' -v k="$1" '$1 == k { print $7 }' "$RESULTS" | tr , '\n' | sort -u | paste -sd,
}

rounds_of() {  # the per-round values of one key and column
    awk -F'\t' -v k="$1" -v c="$2" '$1 == k { printf "%s%s", sep, $c; sep = " / " }' "$RESULTS"
}

# ratio A B: how A compares with B ("2.3x slower", "1.4x faster").
ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { if (a <= 0 || b <= 0) { print "n/a"; exit }
        if (a >= b) printf "%.1fx slower", a / b; else printf "%.1fx faster", b / a }'
}

print_report() {
    local phase tool
    echo
    echo "Per-segment cost: $BENCH_SEGMENTS segments of 16 MiB, $BENCH_RUNS round(s), medians of the" \
        "rounds' mean ms per segment; $(nproc) CPUs; RGW tcp_nodelay=$BENCH_RGW_NODELAY;" \
        "1-min load before each batch: $(cut -f6 "$RESULTS" | paste -sd' ')"
    echo
    printf '| %-7s | %-44s | %8s | %12s | %11s | %-23s | %-6s |\n' \
        phase tool "ms/seg" "client CPU ms" "sidecar CPU" "rounds (ms/seg)" status
    printf '|%s|%s|%s:|%s:|%s:|%s|%s|\n' "$(printf -- '-%.0s' {1..9})" "$(printf -- '-%.0s' {1..46})" \
        "$(printf -- '-%.0s' {1..9})" "$(printf -- '-%.0s' {1..13})" "$(printf -- '-%.0s' {1..12})" \
        "$(printf -- '-%.0s' {1..25})" "$(printf -- '-%.0s' {1..8})"
    local key
    for key in "${ARCHIVE_TOOLS[@]/#/archive-}" "${RESTORE_TOOLS[@]/#/restore-}"; do
        printf '| %-7s | %-44s | %8.1f | %12.1f | %11.1f | %-23s | %-6s |\n' "${key%%-*}" "$(label "$key")" \
            "$(median "$key" 3)" "$(median "$key" 4)" "$(median "$key" 5)" \
            "$(rounds_of "$key" 3)" "$(statuses "$key")"
    done
    echo
    echo "Ratios (same run, medians of ms per segment):"
    for phase in archive restore; do
        local sc pi ba
        sc=$(median "$phase-sidecar" 3) pi=$(median "$phase-pitr" 3) ba=$(median "$phase-barman" 3)
        echo "- $phase: barman-cloud $(ratio "$ba" "$sc") than the sidecar, $(ratio "$ba" "$pi") than cold pitr;" \
            "cold pitr $(ratio "$pi" "$sc") than the sidecar"
    done
    sc=$(median restore-sidecar-pf8 3) pi=$(median restore-pitr-pf8 3) ba=$(median restore-barman 3)
    echo "- restore with prefetch 8: barman-cloud $(ratio "$ba" "$sc") than the sidecar, $(ratio "$ba" "$pi")" \
        "than pitr wal-fetch; pitr wal-fetch $(ratio "$pi" "$sc") than the sidecar"
    echo
    echo "Memory (peak RSS, VmHWM; the plugin the sidecar replaces is OOM-killed at a 128 MiB limit):"
    echo
    printf '| %-66s | %8s | %s |\n' measurement MiB note
    printf '|%s|%s:|%s|\n' "$(printf -- '-%.0s' {1..68})" "$(printf -- '-%.0s' {1..9})" "$(printf -- '-%.0s' {1..6})"
    local what kb note
    while IFS=$'\t' read -r what kb note; do
        printf '| %-66s | %8.1f | %s |\n' "$what" "$(calc "$kb / 1024")" "$note"
    done <"$MEM"
    echo
    echo "uptime at the end:$(uptime)"
}

# ---------------------------------------------------------------- main

cleanup() {
    local rc=$?
    set +e
    stop_pid "$JOB_PID"
    [[ -z $PGDATA || ! -f $PGDATA/postmaster.pid ]] \
        || as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -m immediate -w stop >/dev/null 2>&1
    stop_pid "$SIDECAR_PID"
    [[ -z $RGW_DIR ]] || bash "$SUPPORT/ceph-rgw.sh" stop "$RGW_DIR" >/dev/null 2>&1
    if [[ -n ${BENCH_OUT:-} && -n $WORK ]]; then
        mkdir -p "$BENCH_OUT"
        cp -r "$WORK/logs" "$RESULTS" "$CALLS" "$MEM" "$BENCH_OUT/" 2>/dev/null
    fi
    [[ -z $WORK ]] || rm -rf "$WORK"
    exit "$rc"
}

main() {
    check_prereqs
    binaries
    make_workdir
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    log "uptime at the start:$(uptime)"
    ensure_barman
    start_rgw
    make_segments
    # The instance sidecar, as in a Pod: PostgreSQL's environment (PGHOST,
    # PGPORT for backups), POD_NAME the current primary.
    start_sidecar instance "$WORK/plugins" "$PGDATA" "$SERVER-1" PGHOST="$SOCK" PGPORT="$PORT"
    SIDECAR_PID=$STARTED_PID
    mem_line "sidecar: started, idle (RSS)" "$(kb_of "$SIDECAR_PID" VmRSS)"
    local r
    for ((r = 1; r <= BENCH_RUNS; r++)); do run_round "$r"; done
    mem_line "sidecar: after the archive and restore rounds (peak since start)" \
        "$(kb_of "$SIDECAR_PID" VmHWM)" "($((BENCH_RUNS * (BENCH_SEGMENTS * 3 + 2))) calls)"
    if ((BENCH_SCALE > 0)); then
        backup_phase
        restore_job_phase
    fi
    print_report
}

main "$@"
