#!/usr/bin/env bash
# One large durable PUT against `dd conv=fsync` of the same bytes on the same filesystem,
# alternated N times (the disk under this VM swings 3x between runs, so pairs are compared,
# not averages). Prints each pair and the median of our speed / dd's.
# Usage: bench/put_vs_dd.sh [rounds=5] [MiB=1024] [dir=/var/tmp]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}; mib=${2:-1024}; base=${3:-/var/tmp}
cargo build --release -q
work=$(mktemp -d "$base/hfs-putdd-XXXX")
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
size=$((mib << 20))
head -c "$size" /dev/urandom > "$work/src.bin"
port=$((29100 + RANDOM % 500))
cat > "$work/c.toml" <<TOML
ListenPort = "127.0.0.1:$port"
Secret = "bench-secret"
StoreDir = "$work/store"
LogFile = "$work/log"
UploadMaxSize = "16GB"
TOML
target/release/hmac-file-server --config "$work/c.toml" & pid=$!
sleep 0.5
echo "dd_seconds ours_seconds"
for i in $(seq "$rounds"); do
  sync; s=$(date +%s.%N)
  dd if="$work/src.bin" of="$work/store/dd.bin" bs=1M conv=fsync status=none
  e=$(date +%s.%N); rm "$work/store/dd.bin"
  sync
  url=$(target/release/hmac-file-server sign --config "$work/c.toml" --path "r$i/big.bin" --size "$size")
  o=$(curl -sS -o /dev/null -H "Expect:" -w "%{time_total}" -T "$work/src.bin" "$url")
  rm -rf "$work/store/r$i"
  echo "$(echo "$e - $s" | bc) $o"
done | awk '{r[NR]=$1/$2; print} END {n=asort(r); printf "median ours/dd speed: %.2fx\n", r[int((n+1)/2)]}'
