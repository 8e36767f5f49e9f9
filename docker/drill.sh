#!/usr/bin/env bash
# Restore drill on one machine, the README's first command: a thin demo
# around `pitr drill`. A throw-away primary archives into a repository
# through pitr (a file:// directory, the embedded default), pitr takes a base
# backup, the primary changes at known times, and `pitr drill --target-time`
# restores a scratch copy to a moment between two of those changes, starts
# it, and runs a check file written here that holds only when the copy has
# exactly the rows committed by then and none committed after.
#
#   1. initdb a throw-away primary (track_commit_timestamp = on) with
#      archive_command = 'pitr wal-push %p'; the repository settings reach it
#      through pg_ctl's environment
#   2. take a base backup with `pitr backup`
#   3. load: pgbench rounds, each followed by a WAL switch
#   4. changes at known times, a WAL switch after each (docker/drill-workload.sh):
#        t1  marker row 101
#        t2  marker row 102, ~1.1 s later; right after it the primary's rows
#            are written into a check file (WORK/t2_rows.sql)
#        t3  marker row 103 and an update of pgbench_accounts, ~1.1 s later:
#            the change the drill must NOT bring back
#   5. wait until every segment is archived, stop the primary
#   6. `pitr drill --target-time T --check WORK/t2_rows.sql` with T = t2's
#      commit + 0.5 s: pitr plans and proves the WAL chain, restores into
#      WORK/scratch, starts PostgreSQL there, waits for recovery to stop at
#      T, runs its built-in checks and the check file, writes its report
#      (WORK/report.json) and records the result in the repository
#
# The same drill with Docker, an S3 server and the drill in its own
# container: docker/compose.yaml (docs/drill.md).
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
#                       delete-segment   delete it: `pitr drill` must fail
#                                        while planning (the archive has a
#                                        gap), before restoring anything
#                       corrupt-segment  overwrite bytes in it: the plan or
#                                        the recovery must fail
#                     or, to see the check file fail:
#                       target-t3        drill to t3's commit + 0.5 s: the
#                                        copy then holds t3's changes, and
#                                        WORK/t2_rows.sql must fail
#
# Exit status: pitr drill's (0 when every check passed, 1 when the drill
# failed, 2 for bad arguments); 1 when the set-up before it failed.
set -euo pipefail
shopt -s inherit_errexit

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(dirname "$SCRIPT_DIR")
readonly SCRIPT_DIR REPO_ROOT
readonly PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
readonly ARCHIVE_TIMEOUT=120   # seconds for the primary to archive its last segment
readonly RECOVERY_TIMEOUT=300  # seconds pitr drill gives recovery

# Connection settings from the caller's environment would point psql elsewhere.
unset PGHOST PGPORT PGUSER PGDATABASE PGSERVICE PGOPTIONS PGDATA

WORK=""            # work directory, set by make_work_dir
WORK_CREATED=0     # 1 once WORK is ours to remove
PITR=""            # the pitr binary PostgreSQL runs
SOCK=""            # unix socket directory of the primary
PRIMARY=""         # its data directory
PRIMARY_PORT=""

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

# One SQL statement on the primary (for docker/drill-workload.sh).
sql() {
    pg psql -X -q -A -t -v ON_ERROR_STOP=1 -h "$SOCK" -p "$PRIMARY_PORT" -d postgres -c "$1"
}

pgbench() { pg pgbench -h "$SOCK" -p "$PRIMARY_PORT" "$@" postgres; }

# shellcheck source=docker/drill-workload.sh
source "$SCRIPT_DIR/drill-workload.sh"

# The last lines of a log, indented, on stderr.
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

# ---------------------------------------------------------------- cleanup

cleanup() {
    local rc=$?
    set +e
    if [[ -n "$PRIMARY" && -f "$PRIMARY/postmaster.pid" ]]; then
        pg pg_ctl -D "$PRIMARY" -m immediate stop >/dev/null 2>&1
    fi
    if [[ $WORK_CREATED -eq 1 ]]; then
        if [[ "${PITR_DRILL_KEEP:-0}" == 1 ]]; then
            say "kept the work directory: $WORK"
        else
            cd / && rm -rf "$WORK"
            [[ $rc -ne 0 ]] && say "(set PITR_DRILL_KEEP=1 to keep the logs, the report and the scratch copy)" >&2
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
    for prog in initdb pg_ctl psql pgbench postgres; do
        [[ -x "$PG_BIN/$prog" ]] || die "$PG_BIN/$prog not found: install PostgreSQL 15 or set PG_BIN"
    done
    case "${PITR_DRILL_BREAK:-}" in
        "" | delete-segment | corrupt-segment | target-t3) ;;
        *) die "unknown PITR_DRILL_BREAK=$PITR_DRILL_BREAK (delete-segment, corrupt-segment or target-t3)" ;;
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
        (cd "$REPO_ROOT" && cargo build --release --quiet -p pitr --bin pitr) || die "cargo build --release failed"
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

