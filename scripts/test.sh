#!/usr/bin/env bash
# The test command of the README: installs the project (and, once, Kokkos into the cache),
# then runs the unit tests and the end-to-end integration tests.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check -e '.[test]'
python3 -m kokkos_support.provision >/dev/null
python3 -m pytest -q tests integration_tests "$@"
