# shellcheck shell=bash
# The drill's workload, shared by docker/drill.sh (one machine) and the
# compose drill (docker/compose/load.sh): a marker table, pgbench load, and
# three changes at known times t1, t2, t3, with the `pitr drill --check` file
# that holds exactly when a server has the rows committed by t2 and none of
# t3's. Sourced, not run.
#
# The caller defines:
#   sql QUERY        run one statement on the primary as a superuser; print
#                    the result unaligned, tuples only, fields split by '|'
#   pgbench ARGS...  run pgbench against the primary's postgres database
#   say MSG / die MSG
#
# Sets: LOAD_FIRST, LOAD_END (the load's segments, LOAD_FIRST up to, not
# including, LOAD_END), T2_COMMIT, TARGET_TIME (t2's commit plus
# DRILL_TARGET_OFFSET seconds), T3_COMMIT, T3_TARGET (the same after t3),
# EXPECTED (the rows by t2).
# A fourth commit, t4, follows t3 (marker 104), so that every time up to
# t4 is a reachable target.

DRILL_LOAD_ROUNDS=${DRILL_LOAD_ROUNDS:-3}       # pgbench rounds, a WAL switch after each
DRILL_CHANGE_GAP=${DRILL_CHANGE_GAP:-1.1}       # seconds between t1, t2 and t3
DRILL_TARGET_OFFSET=${DRILL_TARGET_OFFSET:-0.5} # target = t2's commit + this

# The fingerprints of what a server holds, one query each: name|expression.
# The check file compares the restored server's against the primary's after t2.
readonly -a DRILL_FINGERPRINTS=(
    "pgbench_accounts|select 'rows=' || count(*) || ' balance_sum=' || coalesce(sum(abalance), 0)
        || ' md5=' || md5(coalesce(string_agg(aid || ':' || abalance, ',' order by aid), '')) from pgbench_accounts"
    "pgbench_history|select 'rows=' || count(*) || ' delta_sum=' || coalesce(sum(delta), 0) from pgbench_history"
    "drill_marker|select 'rows=' || count(*) || ' ' || coalesce(string_agg(id || ':' || amount, ',' order by id), '')
        from drill_marker"
)

drill_segment() { sql "select pg_walfile_name(pg_current_wal_insert_lsn())"; }

# Before the base backup: the marker table and its first row.
drill_schema() {
    sql "create table drill_marker (id int primary key, note text not null, amount bigint not null)"
    sql "insert into drill_marker values (0, 'before the backup', 42)"
}

# After the base backup: pgbench and marker rows, a WAL switch after every round.
drill_load() {
    LOAD_FIRST=$(drill_segment)
    pgbench -i -s 2 -q >/dev/null 2>&1 || die "pgbench -i failed"
    local round
    for round in $(seq "$DRILL_LOAD_ROUNDS"); do
        pgbench -n -t 200 >/dev/null 2>&1 || die "pgbench round $round failed"
        sql "insert into drill_marker values ($round, 'round $round', $((round * 1000 + RANDOM)))"
        sql "select pg_switch_wal()" >/dev/null
    done
    LOAD_END=$(drill_segment)
    say "load: pgbench -i -s 2, $DRILL_LOAD_ROUNDS rounds of pgbench -t 200, marker rows" \
        "(segments $LOAD_FIRST to before $LOAD_END)"
}

# The commit time of marker row $1 (track_commit_timestamp), plus the SQL
# interval expression $2 if given, as RFC 3339 UTC with microseconds.
drill_commit_time() {
    sql "select to_char((pg_xact_commit_timestamp(xmin) ${2:-}) at time zone 'UTC',
                        'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')
         from drill_marker where id = $1"
}

