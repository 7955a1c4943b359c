#!/usr/bin/env bash
# The GPU benchmark in one device call (benchmarks/gpu/README.md has the whole sequence of tool calls):
# install the carried wheels (onnxruntime-gpu, rasterio) from the parts in $STASH onto PYTHONPATH, make the
# network inputs, then, each section under its own `timeout` inside TIME_LIMIT_S:
#   placement  benchmarks.gpu.placement  -> placement.json (replaces export/cuda_ops.json), placement.md
#   latency    benchmarks.gpu.latency    -> gpu_latency.json, gpu_latency.md (per call; targets' ratios)
#   e2e        benchmarks.gpu.e2e        -> e2e.json, e2e.md (ddrf-run on the 16-MP scene; targets' ratios)
# plus log.txt (environment and every section's output): 7 files in $OUT, of the 8 a call returns.
#
#   OUT=/some/dir bash benchmarks/gpu/run_all.sh [--cpu-smoke]
#
# --cpu-smoke runs every section on the CPU at tiny sizes with what is installed (no wheels): a test of this
# script on a CPU machine. Environment: OUT (required), STASH (default /root/stash: site.tar.xz.partNN and
# site.tar.xz.sha256, from benchmarks/gpu/pack_wheels.sh), DDRF_GPU_INPUTS (default benchmarks/gpu/inputs, made by
# `python -m benchmarks.gpu.prepare` here), TIME_LIMIT_S (default 480), SHARE_SCALE (default 1: multiplies every
# section's time share and budget; a smoke test on a loaded CPU machine needs ~4, and then TIME_LIMIT_S ≥ 1000
# or latency is skipped), PYTHON (default python3).
set -uo pipefail
cd "$(dirname "$0")/../.."
: "${OUT:?set OUT to the results folder}"
STASH=${STASH:-/root/stash}
INPUTS=${DDRF_GPU_INPUTS:-benchmarks/gpu/inputs}
TIME_LIMIT_S=${TIME_LIMIT_S:-480}
SCALE=${SHARE_SCALE:-1}
PY=${PYTHON:-python3}
SMOKE=()
[[ "${1:-}" == "--cpu-smoke" ]] && SMOKE=(--cpu-smoke)
deadline=$((SECONDS + TIME_LIMIT_S))
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1
export PYTHONUNBUFFERED=1

if [[ ${#SMOKE[@]} -eq 0 ]]; then
    if ! compgen -G "$STASH/site.tar.xz.part*" > /dev/null; then
        echo "run_all: no wheel parts in $STASH (transfer .gpu/pK first, or pass --cpu-smoke)"; exit 2
    fi
    cat "$STASH"/site.tar.xz.part* > /tmp/site.tar.xz
    (cd /tmp && sha256sum -c "$STASH/site.tar.xz.sha256") || { echo "run_all: wheel parts corrupt or missing"; exit 2; }
    mkdir -p /tmp/site && xz -dc /tmp/site.tar.xz | tar -x -C /tmp/site && rm /tmp/site.tar.xz
    export PYTHONPATH=/tmp/site:$PWD  # no venv: the box's python is itself a venv (gpu.md)
else
    export PYTHONPATH=$PWD
fi
# The sections read a copy of the inputs, where the tensors are made: benchmarks/gpu/inputs keeps only the exports
# (it must stay small enough to be carried beside the checkout).
WORK_INPUTS=$(mktemp -d /tmp/ddrf-gpu-inputs.XXXXXX)
cp "$INPUTS"/model*.onnx "$INPUTS"/meta.json "$WORK_INPUTS"/ || { echo "run_all: no exports in $INPUTS"; exit 2; }
[[ -f "$INPUTS/model.pt" ]] && cp "$INPUTS/model.pt" "$WORK_INPUTS"/
echo "run_all: installed in ${SECONDS} s; $(date -u +%FT%TZ); commit $(git describe --always --dirty 2>/dev/null)"
"$PY" - <<'EOF'
import torch, onnxruntime as ort
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
print("onnxruntime", ort.__version__, "from", ort.__file__, ort.get_available_providers())
EOF
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv 2>&1 || true

status=0
# section NAME SECONDS CMD...: run CMD under `timeout` for SECONDS, or what is left of TIME_LIMIT_S if less.
section() {
    local name=$1 share=$2; shift 2
    local left=$((deadline - SECONDS - 5))
    local limit=$((share < left ? share : left))
    if ((limit < 10)); then echo "run_all: $name skipped (time limit)"; status=1; return; fi
    echo "run_all: $name (limit ${limit} s, ${SECONDS} s in)"
    timeout -k 5 "$limit" "$@"
    local rc=$?
    echo "run_all: $name exit status $rc after ${SECONDS} s"
    ((rc == 0)) || status=1
}
# Shares of the default 480 s: the set-up sections' time is capped, latency gets what is left beside e2e's share
# (gpu.md: each torch.compile 38-55 s; the 16-MP ddrf-run runs ~5-25 s each plus the process start).
section tensors $((60 * SCALE)) "$PY" -m benchmarks.gpu.prepare --tensors-only --out "$WORK_INPUTS"
section placement $((60 * SCALE)) "$PY" -m benchmarks.gpu.placement --inputs "$WORK_INPUTS" --out "$OUT" "${SMOKE[@]}"
e2e_share=$((170 * SCALE))
latency_share=$((deadline - SECONDS - 10 - e2e_share))
section latency "$latency_share" "$PY" -m benchmarks.gpu.latency --inputs "$WORK_INPUTS" --out "$OUT" \
    --budget-s $((latency_share - 20 * SCALE)) "${SMOKE[@]}"
section e2e "$e2e_share" "$PY" -m benchmarks.gpu.e2e --inputs "$WORK_INPUTS" --out "$OUT" \
    --budget-s $((e2e_share - 20 * SCALE)) "${SMOKE[@]}"
echo "run_all: done in ${SECONDS} s, status $status; files: $(ls "$OUT" | tr '\n' ' ')"
exit "$status"
