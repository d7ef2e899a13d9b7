#!/usr/bin/env bash
# The test suite: installs libtorch and MNIST on first use, then runs every test
# (unit, engine, real training on an MNIST subset, CLI errors, terminal UI in tmux).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh
# One test trains on Fashion-MNIST too.
ensure_fashion_mnist
# The explorer's end-to-end tests drive it inside tmux.
if ! command -v tmux >/dev/null 2>&1; then
    echo "[setup] installing tmux for the terminal tests" >&2
    apt-get update -qq && apt-get install -y -qq tmux >/dev/null
fi
cargo test --release "$@"
