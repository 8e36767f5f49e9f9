#!/usr/bin/env bash
# The compose drill's drill (docker/compose.yaml, service drill): `pitr drill`
# to the target time the load service chose, in a container of its own that
# shares nothing with the primary but the repository. Its exit status is
# pitr drill's, and `--exit-code-from drill` makes it the compose run's.
#
#   PITR_DRILL_EXTRA_CHECK_SQL  one more check, as SQL (e.g. to see the drill
#                               fail: select false)
set -euo pipefail

PLAN=${DRILL_PLAN_DIR:-/plan}
SQL_DIR=/usr/share/pitr/sql/drill

if [[ -f "$PLAN/failed" ]]; then
    printf 'drill: FAILED before the drill: %s\n' "$(cat "$PLAN/failed")" >&2
    exit 1
fi
[[ -f "$PLAN/ready" && -s "$PLAN/target_time" ]] || { echo "drill: FAILED: no plan in $PLAN" >&2; exit 1; }
target=$(cat "$PLAN/target_time")
checks=(--check "$PLAN/t2_rows.sql" --check "$SQL_DIR/databases.sql" --check "$SQL_DIR/no_invalid_indexes.sql")
if [[ -n "${PITR_DRILL_EXTRA_CHECK_SQL:-}" ]]; then
    printf '%s\n' "$PITR_DRILL_EXTRA_CHECK_SQL" >/tmp/extra_check.sql
    checks+=(--check /tmp/extra_check.sql)
fi
echo "drill: pitr drill --target-time $target ${checks[*]}"
rc=0
pitr drill --target-time "$target" "${checks[@]}" --report "$PLAN/report.json" || rc=$?
if ((rc == 0)); then
    echo "drill: passed: the restored copy holds exactly the rows committed by t2 and none of t3's"
else
    echo "drill: FAILED: pitr drill exited $rc (report: $PLAN/report.json in the plan volume)" >&2
fi
exit "$rc"
