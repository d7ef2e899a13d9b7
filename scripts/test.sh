#!/usr/bin/env bash
# The test suite: installs libtorch and MNIST on first use, then runs every test
# (unit, engine, real training on an MNIST subset, CLI errors, terminal UI in tmux).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh
# One test trains on Fashion-MNIST too.
ensure_fashion_mnist
# tests/attribute.rs compares with Captum: installed into the project's Python once,
# for the tests and the bench only (nothing else imports it); later runs need no network.
if [ -z "${LIBTORCH:-}" ] && ! .venv/bin/python -c "import captum" 2>/dev/null; then
    echo "[setup] installing captum==0.9.* for the attribution tests" >&2
    .venv/bin/pip install --quiet --disable-pip-version-check "captum==0.9.*"
fi
# The explorer's end-to-end tests drive it inside tmux.
if ! command -v tmux >/dev/null 2>&1; then
    echo "[setup] installing tmux for the terminal tests" >&2
    apt-get update -qq && apt-get install -y -qq tmux >/dev/null
fi
cargo test --release "$@"
