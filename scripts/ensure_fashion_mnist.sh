#!/usr/bin/env bash
# Makes sure Fashion-MNIST is on this machine: the Debian package dataset-fashion-mnist
# (offline-friendly), else an already prepared TFDS copy. Says what to do otherwise.
set -uo pipefail
dir=/usr/share/datasets/fashion-mnist
have() { ls "$dir"/train-images-idx3-ubyte.gz "$dir"/t10k-labels-idx1-ubyte.gz >/dev/null 2>&1; }
have && exit 0
ls "${TFDS_DATA_DIR:-$HOME/tensorflow_datasets}"/fashion_mnist/*/dataset_info.json >/dev/null 2>&1 && exit 0
sudo=""
[ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && sudo=sudo
if command -v apt-get >/dev/null; then
  echo "Installing the Debian package dataset-fashion-mnist ..."
  $sudo apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 ||
    { $sudo apt-get update -q >/dev/null 2>&1 && $sudo apt-get install -y -q dataset-fashion-mnist >/dev/null; }
  have && exit 0
fi
echo "Fashion-MNIST was not found in $dir nor in TFDS. Install it with" >&2
echo "  sudo apt-get install dataset-fashion-mnist      (Debian/Ubuntu, offline mirrors work)" >&2
echo "or prepare it with 'tfds build fashion_mnist' (needs the internet)." >&2
exit 1
