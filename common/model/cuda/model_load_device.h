// model_load_device.h: a Hugging Face model directory loaded straight into a backend's memory. Unlike
// model_load_dir (one fp32 host copy of every parameter, then model_init), a bf16 checkpoint reaches a
// bf16 backend (CUDA) as raw bytes from the file mapping, so a 7B model never exists in fp32 anywhere;
// other dtypes are converted through one tensor-sized fp32 host buffer. Plain C: works with any backend.
#pragma once
#include "model/model.h"

// Reads dir/config.json into m->cfg, builds m->t, allocates m->params on o and fills it; the same
// checks as model_load_dir (missing, unexpected and mis-shaped tensors are errors naming the tensor
// and file). model_free releases the result.
int model_load_device(Model *m, const char *dir, Ops *o, Err *e);
