// hf_config.h: Hugging Face Qwen2-Audio config.json <-> ModelConfig.
// Reads both transformers layouts: 4.4x (text_config.rope_theta, audio_token_index) and 5.x
// (text_config.rope_parameters {rope_type, rope_theta}, audio_token_id). Hub configs are sparse, so a
// missing field takes the class default (Qwen2AudioEncoderConfig for audio_config, Qwen2Config for
// text_config; an absent sub-config is the class default as a whole). Anything this project does not
// implement (sliding-window attention, rope scaling, an activation other than erf-GELU/SiLU, dropout) is
// rejected with an error naming the file and key. The writer emits a complete config.json that both
// transformers generations load, plus generation_config.json and preprocessor_config.json.
#pragma once
#include "model/model_config.h"
#include "util/check.h"

// Parses config.json text; `where` names the source in errors.
int hf_config_parse(const char *json_text, const char *where, ModelConfig *c, Err *e);
// Reads path (a config.json, or a directory holding one).
int hf_config_load(const char *path, ModelConfig *c, Err *e);
// Writes config.json content for c to path, atomically; torch_dtype is "bfloat16" or "float32" (the
// dtype the weights are stored in).
int hf_config_save(const char *path, const ModelConfig *c, const char *torch_dtype, Err *e);
// Writes generation_config.json (the model's sampling defaults and stop ids) and preprocessor_config.json
// (the WhisperFeatureExtractor settings) into dir, atomically.
int hf_aux_configs_save(const char *dir, const ModelConfig *c, Err *e);
