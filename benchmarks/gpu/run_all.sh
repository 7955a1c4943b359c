#!/usr/bin/env bash
# The GPU benchmark in one call: install onnxruntime-gpu from carried wheel parts, then run
# benchmarks.gpu.latency (torch eager fp32/fp16 vs ONNX Runtime CUDA fp32/fp16 with IO binding), results in $OUT.
#
#   OUT=/some/dir bash benchmarks/gpu/run_all.sh [--cpu-smoke] [extra benchmarks.gpu.latency options]
#
# Before the device session, on the CPU machine:
#   python -m benchmarks.gpu.prepare                    # -> benchmarks/gpu/inputs/ (~55 MB, gitignored: carry it)
#   pip download --no-deps --only-binary=:all: --python-version 3.12 onnxruntime-gpu==1.31.1 -d wheels/
#   (cd wheels && sha256sum onnxruntime_gpu-*.whl > ort.sha256 && split -b 50M onnxruntime_gpu-*.whl ort.part-)
# On the device: carry one wheels/ort.part-* per call and move it to $ORT_PARTS (default /root/ort) along with
# ort.sha256; this script joins and checks them. Without parts it runs with the onnxruntime already installed
# (a CPU-only build there: the ONNX Runtime rows then report that CUDA is unavailable).
# Environment: OUT (required), ORT_PARTS, DDRF_GPU_INPUTS (default benchmarks/gpu/inputs), TIME_LIMIT_S (480),
# PYTHON (default python3; ignored once the onnxruntime-gpu venv is made).
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${OUT:?set OUT to the results folder}"
ORT_PARTS=${ORT_PARTS:-/root/ort}
INPUTS=${DDRF_GPU_INPUTS:-benchmarks/gpu/inputs}
TIME_LIMIT_S=${TIME_LIMIT_S:-480}
PY=${PYTHON:-python3}
mkdir -p "$OUT"

if [[ "${1:-}" != "--cpu-smoke" ]] && compgen -G "$ORT_PARTS/ort.part-*" > /dev/null; then
    wheel_name=$(awk '{print $2}' "$ORT_PARTS/ort.sha256")
    cat "$ORT_PARTS"/ort.part-* > "$ORT_PARTS/$wheel_name"
    (cd "$ORT_PARTS" && sha256sum -c ort.sha256)
    if [[ ! -x /root/ortenv/bin/python ]]; then
        python3 -m venv --system-site-packages /root/ortenv
        /root/ortenv/bin/pip install -q --no-deps --no-index "$ORT_PARTS/$wheel_name"
    fi
    PY=/root/ortenv/bin/python
fi

"$PY" - <<'EOF' | tee "$OUT/environment.txt"
import torch, onnxruntime as ort
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
print("onnxruntime", ort.__version__, ort.get_available_providers())
EOF
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv >> "$OUT/environment.txt" 2>&1 || true

status=0
timeout "$TIME_LIMIT_S" "$PY" -m benchmarks.gpu.latency --inputs "$INPUTS" --out "$OUT" "$@" \
    2> >(tee "$OUT/stderr.txt" >&2) || status=$?
echo "benchmarks.gpu.latency exit status $status" | tee -a "$OUT/environment.txt"
exit "$status"
