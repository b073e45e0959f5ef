// Tests of learner/optim: three AdamW steps worked out by hand, gradient-norm clipping, the three
// learning-rate schedules at their boundaries, config checks, and the offloaded optimizer's bf16 piece
// (adamw_step_bf16) against adamw_step bit for bit.
#include "model/safetensors.h"
#include "optim.h"
#include "test.h"
#include "util/rng.h"

// lr 0.1, betas (0.9, 0.999), eps 1e-8, weight decay 0.1 (decoupled: p *= 1 - 0.1 * 0.1 = 0.99 first).
// Parameters [1, -2, 0.5]; gradients per step: element 0: 1, -1, 2; element 1: -0.5 always; element 2: 0.
// Element 0:
//  t=1: m = 0.1, v = 0.001; m_hat = 0.1 / (1 - 0.9) = 1, v_hat = 0.001 / (1 - 0.999) = 1
//       -> update 1 / (1 + 1e-8) ~ 1: p = 1 * 0.99 - 0.1 = 0.89
//  t=2: m = 0.09 - 0.1 = -0.01, m_hat = -0.01 / 0.19 = -0.0526315789;
//       v = 0.000999 + 0.001 = 0.001999, v_hat = 0.001999 / 0.001999 = 1
//       -> p = 0.89 * 0.99 + 0.1 * 0.0526315789 = 0.8811 + 0.0052631579 = 0.8863631579
//  t=3: m = -0.009 + 0.2 = 0.191, m_hat = 0.191 / 0.271 = 0.7047970480;
//       v = 0.001997001 + 0.004 = 0.005997001, v_hat = 0.005997001 / 0.002997001 = 2.0010006670,
//       sqrt = 1.4145673073 -> update 0.4982421439
//       -> p = 0.8863631579 * 0.99 - 0.0498242144 = 0.8774995263 - 0.0498242144 = 0.8276753119
// Element 1 (constant gradient): m_hat = g and v_hat = g^2 every step, update = g / |g| = -1:
//  p = -2 * 0.99 + 0.1 = -1.88; -1.88 * 0.99 + 0.1 = -1.7612; -1.7612 * 0.99 + 0.1 = -1.643588
// Element 2 (zero gradient): only the decay: 0.5 * 0.99^3 = 0.4851495
static void test_adamw_three_steps(void) {
    AdamWConfig cfg = {.beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.1};
    AdamW opt;
    adamw_init(&opt, 3);
    float p[3] = {1, -2, 0.5f};
    const float g[3][3] = {{1, -0.5f, 0}, {-1, -0.5f, 0}, {2, -0.5f, 0}};
    const double want[3][3] = {{0.89, -1.88, 0.495}, {0.8863631579, -1.7612, 0.49005},
                               {0.8276753119, -1.643588, 0.4851495}};
    for (int t = 0; t < 3; t++) {
        adamw_step(&opt, &cfg, 0.1, p, g[t]);
        for (int i = 0; i < 3; i++)
            CHECKF(fabs(p[i] - want[t][i]) < 1e-6, "step %d element %d: %.9f, want %.9f", t + 1, i, p[i], want[t][i]);
    }
    CHECK_INT(opt.step, 3);
    CHECK_NEAR(opt.m[0], 0.191, 1e-7);
    CHECK_NEAR(opt.v[0], 0.005997001, 1e-9);
    adamw_free(&opt);
    CHECK(opt.m == NULL && opt.n == 0);
}

static void test_adamw_defaults(void) {
    // R1-AQA: no weight decay. One step with lr 1e-6 moves every parameter by lr * sign(g).
    AdamWConfig cfg = adamw_config_default();
    CHECK_NEAR(cfg.beta1, 0.9, 0);
    CHECK_NEAR(cfg.beta2, 0.999, 0);
    CHECK_NEAR(cfg.weight_decay, 0, 0);
    AdamW opt;
    adamw_init(&opt, 2);
    float p[2] = {0.25f, 0.25f};
    const float g[2] = {3e-3f, -7.0f};
    adamw_step(&opt, &cfg, 1e-6, p, g);
    CHECK_NEAR(p[0], 0.25 - 1e-6, 3e-8);  // float spacing at 0.25 is 3e-8
    CHECK_NEAR(p[1], 0.25 + 1e-6, 3e-8);
    adamw_free(&opt);
}

