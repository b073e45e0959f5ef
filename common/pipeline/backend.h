// backend.h: the compute backend a config names (model.backend, rollout.backend, aqa-eval's --backend)
// as an Ops table. The one place that knows which backends this build has and which GPU a rank takes, so
// the roles and aqa-eval hold no #ifdef AQA_CUDA. One GPU per rank: a rank's GPU is its index among its
// node's GPU ranks (comm_node_gpu_index: the node's learners first when they run on GPUs, then the
// rollouts; train.placement=colocated: rollout k on learner k's GPU), wrapped by the visible device count (launch/gpu-bind.sh makes that one device).
#pragma once
#include "comm/comm.h"
#include "config/config.h"
#include "model/ops.h"
#include "util/check.h"

// 0 when b can run here; -1 with Err naming `key` (the config key or option that chose b) when this is a
// CPU-only build or no CUDA device is visible.
int backend_check(CfgBackend b, const char *key, Err *e);
// The Ops of b on the current device (one process, one GPU: aqa-eval); NULL with Err as backend_check.
Ops *backend_create(CfgBackend b, const char *key, Err *e);
// The Ops of b for this rank of the MPI job: for CUDA on the rank's GPU of its node, made current for the
// process (logged); NULL with Err as backend_check.
Ops *backend_create_rank(const Comm *c, const Config *cfg, CfgBackend b, const char *key, Err *e);
// The backend's stream (a cudaStream_t) that work of other libraries (NCCL) is ordered against; NULL on
// the CPU, whose ops are done when they return.
void *backend_stream(const Ops *o);
// Free and total bytes of the GPU of o (the current device): 0; -1 for the CPU backend.
int backend_gpu_memory(const Ops *o, double *free_bytes, double *total_bytes);
