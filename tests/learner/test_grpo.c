// Tests of learner/grpo: advantages (scale variants, zero-std groups, dynamic filtering), the loss and
// its gradient on hand-computed cases (aggregations, k3 KL, clipping, importance weights), the
// rollout/learner mismatch with truncated importance sampling and sequence masking, finite differences for every
// variant, SFT cross-entropy, and every bad-input path.
#include "grpo.h"
#include "test.h"
#include "util/rng.h"

// Two groups of G = 4: [2, 1, 1, 0] and [1, 1, 1, 1].
static const float rewards2[8] = {2, 1, 1, 0, 1, 1, 1, 1};

static void test_advantages_group(void) {
    Err e;
    float adv[8];
    uint8_t keep[8];
    GrpoAdvStats st;
    CHECK(grpo_advantages(rewards2, 2, 4, CFG_SCALE_GROUP, 1e-4, 0, adv, keep, &st, &e) == 0);
    // Group 0: mean 1, deviations [1, 0, 0, -1], sum of squares 2, std = sqrt(2 / 3) = 0.8164965809;
    // A = +-1 / (0.8164965809 + 1e-4) = +-1.2245948898, the middle two 0.
    CHECK_NEAR(adv[0], 1.2245948898, 1e-6);
    CHECK_NEAR(adv[1], 0, 0);
    CHECK_NEAR(adv[2], 0, 0);
    CHECK_NEAR(adv[3], -1.2245948898, 1e-6);
    // Group 1: all equal -> std 0, A = 0 / (0 + 1e-4) = 0; it is the one zero-std group of two.
    for (int i = 4; i < 8; i++) CHECK_NEAR(adv[i], 0, 0);
    CHECK_NEAR(st.zero_std_frac, 0.5, 0);
    CHECK_NEAR(st.reward_mean, 1.0, 1e-12);                 // 8 / 8
    CHECK_NEAR(st.reward_std, 0.8164965809 / 2, 1e-9);       // mean of the group stds (0.816..., 0)
    CHECK_INT(st.n_kept_groups, 2);
    for (int i = 0; i < 8; i++) CHECK_INT(keep[i], 1);
}

static void test_advantages_batch_none(void) {
    Err e;
    float adv[8];
    GrpoAdvStats st;
    CHECK(grpo_advantages(rewards2, 2, 4, CFG_SCALE_BATCH, 1e-4, 0, adv, NULL, &st, &e) == 0);
    // Batch: mean 1, deviations from it [1, 0, 0, -1, 0, 0, 0, 0], sum of squares 2, std = sqrt(2 / 7) =
    // 0.5345224838; the numerator still uses the group mean (1 in both groups):
    // A_0 = 1 / (0.5345224838 + 1e-4) = 1.8704787589.
    CHECK_NEAR(adv[0], 1.8704787589, 1e-6);
    CHECK_NEAR(adv[3], -1.8704787589, 1e-6);
    CHECK_NEAR(adv[5], 0, 0);
    // None: A = r - group mean = [1, 0, 0, -1, 0, 0, 0, 0].
    CHECK(grpo_advantages(rewards2, 2, 4, CFG_SCALE_NONE, 1e-4, 0, adv, NULL, &st, &e) == 0);
    CHECK_NEAR(adv[0], 1, 0);
    CHECK_NEAR(adv[1], 0, 0);
    CHECK_NEAR(adv[3], -1, 0);
    CHECK_NEAR(adv[7], 0, 0);
    // Group means differ from the batch mean: rewards [1, 0 | 3, 3]: group means 0.5, 3 -> none gives
    // [0.5, -0.5, 0, 0].
    const float r[4] = {1, 0, 3, 3};
    CHECK(grpo_advantages(r, 2, 2, CFG_SCALE_NONE, 1e-4, 0, adv, NULL, &st, &e) == 0);
    CHECK_NEAR(adv[0], 0.5, 0);
    CHECK_NEAR(adv[1], -0.5, 0);
    CHECK_NEAR(adv[2], 0, 0);
}

static void test_dynamic_filter(void) {
    Err e;
    float adv[8];
    uint8_t keep[8];
    GrpoAdvStats st;
    CHECK(grpo_advantages(rewards2, 2, 4, CFG_SCALE_GROUP, 1e-4, 1, adv, keep, &st, &e) == 0);
    for (int i = 0; i < 4; i++) CHECK_INT(keep[i], 1);
    for (int i = 4; i < 8; i++) CHECK_INT(keep[i], 0);
    CHECK_INT(st.n_kept_groups, 1);
    CHECK_NEAR(st.zero_std_frac, 0.5, 0);
}

