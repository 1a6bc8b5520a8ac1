#!/usr/bin/env bash
# Everything the test suite needs on a fresh Debian/Ubuntu machine, then the suite itself:
# the Fashion-MNIST source files (Debian package), ddad_jax with its test extra, and pytest.
# Usage: bash tests/run_all.sh [--fast] [pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ]; then
  SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo sudo)
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi
python3 -m pip install -q -e '.[test]'
export DDAD_TEST_DATA_DIR="${DDAD_TEST_DATA_DIR:-$HOME/.cache/ddad_jax/tfds_test}"
# prepared once here, not by each pytest worker at the same time
python3 -m ddad_jax.data.prepare fashion_mnist --data_dir="$DDAD_TEST_DATA_DIR" >/dev/null
# one JAX compilation cache for the whole run (both workers and the entry points' subprocesses):
# many tests compile the same programs, and a cache hit skips XLA's compile (results are unchanged)
if [ -z "${JAX_COMPILATION_CACHE_DIR:-}" ]; then
  JAX_COMPILATION_CACHE_DIR="$(mktemp -d -t ddad_jax_jit_cache.XXXXXX)"
  trap 'rm -rf "$JAX_COMPILATION_CACHE_DIR"' EXIT
fi
export JAX_COMPILATION_CACHE_DIR
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="${JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS:-0.2}"
# XLA:CPU compiles the suite's many small programs at LLVM's -O1 instead of -O2: about half
# the compile time, which is most of the suite's; the programs compute the same functions
# (level 0 is not used: it produced NaN losses). One benchmark smoke test compiles at the default.
export DDAD_TEST_XLA_FLAGS="${DDAD_TEST_XLA_FLAGS---xla_backend_optimization_level=1}"
# --fast: the tier to run before each commit (every module, no test marked slow or
# fault_injection; under 4 minutes on 2 cores); CI runs the full suite
tier=()
if [ "${1:-}" = "--fast" ]; then
  shift
  tier=(-m "not slow and not fault_injection")
fi
python3 -m pytest -q -n 2 --durations=20 "${tier[@]}" tests "$@"
