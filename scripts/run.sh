#!/usr/bin/env bash
# The main job: installs libtorch and MNIST on first use, builds, and runs
# trojanscope with the arguments given (none: the interactive explorer on the
# default run, which trains the models first when they are not saved yet;
# `scripts/run.sh run` writes the full study's report instead).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh
binary=target/release/trojanscope
# A build that has work to do says so and shows cargo's progress; an up-to-date
# one stays quiet, so the explorer opens on a clean terminal.
if [ ! -x "$binary" ]; then
    printf '[setup] building trojanscope (first build about 5 minutes on 2 cores)\n' >&2
    cargo build --release
elif [ -n "$(find src build.rs Cargo.toml Cargo.lock -newer "$binary" -print -quit 2>/dev/null)" ]; then
    printf '[setup] rebuilding trojanscope (its sources changed since the last build)\n' >&2
    cargo build --release
else
    cargo build --release --quiet
fi
exec "$binary" "$@"
