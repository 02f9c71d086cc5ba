// Load-pattern microbenchmark for the 3.5-bit GEMV: how fast a warp-per-rows schedule
// reads N rows of R bytes with each access pattern (no decode, a cheap sum), against a
// flat streaming read. Not part of qkc (qkc emits its PTX itself); it answers what the
// SIMT GEMV's loads cost. On the GPU machine (docs/bench/gpu_load_patterns.txt):
//   nvcc -O3 -arch=sm_90 -std=c++17 benches/gpu/load_patterns.cu -o load_patterns && ./load_patterns
#include <cstdio>
#include <cstdint>
#include <vector>
#include <algorithm>
#include <cuda_runtime.h>
#define CK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { printf("%s:%d %s\n", __FILE__, __LINE__, cudaGetErrorString(e)); exit(1); } } while (0)

constexpr int STEP = 3584;  // 32 lanes x 112 bytes (256 weights per lane at 3.5 bits)

__device__ __forceinline__ uint32_t mix(uint4 v) { return (v.x ^ v.y) + (v.z ^ v.w); }
__device__ __forceinline__ uint4 ldnc(const uint4* p) {
  uint4 v;
  asm volatile("ld.global.nc.v4.u32 {%0,%1,%2,%3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  return v;
}

// A: each lane reads its own 112 contiguous bytes per row and step.
template <int RPW>
__global__ void lane_chunk(const uint8_t* w, int N, int R, uint32_t* out) {
  int warp = (blockIdx.x * blockDim.x + threadIdx.x) / 32, lane = threadIdx.x % 32;
  int row0 = warp * RPW;
  if (row0 >= N) return;
  uint32_t acc[RPW] = {};
  for (int s = 0; s < R; s += STEP) {
#pragma unroll
    for (int r = 0; r < RPW; r++) {
      const uint4* p = (const uint4*)(w + (size_t)(row0 + r) * R + s + 112 * lane);
#pragma unroll
      for (int i = 0; i < 7; i++) acc[r] += mix(ldnc(p + i));
    }
  }
#pragma unroll
  for (int r = 0; r < RPW; r++) out[(row0 + r) * 32 + lane] = acc[r];
}

// B: load i of a step: lane reads 16 bytes at 512 i + 16 lane (coalesced).
template <int RPW>
__global__ void coalesced(const uint8_t* w, int N, int R, uint32_t* out) {
  int warp = (blockIdx.x * blockDim.x + threadIdx.x) / 32, lane = threadIdx.x % 32;
  int row0 = warp * RPW;
  if (row0 >= N) return;
  uint32_t acc[RPW] = {};
  for (int s = 0; s < R; s += STEP) {
#pragma unroll
    for (int r = 0; r < RPW; r++) {
      const uint4* p = (const uint4*)(w + (size_t)(row0 + r) * R + s + 16 * lane);
#pragma unroll
      for (int i = 0; i < 7; i++) acc[r] += mix(ldnc(p + 32 * i));
    }
  }
#pragma unroll
  for (int r = 0; r < RPW; r++) out[(row0 + r) * 32 + lane] = acc[r];
}

// D: cp.async of the warp's rows' step (coalesced) into shared memory, STAGES deep;
// each lane then reads its own 112 bytes of each row from shared memory.
template <int RPW, int STAGES>
__global__ void staged(const uint8_t* w, int N, int R, uint32_t* out) {
  extern __shared__ uint4 sm[];
  int wib = threadIdx.x / 32, lane = threadIdx.x % 32;
  int warp = (blockIdx.x * blockDim.x + threadIdx.x) / 32;
  int row0 = warp * RPW;
  if (row0 >= N) return;
  uint4* mine = sm + (size_t)wib * STAGES * RPW * (STEP / 16);
  uint32_t base = (uint32_t)__cvta_generic_to_shared(mine);
  int steps = R / STEP;
  auto issue = [&](int s) {
    if (s < steps) {
      int st = s % STAGES;
#pragma unroll
      for (int r = 0; r < RPW; r++)
#pragma unroll
        for (int i = 0; i < 7; i++) {
          const uint8_t* g = w + (size_t)(row0 + r) * R + (size_t)s * STEP + 512 * i + 16 * lane;
          uint32_t d = base + ((st * RPW + r) * STEP + 512 * i + 16 * lane);
          asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(d), "l"(g));
        }
    }
    asm volatile("cp.async.commit_group;");
  };
  uint32_t acc[RPW] = {};
#pragma unroll
  for (int s = 0; s < STAGES - 1; s++) issue(s);
  for (int s = 0; s < steps; s++) {
    issue(s + STAGES - 1);
    asm volatile("cp.async.wait_group %0;" ::"n"(STAGES - 1));
    __syncwarp();
    int st = s % STAGES;
#pragma unroll
    for (int r = 0; r < RPW; r++) {
      const uint4* p = mine + ((st * RPW + r) * STEP + 112 * lane) / 16;
#pragma unroll
      for (int i = 0; i < 7; i++) acc[r] += mix(p[i]);
    }
    __syncwarp();
  }
#pragma unroll
  for (int r = 0; r < RPW; r++) out[(row0 + r) * 32 + lane] = acc[r];
}