# initdb, archive settings, start.
start_primary() {
    PRIMARY_PORT=$(free_port)
    pg initdb -D "$PRIMARY" --no-sync --no-locale -E UTF8 -A trust >"$WORK/initdb.log" 2>&1 ||
        { show_log "$WORK/initdb.log"; die "initdb failed"; }
    # Only the command goes into postgresql.conf; PITR_REPO, PITR_SERVER_NAME
    # and any credentials reach it through pg_ctl's environment.
    cat >>"$PRIMARY/postgresql.conf" <<CONF

# --- pitr drill ---
port = $PRIMARY_PORT
listen_addresses = ''
unix_socket_directories = $(conf_quote "$SOCK")
archive_mode = on
archive_command = $(conf_quote "\"$PITR\" wal-push \"%p\"")
wal_keep_size = '16MB'
track_commit_timestamp = on
CONF
    pg pg_ctl -D "$PRIMARY" -l "$WORK/primary.log" -w -t 60 start >/dev/null ||
        { show_log "$WORK/primary.log"; die "the primary did not start"; }
    say "primary started (port $PRIMARY_PORT), archiving to $PITR_REPO (server $PITR_SERVER_NAME)"
}

# The marker table, then a base backup with `pitr backup`: BASE_BACKUP over
# the replication protocol, streamed into the repository.
take_base_backup() {
    drill_schema
    BACKUP_ID=$(as_pg "$PITR" backup -d "host=$SOCK port=$PRIMARY_PORT dbname=postgres" \
        --name drill --wal-timeout 60 2>"$WORK/backup.log") ||
        { show_log "$WORK/backup.log"; die "pitr backup failed"; }
    say "took base backup $BACKUP_ID with \`pitr backup\`"
}

archive_everything() {
    drill_wait_archived "$ARCHIVE_TIMEOUT" || { show_log "$WORK/primary.log" 30; exit 1; }
    pg pg_ctl -D "$PRIMARY" -m fast -w stop >/dev/null || die "the primary did not stop"
    say "primary stopped"
}

# Archived segment files, oldest first (file:// only).
archived_segment_files() {
    find "$REPO_DIR/$PITR_SERVER_NAME/wals" -type f -regextype posix-extended \
        -regex '.*/[0-9A-F]{24}(\.[a-z0-9]+)?' | sort
}

# PITR_DRILL_BREAK: damage the archive so that the drill must fail.
sabotage() {
    local how=${PITR_DRILL_BREAK:-}
    [[ -z "$how" ]] && return
    if [[ "$how" == target-t3 ]]; then
        TARGET_TIME=$T3_TARGET
        say "BREAK: the drill's target is now t3's commit + ${DRILL_TARGET_OFFSET}s ($TARGET_TIME); the check file must now fail"
        return
    fi
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

# `pitr drill` to the target time, with the check file written at t2. Its
# exit status is ours.
run_drill() {
    local rc=0
    say "running: pitr drill --target-time $TARGET_TIME --check $WORK/t2_rows.sql"
    as_pg "$PITR" drill --target-time "$TARGET_TIME" \
        --scratch "$WORK/scratch" --pg-bin "$PG_BIN" --timeout "$RECOVERY_TIMEOUT" \
        --check "$WORK/t2_rows.sql" --report "$WORK/report.json" || rc=$?
    if ((rc != 0)); then
        printf 'pitr drill: FAILED: pitr drill --target-time %s exited %s\n' "$TARGET_TIME" "$rc" >&2
    fi
    return "$rc"
}

main() {
    local started=$SECONDS rc=0
    check_prerequisites
    find_pitr
    make_work_dir
    choose_repository
    start_primary
    take_base_backup
    drill_load
    drill_timed_changes "$WORK/t2_rows.sql"
    archive_everything
    sabotage
    run_drill || rc=$?
    ((rc == 0)) && say "drill passed in $((SECONDS - started))s: the restored copy holds exactly the rows" \
        "committed by t2 and none of t3's"
    return "$rc"
}

main "$@"