static void test_advantages_bad(void) {
    Err e;
    float adv[8];
    uint8_t keep[8];
    GrpoAdvStats st;
    CHECK(grpo_advantages(rewards2, 8, 1, CFG_SCALE_GROUP, 1e-4, 0, adv, keep, &st, &e) == -1);
    CHECK(strstr(e.msg, "group size 1") != NULL);
    CHECK(grpo_advantages(rewards2, 0, 4, CFG_SCALE_GROUP, 1e-4, 0, adv, keep, &st, &e) == -1);
    CHECK(strstr(e.msg, "n_groups") != NULL);
    CHECK(grpo_advantages(rewards2, 2, 4, CFG_SCALE_GROUP, -1, 0, adv, keep, &st, &e) == -1);
    CHECK(strstr(e.msg, "eps") != NULL);
    CHECK(grpo_advantages(rewards2, 2, 4, CFG_SCALE_GROUP, 1e-4, 1, adv, NULL, &st, &e) == -1);
    CHECK(strstr(e.msg, "keep") != NULL);
    float r[4] = {1, 0, NAN, 1};
    CHECK(grpo_advantages(r, 2, 2, CFG_SCALE_GROUP, 1e-4, 0, adv, keep, &st, &e) == -1);
    CHECK(strstr(e.msg, "reward 2 (group 1, sample 0)") != NULL);
}

// Two sequences: 0 has 2 tokens [0, 2), 1 has 3 tokens [2, 5) of which the last is after EOS
// (masked) in some tests.
static const int off2[2] = {0, 2}, len2[2] = {2, 3};

static GrpoBatch batch2(const uint8_t *mask, const float *lp, const float *adv) {
    return (GrpoBatch){.n_seq = 2, .n_tokens = 5, .offset = off2, .len = len2, .mask = mask, .lp = lp, .adv = adv};
}

static void test_loss_grpo_beta0(void) {
    Err e;
    const uint8_t mask[5] = {1, 1, 1, 1, 1};
    const float lp[5] = {-0.1f, -2, -0.5f, -1, -3}, adv[2] = {1.5f, -0.5f};
    GrpoLossConfig cfg = grpo_loss_config_default();
    cfg.beta = 0;
    GrpoBatch b = batch2(mask, lp, adv);
    float dlp[5];
    GrpoLossStats st;
    CHECK(grpo_loss(&cfg, &b, dlp, &st, &e) == 0);
    // Ratio 1 in value: token loss = -A_i. Sequence means -1.5 and 0.5, loss = mean = (-1.5 + 0.5) / 2 =
    // -0.5. d/dlp = -A_i / (len_i * n_seq): -1.5 / (2 * 2) = -0.375; 0.5 / (3 * 2) = 0.0833333.
    CHECK_NEAR(st.loss, -0.5, 1e-12);
    CHECK_NEAR(dlp[0], -0.375, 1e-7);
    CHECK_NEAR(dlp[1], -0.375, 1e-7);
    CHECK_NEAR(dlp[2], 0.5 / 6, 1e-7);
    CHECK_NEAR(dlp[4], 0.5 / 6, 1e-7);
    CHECK_NEAR(st.mean_ratio, 1, 1e-12);
    CHECK_NEAR(st.mean_kl, 0, 0);
    CHECK_NEAR(st.clip_region_frac, 0, 0);
    CHECK_INT(st.tokens, 5);
    CHECK_INT(st.n_seq, 2);
    // A masked token (after EOS) gets no gradient and leaves the count: sequence 1 has 2 tokens, so its
    // tokens get 0.5 / (2 * 2) = 0.125 and the loss is unchanged (means of equal values).
    const uint8_t mask_eos[5] = {1, 1, 1, 1, 0};
    b.mask = mask_eos;
    CHECK(grpo_loss(&cfg, &b, dlp, &st, &e) == 0);
    CHECK_NEAR(st.loss, -0.5, 1e-12);
    CHECK_NEAR(dlp[2], 0.125, 1e-7);
    CHECK_NEAR(dlp[4], 0, 0);
    CHECK_INT(st.tokens, 4);
}

