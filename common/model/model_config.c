#include "model/model_config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/check.h"

ModelConfig model_config_qwen2_audio_7b(void) {
    ModelConfig c = {
        .n_mels = 128, .a_dim = 1280, .a_layers = 32, .a_heads = 20, .a_ffn = 5120, .a_max_pos = 1500,
        .a_ln_eps = 1e-5f, .dim = 4096, .layers = 32, .heads = 32, .kv_heads = 32, .head_dim = 128,
        .ffn = 11008, .vocab = 156032, .max_pos = 8192, .rope_theta = 10000.0f, .rms_eps = 1e-5f,
        .tie_embeddings = 0, .audio_token_id = 151646, .bos_id = 151643, .eos_id = 151645,
        .init_std = 0.02f,
    };
    return c;
}

static int table_add(ParamTable *t, int cap, int trainable, int ndim, int64_t d0, int64_t d1, int64_t d2,
                     const char *fmt, ...) __attribute__((format(printf, 8, 9)));

static int table_add(ParamTable *t, int cap, int trainable, int ndim, int64_t d0, int64_t d1, int64_t d2,
                     const char *fmt, ...) {
    if (t->n >= cap) fatal("parameter table overflow (%d entries)", cap);
    ParamSpec *s = &t->specs[t->n];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->name, sizeof s->name, fmt, ap);
    va_end(ap);
    s->ndim = ndim;
    int64_t dims[PARAM_MAX_DIMS] = {d0, d1, d2};
    s->numel = 1;
    for (int i = 0; i < PARAM_MAX_DIMS; i++) {
        s->shape[i] = i < ndim ? dims[i] : 0;
        if (i < ndim) s->numel *= (size_t)dims[i];
    }
    s->offset = t->numel;
    s->trainable = trainable;
    t->numel += s->numel;
    return t->n++;
}

