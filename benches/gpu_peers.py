# GPU peers for qkc's GEMV benchmark, measured in the same device call as
# `examples/gpu_bench.rs` (see README "Benchmarks"): cuBLAS fp16 linear and torch's
# tinygemm int4 (W4A16, group 128) at the same K×N shapes and M, medians from
# triton.testing.do_bench (which clears L2 between runs), plus the read ceiling.
# Usage: python3 benches/gpu_peers.py [--shapes 4096x4096,...] [--m 1,4,16] [--csv peers.csv]
# (the CSV, `K,N,M,cublas_us,tinygemm_us` plus a `# read_tbps=` line, is what
# `gpu_bench --peers` reads; `benches/gpu/run.sh` runs both).
import argparse, sys

import torch
from triton.testing import do_bench


def read_ceiling():
    n = 1 << 31
    a = torch.empty(n // 2, dtype=torch.float16, device="cuda").uniform_()
    t = do_bench(lambda: a.sum(dtype=torch.float32), warmup=50, rep=300, return_mode="median")
    return n / (t * 1e-3) / 1e12


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--shapes", default="4096x4096,8192x8192,8192x28672,28672x8192")
    p.add_argument("--m", default="1,4,16")
    p.add_argument("--csv", default=None)
    a = p.parse_args()
    shapes = [tuple(int(v) for v in s.split("x")) for s in a.shapes.split(",")]
    ms = [int(v) for v in a.m.split(",")]
    print("torch", torch.__version__, torch.cuda.get_device_name(), file=sys.stderr)
    ceiling = read_ceiling()
    print(f"read ceiling (fp16 sum): {ceiling:.2f} TB/s")
    csv = [f"# read_tbps={ceiling:.3f}", "K,N,M,cublas_us,tinygemm_us"]
    print(f"{'KxN':>12} {'M':>3} {'cuBLAS fp16 us':>15} {'tinygemm int4 us':>17}")
    torch.manual_seed(0)
    for (K, N) in shapes:
        w = torch.randn(N, K, device="cuda", dtype=torch.float16)
        wq = torch.randint(0, 16, (N, K), dtype=torch.int32, device="cuda")
        packed = (wq[:, ::2] << 4 | wq[:, 1::2]).to(torch.uint8)
        wp = torch.ops.aten._convert_weight_to_int4pack(packed, 8)
        sz = torch.randn(K // 128, N, 2, device="cuda", dtype=torch.bfloat16)
        for M in ms:
            x = torch.randn(M, K, device="cuda", dtype=torch.float16)
            t16 = do_bench(lambda: torch.nn.functional.linear(x, w), warmup=25, rep=200, return_mode="median")
            xb = x.to(torch.bfloat16)
            try:
                t4 = do_bench(lambda: torch.ops.aten._weight_int4pack_mm(xb, wp, 128, sz), warmup=25, rep=200, return_mode="median")
                t4s = f"{t4 * 1e3:17.1f}"
                t4c = f"{t4 * 1e3:.2f}"
            except Exception as e:  # tinygemm is missing on some builds
                t4s = f"{'n/a':>17} ({e.__class__.__name__})"
                t4c = ""
            print(f"{K:>6}x{N:<5} {M:>3} {t16 * 1e3:15.1f} {t4s}")
            csv.append(f"{K},{N},{M},{t16 * 1e3:.2f},{t4c}")
    if a.csv:
        with open(a.csv, "w") as f:
            f.write("\n".join(csv) + "\n")


if __name__ == "__main__":
    main()
