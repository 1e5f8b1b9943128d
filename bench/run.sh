#!/usr/bin/env bash
# Benchmark hmac-file-server against nginx and a Python floor on loopback; see README "Benchmarks".
# Usage: bench/run.sh [--rounds N] [--seconds S] [--fs root|tmpfs|loop] [...]   (bench/bench.py --help)
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for tool in wrk nginx curl; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
  pkgs=()
  for t in "${missing[@]}"; do case "$t" in nginx) pkgs+=(nginx-light) ;; *) pkgs+=("$t") ;; esac; done
  echo "installing: ${pkgs[*]}" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}"
fi
# The chart needs matplotlib in the python3 that runs bench.py (pyenv or Debian's).
python3 -c 'import matplotlib' 2>/dev/null || python3 -m pip install -q matplotlib
command -v oha >/dev/null || command -v "$HOME/.cargo/bin/oha" >/dev/null || {
  echo "installing oha (cargo install oha)" >&2
  cargo install oha --locked
}
export PATH="$HOME/.cargo/bin:$PATH"
# nginx from Debian runs its own master on port 80 after installation; ours use private ports only.
cargo build --release
exec python3 bench/bench.py "$@"
