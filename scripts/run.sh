#!/usr/bin/env bash
# The main job: installs libtorch and MNIST on first use, builds, and runs
# trojanscope with the arguments given (none: the interactive explorer on the
# default run, which trains the models first when they are not saved yet;
# `scripts/run.sh run` writes the full study's report instead).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh
cargo build --release --quiet
exec target/release/trojanscope "$@"
