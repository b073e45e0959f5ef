// cuda_check.h: the check macros of every CUDA runtime and cuBLAS call, for C and CUDA C++ alike. A failed
// call ends the process with its text, the library's message and file:line (fatal_at). NCCL calls have
// NCCL_CHECK in comm/nccl.h, of the same shape, which also aborts the MPI job.
#pragma once
#include <cuda_runtime.h>

#ifdef __cplusplus
extern "C" {
#endif

void cuda_check_at(const char *file, int line, cudaError_t rc, const char *what);
void blas_check_at(const char *file, int line, int status, const char *what);

#ifdef __cplusplus
}
#endif

#define CUDA_CHECK(call) cuda_check_at(__FILE__, __LINE__, (call), #call)
#define BLAS_CHECK(call) blas_check_at(__FILE__, __LINE__, (int)(call), #call)
