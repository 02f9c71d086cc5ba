// Load-pattern microbenchmark for the 3.5-bit GEMV: how fast a warp-per-rows schedule
// reads N rows of R bytes with each access pattern (no decode, a cheap sum), against
// flat streaming reads (16-byte loads with and without L2 prefetch hints, one
// contiguous range per block, and TMA bulk copies into shared memory). Not part of qkc
// (qkc emits its PTX itself); it answers what the GEMV's loads cost and how fast the
// goal shapes' 106.4 MB can be read at all. Launches are timed back to back, as
// examples/gpu_bench.rs times qkc. On the GPU machine (docs/bench/gpu_load_patterns.txt):
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

// C: flat streaming read (the ceiling) with U loads in flight per thread and an L2
// prefetch-size hint (HINT 0: none, 1: `L2::256B`, 2: `L1::no_allocate` + `L2::256B`).
template <int HINT>
__device__ __forceinline__ uint4 ldh(const uint4* p) {
  uint4 v;
  if (HINT == 1)
    asm volatile("ld.global.nc.L2::256B.v4.u32 {%0,%1,%2,%3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  else if (HINT == 2)
    asm volatile("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0,%1,%2,%3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  else
    v = ldnc(p);
  return v;
}
template <int U, int HINT>
__global__ void flat_u(const uint4* w, size_t n16, uint32_t* out) {
  uint32_t acc = 0;
  size_t stride = (size_t)gridDim.x * blockDim.x;
  for (size_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n16; i += U * stride) {
    uint4 v[U];
#pragma unroll
    for (int j = 0; j < U; j++) v[j] = i + j * stride < n16 ? ldh<HINT>(w + i + j * stride) : make_uint4(0, 0, 0, 0);
#pragma unroll
    for (int j = 0; j < U; j++) acc += mix(v[j]);
  }
  out[blockIdx.x * blockDim.x + threadIdx.x] = acc;
}

// E: block-contiguous read: block b reads bytes [b * per, (b + 1) * per) in coalesced
// 16-byte loads, U in flight per thread (a grid of a few blocks per SM, each a long run).
template <int U, int HINT>
__global__ void span(const uint4* w, size_t n16, uint32_t* out) {
  size_t per = (n16 + gridDim.x - 1) / gridDim.x;
  size_t lo = blockIdx.x * per, hi = lo + per < n16 ? lo + per : n16;
  uint32_t acc = 0;
  for (size_t i = lo + threadIdx.x; i < hi; i += U * blockDim.x) {
    uint4 v[U];
#pragma unroll
    for (int j = 0; j < U; j++) v[j] = i + j * blockDim.x < hi ? ldh<HINT>(w + i + j * blockDim.x) : make_uint4(0, 0, 0, 0);
#pragma unroll
    for (int j = 0; j < U; j++) acc += mix(v[j]);
  }
  out[blockIdx.x * blockDim.x + threadIdx.x] = acc;
}

// F: bulk copies (TMA, `cp.async.bulk` 1-D) of CH-byte chunks into a STAGES-deep ring
// of shared memory completing on mbarriers; one thread issues, the block reads back.
template <int CH, int STAGES>
__global__ void bulk(const uint8_t* w, size_t n, uint32_t* out) {
  extern __shared__ __align__(128) uint8_t ring[];
  __shared__ __align__(8) uint64_t bar[STAGES];
  size_t chunks = n / CH;
  uint32_t ring_s = (uint32_t)__cvta_generic_to_shared(ring);
  if (threadIdx.x == 0) {
    for (int s = 0; s < STAGES; s++) {
      uint32_t b = (uint32_t)__cvta_generic_to_shared(&bar[s]);
      asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(b));
    }
    asm volatile("fence.mbarrier_init.release.cluster;");
  }
  __syncthreads();
  auto issue = [&](size_t c, int s) {
    if (threadIdx.x == 0 && c < chunks) {
      uint32_t b = (uint32_t)__cvta_generic_to_shared(&bar[s]);
      asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(b), "r"(CH));
      asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];"
                   ::"r"(ring_s + s * CH), "l"(w + c * CH), "r"(CH), "r"(b) : "memory");
    }
  };
  for (int s = 0; s < STAGES; s++) issue(blockIdx.x + (size_t)s * gridDim.x, s);
  uint32_t acc = 0;
  int it = 0;
  for (size_t c = blockIdx.x; c < chunks; c += gridDim.x, it++) {
    int s = it % STAGES;
    uint32_t phase = (it / STAGES) & 1;
    uint32_t b = (uint32_t)__cvta_generic_to_shared(&bar[s]);
    for (uint32_t ok = 0; !ok;)
      asm volatile("{ .reg .pred p; mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2; selp.u32 %0, 1, 0, p; }"
                   : "=r"(ok) : "r"(b), "r"(phase) : "memory");
    const uint4* p = (const uint4*)(ring + s * CH);
#pragma unroll
    for (int i = threadIdx.x; i < CH / 16; i += blockDim.x) acc += mix(p[i]);
    __syncthreads();
    issue(c + (size_t)STAGES * gridDim.x, s);
  }
  out[blockIdx.x * blockDim.x + threadIdx.x] = acc;
}

