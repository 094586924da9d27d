#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ (cargo-fuzz, libFuzzer) for SECONDS each
# (default 60). Installs cargo-fuzz when it is missing. Stable Rust accepts
# cargo-fuzz's nightly flags with RUSTC_BOOTSTRAP=1. Fails (exit 1) when a
# target crashes, panics or hangs (an input that runs over 10 s), printing
# the path of the input that did it; replay it with
#   cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run -a <target> <path>
# New inputs found go to fuzz/target/corpus/<target> (not committed); the
# seeds in fuzz/corpus/<target> are only read.
# The random seed is FUZZ_SEED (default 1): with the committed seeds and an
# empty fuzz/target/corpus, a run explores the same inputs each time, so CI
# is a gate that does not flip at random; set FUZZ_SEED to explore elsewhere.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds="${1:-60}"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

# Debug assertions (and with them overflow checks) on: an arithmetic
# overflow is a finding, not a silent wrap.
cargo fuzz build -a

failed=()
for target in $(cargo fuzz list); do
  mkdir -p "target/corpus/$target" artifacts
  log="target/fuzz-$target.log"
  echo "--- fuzz $target for ${seconds}s"
  if cargo fuzz run -a "$target" "target/corpus/$target" "corpus/$target" -- \
      -max_total_time="$seconds" -seed="${FUZZ_SEED:-1}" -timeout=10 -print_final_stats=1 \
      >"$log" 2>&1; then
    grep -E '^(Done|stat::number_of_executed_units|stat::average_exec_per_sec)' "$log" || true
  else
    failed+=("$target")
    tail -n 40 "$log"
    crash=$(grep -oE 'Test unit written to [^ ]+' "$log" | tail -n 1 | sed 's/^Test unit written to //' || true)
    echo "fuzz $target FAILED; crashing input: ${crash:-(none written; see fuzz/$log)}" >&2
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: ${failed[*]} failed" >&2
  exit 1
fi
echo "fuzz: every target ran ${seconds}s without a crash or hang"