static void test_loss_kl(void) {
    Err e;
    // One token, A = 0 (only the KL term), lp = -1, ref = -2: d = ref - lp = -1,
    // kl = exp(-1) - (-1) - 1 = exp(-1) = 0.3678794412; loss = 0.04 * kl = 0.0147151776;
    // d(kl)/d(lp) = 1 - exp(d) = 0.6321205588 -> dlp = 0.04 * 0.6321205588 = 0.0252848224.
    const int off[1] = {0}, len[1] = {1};
    const uint8_t mask[1] = {1};
    const float lp[1] = {-1}, ref[1] = {-2}, adv[1] = {0};
    GrpoLossConfig cfg = grpo_loss_config_default();
    GrpoBatch b = {.n_seq = 1, .n_tokens = 1, .offset = off, .len = len, .mask = mask, .lp = lp, .ref_lp = ref, .adv = adv};
    float dlp[1];
    GrpoLossStats st;
    CHECK(grpo_loss(&cfg, &b, dlp, &st, &e) == 0);
    CHECK_NEAR(st.loss, 0.0147151776, 1e-9);
    CHECK_NEAR(dlp[0], 0.0252848224, 1e-8);
    CHECK_NEAR(st.mean_kl, 0.3678794412, 1e-9);
    // ref == lp: kl = 1 - 0 - 1 = 0 and its gradient 1 - 1 = 0.
    const float same[1] = {-1};
    b.ref_lp = same;
    CHECK(grpo_loss(&cfg, &b, dlp, &st, &e) == 0);
    CHECK_NEAR(st.loss, 0, 1e-15);
    CHECK_NEAR(dlp[0], 0, 1e-15);
    // With A = 2 as well, the policy term adds -A = -2 to the loss and -2 to the gradient:
    // loss = -2 + 0.0147151776, dlp = -2 + 0.0252848224.
    const float adv2[1] = {2};
    b.ref_lp = ref;
    b.adv = adv2;
    CHECK(grpo_loss(&cfg, &b, dlp, &st, &e) == 0);
    CHECK_NEAR(st.loss, -2 + 0.0147151776, 1e-9);
    CHECK_NEAR(dlp[0], -2 + 0.0252848224, 1e-7);
}

static void test_loss_aggregations(void) {
    Err e;
    // beta = 0, A = [1, -1], lengths 2 and 3: token losses -1, -1 | +1, +1, +1 (sum -2 | +3, total 1).
    const uint8_t mask[5] = {1, 1, 1, 1, 1};
    const float lp[5] = {-1, -1, -1, -1, -1}, adv[2] = {1, -1};
    GrpoBatch b = batch2(mask, lp, adv);
    GrpoLossConfig cfg = grpo_loss_config_default();
    cfg.beta = 0;
    float dlp[5];
    GrpoLossStats st;
    struct {
        CfgLossType type;
        int accum;
        double loss, g0, g1;  // loss, dlp of a token of sequence 0, of sequence 1
    } cases[] = {
        // grpo: (-2/2 + 3/3) / 2 = 0; dlp = -A / (len * n_seq): -1/4, 1/6.
        {CFG_LOSS_GRPO, 1, 0.0, -0.25, 1.0 / 6},
        // grpo with 2 accumulation micro-batches: everything halved.
        {CFG_LOSS_GRPO, 2, 0.0, -0.125, 1.0 / 12},
        // bnpo: total / tokens = 1 / 5; dlp = -A / 5.
        {CFG_LOSS_BNPO, 1, 0.2, -0.2, 0.2},
        // dr_grpo, max_completion_length 4: 1 / (2 * 4) = 0.125; dlp = -A / 8.
        {CFG_LOSS_DR_GRPO, 1, 0.125, -0.125, 0.125},
        // dapo, 20 tokens in the global batch over 2 learners: 1 / (20 / 2) = 0.1; dlp = -A / 10; the
        // accumulation count does not enter (the token count covers all micro-batches).
        {CFG_LOSS_DAPO, 4, 0.1, -0.1, 0.1},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        cfg.loss_type = cases[k].type;
        cfg.accum_steps = cases[k].accum;
        cfg.max_completion_length = 4;
        cfg.dapo_global_tokens = 20;
        cfg.n_procs = 2;
        CHECK(grpo_loss(&cfg, &b, dlp, &st, &e) == 0);
        CHECKF(fabs(st.loss - cases[k].loss) < 1e-12, "case %zu loss %.9g", k, st.loss);
        CHECKF(fabs(dlp[1] - cases[k].g0) < 1e-7, "case %zu dlp[1] %.9g", k, dlp[1]);
        CHECKF(fabs(dlp[3] - cases[k].g1) < 1e-7, "case %zu dlp[3] %.9g", k, dlp[3]);
    }
}

