#!/usr/bin/env bash
# Release sizes of the edgemq binary per ARM target and its idle RSS under
# qemu-user. Prints a Markdown table; used to fill docs/ARM.md.
# Note: the RSS of a process under qemu-user includes qemu's own memory
# (its translation cache), so it overstates what the board will use.
set -euo pipefail
cd "$(dirname "$0")/.."
target_dir="${CARGO_TARGET_DIR:-target}"

echo "| target | stripped binary | idle RSS under qemu-user (incl. qemu) |"
echo "|---|---|---|"
for t in aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf; do
  cargo build --locked --release -p edgemq --target "$t" >/dev/null 2>&1
  bin="$target_dir/$t/release/edgemq"
  size=$(stat -c %s "$bin")
  case "$t" in
    aarch64*) runner=(qemu-aarch64-static -L /usr/aarch64-linux-gnu) ;;
    armv7*) runner=(qemu-arm-static -L /usr/arm-linux-gnueabihf) ;;
  esac
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  data=$(mktemp -d)
  "${runner[@]}" "$bin" --listen "127.0.0.1:$port" --data-dir "$data" --log-level warn &
  pid=$!
  for _ in $(seq 1 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
    sleep 0.05
  done
  sleep 1
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  rm -rf "$data"
  mib=$(awk -v s="$size" 'BEGIN { printf "%.2f", s / 1048576 }')
  echo "| $t | $mib MiB | $rss KiB |"
done
