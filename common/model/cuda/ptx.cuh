// ptx.cuh: the inline-PTX wrappers of the tensor-core attention kernels (flash_fwd.cu, attention_bwd.cu),
// sm_80+: cp.async copies, ldmatrix, mma.sync m16n8k16 bf16 -> fp32, bf16 packing, ex2 and vector
// reductions.
//
// Fragment plumbing (PTX ISA, warp-level mma m16n8k16 .bf16): g = lane / 4, c = lane % 4.
// A 16x16 row-major: a0 (g, 2c..2c+1), a1 (g + 8, 2c..), a2 (g, 2c + 8..), a3 (g + 8, 2c + 8..);
// B 16x8 "col": b0 (k 2c..2c+1, n g), b1 (k 2c + 8.., n g); C 16x8 fp32: c0, c1 (g, 2c..2c+1), c2, c3 (g + 8, ..).
// ldmatrix x4: lane l gives the address of row l % 8 of matrix l / 8, and register i of lane t gets matrix
// i's (row t / 4, columns 2 (t % 4) + {0, 1}); with .trans, (rows 2 (t % 4) + {0, 1}, column t / 4).
#pragma once
#include <cuda_bf16.h>

// 16 bytes global -> shared, asynchronous (the caller commits and waits).
static __device__ __forceinline__ void ptx_cp16(void *dst, const void *src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"((unsigned)__cvta_generic_to_shared(dst)),
                 "l"(src)
                 : "memory");
}
// As ptx_cp16; ok == 0 writes zeros (src is not read).
static __device__ __forceinline__ void ptx_cp16_zfill(void *dst, const void *src, int ok) {
    const unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(ok ? 16 : 0));
}
// 4 bytes global -> shared, asynchronous.
static __device__ __forceinline__ void ptx_cp4(void *dst, const void *src) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"((unsigned)__cvta_generic_to_shared(dst)),
                 "l"(src)
                 : "memory");
}
static __device__ __forceinline__ void ptx_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
// Waits until at most N committed groups are still in flight.
template <int N>
static __device__ __forceinline__ void ptx_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Four 8x8 b16 matrices from shared memory (see above), plain and transposed.
static __device__ __forceinline__ void ptx_ldm4(unsigned r[4], const __nv_bfloat16 *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"((unsigned)__cvta_generic_to_shared(p)));
}
static __device__ __forceinline__ void ptx_ldm4t(unsigned r[4], const __nv_bfloat16 *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"((unsigned)__cvta_generic_to_shared(p)));
}

// c[16x8] += a[16x16] b[16x8], fp32 accumulation.
static __device__ __forceinline__ void ptx_mma(float c[4], const unsigned a[4], unsigned b0, unsigned b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// bf16 pair, lo in the low half (the lower address: the lower column of an mma operand pair).
static __device__ __forceinline__ unsigned ptx_pack(float lo, float hi) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *(const unsigned *)&h;
}

// 2^x by ex2.approx (2^-inf = 0); its ~2^-22 relative error is far below the bf16 rounding of P.
static __device__ __forceinline__ float ptx_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

// *p += (a, b) / (a, b, c, d) as one fire-and-forget reduction (no value comes back, unlike atomicAdd).
static __device__ __forceinline__ void ptx_red_add2(float *p, float a, float b) {
    asm volatile("red.global.add.v2.f32 [%0], {%1, %2};\n" ::"l"(p), "f"(a), "f"(b) : "memory");
}
static __device__ __forceinline__ void ptx_red_add4(float *p, float a, float b, float c, float d) {
    asm volatile("red.global.add.v4.f32 [%0], {%1, %2, %3, %4};\n" ::"l"(p), "f"(a), "f"(b), "f"(c), "f"(d)
                 : "memory");
}
