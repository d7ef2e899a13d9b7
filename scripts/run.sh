#!/usr/bin/env bash
# The main job: installs libtorch and MNIST on first use, builds, and runs
# trojanscope with the arguments given (none: the full study and its report).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh
cargo build --release --quiet
if [ $# -eq 0 ]; then
    set -- run
fi
exec target/release/trojanscope "$@"
