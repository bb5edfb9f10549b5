#!/usr/bin/env bash
# Builds the peer brokers that scripts/bench.py runs beside edgemq, into a cache
# directory, so the next engineer can reproduce the side-by-side table.
#
#   EDGEMQ_PEERS_DIR   where binaries and sources go (default ~/.cache/edgemq-peers)
#   FLASHMQ_SRC        a FlashMQ git repository (a bare mirror is fine) to take the
#                      source from; default: clone https://github.com/halfgaar/FlashMQ
#   FLASHMQ_REF        the tag or commit to build (default v1.26.2)
#   RUMQTTD_VERSION    the rumqttd crate version (default 0.20.0)
#
# Idempotent: a peer whose binary is already in the cache is not rebuilt
# (delete $EDGEMQ_PEERS_DIR/bin/<name> to force it). Results:
#   $EDGEMQ_PEERS_DIR/bin/flashmq   FlashMQ, cmake Release build (g++, libssl)
#   $EDGEMQ_PEERS_DIR/bin/rumqttd   rumqttd, `cargo install` from crates.io
# Mosquitto comes from the distribution (apt-get install mosquitto).
# Needs: cmake, g++, libssl-dev (apt-get install cmake g++ libssl-dev), cargo.
set -euo pipefail

DIR="${EDGEMQ_PEERS_DIR:-$HOME/.cache/edgemq-peers}"
FLASHMQ_REF="${FLASHMQ_REF:-v1.26.2}"
RUMQTTD_VERSION="${RUMQTTD_VERSION:-0.20.0}"
JOBS="${JOBS:-2}"
mkdir -p "$DIR/bin" "$DIR/src"

build_flashmq() {
    if [ -x "$DIR/bin/flashmq" ]; then
        echo "flashmq: cached at $DIR/bin/flashmq ($(cat "$DIR/bin/flashmq.ref" 2>/dev/null || echo '?'))"
        return
    fi
    for tool in cmake g++; do
        command -v "$tool" >/dev/null || { echo "flashmq: $tool missing (apt-get install cmake g++ libssl-dev)" >&2; return 1; }
    done
    local src="$DIR/src/flashmq-$FLASHMQ_REF"
    if [ ! -f "$src/CMakeLists.txt" ]; then
        rm -rf "$src"
        mkdir -p "$src"
        local repo="${FLASHMQ_SRC:-}"
        if [ -z "$repo" ]; then
            repo="$DIR/src/FlashMQ.git"
            [ -d "$repo" ] || git clone --bare https://github.com/halfgaar/FlashMQ "$repo"
        fi
        git --git-dir="$repo" archive "$FLASHMQ_REF" | tar -x -C "$src"
    fi
    cmake -S "$src" -B "$src/build" -DCMAKE_BUILD_TYPE=Release >/dev/null
    cmake --build "$src/build" -j "$JOBS" --target flashmq
    cp "$src/build/flashmq" "$DIR/bin/flashmq"
    echo "$FLASHMQ_REF" > "$DIR/bin/flashmq.ref"
    echo "flashmq: built $FLASHMQ_REF into $DIR/bin/flashmq"
}

build_rumqttd() {
    if [ -x "$DIR/bin/rumqttd" ]; then
        echo "rumqttd: cached at $DIR/bin/rumqttd"
        return
    fi
    # Its own target dir, so it never shares (or pollutes) edgemq's. Not
    # --locked: its lock file pins metrics 0.22.1, which today's rustc rejects
    # (E0521); the newest semver-compatible dependencies build.
    CARGO_TARGET_DIR="$DIR/src/rumqttd-target" cargo install rumqttd \
        --version "$RUMQTTD_VERSION" --root "$DIR/rumqttd"
    cp "$DIR/rumqttd/bin/rumqttd" "$DIR/bin/rumqttd"
    rm -rf "$DIR/src/rumqttd-target"
    echo "rumqttd: installed $RUMQTTD_VERSION into $DIR/bin/rumqttd"
}

case "${1:-all}" in
    flashmq) build_flashmq ;;
    rumqttd) build_rumqttd ;;
    all) build_flashmq; build_rumqttd ;;
    *) echo "usage: $0 [all|flashmq|rumqttd]" >&2; exit 2 ;;
esac
