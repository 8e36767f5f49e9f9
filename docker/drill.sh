#!/usr/bin/env bash
# Restore drill: the whole mission on the embedded default. A throw-away
# primary archives into a repository through pitr, pitr takes a base backup,
# the primary changes at known times, and `pitr restore --target-time`
# recovers a new server to a moment between two of those changes: it must
# hold exactly the rows committed by then, and none committed after.
#
#   1. initdb a throw-away primary (track_commit_timestamp = on) with
#      archive_command = 'pitr wal-push %p'; the repository settings reach it
#      through pg_ctl's environment
#   2. take a base backup with `pitr backup` (BASE_BACKUP streamed into the
#      repository; no WAL inside)
#   3. generate load: pgbench rounds, each followed by a WAL switch
#   4. changes at known times, a WAL switch after each:
#        t1  marker row 101
#        t2  marker row 102, ~1.1 s later; the expected rows are recorded here,
#            and t2's commit timestamp read back (pg_xact_commit_timestamp)
#        t3  marker row 103 and an update of pgbench_accounts, ~1.1 s later:
#            the change the restore must NOT bring back
#   5. wait until every segment is archived, stop the primary
#   6. `pitr restore --pgdata DIR --target-time T` with T = t2's commit + 0.5 s:
#      pitr picks the backup, proves the WAL chain to T has no gap, extracts
#      the backup and writes recovery.signal, restore_command = 'pitr
#      wal-fetch %f %p' and recovery_target_time; the drill only adds a port
#      and starts the server, which replays the archive and promotes at T
#   7. check that the restored server holds exactly the rows recorded at t2
#      and that t3's marker row is absent
#
# Needs only the Rust toolchain and PostgreSQL 15 (Debian: postgresql-15).
#
# Environment:
#   PITR_BIN          pitr binary to use (default: cargo build --release here)
#   PG_BIN            PostgreSQL binaries (default /usr/lib/postgresql/15/bin)
#   PITR_REPO         repository (default file://$WORK/repo, the embedded
#                     default); when set, S3 settings come from the caller's
#                     environment as they are (PITR_ENDPOINT_URL, keys, ...)
#   PITR_SERVER_NAME  Barman server name in the repository (default drill).
#                     Every run is a new cluster, and pitr refuses to archive
#                     a second cluster under a name (exit 3): against a
#                     repository that outlives the run, use a fresh name.
#   PITR_DRILL_DIR    work directory (default: mktemp -d /tmp/pitr-drill.XXXXXX);
#                     must not exist or be empty, and is removed at the end
#   PITR_DRILL_KEEP=1 keep the work directory (servers are stopped anyway)
#   PITR_DRILL_BREAK  sabotage, to see the drill fail (file:// only); the
#                     victim is the middle segment of the pgbench load:
#                       delete-segment   delete it: `pitr restore` must refuse
#                                        before touching PGDATA (the archive
#                                        has a gap)
#                       corrupt-segment  overwrite bytes in it: wal-fetch must
#                                        exit 255 and recovery stop with FATAL
#
# Exit status: 0 when the restored server holds exactly the rows committed by
# the target time, 1 otherwise.
set -euo pipefail
shopt -s inherit_errexit

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(dirname "$SCRIPT_DIR")
readonly SCRIPT_DIR REPO_ROOT
readonly PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
readonly ARCHIVE_TIMEOUT=120   # seconds for the primary to archive its last segment
readonly RECOVERY_TIMEOUT=300  # seconds for the restored backup to replay the archive and promote
readonly LOAD_ROUNDS=3         # pgbench rounds, each followed by a WAL switch
readonly CHANGE_GAP=1.1        # seconds between the timed changes t1, t2 and t3
readonly TARGET_OFFSET=0.5     # the target time is t2's commit plus this many seconds

# Connection settings from the caller's environment would point psql elsewhere.
unset PGHOST PGPORT PGUSER PGDATABASE PGSERVICE PGOPTIONS PGDATA

