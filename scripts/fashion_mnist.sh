#!/usr/bin/env bash
# The main job, offline, on a fresh Debian/Ubuntu machine: install, prepare Fashion-MNIST
# from Debian's package with tfds, train the LeNet-5 (BN) teacher, then distil it with DDAD
# into LeNet-5-half without data. Re-running resumes both stages from their checkpoints.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${RUNS:-runs}"
if [ ! -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ]; then
  SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo sudo)
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi
python3 -m pip install -q -e .
python3 -m ddad_jax.data.prepare fashion_mnist
python3 -m experiments.fashion_mnist --config=configs/teacher.py:fashion_mnist --workdir="$RUNS/fmnist_teacher"
python3 -m experiments.fashion_mnist --config=configs/ddad.py:fashion_mnist --workdir="$RUNS/fmnist_ddad" \
  --config.teacher_dir="$RUNS/fmnist_teacher" "$@"
