#!/usr/bin/env bash
# Fuzz each target for SECONDS (default 60) with libFuzzer via cargo-fuzz, then minimise its
# corpus in place. Usage: fuzz/run.sh [SECONDS] [TARGET...]
# Needs cargo-fuzz (`cargo install cargo-fuzz`). cargo-fuzz wants nightly flags; on the stable
# toolchain RUSTC_BOOTSTRAP=1 lets it use them. A crash stops the script and leaves the input
# in fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(head chunked range percent_decode store_path)
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  echo "== $t: ${secs}s"
  cargo fuzz run -O "$t" "corpus/$t" -- -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1 2>&1 |
    grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|==|SUMMARY|Done)" || true
  test "${PIPESTATUS[0]}" -eq 0
  cargo fuzz cmin -O "$t" "corpus/$t" >/dev/null 2>&1
  echo "   corpus: $(ls "corpus/$t" | wc -l) inputs"
done
echo "fuzz: all targets ran ${secs}s each without a crash"
