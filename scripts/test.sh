#!/usr/bin/env bash
# Runs edgemq's whole test suite: formatting, lints, every unit and
# end-to-end test of the workspace, then the ARM builds and their tests
# under qemu-user. Installs missing prerequisites first (see install-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh

# Module layers: no import cycles, no upward imports (docs/ARCHITECTURE.md).
python3 scripts/check-layers.py --self-test
python3 scripts/check-layers.py
# No production function over ~80 lines unless allow-listed with a reason.
python3 scripts/check-fn-length.py --self-test
python3 scripts/check-fn-length.py
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The codec alone (what edgemq-client and firmware-sim build): workspace
# builds unify features, so only this compiles it without `broker`.
cargo clippy -p edgemq --no-default-features --lib --locked -- -D warnings
# The end-to-end tests run the real binaries: build them first.
cargo build --workspace --bins --locked
# Licences, duplicate major versions, sources (deny.toml), offline: after
# the build, which has fetched every crate cargo-deny reads.
cargo deny --offline check licenses bans sources
# The client and firmware-sim compile the codec only, not the broker's
# TLS, WebSocket, HTTP and password-hashing stacks (edgemq's `broker` feature).
if cargo tree --locked -e normal -p edgemq-client -p firmware-sim \
    | grep -E ' (argon2|x509-parser|tungstenite|tokio-tungstenite|hyper|prometheus-client) v'; then
  echo "edgemq-client or firmware-sim depends on a broker-only crate (above)" >&2
  exit 1
fi
cargo test --workspace --locked
if [ -f scripts/arm-test.sh ]; then
  bash scripts/arm-test.sh
fi
# The .deb install test (issue 16) changes the machine (dpkg -i, a system
# user): CI only, or when asked with DEB_TEST=1.
if [ "${CI:-}" = true ] || [ "${DEB_TEST:-}" = 1 ]; then
  bash scripts/test-deb.sh
fi
