// param_init.h: random initialisation of a fresh model, as transformers initialises Qwen2-Audio:
// Linear, Conv1d and Embedding weights (embed_positions included: Qwen2Audio's _init_weights treats it
// as a plain nn.Embedding, not Whisper's sinusoids) ~ normal(0, init_std); biases 0; LayerNorm weight 1,
// bias 0; RMSNorm weight 1. Each tensor draws from its own Philox stream keyed by (seed, hash of its
// name), so a value depends only on the seed, the tensor name and its index, never on tensor order.
#pragma once
#include <stdint.h>

#include "model/model_config.h"

void param_init_random(const ModelConfig *c, const ParamTable *t, float *params, uint64_t seed);
