#!/usr/bin/env bash
# The fuzz step of CI (docs/fuzzing.md): build every target, replay the committed corpus and the
# regressions, then fuzz each target for FUZZ_SECONDS (30) seconds. Any panic, abort, stack
# overflow or input slower than 10 s fails the step, and libFuzzer's reproducer is left in
# fuzz/artifacts/<target>/ (copy it into fuzz/regressions/<target>/ once it is fixed).
#
# New inputs libFuzzer finds go to a temporary directory, so CI never changes the repository.
# The targets link no RocksDB: ROCKSDB_* from the caller's environment is not needed here.
set -euo pipefail
shopt -s nullglob
cd "$(dirname "$0")"

seconds="${FUZZ_SECONDS:-30}"
# `--sanitizer none`: keelson's parsers are safe Rust, so AddressSanitizer would only slow the
# build and every run; panics, overflows (debug assertions are on) and stack exhaustion are
# caught without it. `--debug-assertions`: integer overflow is a finding too.
flags=(--sanitizer none --debug-assertions)

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz: cargo fuzz needs a nightly toolchain (rustup toolchain install nightly)" >&2
  exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

start=$SECONDS
cargo +nightly fuzz build "${flags[@]}"
echo "fuzz: targets built in $((SECONDS - start)) s"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
bin_dir="target/$(rustc +nightly -vV | sed -n 's/^host: //p')/release"
failed=()
for target in $(cargo +nightly fuzz list); do
  mkdir -p "$work/$target" "artifacts/$target"
  dirs=("$work/$target")
  for d in "corpus/$target" "regressions/$target"; do
    [ -d "$d" ] && dirs+=("$d")
  done
  log="$work/$target.log"
  artifacts_before="$(ls "artifacts/$target" | wc -l)"
  # libFuzzer runs every input of the given directories first (the replay), then fuzzes. The
  # inputs run on the main thread; `ulimit -s 2048` gives it the 2 MiB stack of tokio's worker
  # threads, on which a master decodes what callers send, so nesting that would overflow a
  # master's stack overflows here too.
  if (ulimit -s 2048 && exec cargo +nightly fuzz run "${flags[@]}" "$target" "${dirs[@]}" -- \
      -max_total_time="$seconds" -timeout=10 -print_final_stats=1) >"$log" 2>&1; then
    runs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)"
    echo "fuzz: $target ok (${runs:-?} runs, $(ls "$work/$target" | wc -l) new inputs)"
    continue
  fi
  failed+=("$target")
  echo "fuzz: $target FAILED; the end of libFuzzer's output:"
  tail -n 40 "$log"
  if [ "$(ls "artifacts/$target" | wc -l)" = "$artifacts_before" ]; then
    # A stack overflow kills the process before libFuzzer can save the input. If it was a
    # committed one, running them one at a time names it.
    files=()
    for d in "${dirs[@]:1}"; do
      files+=("$d"/*)
    done
    if ! (ulimit -s 2048 && exec "$bin_dir/$target" "${files[@]}") >"$log" 2>&1; then
      echo "fuzz: $target fails on $(grep '^Running: ' "$log" | tail -n 1 | cut -d' ' -f2-)"
    else
      echo "fuzz: $target failed on an input libFuzzer could not save (a stack overflow?)"
    fi
  fi
done
echo "fuzz: step took $((SECONDS - start)) s"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: crashes in ${failed[*]} (reproducers in fuzz/artifacts/)" >&2
  exit 1
fi
