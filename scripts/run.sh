#!/usr/bin/env bash
# The main job: installs libtorch and MNIST on first use, builds, and runs
# trojanscope with the arguments given (none: the interactive explorer on the
# default run, which trains the models first when they are not saved yet;
# `scripts/run.sh run` writes the full study's report instead).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh
binary=target/release/trojanscope
# cargo shows its own progress whenever it has work to do (and a one-line
# "Finished" otherwise); a note first says why the wait, when we can tell.
if [ ! -x "$binary" ]; then
    printf '[setup] building trojanscope (first build about 5 minutes on 2 cores)\n' >&2
elif [ -n "$(find src build.rs Cargo.toml Cargo.lock -newer "$binary" -print -quit 2>/dev/null)" ]; then
    printf '[setup] rebuilding trojanscope (its sources changed since the last build)\n' >&2
fi
cargo build --release
exec "$binary" "$@"
