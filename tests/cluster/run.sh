#!/usr/bin/env bash
# `make test-cluster`: start a real single-machine SLURM, run the cluster tests against it,
# and stop the daemons it started (by their PIDs) whatever happens.
set -euo pipefail
cd "$(dirname "$0")/../.."
python=${PYTHON:-.venv/bin/python}
state=$(mktemp -d /tmp/mammofuse-slurm.XXXXXX)
trap 'bash tests/cluster/slurm.sh stop "$state"' EXIT
bash tests/cluster/slurm.sh start "$state"
SLURM_CONF="$state/slurm.conf" "$python" -m pytest -m cluster -q tests/pipeline/test_cluster.py
