// ops_cuda.h: the CUDA backend of ops.h (bf16 Tensors, fp32 accumulation and statistics) and the few
// GPU-only helpers the rollout path and the benchmarks use. Only built with -Dcuda=enabled (AQA_CUDA).
// Every backward entry of the table is filled (attention_bwd by attention_bwd.cu), so model_backward
// trains on it; gradients are bf16 buffers into which each op adds its fp32-accumulated contribution.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "model/ops.h"

#ifdef __cplusplus
extern "C" {
#endif

// Number of visible CUDA devices: 0 when there is no GPU or no driver; any other CUDA error is fatal
// (a broken driver or device must not look like a machine without GPUs).
int ops_cuda_device_count(void);
// Makes device index % count current for this process (one GPU per rank: pass the node-local rank)
// and returns it; fatal when there is no device.
int ops_cuda_set_device(int index);
// The backend on the current device; fatal when no device is usable.
Ops *ops_cuda_create(void);
// Free and total bytes of the current device (cudaMemGetInfo).
void ops_cuda_mem_info(size_t *free_bytes, size_t *total_bytes);
// Bytes of device memory the backend allocated at its high-water mark (cudaMalloc'ed, workspaces included).
size_t ops_cuda_peak_bytes(const Ops *o);
// The backend's stream (a cudaStream_t): every op runs on it in order, so other streams (NCCL) order
// their work against it with events.
void *ops_cuda_stream(const Ops *o);
// Fills x[n] on the device: normal(0, std) from a Philox stream keyed by (seed, key), or the constant
// `value` when std == 0 (random 7B weights without a 28 GB host copy).
void ops_cuda_fill(Ops *o, Tensor *x, size_t n, float std, float value, uint64_t seed, uint64_t key);

#ifdef __cplusplus
}
#endif
