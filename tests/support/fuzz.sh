#!/usr/bin/env bash
# Runs pitr's parser fuzz targets (property-based, proptest) for longer than
# the default test run does: every target in tests/fuzz_parsers.rs and the
# settings file target in the binary, with PITR_FUZZ_CASES cases each
# (default 20000), repeated until SECONDS_BUDGET (default 600) is spent.
# Needs no RGW and no PostgreSQL. A failing input is shrunk and saved in
# tests/fuzz_parsers.proptest-regressions (or src/cli/...proptest-regressions):
# commit that file with the fix, so every later run replays it first.
#
#   bash tests/support/fuzz.sh              # 10 minutes
#   SECONDS_BUDGET=3600 PITR_FUZZ_CASES=100000 bash tests/support/fuzz.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
export PITR_FUZZ_CASES=${PITR_FUZZ_CASES:-20000}
budget=${SECONDS_BUDGET:-600}

cargo test --test fuzz_parsers --no-run
cargo test --bin pitr --no-run
start=$SECONDS
round=0
while (( SECONDS - start < budget )); do
    round=$((round + 1))
    echo "== round $round: $PITR_FUZZ_CASES cases per target ($((SECONDS - start))s of ${budget}s)"
    # A new random seed each round (proptest draws one per run).
    cargo test -q --test fuzz_parsers -- --test-threads=2
    cargo test -q --bin pitr config_file::tests::fuzz
done
echo "fuzzing: $round round(s) in $((SECONDS - start))s, no failure"