static void test_loss_clipping(void) {
    Err e;
    // Four one-token sequences, eps 0.2: r = exp(lp - old_lp).
    //  0: r = exp(0.3) = 1.3498588076 > 1.2, A = +1: min(1.3499, 1.2) = 1.2 -> loss -1.2, gradient 0.
    //  1: same ratio, A = -1: min(-1.3499, -1.2) = -1.3499 -> loss +1.3499, dlp = -r A = 1.3498588076.
    //  2: r = exp(-0.5) = 0.6065306597 < 0.8, A = -1: min(-0.6065, -0.8) = -0.8 -> loss 0.8, gradient 0.
    //  3: same ratio, A = +1: min(0.6065, 0.8) = 0.6065 -> loss -0.6065, dlp = -0.6065306597.
    // grpo aggregation over 4 one-token sequences divides by 4.
    const int off[4] = {0, 1, 2, 3}, len[4] = {1, 1, 1, 1};
    const uint8_t mask[4] = {1, 1, 1, 1};
    const float lp[4] = {-1.0f, -1.0f, -1.0f, -1.0f}, old[4] = {-1.3f, -1.3f, -0.5f, -0.5f};
    const float adv[4] = {1, -1, -1, 1};
    GrpoLossConfig cfg = grpo_loss_config_default();
    cfg.beta = 0;
    GrpoBatch b = {.n_seq = 4, .n_tokens = 4, .offset = off, .len = len, .mask = mask, .lp = lp, .old_lp = old, .adv = adv};
    float dlp[4];
    GrpoLossStats st;
    CHECK(grpo_loss(&cfg, &b, dlp, &st, &e) == 0);
    // float lp/old_lp: lp - old_lp = 0.3 and -0.5 up to float rounding (~3e-8).
    CHECK_NEAR(dlp[0], 0, 0);
    CHECK_NEAR(dlp[1], 1.3498588076 / 4, 1e-6);
    CHECK_NEAR(dlp[2], 0, 0);
    CHECK_NEAR(dlp[3], -0.6065306597 / 4, 1e-6);
    CHECK_NEAR(st.loss, (-1.2 + 1.3498588076 + 0.8 - 0.6065306597) / 4, 1e-6);
    CHECK_NEAR(st.clip_high_frac, 0.25, 0);
    CHECK_NEAR(st.clip_low_frac, 0.25, 0);
    CHECK_NEAR(st.clip_region_frac, 1.0, 0);
    CHECK_NEAR(st.mean_ratio, (2 * 1.3498588076 + 2 * 0.6065306597) / 4, 1e-6);
    // Asymmetric clip (DAPO clip-higher): eps_high 0.4 -> 1.3499 is inside, sequence 0 gets dlp -r A.
    cfg.eps_high = 0.4;
    CHECK(grpo_loss(&cfg, &b, dlp, &st, &e) == 0);
    CHECK_NEAR(dlp[0], -1.3498588076 / 4, 1e-6);
    CHECK_NEAR(st.clip_high_frac, 0, 0);
    CHECK_NEAR(st.clip_region_frac, 0.5, 0);
}

static void test_loss_keep(void) {
    Err e;
    // Dropping sequence 1 (dynamic filtering) leaves sequence 0 alone: grpo mean over 1 sequence.
    // A_0 = 1.5, 2 tokens: loss -1.5, dlp = -1.5 / 2 = -0.75; sequence 1 gets 0.
    const uint8_t mask[5] = {1, 1, 1, 1, 1}, keep[2] = {1, 0};
    const float lp[5] = {-1, -1, -1, -1, -1}, ref[5] = {-1, -1, -2, -2, -2}, adv[2] = {1.5f, -0.5f};
    GrpoBatch b = batch2(mask, lp, adv);
    b.keep = keep;
    b.ref_lp = ref;
    GrpoLossConfig cfg = grpo_loss_config_default();
    float dlp[5];
    GrpoLossStats st;
    CHECK(grpo_loss(&cfg, &b, dlp, &st, &e) == 0);
    CHECK_NEAR(st.loss, -1.5, 1e-9);
    CHECK_NEAR(dlp[0], -0.75, 1e-7);
    CHECK_NEAR(dlp[2], 0, 0);
    CHECK_NEAR(dlp[4], 0, 0);
    CHECK_INT(st.n_seq, 1);
    CHECK_INT(st.tokens, 2);
    CHECK_NEAR(st.mean_kl, 0, 1e-15);  // the dropped sequence's KL is not counted
    // Everything dropped: no sequence, loss 0, all gradients 0.
    const uint8_t none[2] = {0, 0};
    b.keep = none;
    CHECK(grpo_loss(&cfg, &b, dlp, &st, &e) == 0);
    CHECK_NEAR(st.loss, 0, 0);
    CHECK_NEAR(dlp[0], 0, 0);
    CHECK_INT(st.n_seq, 0);
}

