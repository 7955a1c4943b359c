#!/usr/bin/env bash
# Pack what the GPU box lacks (onnxruntime-gpu, rasterio and rasterio's pure-Python needs) for the device tool.
# Run HERE, on the CPU machine with PyPI access, in the project root (a few minutes of CPU: xz -9):
#
#   nice -n 5 bash benchmarks/gpu/pack_wheels.sh
#
# Writes .gpu/p1 … .gpu/pN (git-ignored; each its own folder, so one `carry` path = one part), each holding
# site.tar.xz.partK and site.tar.xz.sha256, then prints the exact device-tool calls to make. The box has Python 3.12
# and torch's CUDA 13 libraries, which onnxruntime-gpu 1.31.1 finds by itself (../shared/docs/gpu.md).
# One device call carries the whole checkout plus what it names, 64 MiB in all: N is chosen so that every part
# fits beside the checkout (CARRY_MIB, default: 64 MiB − the checkout − 4 MiB of margin).
# Environment: PYTHON (default python3; its pip downloads), PACK_DIR (scratch, default /tmp/ddrf-gpu-pack),
# CARRY_MIB, KEEP_SCRATCH=1 to keep the wheels, site/ and the tarball.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
PACK_DIR=${PACK_DIR:-/tmp/ddrf-gpu-pack}
# Versions: the runtime's GPU build, and rasterio with the needs `import rasterio` loads (affine, attrs, certifi,
# click) plus those its CLI registers (cligj, click-plugins): the versions this project's CPU venv runs.
# pyparsing is declared but not imported by anything the runtime uses; numpy is on the box.
WHEELS=(onnxruntime-gpu==1.31.1 rasterio==1.4.4 affine==3.0.1 attrs==26.1.0 certifi==2026.10.19.post1
        click==8.5.1 click-plugins==1.1.1.2 cligj==0.7.2)
# Dropped from site/: TensorRT is not installed on the box; libonnxruntime.so is the C API (the Python binding and
# the CUDA provider do not link it); the rest is ORT's offline tooling.
PRUNE=(onnxruntime/capi/libonnxruntime_providers_tensorrt.so onnxruntime/capi/libonnxruntime.so.1.31.1
       onnxruntime/transformers onnxruntime/quantization
       onnxruntime/tools onnxruntime/datasets)

mib() { echo $(( ($1 + 1048575) / 1048576 )); }
start=$(date +%s)
rm -rf "$PACK_DIR" .gpu
mkdir -p "$PACK_DIR/wheels" "$PACK_DIR/site" .gpu

"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$PACK_DIR/wheels" "${WHEELS[@]}"
downloaded=$(date +%s)
wheel_bytes=$(du -cb "$PACK_DIR"/wheels/*.whl | tail -1 | cut -f1)
for w in "$PACK_DIR"/wheels/*.whl; do unzip -q -o "$w" -d "$PACK_DIR/site"; done
for p in "${PRUNE[@]}"; do rm -rf "${PACK_DIR:?}/site/$p"; done
site_bytes=$(du -sb "$PACK_DIR/site" | cut -f1)
tar -C "$PACK_DIR/site" -cf - . | xz -9 -T2 > "$PACK_DIR/site.tar.xz"
compressed=$(date +%s)
(cd "$PACK_DIR" && sha256sum site.tar.xz > site.tar.xz.sha256)

checkout=$(git ls-files -z --cached --others --exclude-standard | xargs -0 stat -c %s 2>/dev/null |
           awk '{s += $1} END {print s}')
carry=${CARRY_MIB:-$(( 64 - $(mib "$checkout") - 4 ))}
size=$(stat -c %s "$PACK_DIR/site.tar.xz")
parts=$(( ($(mib "$size") + carry - 1) / carry ))
(cd "$PACK_DIR" && split -n "$parts" --numeric-suffixes=1 --suffix-length=2 site.tar.xz site.tar.xz.part)
for k in $(seq 1 "$parts"); do
    mkdir -p ".gpu/p$k"
    mv "$PACK_DIR/site.tar.xz.part$(printf %02d "$k")" ".gpu/p$k/"
    cp "$PACK_DIR/site.tar.xz.sha256" ".gpu/p$k/"
done
[[ "${KEEP_SCRATCH:-0}" == 1 ]] || rm -rf "$PACK_DIR"
end=$(date +%s)

echo "wheels $(mib "$wheel_bytes") MiB, site/ $(mib "$site_bytes") MiB after pruning;" \
     "site.tar.xz $(mib "$size") MiB in $parts parts of <= $carry MiB (checkout $(mib "$checkout") MiB)"
echo "timings: download $((downloaded - start)) s, unzip + xz $((compressed - downloaded)) s, total $((end - start)) s"
echo "sha256: $(cut -d' ' -f1 .gpu/p1/site.tar.xz.sha256)"
echo
echo "Device-tool calls (back to back; see benchmarks/gpu/README.md):"
for k in $(seq 1 "$parts"); do
    echo "  run(carry=[\".gpu/p$k\"], timeout_s=60, command=\"mkdir -p /root/stash && mv .gpu/p$k/* /root/stash/ && ls -l /root/stash\")"
done
echo "  run(carry=[\"benchmarks/gpu/inputs\"], timeout_s=540, command=\"bash benchmarks/gpu/run_all.sh\")"
echo "  give_back()"
