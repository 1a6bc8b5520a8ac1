#!/usr/bin/env bash
# Everything the test suite needs on a fresh Debian/Ubuntu machine, then the suite itself:
# the Fashion-MNIST source files (Debian package), ddad_jax with its test extra, and pytest.
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
python3 -m pytest -q -n 2 --durations=10 tests "$@"
