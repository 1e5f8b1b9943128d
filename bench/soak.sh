#!/usr/bin/env bash
# Soak test (not CI): build the release binary and run bench/soak.py for SECONDS (default 600):
# mixed load on loopback, RSS and open fds reported at the start and the end.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q
python3 bench/soak.py --binary target/release/hmac-file-server --seconds "${1:-600}"