// C: flat streaming read (the ceiling).
__global__ void flat(const uint4* w, size_t n16, uint32_t* out) {
  uint32_t acc = 0;
  size_t stride = (size_t)gridDim.x * blockDim.x;
  for (size_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n16; i += 4 * stride) {
    uint4 v[4];
#pragma unroll
    for (int j = 0; j < 4; j++) v[j] = i + j * stride < n16 ? ldnc(w + i + j * stride) : make_uint4(0, 0, 0, 0);
#pragma unroll
    for (int j = 0; j < 4; j++) acc += mix(v[j]);
  }
  out[blockIdx.x * blockDim.x + threadIdx.x] = acc;
}

template <class F>
float timeit(F launch, int copies, int iters) {
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  std::vector<float> ts;
  for (int i = 0; i < 5; i++) launch(i % copies);
  for (int i = 0; i < iters; i++) {
    CK(cudaEventRecord(a));
    launch(i % copies);
    CK(cudaEventRecord(b));
    CK(cudaEventSynchronize(b));
    float ms;
    CK(cudaEventElapsedTime(&ms, a, b));
    ts.push_back(ms * 1000);
  }
  CK(cudaGetLastError());
  std::sort(ts.begin(), ts.end());
  return ts[ts.size() / 2];
}

int main() {
  const int copies = 4;
  struct Shape { int N, R; };
  Shape shapes[] = {{28672, 3584}, {8192, 14336}};
  size_t maxb = 8192ull * 14336;
  std::vector<uint8_t*> w(copies);
  for (auto& p : w) {
    CK(cudaMalloc(&p, maxb));
    CK(cudaMemset(p, 0x5b, maxb));
  }
  uint32_t* out;
  CK(cudaMalloc(&out, 28672 * 32 * 4 * 2));
  int sms;
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  printf("| shape | pattern | us | TB/s |\n|---|---|---|---|\n");
  for (auto sh : shapes) {
    double bytes = (double)sh.N * sh.R;
    auto rep = [&](const char* name, float us) { printf("| %dx%d | %s | %.1f | %.2f |\n", sh.N, sh.R, name, us, bytes / us / 1e6); };
    rep("flat 4x16B", timeit([&](int c) { flat<<<sms * 16, 128>>>((const uint4*)w[c], (size_t)bytes / 16, out); }, copies, 200));
#define RUN(K, RPW, BLK)                                                                          \
    {                                                                                              \
      int warps = (sh.N + RPW - 1) / RPW, blocks = (warps * 32 + BLK - 1) / BLK;                   \
      rep(#K " rpw " #RPW " blk " #BLK, timeit([&](int c) { K<RPW><<<blocks, BLK>>>(w[c], sh.N, sh.R, out); }, copies, 200)); \
    }
    RUN(lane_chunk, 1, 128) RUN(lane_chunk, 2, 128) RUN(lane_chunk, 4, 128)
    RUN(coalesced, 1, 128) RUN(coalesced, 2, 128) RUN(coalesced, 4, 128)
#define RUNS(RPW, ST, BLK)                                                                         \
    {                                                                                              \
      int warps = (sh.N + RPW - 1) / RPW, blocks = (warps * 32 + BLK - 1) / BLK;                   \
      int smem = BLK / 32 * ST * RPW * STEP;                                                       \
      CK(cudaFuncSetAttribute(staged<RPW, ST>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem)); \
      rep("staged rpw " #RPW " stages " #ST " blk " #BLK, timeit([&](int c) { staged<RPW, ST><<<blocks, BLK, smem>>>(w[c], sh.N, sh.R, out); }, copies, 200)); \
    }
    RUNS(1, 2, 128) RUNS(1, 3, 128) RUNS(1, 4, 128) RUNS(2, 2, 128) RUNS(2, 3, 128) RUNS(1, 3, 256) RUNS(1, 4, 64)
  }
  return 0;
}