// Back-to-back launches, each between two events, one synchronisation at the end (as
// examples/gpu_bench.rs times qkc's kernels): the launch overhead of the host is hidden.
// SYNCED: synchronise after every launch, so each time also holds the host's launch
// latency (how this file timed before 2026-11-26; those numbers were 2-4 us high).
template <class F>
float timeit(F launch, int copies, int iters, bool synced = false) {
  std::vector<cudaEvent_t> ev(2 * iters);
  for (auto& ev_i : ev) CK(cudaEventCreate(&ev_i));
  std::vector<float> ts;
  for (int i = 0; i < 5; i++) launch(i % copies);
  CK(cudaDeviceSynchronize());
  for (int i = 0; i < iters; i++) {
    CK(cudaEventRecord(ev[2 * i]));
    launch(i % copies);
    CK(cudaEventRecord(ev[2 * i + 1]));
    if (synced) CK(cudaEventSynchronize(ev[2 * i + 1]));
  }
  CK(cudaDeviceSynchronize());
  CK(cudaGetLastError());
  for (int i = 0; i < iters; i++) {
    float ms;
    CK(cudaEventElapsedTime(&ms, ev[2 * i], ev[2 * i + 1]));
    ts.push_back(ms * 1000);
  }
  for (auto& ev_i : ev) CK(cudaEventDestroy(ev_i));
  std::sort(ts.begin(), ts.end());
  return ts[ts.size() / 2];
}

int main() {
  const int copies = 4;
  struct Shape { int N, R; };
  // 28672 x 3712: the goal shapes' weights and f16 group-128 scales (106.4 MB)
  Shape shapes[] = {{28672, 3712}, {28672, 3584}, {8192, 14336}};
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
    size_t n16 = (size_t)bytes / 16;
    rep("flat 4x16B synced", timeit([&](int c) { flat_u<4, 0><<<sms * 16, 128>>>((const uint4*)w[c], n16, out); }, copies, 200, true));
#define RUNF(U, H, BPS, BLK) \
    rep("flat " #U "x16B hint " #H " grid " #BPS "/SM blk " #BLK, timeit([&](int c) { flat_u<U, H><<<sms * BPS, BLK>>>((const uint4*)w[c], n16, out); }, copies, 200));
    RUNF(4, 0, 16, 128) RUNF(8, 0, 16, 128) RUNF(4, 1, 16, 128) RUNF(8, 1, 16, 128) RUNF(4, 2, 16, 128)
    RUNF(4, 0, 8, 256) RUNF(8, 1, 8, 256) RUNF(4, 1, 4, 512) RUNF(8, 1, 32, 64)
#define RUNE(U, H, BPS, BLK) \
    rep("span " #U "x16B hint " #H " grid " #BPS "/SM blk " #BLK, timeit([&](int c) { span<U, H><<<sms * BPS, BLK>>>((const uint4*)w[c], n16, out); }, copies, 200));
    RUNE(4, 0, 8, 256) RUNE(4, 1, 8, 256) RUNE(8, 1, 4, 512) RUNE(4, 1, 16, 128) RUNE(8, 1, 16, 128)
#define RUNB(CH, ST, BPS, BLK) \
    { \
      CK(cudaFuncSetAttribute(bulk<CH, ST>, cudaFuncAttributeMaxDynamicSharedMemorySize, CH * ST)); \
      rep("bulk " #CH "B x" #ST " grid " #BPS "/SM blk " #BLK, timeit([&](int c) { bulk<CH, ST><<<sms * BPS, BLK, CH * ST>>>(w[c], (size_t)bytes, out); }, copies, 200)); \
    }
    RUNB(4096, 4, 4, 128) RUNB(8192, 4, 2, 256) RUNB(8192, 3, 4, 128) RUNB(16384, 3, 2, 256) RUNB(2048, 8, 8, 128)
#define RUN(K, RPW, BLK)                                                                          \
    {                                                                                              \
      int warps = (sh.N + RPW - 1) / RPW, blocks = (warps * 32 + BLK - 1) / BLK;                   \
      rep(#K " rpw " #RPW " blk " #BLK, timeit([&](int c) { K<RPW><<<blocks, BLK>>>(w[c], sh.N, sh.R, out); }, copies, 200)); \
    }
    if (sh.R % STEP) continue;  // the row patterns step by whole 3584-byte steps
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