drill_fingerprint() {
    local f
    for f in "${DRILL_FINGERPRINTS[@]}"; do
        printf '%s: %s\n' "${f%%|*}" "$(sql "${f#*|}")"
    done
}

# Quote a value as an SQL string literal.
drill_literal() { printf "'%s'" "${1//\'/\'\'}"; }

# Writes the check file $1 from the primary's rows now (right after t2).
drill_write_check() {
    local file=$1 f name query value
    {
        echo "-- pitr drill check written by the drill's workload: the rows committed"
        echo "-- by t2 ($T2_COMMIT); the drill's target is $TARGET_TIME."
        echo "-- Each row: true when the restored server matches, and what it found."
        for f in "${DRILL_FINGERPRINTS[@]}"; do
            name=${f%%|*}
            query=${f#*|}
            value=$(sql "$query")
            printf 'select fp = %s, %s || fp from (select (%s) as fp) s;\n' \
                "$(drill_literal "$value")" "$(drill_literal "$name as of t2: found ")" \
                "$(tr -s ' \n' ' ' <<<"$query")"
        done
        echo "select not exists (select 1 from drill_marker where id = 103), 't3''s marker row 103 absent';"
    } >"$file"
}

# t1, then t2 (the check file is written right after it and its commit time
# read back), then t3, which the restore must not bring back; each change in
# a segment of its own.
drill_timed_changes() {
    local check_file=$1 updated
    sql "insert into drill_marker values (101, 't1', 1001)"
    sql "select pg_switch_wal()" >/dev/null
    sleep "$DRILL_CHANGE_GAP"

    # t2, then at once the switch: nothing else writes in between, so the
    # rows read after it are t2's, and its segment is archived well before
    # the target time (pitr's planner goes by archive times).
    sql "insert into drill_marker values (102, 't2', 1002)"
    sql "select pg_switch_wal()" >/dev/null
    T2_COMMIT=$(drill_commit_time 102)
    [[ -n "$T2_COMMIT" ]] || die "no commit timestamp for t2 (is track_commit_timestamp on?)"
    TARGET_TIME=$(drill_commit_time 102 "+ interval '$DRILL_TARGET_OFFSET seconds'")
    EXPECTED=$(drill_fingerprint)
    drill_write_check "$check_file"
    sleep "$DRILL_CHANGE_GAP"

    # t3, one transaction committed after the target: must NOT come back.
    updated=$(sql "insert into drill_marker values (103, 't3, after the target', 1003);
                   update pgbench_accounts set abalance = abalance + 1 where aid % 1000 = 0
                   returning 1" | grep -c .)
    T3_COMMIT=$(drill_commit_time 103)
    # shellcheck disable=SC2034 # for the caller
    T3_TARGET=$(drill_commit_time 103 "+ interval '$DRILL_TARGET_OFFSET seconds'")
    [[ "$(drill_fingerprint)" != "$EXPECTED" ]] ||
        die "t3 did not change the primary's rows: the drill would prove nothing"

    # t4 closes the window: a commit after t3, so that a drill to a time
    # just after t3 is also reachable (recovery to a time stops at the
    # first commit after it; PostgreSQL fails a recovery that never meets one).
    sleep "$DRILL_CHANGE_GAP"
    sql "insert into drill_marker values (104, 't4, closes the window', 1004)"
    say "changes at known times: t1 (marker 101); t2 (marker 102) committed at $T2_COMMIT;" \
        "t3 (marker 103, $updated accounts updated) committed at $T3_COMMIT"
    say "target time: t2 + ${DRILL_TARGET_OFFSET}s = $TARGET_TIME"
}

# Switches WAL a last time and waits until the archiver has stored that
# segment (pg_stat_archiver); fails at the first failed archive_command.
drill_wait_archived() {
    local timeout=${1:-120} last deadline stat archived failed last_failed
    last=$(sql "select pg_walfile_name(pg_switch_wal())")
    deadline=$((SECONDS + timeout))
    while :; do
        stat=$(sql "select coalesce(last_archived_wal, ''), failed_count, coalesce(last_failed_wal, '')
                    from pg_stat_archiver")
        IFS='|' read -r archived failed last_failed <<<"$stat"
        ((failed == 0)) || die "archive_command (pitr wal-push) failed $failed time(s), last for $last_failed"
        [[ "$archived" == "$last" || "${archived:0:24}" > "$last" ]] && break
        ((SECONDS < deadline)) || die "segment $last not archived after ${timeout}s (last archived: ${archived:-none})"
        sleep 0.2
    done
    say "the primary archived everything up to $last"
}