// adamw_step_bf16 (optim.offload=host) against the CPU reference on random data: the gradient is a bf16
// sum over 2 learners, scaled by 1/2 and clipped (clip < 1) or not, 3 updates with weight decay so the
// moments and the decay matter; n above the OpenMP threshold and odd (uneven thread chunks). master, m,
// v and the bf16 output must equal adamw_step's bits, NaN/Inf included in the comparison (memcmp).
static void test_adamw_bf16_bit_exact(void) {
    const size_t n = 100003;
    AdamWConfig cfg = {.beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.01};
    AdamW ref;
    adamw_init(&ref, n);
    float *p = mallocCheck(n * sizeof(float)), *g = mallocCheck(n * sizeof(float));
    float *master = mallocCheck(n * sizeof(float)), *m = callocCheck(n, sizeof(float));
    float *v = callocCheck(n, sizeof(float));
    uint16_t *gsum = mallocCheck(n * 2), *out = mallocCheck(n * 2);
    Rng rng;
    rng_init(&rng, 7, 0);
    for (size_t i = 0; i < n; i++) p[i] = master[i] = (float)rng_normal(&rng);
    const double clips[3] = {1.0, 0.3, 1.0};
    size_t differ = 0;
    for (int t = 0; t < 3; t++) {
        for (size_t i = 0; i < n; i++) gsum[i] = st_f32_to_bf16((float)rng_normal(&rng) * 0.02f);
        // the reference as trainer_update: the fp32 gradient, scaled by 1/L, then clipped when it applies
        for (size_t i = 0; i < n; i++) g[i] = st_bf16_to_f32(gsum[i]);
        optim_scale(g, n, 0.5);
        if (clips[t] < 1) optim_scale(g, n, clips[t]);
        adamw_step(&ref, &cfg, 1e-3, p, g);
        AdamWScalars s = adamw_scalars(&cfg, 1e-3, t + 1);
        adamw_step_bf16(&s, master, m, v, gsum, 0.5f, clips[t], out, n);
        for (size_t i = 0; i < n; i++) differ += out[i] != st_f32_to_bf16(p[i]);
    }
    CHECK(memcmp(master, p, n * sizeof(float)) == 0);
    CHECK(memcmp(m, ref.m, n * sizeof(float)) == 0);
    CHECK(memcmp(v, ref.v, n * sizeof(float)) == 0);
    CHECKF(differ == 0, "%zu bf16 outputs differ", differ);
    size_t bad = 0;  // the reference is finite: memcmp compared real numbers, not two NaN patterns
    for (size_t i = 0; i < n; i++) bad += !isfinite(p[i]);
    CHECK(bad == 0);
    free(p), free(g), free(master), free(m), free(v), free(gsum), free(out);
    adamw_free(&ref);
}

static void test_clip(void) {
    // [3, 4]: norm 5. max_norm 1 -> scale 1 / (5 + 1e-6) = 0.19999996: [0.59999988, 0.79999984].
    float g[2] = {3, 4};
    CHECK_NEAR(optim_sumsq(g, 2), 25, 0);
    double norm = optim_clip_grad_norm(g, 2, 1.0);
    CHECK_NEAR(norm, 5, 1e-12);
    CHECK_NEAR(g[0], 0.59999988, 1e-7);
    CHECK_NEAR(g[1], 0.79999984, 1e-7);
    // Below the threshold nothing changes (scale would be 10 / 5 = 2, clamped to 1).
    float h[2] = {3, 4};
    CHECK_NEAR(optim_clip_grad_norm(h, 2, 10.0), 5, 1e-12);
    CHECK(h[0] == 3 && h[1] == 4);
    CHECK_NEAR(optim_clip_scale(5, 10), 1.0, 0);
    CHECK_NEAR(optim_clip_scale(2, 1), 1 / (2 + 1e-6), 1e-15);
    // A non-finite norm is reported and leaves the gradient as it is.
    float bad[2] = {INFINITY, 1};
    CHECK(isinf(optim_clip_grad_norm(bad, 2, 1.0)));
    CHECK(bad[1] == 1);
    float s[3] = {1, -2, 4};
    optim_scale(s, 3, 0.5);
    CHECK(s[0] == 0.5f && s[1] == -1 && s[2] == 2);
}