WORK=""            # work directory, set by make_work_dir
WORK_CREATED=0     # 1 once WORK is ours to remove
PITR=""            # the pitr binary PostgreSQL runs
SOCK=""            # unix socket directory of both servers
PRIMARY=""         # data directories
RESTORE=""
ARCHIVED_LAST=""   # pg_stat_archiver, read by check_archiver
ARCHIVED_COUNT=0
LOAD_FIRST=""      # the segments the pgbench load wrote: LOAD_FIRST up to,
LOAD_END=""        # not including, LOAD_END (sabotage picks one of them)
EXPECTED=""        # fingerprint of the primary right after t2's commit
FINAL=""           # fingerprint of the primary at the end (t3 included)
T2_COMMIT=""       # t2's commit time, RFC 3339 UTC
TARGET_TIME=""     # the recovery target: T2_COMMIT + TARGET_OFFSET
PLAN_SEGMENTS=""   # segments in pitr restore's plan

# ---------------------------------------------------------------- helpers

say() { printf 'pitr drill: %s\n' "$*"; }
die() {
    printf 'pitr drill: FAILED: %s\n' "$*" >&2
    exit 1
}

is_root() { [[ $(id -u) -eq 0 ]]; }

# Run a command as the user PostgreSQL runs as: postgres when we are root
# (PostgreSQL refuses to run as root), otherwise ourselves. The environment
# (PITR_*, S3 credentials) is passed on unchanged.
as_pg() {
    if is_root; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# A PostgreSQL program by name: pg initdb -D ...
pg() {
    local prog=$1
    shift
    as_pg "$PG_BIN/$prog" "$@"
}

# One SQL statement on the server listening on port $1; prints the result
# unaligned, without headers, fields separated by '|'.
sql() {
    local port=$1 query=$2
    pg psql -X -q -A -t -v ON_ERROR_STOP=1 -h "$SOCK" -p "$port" -d postgres -c "$query"
}

# The last lines of a server log, indented, on stderr.
show_log() {
    local file=$1 lines=${2:-25}
    printf 'pitr drill: --- last %s lines of %s ---\n' "$lines" "$file" >&2
    tail -n "$lines" "$file" 2>/dev/null | sed 's/^/    /' >&2 || true
}

# A port nothing listens on (TCP on localhost, or a socket in $SOCK).
free_port() {
    local port _
    for _ in $(seq 100); do
        port=$((20000 + RANDOM % 30000))
        [[ -e "$SOCK/.s.PGSQL.$port" ]] && continue
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return
        fi
    done
    die "no free port found"
}

# Quote a value for a postgresql.conf string: 'it''s'.
conf_quote() { printf "'%s'" "${1//\'/\'\'}"; }

# Is the postmaster of data directory $1 running?
postmaster_alive() {
    local pid
    pid=$(head -n 1 "$1/postmaster.pid" 2>/dev/null) || return 1
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null
}

# ---------------------------------------------------------------- cleanup

cleanup() {
    local rc=$?
    set +e
    for dir in "$RESTORE" "$PRIMARY"; do
        if [[ -n "$dir" && -f "$dir/postmaster.pid" ]]; then
            pg pg_ctl -D "$dir" -m immediate stop >/dev/null 2>&1
        fi
    done
    if [[ $WORK_CREATED -eq 1 ]]; then
        if [[ "${PITR_DRILL_KEEP:-0}" == 1 ]]; then
            say "kept the work directory: $WORK"
        else
            cd / && rm -rf "$WORK"
            [[ $rc -ne 0 ]] && say "(set PITR_DRILL_KEEP=1 to keep the logs and data directories)" >&2
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- steps

check_prerequisites() {
    local prog
    for prog in initdb pg_ctl psql pgbench; do
        [[ -x "$PG_BIN/$prog" ]] || die "$PG_BIN/$prog not found: install PostgreSQL 15 or set PG_BIN"
    done
    case "${PITR_DRILL_BREAK:-}" in
        "" | delete-segment | corrupt-segment) ;;
        *) die "unknown PITR_DRILL_BREAK=$PITR_DRILL_BREAK (delete-segment or corrupt-segment)" ;;
    esac
    if [[ -n "${PITR_DRILL_BREAK:-}" && "${PITR_REPO:-file://}" != file://* ]]; then
        die "PITR_DRILL_BREAK needs a file:// repository"
    fi
    if is_root; then
        id postgres >/dev/null 2>&1 || die "running as root, but there is no 'postgres' user to run PostgreSQL as"
        command -v runuser >/dev/null || die "running as root, but runuser is missing"
    fi
}

# Sets PITR_SRC: the binary to use, built here unless PITR_BIN names one.
find_pitr() {
    if [[ -n "${PITR_BIN:-}" ]]; then
        [[ -x "$PITR_BIN" ]] || die "PITR_BIN=$PITR_BIN is not an executable file"
        PITR_SRC=$(realpath "$PITR_BIN")
    else
        command -v cargo >/dev/null || die "cargo not found: install Rust or set PITR_BIN"
        say "building pitr (cargo build --release) in $REPO_ROOT"
        (cd "$REPO_ROOT" && cargo build --release --quiet) || die "cargo build --release failed"
        PITR_SRC=$REPO_ROOT/target/release/pitr
    fi
}

# Creates WORK, owned by the PostgreSQL user, and puts pitr where that user
# can run it.
make_work_dir() {
    if [[ -n "${PITR_DRILL_DIR:-}" ]]; then
        if [[ -e "$PITR_DRILL_DIR" && -n "$(ls -A "$PITR_DRILL_DIR")" ]]; then
            die "PITR_DRILL_DIR=$PITR_DRILL_DIR is not empty (it is removed at the end, so it must be the drill's own)"
        fi
        mkdir -p "$PITR_DRILL_DIR"
        WORK=$(realpath "$PITR_DRILL_DIR")
    else
        WORK=$(mktemp -d /tmp/pitr-drill.XXXXXX)
    fi
    WORK_CREATED=1
    if is_root; then
        chown postgres: "$WORK"
        as_pg test -w "$WORK" ||
            die "the postgres user cannot write to $WORK (is a parent directory closed to it?)"
        # Copy the binary so postgres can run it wherever the repository lives.
        mkdir -p "$WORK/bin"
        install -m 755 "$PITR_SRC" "$WORK/bin/pitr"
        PITR=$WORK/bin/pitr
    else
        PITR=$PITR_SRC
    fi
    SOCK=$WORK/sock
    PRIMARY=$WORK/primary
    RESTORE=$WORK/restore
    as_pg mkdir -p "$SOCK"
    # PostgreSQL programs must be able to look at their working directory.
    cd "$WORK"
}

# The repository: the caller's PITR_REPO, or a directory in WORK.
choose_repository() {
    export PITR_REPO=${PITR_REPO:-file://$WORK/repo}
    export PITR_SERVER_NAME=${PITR_SERVER_NAME:-drill}
    REPO_DIR=""
    if [[ "$PITR_REPO" == file://* ]]; then
        REPO_DIR=${PITR_REPO#file://}
        REPO_DIR=${REPO_DIR%/}
    fi
}

# initdb, archive settings, start. Sets PRIMARY_PORT.
start_primary() {
    PRIMARY_PORT=$(free_port)
    pg initdb -D "$PRIMARY" --no-sync --no-locale -E UTF8 -A trust >"$WORK/initdb.log" 2>&1 ||
        { show_log "$WORK/initdb.log"; die "initdb failed"; }
    # Only the command goes into postgresql.conf; PITR_REPO, PITR_SERVER_NAME
    # and any credentials reach it through pg_ctl's environment.
    cat >>"$PRIMARY/postgresql.conf" <<EOF

# --- pitr drill ---
port = $PRIMARY_PORT
listen_addresses = ''
unix_socket_directories = $(conf_quote "$SOCK")
archive_mode = on
archive_command = $(conf_quote "\"$PITR\" wal-push \"%p\"")
wal_keep_size = '16MB'
track_commit_timestamp = on
EOF
    pg pg_ctl -D "$PRIMARY" -l "$WORK/primary.log" -w -t 60 start >/dev/null ||
        { show_log "$WORK/primary.log"; die "the primary did not start"; }
    say "primary started (port $PRIMARY_PORT), archiving to $PITR_REPO (server $PITR_SERVER_NAME)"
}

# A table for marker rows, then a base backup with `pitr backup`: BASE_BACKUP
# over the replication protocol, streamed into the repository. Sets BACKUP_ID,
# and LOAD_FIRST: the segment after the backup, where the load begins.
take_base_backup() {
    sql "$PRIMARY_PORT" "create table drill_marker (id int primary key, note text not null, amount bigint not null)"
    sql "$PRIMARY_PORT" "insert into drill_marker values (0, 'before the backup', 42)"
    BACKUP_ID=$(as_pg "$PITR" backup -d "host=$SOCK port=$PRIMARY_PORT dbname=postgres" \
        --name drill --wal-timeout 60 2>"$WORK/backup.log") ||
        { show_log "$WORK/backup.log"; die "pitr backup failed"; }
    say "took base backup $BACKUP_ID with \`pitr backup\` (BASE_BACKUP streamed into the repository)"
    LOAD_FIRST=$(current_segment)
}

# The name of the WAL segment the primary writes now.
current_segment() {
    sql "$PRIMARY_PORT" "select pg_walfile_name(pg_current_wal_insert_lsn())"
}

# pgbench and marker rows, with a WAL switch after every round.
generate_load() {
    pg pgbench -h "$SOCK" -p "$PRIMARY_PORT" -i -s 2 -q postgres >"$WORK/pgbench.log" 2>&1 ||
        { show_log "$WORK/pgbench.log"; die "pgbench -i failed"; }
    local round
    for round in $(seq "$LOAD_ROUNDS"); do
        pg pgbench -h "$SOCK" -p "$PRIMARY_PORT" -n -t 200 postgres >>"$WORK/pgbench.log" 2>&1 ||
            { show_log "$WORK/pgbench.log"; die "pgbench round $round failed"; }
        sql "$PRIMARY_PORT" "insert into drill_marker values ($round, 'round $round', $((round * 1000 + RANDOM)))"
        sql "$PRIMARY_PORT" "select pg_switch_wal()" >/dev/null
    done
    LOAD_END=$(current_segment)
    say "generated load: pgbench -i -s 2, $LOAD_ROUNDS rounds of pgbench -t 200, marker rows" \
        "(segments $LOAD_FIRST to before $LOAD_END)"
}

# Changes at known times, each in a segment of its own: t1, then t2 (the
# expected rows are recorded right after it, and its commit time read back),
# then t3, which the restore must not bring back. Sets EXPECTED, T2_COMMIT
# and TARGET_TIME.
make_timed_changes() {
    local t3_commit updated
    sql "$PRIMARY_PORT" "insert into drill_marker values (101, 't1', 1001)"
    sql "$PRIMARY_PORT" "select pg_switch_wal()" >/dev/null
    sleep "$CHANGE_GAP"

    # t2, then at once the switch: nothing else writes in between, so the
    # rows read after it are t2's, and the segment is archived well before
    # the target time (pitr's planner goes by archive times, and reading
    # the fingerprint takes a few hundred milliseconds).
    sql "$PRIMARY_PORT" "insert into drill_marker values (102, 't2', 1002)"
    sql "$PRIMARY_PORT" "select pg_switch_wal()" >/dev/null
    EXPECTED=$(fingerprint "$PRIMARY_PORT")
    T2_COMMIT=$(commit_time 102)
    TARGET_TIME=$(commit_time 102 "+ interval '$TARGET_OFFSET seconds'")
    [[ -n "$T2_COMMIT" ]] || die "no commit timestamp for t2 (is track_commit_timestamp on?)"
    sleep "$CHANGE_GAP"

    # t3, one transaction committed after the target: must NOT come back.
    updated=$(sql "$PRIMARY_PORT" "insert into drill_marker values (103, 't3, after the target', 1003);
                                   update pgbench_accounts set abalance = abalance + 1 where aid % 1000 = 0
                                   returning 1" | grep -c .)
    t3_commit=$(commit_time 103)
    say "changes at known times: t1 (marker 101); t2 (marker 102) committed at $T2_COMMIT;" \
        "t3 (marker 103, $updated accounts updated) committed at $t3_commit"
    say "target time: t2 + ${TARGET_OFFSET}s = $TARGET_TIME"
}

# The commit time of marker row $1 (track_commit_timestamp), plus the SQL
# interval expression $2 if given, as RFC 3339 UTC with microseconds.
commit_time() {
    sql "$PRIMARY_PORT" "select to_char((pg_xact_commit_timestamp(xmin) ${2:-}) at time zone 'UTC',
                                        'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')
                         from drill_marker where id = $1"
}

# What the restored server must hold, as one line per fact. Reads port $1.
fingerprint() {
    sql "$1" "select 'accounts=' || count(*) || ' balance_sum=' || coalesce(sum(abalance), 0)
                     || ' accounts_md5=' || md5(coalesce(string_agg(aid || ':' || abalance, ',' order by aid), ''))
              from pgbench_accounts"
    sql "$1" "select 'history=' || count(*) || ' delta_sum=' || coalesce(sum(delta), 0) from pgbench_history"
    sql "$1" "select 'markers=' || count(*) || ' ' || coalesce(string_agg(id || ':' || amount, ',' order by id), '')
              from drill_marker"
}

# Fails at the first failed archive_command; otherwise sets ARCHIVED_LAST
# (the last file archived) and ARCHIVED_COUNT (how many).
check_archiver() {
    local stat failed last_failed
    stat=$(sql "$PRIMARY_PORT" "select coalesce(last_archived_wal, ''), failed_count, archived_count,
                                       coalesce(last_failed_wal, '') from pg_stat_archiver")
    IFS='|' read -r ARCHIVED_LAST failed ARCHIVED_COUNT last_failed <<<"$stat"
    if [[ $failed -gt 0 ]]; then
        show_log "$WORK/primary.log" 12
        die "archive_command (pitr wal-push) failed $failed time(s), last for $last_failed: see the log above"
    fi
}

# Records the final rows, switches WAL a last time and waits until the
# archiver has stored that segment. Sets FINAL and LAST_SEGMENT.
archive_everything() {
    FINAL=$(fingerprint "$PRIMARY_PORT")
    [[ "$FINAL" != "$EXPECTED" ]] || die "t3 did not change the primary's rows: the drill would prove nothing"
    LAST_SEGMENT=$(sql "$PRIMARY_PORT" "select pg_walfile_name(pg_switch_wal())")
    local deadline=$((SECONDS + ARCHIVE_TIMEOUT))
    while :; do
        check_archiver
        if [[ "$ARCHIVED_LAST" == "$LAST_SEGMENT" || "${ARCHIVED_LAST:0:24}" > "$LAST_SEGMENT" ]]; then
            break
        fi
        if [[ $SECONDS -ge $deadline ]]; then
            show_log "$WORK/primary.log" 30
            die "segment $LAST_SEGMENT not archived after ${ARCHIVE_TIMEOUT}s (last archived: ${ARCHIVED_LAST:-none})"
        fi
        sleep 0.2
    done
    pg pg_ctl -D "$PRIMARY" -m fast -w stop >/dev/null || die "the primary did not stop"
    say "primary archived everything up to $LAST_SEGMENT and was stopped"
}

# Archived segment files, oldest first (file:// only).
archived_segment_files() {
    find "$REPO_DIR/$PITR_SERVER_NAME/wals" -type f -regextype posix-extended \
        -regex '.*/[0-9A-F]{24}(\.[a-z0-9]+)?' | sort
}

# "N WAL segments" in the repository (file://), or "N WAL files" the
# primary archived (s3://, which we cannot list without a client).
count_archived() {
    if [[ -n "$REPO_DIR" ]]; then
        echo "$(archived_segment_files | wc -l) WAL segments"
    else
        echo "$ARCHIVED_COUNT WAL files"
    fi
}

# PITR_DRILL_BREAK: damage the archive so that the drill must fail.
sabotage() {
    local how=${PITR_DRILL_BREAK:-}
    [[ -z "$how" ]] && return
    # A segment the pgbench load wrote, after the backup and before the
    # target: the middle one. Recovery to the target must read it.
    local files victim
    mapfile -t files < <(archived_segment_files |
        awk -F/ -v first="$LOAD_FIRST" -v end="$LOAD_END" '{ n = substr($NF, 1, 24) } n >= first && n < end')
    [[ ${#files[@]} -ge 3 ]] || die "PITR_DRILL_BREAK: too few load segments to pick one from (${#files[@]})"
    victim=${files[$((${#files[@]} / 2))]}
    case "$how" in
        delete-segment)
            rm -f "$victim"
            say "BREAK: deleted $(basename "$victim") from the repository; the drill must now fail"
            ;;
        corrupt-segment)
            printf 'pitr drill was here' | dd of="$victim" bs=1 seek=100 conv=notrunc status=none
            say "BREAK: overwrote bytes in $(basename "$victim") in the repository; the drill must now fail"
            ;;
    esac
}

# FATAL or PANIC lines in the restore log, other than refused connections
# while the server starts up.
fatal_lines() {
    grep -E '(FATAL|PANIC):' "$WORK/restore.log" 2>/dev/null |
        grep -vE 'the database system is (starting up|not yet accepting connections|shutting down)' || true
}

# Shows the restore log and fails, quoting its last FATAL line if any.
restore_failed() {
    local fatal
    fatal=$(fatal_lines | tail -n 1 | sed -E 's/^.*(FATAL|PANIC): +//')
    show_log "$WORK/restore.log" 30
    die "recovery from the archive failed: ${fatal:-$1}"
}

# `pitr restore --target-time`: plans (picks the backup, proves the WAL chain
# to the target), extracts the backup into RESTORE and writes the recovery
# settings. Run as the PostgreSQL user, with the repository settings from the
# environment. Its plan and log go to restore-plan.log. Sets PLAN_SEGMENTS.
restore_backup() {
    local log=$WORK/restore-plan.log error
    if ! as_pg "$PITR" restore --pgdata "$RESTORE" --target-time "$TARGET_TIME" >"$log" 2>&1; then
        show_log "$log" 15
        # pitr's own words: its last ERROR line, without the log prefix.
        error=$(grep -E 'ERROR' "$log" | tail -n 1 | sed -E 's/^.*ERROR +(restore: )?//')
        # No plan printed: it refused while planning, before touching PGDATA.
        if ! grep -q '^Restore plan' "$log" && [[ -z "$(ls -A "$RESTORE" 2>/dev/null)" ]]; then
            die "\`pitr restore --target-time $TARGET_TIME\` refused, PGDATA untouched: ${error:-see the log above}"
        fi
        die "\`pitr restore --target-time $TARGET_TIME\` failed: ${error:-see the log above}"
    fi
    [[ -f "$RESTORE/recovery.signal" ]] || die "pitr restore wrote no recovery.signal into $RESTORE"
    PLAN_SEGMENTS=$(sed -n 's/^ *WAL .*(\([0-9]*\) segments.*/\1/p' "$log")
    say "\`pitr restore --pgdata $RESTORE --target-time $TARGET_TIME\` restored backup $BACKUP_ID" \
        "(planned: ${PLAN_SEGMENTS:-?} segments, no gaps)"
}

# Gives the restored data directory a port of its own and starts it; pitr
# restore wrote recovery.signal, restore_command and recovery_target_time.
start_restore() {
    RESTORE_PORT=$(free_port)
    cat >>"$RESTORE/postgresql.auto.conf" <<EOF

# --- pitr drill: a port of its own, no archiving ---
port = $RESTORE_PORT
unix_socket_directories = $(conf_quote "$SOCK")
archive_mode = off
EOF
    # No -w: wait_for_promotion watches the server itself.
    pg pg_ctl -D "$RESTORE" -l "$WORK/restore.log" start >/dev/null 2>&1 ||
        restore_failed "the restored server did not start"
    say "recovering to $TARGET_TIME (port $RESTORE_PORT): $(grep -E '^restore_command' "$RESTORE/postgresql.auto.conf" | tail -n 1)"
}

# Waits until the restored server has replayed the archive and promoted.
wait_for_promotion() {
    local deadline=$((SECONDS + RECOVERY_TIMEOUT)) state
    while :; do
        if [[ -n "$(fatal_lines)" ]] || ! postmaster_alive "$RESTORE"; then
            restore_failed "the restored server exited"
        fi
        if pg pg_isready -q -h "$SOCK" -p "$RESTORE_PORT" -d postgres; then
            state=$(sql "$RESTORE_PORT" "select pg_is_in_recovery()" 2>/dev/null || true)
            [[ "$state" == f ]] && break
        fi
        if [[ $SECONDS -ge $deadline ]]; then
            show_log "$WORK/restore.log" 30
            die "the restored server did not finish recovery within ${RECOVERY_TIMEOUT}s"
        fi
        sleep 0.2
    done
}

# Compares the restored server with the rows recorded right after t2 and
# prints the report.
verify_and_report() {
    local archived fetched replayed first_replayed last_replayed stopped actual t3_rows accounts balance markers
    archived=$(count_archived)
    # PostgreSQL logs every file restore_command delivered (the last one twice:
    # it reads it again at the end of recovery), so count distinct names.
    fetched=$(grep -oE 'restored log file "[0-9A-F]{24}" from archive' "$WORK/restore.log" |
        grep -oE '[0-9A-F]{24}' || true)
    replayed=$(sort -u <<<"$fetched" | grep -c . || true)
    first_replayed=$(head -n 1 <<<"$fetched")
    last_replayed=$(tail -n 1 <<<"$fetched")
    # PostgreSQL's own word that it stopped at the target, e.g. "recovery
    # stopping before commit of transaction 1234, time 2026-...".
    stopped=$(grep -oE 'recovery stopping (before|after) .*' "$WORK/restore.log" | tail -n 1 || true)
    # A restore that stopped early may lack whole tables: report, not crash.
    actual=$(fingerprint "$RESTORE_PORT" 2>&1) || true
    t3_rows=$(sql "$RESTORE_PORT" "select count(*) from drill_marker where id = 103" 2>&1) || true

    if [[ "$actual" != "$EXPECTED" ]]; then
        {
            echo "pitr drill: expected (primary right after t2, committed at $T2_COMMIT):"
            echo "    ${EXPECTED//$'\n'/$'\n'    }"
            echo "pitr drill: found (restored to $TARGET_TIME):"
            echo "    ${actual//$'\n'/$'\n'    }"
        } >&2
        show_log "$WORK/restore.log" 15
        if [[ "$actual" == "$FINAL" ]]; then
            die "the restored server holds t3's changes: recovery went past the target time $TARGET_TIME"
        fi
        die "the restored server does not hold the rows committed by t2 (recovery replayed up to ${last_replayed:-no segment})"
    fi
    [[ "$t3_rows" == 0 ]] || die "marker row t3 (id 103) is in the restored server: recovery went past $TARGET_TIME"
    [[ -n "$stopped" ]] || die "rows match, but the restore log does not say that recovery stopped at the target"

    accounts=$(sed -n 's/.*accounts=\([0-9]*\) .*/\1/p' <<<"$EXPECTED" | head -n 1)
    balance=$(sed -n 's/.*balance_sum=\(-\{0,1\}[0-9]*\) .*/\1/p' <<<"$EXPECTED")
    markers=$(sed -n 's/^markers=\([0-9]*\).*/\1/p' <<<"$EXPECTED")
    say "archived $archived to $PITR_REPO (server $PITR_SERVER_NAME), 0 archive failures"
    say "restored backup $BACKUP_ID to $TARGET_TIME with \`pitr restore --target-time\`" \
        "(replayed $replayed segments through pitr wal-fetch, $first_replayed to $last_replayed)"
    say "PostgreSQL: $stopped"
    if [[ -n "${PLAN_SEGMENTS:-}" && $replayed -gt $PLAN_SEGMENTS ]]; then
        say "note: recovery read $replayed segments, pitr restore planned $PLAN_SEGMENTS"
    fi
    say "restored server holds exactly the rows committed by t2 ($T2_COMMIT) and none of t3's:" \
        "$accounts accounts, balance sum $balance, $markers marker rows, no marker t3   OK"
}

main() {
    local started=$SECONDS
    check_prerequisites
    find_pitr
    make_work_dir
    choose_repository
    start_primary
    take_base_backup
    generate_load
    make_timed_changes
    archive_everything
    sabotage
    restore_backup
    start_restore
    wait_for_promotion
    verify_and_report
    say "drill passed in $((SECONDS - started))s"
}

main "$@"
