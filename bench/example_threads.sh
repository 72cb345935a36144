#!/usr/bin/env bash
# The CPU-thread default, measured on the bundled example: samples/s of examples/fashion_mnist
# (SmallCnn, batch 64, fp32) with frugal's default (no flag), LibTorch's own default
# (--num-threads -1), --num-threads 1 and --num-threads 2, interleaved round by round so that the
# machine's load hits every setting alike. Prints each run, then the medians and their ratio to
# --num-threads 1 (the reference measured in the same run), and the load average around each run.
#
#   bench/example_threads.sh [rounds=3] [train_batches=100]
#   FRUGAL_BUILD_DIR=build-torch2 bench/example_threads.sh 5 938   # a whole epoch, 5 rounds
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
batches=${2:-100}
exe=${FRUGAL_BUILD_DIR:-build}/examples/fashion_mnist/fashion_mnist
[ -x "$exe" ] || { echo "example_threads: build $exe first" >&2; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
settings=("default:" "libtorch:--num-threads -1" "1:--num-threads 1" "2:--num-threads 2")
echo "example_threads: $rounds rounds, $batches training batches of 64, $(nproc) CPUs" \
  "(affinity), $(date -u +%FT%TZ)"
for ((r = 1; r <= rounds; r++)); do
  for s in "${settings[@]}"; do
    name=${s%%:*}
    flags=${s#*:}
    load=$(cut -d' ' -f1 /proc/loadavg)
    # shellcheck disable=SC2086
    "$exe" --max-epochs 1 --limit-train-batches "$batches" --limit-val-batches 0 --monitor "" \
      --save-top-k 0 --no-save-last --no-progress-bar --precision 32 $flags \
      --default-root-dir "$out/run" --metrics-json "$out/$name.$r.json" >"$out/$name.$r.log" 2>&1
    threads=$(grep -m1 "CPU threads" "$out/$name.$r.log" | sed 's/frugal: CPU threads: //')
    sps=$(python3 -c "import json,sys; print(round(json.load(open(sys.argv[1]))['samples_per_second']))" \
      "$out/$name.$r.json")
    echo "round $r  ${name}  $sps samples/s  load $load  threads: $threads"
    echo "$name $sps" >>"$out/all.txt"
  done
done
python3 - "$out/all.txt" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    name, sps = line.split()
    runs.setdefault(name, []).append(float(sps))
ref = statistics.median(runs["1"])
print("setting        median samples/s   runs                      ratio to --num-threads 1")
for name, label in [("default", "no flag"), ("libtorch", "--num-threads -1"),
                    ("1", "--num-threads 1"), ("2", "--num-threads 2")]:
    m = statistics.median(runs[name])
    print(f"{label:16} {m:10.0f}   {', '.join(f'{v:.0f}' for v in runs[name]):24}  {m / ref:.2f}")
PY
