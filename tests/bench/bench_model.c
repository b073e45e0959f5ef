// bench_model: CPU throughput of the model on the tiny parity shape (audio d_model 32, 2 layers; text
// hidden 32, 2 layers, 4 heads / 2 kv heads, vocab 512; 3000 mel frames): the training forward and
// backward of one GRPO group (prompt with 108 audio tokens, G = 8 completions of 32 tokens, shared prefix)
// and KV-cache decoding of 8 samples over a shared prompt. Prints tokens per second.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model/generate.h"
#include "model/model.h"
#include "util/rng.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static ModelConfig bench_config(void) {
    ModelConfig c = {
        .n_mels = 128,
        .a_dim = 32,
        .a_layers = 2,
        .a_heads = 4,
        .a_ffn = 64,
        .a_max_pos = 1500,
        .a_ln_eps = 1e-5f,
        .dim = 32,
        .layers = 2,
        .heads = 4,
        .kv_heads = 2,
        .head_dim = 8,
        .ffn = 64,
        .vocab = 512,
        .max_pos = 512,
        .rope_theta = 10000.0f,
        .rms_eps = 1e-6f,
        .audio_token_id = 500,
        .bos_id = 1,
        .eos_id = 2,
    };
    return c;
}

int main(void) {
    ModelConfig c = bench_config();
    ParamTable t;
    param_table_build(&t, &c);
    float *p = mallocCheck(t.numel * sizeof(float));
    Rng r;
    rng_init(&r, 1, 0);
    for (size_t i = 0; i < t.numel; i++) p[i] = (float)rng_normal(&r) * 0.2f;
    Ops *o = ops_cpu_create();
    Model m;
    model_init(&m, &c, o, p);
    const int F = 2 * c.a_max_pos, valid = 434, n_audio = 108, G = 8, L = 32;
    float *feat = mallocCheck((size_t)c.n_mels * F * sizeof(float));
    for (size_t i = 0; i < (size_t)c.n_mels * F; i++) feat[i] = (float)rng_normal(&r);
    int prompt[128], P = 0;
    prompt[P++] = 1;
    for (int i = 0; i < n_audio; i++) prompt[P++] = c.audio_token_id;
    for (int i = 0; i < 12; i++) prompt[P++] = 10 + i;
    int comp_ids[8][32], lens[8];
    const int *comp[8];
    for (int g = 0; g < G; g++) {
        for (int j = 0; j < L; j++) comp_ids[g][j] = (int)rng_below(&r, 400) + 3;
        comp[g] = comp_ids[g], lens[g] = L;
    }
    ModelBatch b;
    mbatch_init(&b, &c);
    mbatch_add_group(&b, prompt, P, comp, lens, G, 1, NULL);
    mbatch_add_audio(&b, feat, valid);
    ModelActs *a = model_acts_create(&m, b.n_tokens, 1, b.n_tgt, 1);
    float *lp = mallocCheck(b.n_tgt * sizeof(float)), *dlp = mallocCheck(b.n_tgt * sizeof(float));
    for (int i = 0; i < b.n_tgt; i++) dlp[i] = 1.0f / b.n_tgt;
    float *grads = o->alloc(o, t.numel * sizeof(float));
    Err e;
    const int reps = 5;
    double tf = 0, tb = 0;
    for (int i = 0; i < reps; i++) {
        double t0 = now();
        if (model_forward(&m, &b, a, lp, &e)) fatal("%s", e.msg);
        double t1 = now();
        model_backward(&m, &b, a, dlp, grads);
        tb += now() - t1;
        tf += t1 - t0;
    }
    printf("bench_model (CPU, tiny shape, %zu params, activations %.1f MB)\n", t.numel, model_acts_bytes(a) / 1e6);
    printf("  group forward : %d tokens (prompt %d + %d x %d) + 1 clip: %.2f ms, %.0f tokens/s\n", b.n_tokens, P,
           G, L, tf / reps * 1e3, b.n_tokens * reps / tf);
    printf("  group backward: %.2f ms, %.0f tokens/s\n", tb / reps * 1e3, b.n_tokens * reps / tb);

    GenPrompt q = {prompt, P, feat, valid, 0};
    SamplerParams sp = sampler_defaults(c.eos_id, 64, 5);
    sp.n_eos = 0;  // run every sample to max_new_tokens
    sp.n_suppress = 1;
    sp.suppress[0] = c.audio_token_id;
    GenResult res;
    gen_result_init(&res, G, 64);
    double t0 = now();
    if (model_generate(&m, &q, 1, G, &sp, &res, &e)) fatal("%s", e.msg);
    double tg = now() - t0;
    printf("  generate      : prefill %d + %d samples x 64 new tokens: %.2f ms, %.0f new tokens/s\n", P, G,
           tg * 1e3, G * 64 / tg);
    gen_result_free(&res);
    o->free(o, grads);
    free(lp), free(dlp), free(feat), free(p);
    model_acts_free(&m, a);
    mbatch_free(&b);
    model_free(&m);
    ops_destroy(o);
    param_table_free(&t);
    return 0;
}
