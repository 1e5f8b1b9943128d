#!/usr/bin/env bash
# Metrics on vs off under the 4 KiB PUT load (see bench/metrics_cost.py). Needs root (loop mount)
# and wrk (installed from Debian when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
cargo build --release -q
python3 bench/metrics_cost.py "$@"