// Truncated importance weights multiply each token's policy loss (and its gradient), not the KL.
static void test_loss_is_weights(void) {
    Err e;
    // Ratio 1 in value, beta 0: token loss = -w_t A_i. Sequence 0: -(1 + 1.2) * 1.5 / 2 = -1.65;
    // sequence 1 (tokens 2, 3 counted): -(0.5 + 2) * -0.5 / 2 = 0.625; loss = (-1.65 + 0.625) / 2 =
    // -0.5125. dlp = -w_t A_i / (len_i * n_seq): -1.5 / 4 = -0.375, -1.2 * 1.5 / 4 = -0.45,
    // 0.5 * 0.5 / 4 = 0.0625, 2 * 0.5 / 4 = 0.25, 0 on the masked token.
    const uint8_t mask[5] = {1, 1, 1, 1, 0};
    const float lp[5] = {-1, -1, -1, -1, -1}, adv[2] = {1.5f, -0.5f}, w[5] = {1, 1.2f, 0.5f, 2, 7};
    GrpoLossConfig cfg = grpo_loss_config_default();
    cfg.beta = 0;
    GrpoBatch b = batch2(mask, lp, adv);
    b.is_w = w;
    float dlp[5];
    GrpoLossStats st;
    CHECK(grpo_loss(&cfg, &b, dlp, &st, &e) == 0);
    CHECK_NEAR(st.loss, -0.5125, 1e-7);  // float 1.2f: 3e-8 relative
    CHECK_NEAR(dlp[0], -0.375, 1e-7);
    CHECK_NEAR(dlp[1], -0.45, 1e-7);
    CHECK_NEAR(dlp[2], 0.0625, 1e-7);
    CHECK_NEAR(dlp[3], 0.25, 1e-7);
    CHECK_NEAR(dlp[4], 0, 0);
    // The KL term is not weighted: A = 0 leaves only beta * kl, the same with and without weights.
    // One token, lp = -1, ref = -2: 0.04 * exp(-1) = 0.0147151776 (test_loss_kl).
    const int off1[1] = {0}, len1[1] = {1};
    const uint8_t m1[1] = {1};
    const float lp1[1] = {-1}, ref1[1] = {-2}, a0[1] = {0}, w1[1] = {0.25f};
    GrpoBatch k = {.n_seq = 1, .n_tokens = 1, .offset = off1, .len = len1, .mask = m1, .lp = lp1, .ref_lp = ref1,
                   .adv = a0, .is_w = w1};
    cfg.beta = 0.04;
    CHECK(grpo_loss(&cfg, &k, dlp, &st, &e) == 0);
    CHECK_NEAR(st.loss, 0.0147151776, 1e-9);
    CHECK_NEAR(dlp[0], 0.0252848224, 1e-8);
    // A negative or non-finite weight on a counted token is refused.
    const float bad[5] = {1, -0.5f, 1, 1, 1}, nan_w[5] = {1, 1, 1, NAN, 1};
    cfg.beta = 0;
    b.is_w = bad;
    CHECK(grpo_loss(&cfg, &b, dlp, &st, &e) == -1 && strstr(e.msg, "importance weight -0.5 at token 1"));
    b.is_w = nan_w;
    CHECK(grpo_loss(&cfg, &b, dlp, &st, &e) == -1 && strstr(e.msg, "token 3 (sequence 1)"));
}

