/* hip_on_cuda.h: a small HIP-to-CUDA compatibility header, so that the HIP C++ that
 * qkc generates (and host code written against the HIP runtime API) compiles with
 * nvcc and runs on NVIDIA GPUs. Part of qkc (codegen/src/hip/hip_on_cuda.h).
 *
 *   nvcc -arch=sm_90 -x cu -include hip_on_cuda.h -I<dir with hip/hip_runtime.h shims> ...
 *
 * where hip/hip_runtime.h and hip/hip_runtime_api.h are one-line files including this
 * header. It maps only what qkc's output and test harness use:
 *   - runtime API: hipMalloc/hipFree/hipMemcpy/hipMemset/hipDeviceSynchronize,
 *     errors, streams, events, device properties, hipLaunchKernelGGL;
 *   - device code: __shfl_xor(v, lane_mask, width) -> __shfl_xor_sync over the full
 *     warp, __builtin_amdgcn_sdot4 / __builtin_amdgcn_sudot4 -> __dp4a.
 * The generated code's f16 conversions use _Float16 only when __HIP_DEVICE_COMPILE__ is
 * defined (clang's AMD device pass), which nvcc never defines: here they take the
 * portable bit-arithmetic path.
 */
#ifndef QKC_HIP_ON_CUDA_H
#define QKC_HIP_ON_CUDA_H

#include <cuda_runtime.h>

/* ---- runtime API ---- */
typedef cudaError_t hipError_t;
typedef cudaStream_t hipStream_t;
typedef cudaEvent_t hipEvent_t;
typedef cudaDeviceProp hipDeviceProp_t;

#define hipSuccess cudaSuccess
#define hipErrorInvalidValue cudaErrorInvalidValue
#define hipGetLastError cudaGetLastError
#define hipPeekAtLastError cudaPeekAtLastError
#define hipGetErrorString cudaGetErrorString
#define hipGetErrorName cudaGetErrorName
#define hipMalloc cudaMalloc
#define hipFree cudaFree
#define hipMemcpy cudaMemcpy
#define hipMemcpyAsync cudaMemcpyAsync
#define hipMemset cudaMemset
#define hipMemcpyHostToDevice cudaMemcpyHostToDevice
#define hipMemcpyDeviceToHost cudaMemcpyDeviceToHost
#define hipMemcpyDeviceToDevice cudaMemcpyDeviceToDevice
#define hipDeviceSynchronize cudaDeviceSynchronize
#define hipStreamSynchronize cudaStreamSynchronize
#define hipGetDevice cudaGetDevice
#define hipSetDevice cudaSetDevice
#define hipGetDeviceProperties cudaGetDeviceProperties
#define hipEventCreate cudaEventCreate
#define hipEventDestroy cudaEventDestroy
#define hipEventRecord cudaEventRecord
#define hipEventSynchronize cudaEventSynchronize
#define hipEventElapsedTime cudaEventElapsedTime

/* hipLaunchKernelGGL(kernel, grid, block, shared_bytes, stream, args...) */
#define hipLaunchKernelGGL(kernel, grid, block, shmem, stream, ...) \
    kernel<<<(grid), (block), (shmem), (stream)>>>(__VA_ARGS__)

/* ---- device code ---- */
#ifdef __CUDACC__

/* HIP's __shfl_xor has no mask argument: every lane of the warp takes part. */
template <typename T>
__device__ __forceinline__ T qkc_hip_shfl_xor(T v, int lane_mask, int width = 32)
{
    return __shfl_xor_sync(0xffffffffu, v, lane_mask, width);
}
#define __shfl_xor qkc_hip_shfl_xor

/* v_dot4_i32_i8 -> dp4a. The clamp (saturation) flag is not supported; qkc passes false. */
__device__ __forceinline__ int qkc_hip_sdot4(int a, int b, int c, bool clamp)
{
    (void)clamp;
    return __dp4a(a, b, c);
}
#define __builtin_amdgcn_sdot4(a, b, c, clamp) qkc_hip_sdot4((a), (b), (c), (clamp))

/* gfx11 v_dot4_i32_iu8: per-operand signedness. */
__device__ __forceinline__ int qkc_hip_sudot4(bool a_signed, int a, bool b_signed, int b, int c, bool clamp)
{
    (void)clamp;
    if (a_signed && b_signed) return __dp4a(a, b, c);
    if (!a_signed && !b_signed) return (int)__dp4a((unsigned)a, (unsigned)b, (unsigned)c);
    int s = c;
    for (int i = 0; i < 4; ++i) {
        const int x = a_signed ? (int)(signed char)(a >> (8 * i)) : (int)((unsigned)a >> (8 * i) & 0xffu);
        const int y = b_signed ? (int)(signed char)(b >> (8 * i)) : (int)((unsigned)b >> (8 * i) & 0xffu);
        s += x * y;
    }
    return s;
}
#define __builtin_amdgcn_sudot4(as, a, bs, b, c, clamp) qkc_hip_sudot4((as), (a), (bs), (b), (c), (clamp))

#endif /* __CUDACC__ */

#endif /* QKC_HIP_ON_CUDA_H */
