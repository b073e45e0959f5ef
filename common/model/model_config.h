// model_config.h: the shape of a Qwen2-Audio model (audio encoder, projector, Qwen2 decoder) and the
// parameter table: every checkpoint tensor's Hugging Face name, shape and offset in ONE flat buffer.
// Parameters, gradients and optimizer moments are each one allocation of table.numel elements carved by
// these offsets, so zeroing, sharding, all-reduce and checkpoint I/O are single-buffer operations.
#pragma once
#include <stddef.h>
#include <stdint.h>

typedef struct {
    // audio encoder (Whisper style)
    int n_mels;         // 128
    int a_dim;          // d_model, 1280
    int a_layers;       // 32
    int a_heads;        // 20 (head_dim = a_dim / a_heads)
    int a_ffn;          // 5120
    int a_max_pos;      // max_source_positions, 1500 (input frames = 2 * a_max_pos)
    float a_ln_eps;     // 1e-5
    // text decoder (Qwen2)
    int dim;            // hidden_size, 4096
    int layers;         // 32
    int heads;          // 32
    int kv_heads;       // 32 (GQA when < heads)
    int head_dim;       // dim / heads, 128
    int ffn;            // intermediate_size, 11008
    int vocab;          // 156032
    int max_pos;        // max_position_embeddings, 8192
    float rope_theta;   // 10000
    float rms_eps;      // 1e-5
    int tie_embeddings; // 0: separate lm_head
    // special ids
    int audio_token_id; // 151646
    int bos_id;         // 151643
    int eos_id;         // 151645
    // random initialisation only (config.json initializer_range)
    float init_std;     // 0.02
} ModelConfig;

// The exact Qwen2-Audio-7B-Instruct shape.
ModelConfig model_config_qwen2_audio_7b(void);

enum { PARAM_MAX_DIMS = 3 };

typedef struct {
    char name[96];                  // Hugging Face checkpoint name
    int ndim;
    int64_t shape[PARAM_MAX_DIMS];  // row-major; Linear [out, in], Conv1d [out, in, k]
    size_t offset;                  // in elements, into the flat buffer
    size_t numel;
    int trainable;                  // 0 for audio_tower.embed_positions (frozen, as in HF)
} ParamSpec;

typedef struct {
    int ln1_w, ln1_b, q_w, q_b, k_w, v_w, v_b, o_w, o_b, ln2_w, ln2_b, fc1_w, fc1_b, fc2_w, fc2_b;
} AudioLayerParams;

typedef struct {
    int in_norm, q_w, q_b, k_w, k_b, v_w, v_b, o_w, post_norm, gate_w, up_w, down_w;
} TextLayerParams;

// Indices (into specs) of every tensor, by role.
typedef struct {
    ParamSpec *specs;
    int n;
    size_t numel;  // total elements
    int conv1_w, conv1_b, conv2_w, conv2_b, embed_pos, a_norm_w, a_norm_b;
    AudioLayerParams *alayer;  // [a_layers]
    int proj_w, proj_b;
    int embed, norm, lm_head;  // lm_head == embed when tied
    TextLayerParams *tlayer;   // [layers]
} ParamTable;

void param_table_build(ParamTable *t, const ModelConfig *c);
void param_table_free(ParamTable *t);
// Index of the tensor with this name, or -1.
int param_find(const ParamTable *t, const char *name);