// Mismatch statistics, TIS weights and sequence masking by hand. batch2 layout, token 4 masked.
// lp_learner -1 everywhere, lp_sample {-1, -1.5, -0.2, -0.4}: d = {0, 0.5, -0.8, -0.6},
// r = exp(d) = {1, 1.6487212707, 0.4493289641, 0.5488116361}.
static void test_mismatch(void) {
    Err e;
    const uint8_t mask[5] = {1, 1, 1, 1, 0};
    const float lp[5] = {-1, -1, -1, -1, -1}, sample[5] = {-1, -1.5f, -0.2f, -0.4f, -9}, adv[2] = {1, -1};
    GrpoBatch b = batch2(mask, lp, adv);
    GrpoMismatchConfig mc = {.bound = 1.5, .tis_cap = 1.2, .mask = 1};
    float w[5];
    uint8_t keep[2];
    GrpoMismatch st;
    CHECK(grpo_mismatch(&mc, &b, sample, w, keep, &st, &e) == 0);
    // Tolerances: the float inputs -0.2f and -0.4f are off by ~1e-8.
    CHECK_INT(st.tokens, 4);
    CHECK_NEAR(st.abs_sum, 1.9, 1e-7);
    CHECK_NEAR(st.abs_max, 0.8, 1e-7);
    // k3 = r - 1 - d: 0 + 0.1487212707 + 0.2493289641 + 0.1488116361.
    CHECK_NEAR(st.k3_sum, 0.5468618709, 1e-7);
    CHECK_NEAR(st.ratio_sum, 3.6468618709, 1e-7);
    CHECK_NEAR(st.ratio_min, 0.4493289641, 1e-7);
    CHECK_NEAR(st.ratio_max, 1.6487212707, 1e-7);
    // Outside [1/1.5, 1.5] = [0.667, 1.5]: 1.6487, 0.4493, 0.5488.
    CHECK_INT(st.out, 3);
    // Sequence ratios: exp(mean d) = exp(0.25) = 1.284 (inside), exp(-0.7) = 0.4966 (outside).
    CHECK_INT(st.n_seq, 2);
    CHECK_INT(st.seq_out, 1);
    CHECK_INT(keep[0], 1);
    CHECK_INT(keep[1], 0);
    // min(r, 1.2); 1 on the uncounted token.
    CHECK_NEAR(w[0], 1, 0);
    CHECK_NEAR(w[1], 1.2, 1e-7);
    CHECK_NEAR(w[2], 0.4493289641, 1e-7);
    CHECK_NEAR(w[3], 0.5488116361, 1e-7);
    CHECK_NEAR(w[4], 1, 0);
    // Corrections off: weights 1, every sequence kept, the same statistics.
    mc = (GrpoMismatchConfig){.bound = 1.5};
    CHECK(grpo_mismatch(&mc, &b, sample, w, keep, &st, &e) == 0);
    CHECK(w[1] == 1 && w[2] == 1 && keep[0] == 1 && keep[1] == 1);
    CHECK_INT(st.seq_out, 1);
    CHECK(grpo_mismatch(&mc, &b, sample, NULL, NULL, &st, &e) == 0);
    CHECK_INT(st.out, 3);
    // Identical log-probs: exactly 0 mismatch, ratio 1.
    CHECK(grpo_mismatch(&mc, &b, lp, NULL, NULL, &st, &e) == 0);
    CHECK(st.abs_sum == 0 && st.abs_max == 0 && st.k3_sum == 0 && st.ratio_min == 1 && st.ratio_max == 1);
    CHECK(st.ratio_sum == 4 && st.out == 0 && st.seq_out == 0);
    // Bad input.
    const float nan_s[5] = {-1, -1, -1, NAN, -1};
    CHECK(grpo_mismatch(&mc, &b, nan_s, NULL, NULL, &st, &e) == -1 &&
          strstr(e.msg, "token 3 (sequence 1, position 1)"));
    mc.bound = 1;
    CHECK(grpo_mismatch(&mc, &b, sample, NULL, NULL, &st, &e) == -1 && strstr(e.msg, "bound 1"));
    mc = (GrpoMismatchConfig){.bound = 2, .tis_cap = 2};
    CHECK(grpo_mismatch(&mc, &b, sample, NULL, NULL, &st, &e) == -1 && strstr(e.msg, "is_w"));
}