static void test_lr_linear(void) {
    // R1-AQA: 1e-6, linear to 0 over 1000 steps, no warm-up: lr(s) = 1e-6 * (1000 - s) / 1000.
    LrConfig c = {.kind = CFG_SCHEDULE_LINEAR, .lr = 1e-6, .warmup_steps = 0, .max_steps = 1000};
    CHECK_NEAR(lr_at(&c, 0), 1e-6, 0);
    CHECK_NEAR(lr_at(&c, 500), 5e-7, 1e-20);
    CHECK_NEAR(lr_at(&c, 999), 1e-9, 1e-20);
    CHECK_NEAR(lr_at(&c, 1000), 0, 0);
    CHECK_NEAR(lr_at(&c, 1200), 0, 0);
    // Warm-up 10 of 110: s / 10 below 10 (0 at the first step), then (110 - s) / 100.
    c = (LrConfig){.kind = CFG_SCHEDULE_LINEAR, .lr = 2.0, .warmup_steps = 10, .max_steps = 110};
    CHECK_NEAR(lr_at(&c, 0), 0, 0);
    CHECK_NEAR(lr_at(&c, 5), 1.0, 1e-15);
    CHECK_NEAR(lr_at(&c, 10), 2.0, 1e-15);
    CHECK_NEAR(lr_at(&c, 60), 1.0, 1e-15);
    CHECK_NEAR(lr_at(&c, 110), 0, 0);
}

static void test_lr_cosine_constant(void) {
    // Cosine, warm-up 10 of 110, half a wave: 0.5 * (1 + cos(pi * progress)), progress = (s - 10) / 100.
    LrConfig c = {.kind = CFG_SCHEDULE_COSINE, .lr = 2.0, .warmup_steps = 10, .max_steps = 110, .num_cycles = 0.5};
    CHECK_NEAR(lr_at(&c, 5), 1.0, 1e-15);
    CHECK_NEAR(lr_at(&c, 10), 2.0, 1e-15);
    CHECK_NEAR(lr_at(&c, 35), 2.0 * 0.8535533906, 1e-9);  // progress 1/4: 0.5 * (1 + cos(pi/4))
    CHECK_NEAR(lr_at(&c, 60), 1.0, 1e-12);                // progress 1/2: 0.5 * (1 + 0)
    CHECK_NEAR(lr_at(&c, 110), 0, 1e-15);                 // progress 1: 0.5 * (1 - 1)
    // Past the end HF's wave rises again (never clamped to the end value; trainers stop at max_steps):
    // progress 1.2: 0.5 * (1 + cos(1.2 pi)) = 0.5 * (1 - 0.8090169944) = 0.0954915028.
    CHECK_NEAR(lr_at(&c, 130), 2.0 * 0.0954915028, 1e-9);
    // Constant: lr everywhere; with warm-up 4: s / 4 then lr.
    c = (LrConfig){.kind = CFG_SCHEDULE_CONSTANT, .lr = 3.0};
    CHECK_NEAR(lr_at(&c, 0), 3.0, 0);
    CHECK_NEAR(lr_at(&c, 1000000), 3.0, 0);
    c.warmup_steps = 4;
    CHECK_NEAR(lr_at(&c, 1), 0.75, 0);
    CHECK_NEAR(lr_at(&c, 4), 3.0, 0);
}

static void test_lr_bad(void) {
    Err e;
    LrConfig c = {.kind = CFG_SCHEDULE_LINEAR, .lr = 1e-6, .max_steps = 1000};
    CHECK(lr_config_check(&c, &e) == 0);
    c.max_steps = 0;
    CHECK(lr_config_check(&c, &e) == -1 && strstr(e.msg, "max_steps"));
    c.max_steps = 10;
    c.warmup_steps = 11;
    CHECK(lr_config_check(&c, &e) == -1 && strstr(e.msg, "warmup_steps 11 > max_steps 10"));
    c.warmup_steps = -1;
    CHECK(lr_config_check(&c, &e) == -1 && strstr(e.msg, "warmup_steps -1"));
    c.warmup_steps = 0;
    c.lr = -1;
    CHECK(lr_config_check(&c, &e) == -1 && strstr(e.msg, "lr"));
    c = (LrConfig){.kind = CFG_SCHEDULE_COSINE, .lr = 1, .max_steps = 10, .num_cycles = -1};
    CHECK(lr_config_check(&c, &e) == -1 && strstr(e.msg, "num_cycles"));
    c = (LrConfig){.kind = (CfgSchedule)7, .lr = 1, .max_steps = 10};
    CHECK(lr_config_check(&c, &e) == -1 && strstr(e.msg, "kind 7"));
    c = (LrConfig){.kind = CFG_SCHEDULE_CONSTANT, .lr = 1};
    CHECK(lr_config_check(&c, &e) == 0);
}

int main(void) {
    RUN(test_adamw_three_steps);
    RUN(test_adamw_defaults);
    RUN(test_adamw_bf16_bit_exact);
    RUN(test_clip);
    RUN(test_lr_linear);
    RUN(test_lr_cosine_constant);
    RUN(test_lr_bad);
    return test_summary("optim");
}
