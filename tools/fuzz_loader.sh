#!/usr/bin/env bash
# Fuzz the bundle loader with libFuzzer (+ ASan/UBSan) from Debian's clang.
#
#   tools/fuzz_loader.sh [SECONDS]        default 600
#
# Needs: apt-get install clang; the package's test extra installed (for the
# seed corpus, which is tests/corpus.py's output). Work files live in
# ~/.cache/cutecpp/fuzz (the corpus grows across runs; crashes land in
# ~/.cache/cutecpp/fuzz/crashes). Prints libFuzzer's final stats.
set -euo pipefail
seconds="${1:-600}"
root="$(cd "$(dirname "$0")/.." && pwd)"
work="${CUTECPP_FUZZ_DIR:-$HOME/.cache/cutecpp/fuzz}"
python="${PYTHON:-python}"
mkdir -p "$work/corpus" "$work/crashes"

command -v clang++ >/dev/null || { echo "clang++ not found: apt-get install clang" >&2; exit 1; }
cmake -S "$root" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DCUTECPP_PYTHON=OFF -DCUTECPP_FUZZ=ON -DPython_EXECUTABLE="$(command -v "$python")" >/dev/null
cmake --build "$work/build" --target fuzz-loader -j2

if [ -z "$(ls -A "$work/corpus")" ]; then
  "$python" "$root/tests/corpus.py" "$work/seeds" --count 200
  find "$work/seeds" -name '*.gguf' -exec cp {} "$work/corpus/" \;
fi

cd "$work/crashes"
ASAN_OPTIONS=detect_leaks=1 "$work/build/fuzz-loader" "$work/corpus" \
  -max_total_time="$seconds" -max_len=300000 -timeout=10 -rss_limit_mb=2048 \
  -print_final_stats=1 -artifact_prefix="$work/crashes/" 2>&1 | tail -25
