#!/usr/bin/env bash
# Builds edgemq for the Raspberry Pi targets and tests it under qemu-user:
#  1. every unit test of the broker library (codec, store with power cuts,
#     router, sessions, config) compiled for aarch64 and armv7 and run under
#     qemu-user through the runners in .cargo/config.toml;
#  2. the end-to-end suite of the `edgemq-tests` package run natively against
#     the aarch64 `edgemq` binary running under qemu-user (EDGEMQ_BIN and
#     EDGEMQ_RUNNER), so real Mosquitto and the CLI clients stay native.
# The broker package's own process tests (broker/tests/*.rs) spawn the
# binary directly and run in the native suite only.
# CRC- and allocation-heavy loops are 7-200x slower under qemu: the store's
# model tests scale down with EDGEMQ_TEST_SCALE=1.
set -euo pipefail
cd "$(dirname "$0")/.."

export EDGEMQ_TEST_SCALE="${EDGEMQ_TEST_SCALE:-1}"
TARGETS=(aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf)

for t in "${TARGETS[@]}"; do
  echo "== arm-test: $t: broker library tests under qemu-user"
  cargo test --locked -p edgemq --lib --target "$t"
  cargo build --locked -p edgemq --bin edgemq --target "$t"
done

# Absolute: cargo runs each test binary in its package's directory, so a
# relative EDGEMQ_BIN would point nowhere.
target_dir="${CARGO_TARGET_DIR:-target}"
case "$target_dir" in
  /*) ;;
  *) target_dir="$PWD/$target_dir" ;;
esac
echo "== arm-test: end-to-end suite against the aarch64 broker under qemu-aarch64"
EDGEMQ_BIN="$target_dir/aarch64-unknown-linux-gnu/debug/edgemq" \
EDGEMQ_RUNNER="qemu-aarch64-static -L /usr/aarch64-linux-gnu" \
  cargo test --locked -p edgemq-tests
# 32-bit: recovery arithmetic on lengths read from flash (issue 11, C1).
echo "== arm-test: damaged-flash start of the armv7 broker under qemu-arm"
EDGEMQ_BIN="$target_dir/armv7-unknown-linux-gnueabihf/debug/edgemq" \
EDGEMQ_RUNNER="qemu-arm-static -L /usr/arm-linux-gnueabihf" \
  cargo test --locked -p edgemq-tests --test durability a_flipped_bit_after_the_last_record
