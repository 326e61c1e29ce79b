#!/usr/bin/env bash
# Install everything the tests need, start the real test Slurm cluster (as root), run all tests.
# Usage: tests/run.sh [pytest args...]        (README's test command; .ci/run calls it)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv || { echo "run.sh: cannot create .venv with $PY" >&2; exit 1; }
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]' \
  || { echo "run.sh: pip install failed" >&2; exit 1; }
if [ "$(id -u)" = 0 ]; then
  # apt-installs Slurm, munge, MariaDB, sshd, graphviz if missing, then starts the clusters
  bash tests/cluster/start.sh || echo "run.sh: test cluster did not start: Slurm tests will be skipped (see output above)" >&2
else
  echo "run.sh: not root: cannot start the test cluster; Slurm tests will be skipped" >&2
fi
# the dashboard's browser tests drive Debian's headless chromium (never a downloaded one)
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
      || echo "run.sh: cannot install chromium: the dashboard's browser tests will be skipped" >&2
  else
    echo "run.sh: chromium missing and not root: the dashboard's browser tests will be skipped" >&2
  fi
fi
STATE=${LAZYSLURM_TEST_CLUSTER_DIR:-/tmp/lazyslurm-test-cluster}
# shellcheck disable=SC1091
[ -f "$STATE/env.sh" ] && . "$STATE/env.sh"
.venv/bin/python -m ruff check lazyslurm tests || { echo "run.sh: ruff found problems" >&2; exit 1; }
.venv/bin/python -m pytest "$@"
rc=$?
if [ $rc = 5 ]; then echo "run.sh: pytest collected no tests" >&2; exit 1; fi
exit $rc
