#!/usr/bin/env bash
# The test suite: installs libtorch and MNIST on first use, then runs every test
# (unit, engine, real training on an MNIST subset, CLI errors, terminal UI in tmux).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh
cargo test --release "$@"