// Central differences of the loss in each lp against dlp, for every aggregation with clipping, KL,
// masks and a dropped sequence. Ratios are kept away from the clip kinks by more than the step. Without
// old_lp the ratio is exp(lp - stopgrad(lp)): its gradient is that of exp(lp - c) at c = lp, so the
// differences are taken with old_lp fixed at a copy of lp.
static void test_loss_finite_difference(void) {
    Err e;
    enum { S = 4, T = 14 };
    const int off[S] = {0, 3, 7, 8}, len[S] = {3, 4, 1, 6};
    uint8_t mask[T] = {1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1, 0};
    const uint8_t keep[S] = {1, 1, 0, 1};
    float lp[T], old[T], ref[T], w[T];
    const float adv[S] = {0.7f, -1.1f, 0.3f, 0.4f};
    Rng r;
    rng_init(&r, 7, 0);
    for (int t = 0; t < T; t++) {
        lp[t] = (float)(-0.1 - 2 * rng_uniform(&r));
        ref[t] = (float)(lp[t] + rng_normal(&r) * 0.5);
        // |lp - old| in {0.05..0.15} or {0.35..0.5}: ratios inside the clip range or clearly outside.
        double d = rng_uniform(&r) < 0.5 ? 0.05 + 0.1 * rng_uniform(&r) : 0.35 + 0.15 * rng_uniform(&r);
        old[t] = (float)(lp[t] + (rng_uniform(&r) < 0.5 ? d : -d));
        w[t] = (float)(0.5 + rng_uniform(&r));
    }
    for (int type = CFG_LOSS_GRPO; type <= CFG_LOSS_DAPO; type++) {
        for (int with_old = 0; with_old < 2; with_old++) {
            GrpoLossConfig cfg = grpo_loss_config_default();
            cfg.loss_type = (CfgLossType)type;
            cfg.beta = 0.3;
            cfg.eps_high = 0.28;
            cfg.max_completion_length = 8;
            cfg.accum_steps = 2;
            cfg.dapo_global_tokens = 30;
            cfg.n_procs = 3;
            float x[T], dlp[T], scratch[T];
            memcpy(x, lp, sizeof x);
            GrpoBatch b = {.n_seq = S, .n_tokens = T, .offset = off, .len = len, .mask = mask, .lp = x,
                           .old_lp = with_old ? old : NULL, .ref_lp = ref, .adv = adv, .keep = keep,
                           .is_w = type == CFG_LOSS_BNPO ? w : NULL};
            GrpoLossStats st, sp, sm;
            CHECK(grpo_loss(&cfg, &b, dlp, &st, &e) == 0);
            if (!with_old) b.old_lp = lp;
            double worst = 0;
            for (int t = 0; t < T; t++) {
                const float h = 1e-3f;
                x[t] = lp[t] + h;
                grpo_loss(&cfg, &b, scratch, &sp, &e);
                x[t] = lp[t] - h;
                grpo_loss(&cfg, &b, scratch, &sm, &e);
                x[t] = lp[t];
                double fd = (sp.loss - sm.loss) / ((double)(lp[t] + h) - (double)(lp[t] - h));
                double err = fabs(fd - dlp[t]);
                if (err > worst) worst = err;
            }
            CHECKF(worst < 2e-5, "loss_type %d, old_lp %d: worst |fd - dlp| = %.3g", type, with_old, worst);
        }
    }
}