void param_table_build(ParamTable *t, const ModelConfig *c) {
    memset(t, 0, sizeof *t);
    int cap = 16 + 15 * c->a_layers + 12 * c->layers;
    t->specs = callocCheck((size_t)cap, sizeof(ParamSpec));
    t->alayer = callocCheck((size_t)c->a_layers, sizeof(AudioLayerParams));
    t->tlayer = callocCheck((size_t)c->layers, sizeof(TextLayerParams));
    const int64_t A = c->a_dim, F = c->a_ffn, D = c->dim, FF = c->ffn, V = c->vocab;
    const int64_t KV = (int64_t)c->kv_heads * c->head_dim, Q = (int64_t)c->heads * c->head_dim;

    t->conv1_w = table_add(t, cap, 1, 3, A, c->n_mels, 3, "audio_tower.conv1.weight");
    t->conv1_b = table_add(t, cap, 1, 1, A, 0, 0, "audio_tower.conv1.bias");
    t->conv2_w = table_add(t, cap, 1, 3, A, A, 3, "audio_tower.conv2.weight");
    t->conv2_b = table_add(t, cap, 1, 1, A, 0, 0, "audio_tower.conv2.bias");
    t->embed_pos = table_add(t, cap, 0, 2, c->a_max_pos, A, 0, "audio_tower.embed_positions.weight");
    for (int l = 0; l < c->a_layers; l++) {
        AudioLayerParams *p = &t->alayer[l];
        const char *pre = "audio_tower.layers";
        p->q_w = table_add(t, cap, 1, 2, A, A, 0, "%s.%d.self_attn.q_proj.weight", pre, l);
        p->q_b = table_add(t, cap, 1, 1, A, 0, 0, "%s.%d.self_attn.q_proj.bias", pre, l);
        p->k_w = table_add(t, cap, 1, 2, A, A, 0, "%s.%d.self_attn.k_proj.weight", pre, l);
        p->v_w = table_add(t, cap, 1, 2, A, A, 0, "%s.%d.self_attn.v_proj.weight", pre, l);
        p->v_b = table_add(t, cap, 1, 1, A, 0, 0, "%s.%d.self_attn.v_proj.bias", pre, l);
        p->o_w = table_add(t, cap, 1, 2, A, A, 0, "%s.%d.self_attn.out_proj.weight", pre, l);
        p->o_b = table_add(t, cap, 1, 1, A, 0, 0, "%s.%d.self_attn.out_proj.bias", pre, l);
        p->ln1_w = table_add(t, cap, 1, 1, A, 0, 0, "%s.%d.self_attn_layer_norm.weight", pre, l);
        p->ln1_b = table_add(t, cap, 1, 1, A, 0, 0, "%s.%d.self_attn_layer_norm.bias", pre, l);
        p->fc1_w = table_add(t, cap, 1, 2, F, A, 0, "%s.%d.fc1.weight", pre, l);
        p->fc1_b = table_add(t, cap, 1, 1, F, 0, 0, "%s.%d.fc1.bias", pre, l);
        p->fc2_w = table_add(t, cap, 1, 2, A, F, 0, "%s.%d.fc2.weight", pre, l);
        p->fc2_b = table_add(t, cap, 1, 1, A, 0, 0, "%s.%d.fc2.bias", pre, l);
        p->ln2_w = table_add(t, cap, 1, 1, A, 0, 0, "%s.%d.final_layer_norm.weight", pre, l);
        p->ln2_b = table_add(t, cap, 1, 1, A, 0, 0, "%s.%d.final_layer_norm.bias", pre, l);
    }
    t->a_norm_w = table_add(t, cap, 1, 1, A, 0, 0, "audio_tower.layer_norm.weight");
    t->a_norm_b = table_add(t, cap, 1, 1, A, 0, 0, "audio_tower.layer_norm.bias");
    t->proj_w = table_add(t, cap, 1, 2, D, A, 0, "multi_modal_projector.linear.weight");
    t->proj_b = table_add(t, cap, 1, 1, D, 0, 0, "multi_modal_projector.linear.bias");
    t->embed = table_add(t, cap, 1, 2, V, D, 0, "language_model.model.embed_tokens.weight");
    for (int l = 0; l < c->layers; l++) {
        TextLayerParams *p = &t->tlayer[l];
        const char *pre = "language_model.model.layers";
        // q/k/v weights adjacent, then their biases, and gate before up: each run is one stacked
        // matrix ([Q + 2 KV, D], [2 FF, D]) for a backend's fused inference GEMMs (ops.h)
        p->q_w = table_add(t, cap, 1, 2, Q, D, 0, "%s.%d.self_attn.q_proj.weight", pre, l);
        p->k_w = table_add(t, cap, 1, 2, KV, D, 0, "%s.%d.self_attn.k_proj.weight", pre, l);
        p->v_w = table_add(t, cap, 1, 2, KV, D, 0, "%s.%d.self_attn.v_proj.weight", pre, l);
        p->q_b = table_add(t, cap, 1, 1, Q, 0, 0, "%s.%d.self_attn.q_proj.bias", pre, l);
        p->k_b = table_add(t, cap, 1, 1, KV, 0, 0, "%s.%d.self_attn.k_proj.bias", pre, l);
        p->v_b = table_add(t, cap, 1, 1, KV, 0, 0, "%s.%d.self_attn.v_proj.bias", pre, l);
        p->o_w = table_add(t, cap, 1, 2, D, Q, 0, "%s.%d.self_attn.o_proj.weight", pre, l);
        p->gate_w = table_add(t, cap, 1, 2, FF, D, 0, "%s.%d.mlp.gate_proj.weight", pre, l);
        p->up_w = table_add(t, cap, 1, 2, FF, D, 0, "%s.%d.mlp.up_proj.weight", pre, l);
        p->down_w = table_add(t, cap, 1, 2, D, FF, 0, "%s.%d.mlp.down_proj.weight", pre, l);
        p->in_norm = table_add(t, cap, 1, 1, D, 0, 0, "%s.%d.input_layernorm.weight", pre, l);
        p->post_norm = table_add(t, cap, 1, 1, D, 0, 0, "%s.%d.post_attention_layernorm.weight", pre, l);
    }
    t->norm = table_add(t, cap, 1, 1, D, 0, 0, "language_model.model.norm.weight");
    t->lm_head = c->tie_embeddings ? t->embed
                                   : table_add(t, cap, 1, 2, V, D, 0, "language_model.lm_head.weight");
}

void param_table_free(ParamTable *t) {
    free(t->specs);
    free(t->alayer);
    free(t->tlayer);
    memset(t, 0, sizeof *t);
}

int param_find(const ParamTable *t, const char *name) {
    for (int i = 0; i < t->n; i++)
        if (strcmp(t->specs[i].name, name) == 0) return i;
    return -1;
}
