#!/usr/bin/env bash
# Training on a lent GPU box in one device call (benchmarks/gpu/README.md, "Training on the box"). Every job folder
# in $JOBS holds config.toml and pairs.npz, packed here (`python -m ddrf_train.packed`, or
# `python -m benchmarks.generalization … --pack`), and optionally init.pt, the weights it fine-tunes. The jobs train
# side by side on the one GPU, each under its own `timeout` (SIGTERM: the trainer saves last.pt and stops), and
# each returns its EMA weights as $OUT/<job>.pt (the release copy, `python -m ddrf_train.checkpoint`, ~10 MiB) and
# $OUT/<job>.log.jsonl; $OUT/train.log has the rest.
# At most 3 jobs: 2 files each and the log fit in the 8 files a call returns.
#
#   OUT=/some/dir [JOBS=.gpu/train] [TIME_LIMIT_S=420] [ITERATIONS=N] [DEVICE=cuda] bash benchmarks/gpu/train.sh
#
# The box has torch, numpy, scipy, numba and a CPU onnxruntime but no rasterio: packed pairs need none of it.
# ITERATIONS overrides the configs' step count (their learning-rate schedule stays); a job the time limit stops
# keeps the EMA weights of its last step. DEVICE=cpu ITERATIONS=2 is this script's own test on a CPU machine.
set -uo pipefail
cd "$(dirname "$0")/../.."
: "${OUT:?set OUT to the results folder}"
JOBS=${JOBS:-.gpu/train}
TIME_LIMIT_S=${TIME_LIMIT_S:-420}
ITERATIONS=${ITERATIONS:-}
DEVICE=${DEVICE:-cuda}
PY=${PYTHON:-python3}
RUNS=$(mktemp -d /tmp/ddrf-runs.XXXXXX)
mkdir -p "$OUT"
exec > >(tee -a "$OUT/train.log") 2>&1
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1

jobs_found=()
for job in "$JOBS"/*/; do
    [[ -f "$job/config.toml" && -f "$job/pairs.npz" ]] && jobs_found+=("$(basename "$job")")
done
if (( ${#jobs_found[@]} == 0 || ${#jobs_found[@]} > 3 )); then
    echo "train.sh: need 1 to 3 job folders with config.toml and pairs.npz in $JOBS, found ${#jobs_found[@]}"; exit 2
fi
echo "train.sh: ${jobs_found[*]} on $DEVICE, ${TIME_LIMIT_S} s each; $(date -u +%FT%TZ); commit $(git describe --always --dirty 2>/dev/null)"
[[ "$DEVICE" == cuda* ]] && { nvidia-smi --query-gpu=name,memory.total --format=csv 2>&1 || true; }

pids=()
for name in "${jobs_found[@]}"; do
    args=(--config "$JOBS/$name/config.toml" --pairs "$JOBS/$name/pairs.npz" --device "$DEVICE"
          --out "$RUNS/$name" --no-progress)
    [[ -n "$ITERATIONS" ]] && args+=(--iterations "$ITERATIONS")
    [[ -f "$JOBS/$name/init.pt" ]] && args+=(--init "$JOBS/$name/init.pt")  # fine-tuning: the weights travel along
    (timeout -s TERM -k 30 "$TIME_LIMIT_S" "$PY" -m ddrf_train.train "${args[@]}" > "$RUNS/$name.log" 2>&1
     echo "train.sh: $name exited $?") &
    pids+=($!)
done
wait "${pids[@]}"  # the jobs only: a bare `wait` would also wait for the log's tee

status=0
for name in "${jobs_found[@]}"; do
    echo "--- $name"; tail -n 8 "$RUNS/$name.log"
    if [[ -f "$RUNS/$name/last.pt" ]]; then
        "$PY" -m ddrf_train.checkpoint "$RUNS/$name/last.pt" "$OUT/$name.pt" && cp "$RUNS/$name/log.jsonl" "$OUT/$name.log.jsonl"
        tail -n 2 "$RUNS/$name/log.jsonl"
    else
        echo "train.sh: $name wrote no checkpoint"; status=1
    fi
done
exit $status
