#include "model/param_init.h"

#include <string.h>

#include "util/rng.h"

static uint64_t name_hash(const char *s) {
    uint64_t h = 1469598103934665603ull;  // FNV-1a
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

void param_init_random(const ModelConfig *c, const ParamTable *t, float *params, uint64_t seed) {
    // Every tensor draws from its own stream (seed, name), so tensors fill in parallel with the same
    // bits as in order: a 7B model is 8.4e9 draws, minutes on one core.
#pragma omp parallel for schedule(dynamic, 1)
    for (int i = 0; i < t->n; i++) {
        const ParamSpec *s = &t->specs[i];
        float *w = params + s->offset;  // [numel]
        // Every norm (LayerNorm, RMSNorm) has "norm" in its name; no Linear/Conv/Embedding does.
        int is_norm = strstr(s->name, "norm") != NULL;
        if (ends_with(s->name, ".bias")) {
            memset(w, 0, s->numel * sizeof(float));
        } else if (is_norm) {
            for (size_t j = 0; j < s->numel; j++) w[j] = 1.0f;
        } else {
            Rng r;
            rng_init(&r, seed, name_hash(s->name));
            for (size_t j = 0; j < s->numel; j++) w[j] = (float)(rng_normal(&r) * c->init_std);
        }
    }
}
