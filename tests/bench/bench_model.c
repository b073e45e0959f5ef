// bench_model: CPU throughput of a model config (default configs/model-tiny.json: audio d_model 64 and
// text hidden 64, 2 layers each, the real 151680-row vocabulary, 3000 mel frames), random weights: the
// training forward and backward of one GRPO group (prompt with 108 audio tokens, G = 8 completions of 32
// tokens, shared prefix) and KV-cache generation of 8 samples over a shared prompt. Prints tokens/s.
// Usage: bench_model [config.json]
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model/generate.h"
#include "model/hf_config.h"
#include "model/model.h"
#include "model/param_init.h"
#include "util/rng.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : "configs/model-tiny.json";
    ModelConfig c;
    Err e;
    if (hf_config_load(path, &c, &e)) fatal("%s", e.msg);
    ParamTable t;
    param_table_build(&t, &c);
    float *p = mallocCheck(t.numel * sizeof(float));
    param_init_random(&c, &t, p, 1);
    Rng r;
    rng_init(&r, 1, 0);
    Ops *o = ops_cpu_create();
    Model m;
    model_init(&m, &c, o, p);
    const int F = 2 * c.a_max_pos, valid = 434, n_audio = 108, G = 8, L = 32;
    float *feat = mallocCheck((size_t)c.n_mels * F * sizeof(float));
    for (size_t i = 0; i < (size_t)c.n_mels * F; i++) feat[i] = (float)rng_normal(&r);
    int prompt[128], P = 0;
    prompt[P++] = 1;
    for (int i = 0; i < n_audio; i++) prompt[P++] = c.audio_token_id;
    for (int i = 0; i < 12; i++) prompt[P++] = 100 + i;
    int comp_ids[8][32], lens[8];
    const int *comp[8];
    for (int g = 0; g < G; g++) {
        for (int j = 0; j < L; j++) comp_ids[g][j] = (int)rng_below(&r, 1000) + 100;
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
    const int reps = 3;
    double tf = 0, tb = 0;
    for (int i = 0; i < reps; i++) {
        double t0 = now();
        if (model_forward(&m, &b, a, lp, &e)) fatal("%s", e.msg);
        double t1 = now();
        model_backward(&m, &b, a, dlp, grads);
        tb += now() - t1;
        tf += t1 - t0;
    }
    printf("bench_model (CPU, %s: %zu params, vocab %d, activations %.1f MB)\n", path, t.numel, c.vocab,
           model_acts_bytes(a) / 1e6);
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
