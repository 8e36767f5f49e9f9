#!/usr/bin/env bash
# barman-venv.sh DIR: make (if missing) a Python venv at DIR holding barman-cloud
# (PyPI `barman[cloud]` 3.x, which brings boto3), for comparison tests against
# the reference archiver, with the optional modules its compressions need
# (zstandard for --zstd, lz4 for --lz4, python-snappy for --snappy; all ship
# wheels, so no C library or compiler is needed). Prints the path of
# barman-cloud-wal-archive.
#
# The venv is built on the Debian /usr/bin/python3, not on a python under
# /root (pyenv): the tests run PostgreSQL as the `postgres` OS user, whose
# archive_command must be able to execute it.
set -euo pipefail

dir=${1:?usage: barman-venv.sh DIR}
py=/usr/bin/python3
spec='barman[cloud]>=3,<4'
extras=(zstandard lz4 python-snappy)

die() { echo "barman-venv.sh: $*" >&2; exit 1; }
[[ -x $py ]] || die "$py is missing (apt-get install python3)"

if [[ ! -x $dir/bin/barman-cloud-wal-archive ]]; then
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    if [[ ! -x $dir/bin/pip ]] && ! "$py" -m venv "$dir" >/dev/null 2>&1; then
        # Debian splits venv/ensurepip into python3-venv.
        [[ $(id -u) -eq 0 ]] || die "python3 -m venv failed; as root: apt-get install python3-venv"
        echo "barman-venv.sh: installing python3-venv" >&2
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
        "$py" -m venv "$dir"
    fi
    echo "barman-venv.sh: pip install $spec into $dir" >&2
    "$dir/bin/pip" install -q --disable-pip-version-check --no-cache-dir "$spec"
fi
dir=$(cd "$dir" && pwd)
# An older venv may lack the compression modules: add them.
if ! "$dir/bin/python" -c 'import zstandard, lz4.frame, snappy' >/dev/null 2>&1; then
    echo "barman-venv.sh: pip install ${extras[*]} into $dir" >&2
    "$dir/bin/pip" install -q --disable-pip-version-check --no-cache-dir "${extras[@]}"
fi

# Readable and executable by everyone (the directories above DIR are left
# alone: they must already be searchable, as /opt and /tmp are).
chmod -R a+rX "$dir"

"$dir/bin/barman-cloud-wal-archive" --version >/dev/null 2>&1 \
    || die "barman-cloud-wal-archive in $dir does not run"
if id postgres >/dev/null 2>&1 && [[ $(id -u) -eq 0 ]] && ! runuser -u postgres -- \
    "$dir/bin/barman-cloud-wal-archive" --version >/dev/null 2>&1; then
    echo "barman-venv.sh: warning: user postgres cannot run $dir/bin/barman-cloud-wal-archive" >&2
fi
echo "$dir/bin/barman-cloud-wal-archive"
