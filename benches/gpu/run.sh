#!/usr/bin/env bash
# The GPU benchmark in one device call. Builds nothing: run it where the binaries built
# on the development machine were carried (the GPU machine has no Rust):
#
#   cargo build --release --example gpu_bench
#   mkdir -p .device-bin-gpu && cp target/release/examples/gpu_bench .device-bin-gpu/
#   # on the GPU machine, from the repository root:
#   bash benches/gpu/run.sh [BIN_DIR=.device-bin-gpu] [OUT_DIR=$OUT or bench-out]
#
# Measures the peers first (cuBLAS fp16 `linear`, tinygemm int4 g128, the read ceiling;
# benches/gpu_peers.py), then qkc's 3.5-bit kernels with i8 and f16 activations at the
# same shapes and M (examples/gpu_bench.rs: CUDA events, medians, rotated weight
# copies), merged into one table per kernel with speed-ups, CSV and SVG.
set -euo pipefail
bin=${1:-.device-bin-gpu}
out=${2:-${OUT:-bench-out}}
shapes=${QKC_BENCH_GPU_SHAPES:-4096x4096,8192x8192,8192x28672,28672x8192,14336x4096}
ms=${QKC_BENCH_GPU_M:-1,4,16}
iters=${QKC_BENCH_GPU_ITERS:-300}
mkdir -p "$out"
nvidia-smi --query-gpu=name,clocks.max.sm,memory.total --format=csv | tee "$out/device.txt"
python3 benches/gpu_peers.py --shapes "$shapes" --m "$ms" --csv "$out/peers.csv" | tee "$out/peers.txt"
"$bin/gpu_bench" --kernel examples/kernels/gemv_w3p5.qk --shapes "$shapes" --m "$ms" --iters "$iters" --peers "$out/peers.csv" \
    --csv "$out/gpu_gemv_i8.csv" --svg "$out/gpu_gemv_i8.svg" | tee "$out/gpu_gemv_i8.txt"
"$bin/gpu_bench" --kernel examples/kernels/gemv_f16_w3p5.qk --shapes "$shapes" --m "$ms" \
    --iters "$iters" --peers "$out/peers.csv" \
    --csv "$out/gpu_gemv_f16.csv" --svg "$out/gpu_gemv_f16.svg" | tee "$out/gpu_gemv_f16.txt"
# M = 16 (beyond the GEMV schedule's M <= 8): the same kernels without the bound.
for kern in w3p5_any_m f16_w3p5_any_m; do
    "$bin/gpu_bench" --kernel "benches/gpu/$kern.qk" --shapes "$shapes" --m 16 --iters 100 \
        --peers "$out/peers.csv" --csv "$out/gpu_gemm_$kern.csv" | tee "$out/gpu_gemm_$kern.txt"
done