static void test_loss_bad(void) {
    Err e;
    const uint8_t mask[5] = {1, 1, 1, 1, 1}, bad_mask[5] = {1, 1, 2, 1, 1}, bad_keep[2] = {1, 3};
    const float lp[5] = {-1, -1, -1, -1, -1}, nan_lp[5] = {-1, -1, -1, NAN, -1};
    const float adv[2] = {1, -1}, nan_adv[2] = {1, NAN};
    float dlp[5];
    GrpoLossStats st;
    GrpoLossConfig cfg = grpo_loss_config_default();
    GrpoBatch b = batch2(mask, lp, adv);
    // beta > 0 needs reference log-probs.
    CHECK(grpo_loss(&cfg, &b, dlp, &st, &e) == -1 && strstr(e.msg, "reference"));
    cfg.beta = 0;
    CHECK(grpo_loss(&cfg, &b, dlp, &st, &e) == 0);
    b.mask = bad_mask;
    CHECK(grpo_loss(&cfg, &b, dlp, &st, &e) == -1 && strstr(e.msg, "mask[2] = 2"));
    b.mask = mask;
    b.lp = nan_lp;
    CHECK(grpo_loss(&cfg, &b, dlp, &st, &e) == -1 && strstr(e.msg, "token 3 (sequence 1, position 1)"));
    b.lp = lp;
    b.old_lp = nan_lp;
    CHECK(grpo_loss(&cfg, &b, dlp, &st, &e) == -1 && strstr(e.msg, "token 3"));
    b.old_lp = NULL;
    b.adv = nan_adv;
    CHECK(grpo_loss(&cfg, &b, dlp, &st, &e) == -1 && strstr(e.msg, "advantage of sequence 1"));
    b.adv = adv;
    b.keep = bad_keep;
    CHECK(grpo_loss(&cfg, &b, dlp, &st, &e) == -1 && strstr(e.msg, "keep[1]"));
    b.keep = NULL;
    const int bad_len[2] = {2, 4};
    b.len = bad_len;
    CHECK(grpo_loss(&cfg, &b, dlp, &st, &e) == -1 && strstr(e.msg, "sequence 1 span"));
    const int neg_off[2] = {-1, 2};
    b.len = len2;
    b.offset = neg_off;
    CHECK(grpo_loss(&cfg, &b, dlp, &st, &e) == -1 && strstr(e.msg, "sequence 0 span"));
    b.offset = off2;
    b.n_seq = 0;
    CHECK(grpo_loss(&cfg, &b, dlp, &st, &e) == -1 && strstr(e.msg, "0 sequences"));
    b.n_seq = 2;
    GrpoLossConfig c2 = cfg;
    c2.loss_type = CFG_LOSS_DR_GRPO;
    c2.max_completion_length = 0;
    CHECK(grpo_loss(&c2, &b, dlp, &st, &e) == -1 && strstr(e.msg, "max_completion_length"));
    c2 = cfg;
    c2.loss_type = CFG_LOSS_DAPO;
    CHECK(grpo_loss(&c2, &b, dlp, &st, &e) == -1 && strstr(e.msg, "dapo_global_tokens"));
    c2 = cfg;
    c2.loss_type = (CfgLossType)9;
    CHECK(grpo_loss(&c2, &b, dlp, &st, &e) == -1 && strstr(e.msg, "loss_type 9"));
    c2 = cfg;
    c2.eps_low = 1;
    CHECK(grpo_loss(&c2, &b, dlp, &st, &e) == -1 && strstr(e.msg, "eps_low"));
    c2 = cfg;
    c2.eps_high = -0.1;
    CHECK(grpo_loss(&c2, &b, dlp, &st, &e) == -1 && strstr(e.msg, "eps_high"));
    c2 = cfg;
    c2.beta = -1;
    CHECK(grpo_loss(&c2, &b, dlp, &st, &e) == -1 && strstr(e.msg, "beta"));
    c2 = cfg;
    c2.accum_steps = 0;
    CHECK(grpo_loss(&c2, &b, dlp, &st, &e) == -1 && strstr(e.msg, "accum_steps"));
}

static void test_sft(void) {
    Err e;
    // Counted tokens 1 and 2: loss = -(-2 - 3) / 2 = 2.5; dlp = -1/2 on them, 0 elsewhere.
    const float lp[4] = {-1, -2, -3, -4};
    const uint8_t mask[4] = {0, 1, 1, 0}, none[4] = {0, 0, 0, 0}, bad[4] = {0, 1, 5, 0};
    float dlp[4];
    double loss;
    CHECK(sft_loss(4, lp, mask, &loss, dlp, &e) == 0);
    CHECK_NEAR(loss, 2.5, 1e-12);
    CHECK_NEAR(dlp[0], 0, 0);
    CHECK_NEAR(dlp[1], -0.5, 0);
    CHECK_NEAR(dlp[2], -0.5, 0);
    CHECK_NEAR(dlp[3], 0, 0);
    CHECK(sft_loss(4, lp, none, &loss, dlp, &e) == -1 && strstr(e.msg, "no counted token"));
    CHECK(sft_loss(4, lp, bad, &loss, dlp, &e) == -1 && strstr(e.msg, "mask[2] = 5"));
    const float nan_lp[4] = {-1, NAN, -3, -4};
    CHECK(sft_loss(4, nan_lp, mask, &loss, dlp, &e) == -1 && strstr(e.msg, "token 1"));
}

int main(void) {
    RUN(test_advantages_group);
    RUN(test_advantages_batch_none);
    RUN(test_dynamic_filter);
    RUN(test_advantages_bad);
    RUN(test_loss_grpo_beta0);
    RUN(test_loss_kl);
    RUN(test_loss_aggregations);
    RUN(test_loss_clipping);
    RUN(test_loss_keep);
    RUN(test_loss_is_weights);
    RUN(test_mismatch);
    RUN(test_loss_finite_difference);
    RUN(test_loss_bad);
    RUN(test_sft);
    return test_summary("grpo");
}
