// optim_cuda.h: the optimizer step of optim.h on the GPU, for one ZeRO-1 shard (CUDA builds only). The
// gradient arrives as the bf16 SUM over L learners (reduce-scatter output); the kernels divide by L,
// clip and apply AdamW with exactly optim.c's fp32 operations in the same order (no fused multiply-add),
// so a shard's update equals adamw_step on the CPU for the same inputs. The squared norm is reduced in a
// fixed order (per-block partial sums, then one block), so it is the same number on every run.
#pragma once
#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

#include "optim.h"

#ifdef __cplusplus
extern "C" {
#endif

// Partial sums the reduction needs (doubles of device scratch).
enum { OPTIM_CUDA_PARTIALS = 1024 };

// *out (device double) = sum over i < n of ((float)g[i] * inv_l)^2, accumulated in double; g bf16 [n].
// scratch: OPTIM_CUDA_PARTIALS device doubles.
void optim_cuda_sumsq(const void *g, size_t n, float inv_l, double *scratch, double *out, cudaStream_t stream);

// One AdamW step with the scalars s (adamw_scalars) on the shard: the gradient is
// ((float)g * inv_l) * clip (clip = optim_clip_scale, 1 = none), then master [n], m [n], v [n] as
// adamw_step, and params_bf16 [n] = bf16(master) for the all-gather.
void optim_cuda_adamw(const AdamWScalars *s, float *master, float *m, float *v, const void *g, float inv_l,
                      double clip, void *params_bf16, size_t n, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
