// The sampler's HF semantics on hand-made logits, its keyed determinism, and model_generate end to end on
// the tiny random model: greedy = argmax of the full forward, samples independent of batch composition,
// EOS and max_new_tokens stops.
#include "test.h"
#include "model_testutil.h"
#include "model/generate.h"

static void test_greedy_and_top_k(void) {
    float base[6] = {0.1f, 2.0f, -1.0f, 1.9f, 0.0f, 2.0f}, x[6];
    SamplerParams p = sampler_defaults(0, 4, 42);
    p.greedy = 1;
    memcpy(x, base, sizeof x);
    CHECK_INT(sampler_pick(&p, x, 6, NULL, 0, 0, 0, 0, NULL), 1);  // first of the tied maxima
    p.greedy = 0;
    p.top_k = 1;
    p.temperature = 0.7f;
    int same = 1;
    for (uint32_t step = 0; step < 50; step++) {
        memcpy(x, base, sizeof x);
        int id = sampler_pick(&p, x, 6, NULL, 0, 3, 1, step, NULL);
        same &= id == 1 || id == 5;  // top-k keeps both tokens tied at the threshold
    }
    CHECK(same);
    float y[4] = {1.0f, 3.0f, 2.0f, 0.5f};
    p.top_k = 1;
    int all = 1;
    for (uint32_t step = 0; step < 50; step++) {
        float z[4];
        memcpy(z, y, sizeof z);
        all &= sampler_pick(&p, z, 4, NULL, 0, 0, 0, step, NULL) == 1;
    }
    CHECK(all);
}

// Top-k by selection against the definition: a token survives iff fewer than k tokens are strictly
// larger (HF's ">= k-th largest", ties kept). Values are quantised so ties at the threshold occur.
static void test_top_k_selection(void) {
    enum { V = 997 };
    static float logits[V], orig[V];
    Rng r;
    rng_init(&r, 9, 0);
    int bad = 0, ties = 0;
    for (int trial = 0; trial < 24; trial++) {
        for (int i = 0; i < V; i++) orig[i] = (float)(int)(rng_normal(&r) * 4.0) / 4.0f;
        int k = 1 + (int)rng_below(&r, 60);
        SamplerParams p = sampler_defaults(0, 8, 1);
        p.top_k = k;
        memcpy(logits, orig, sizeof logits);
        sampler_process(&p, logits, V, NULL, 0);
        int kept = 0;
        for (int i = 0; i < V; i++) {
            int larger = 0;
            for (int j = 0; j < V; j++) larger += orig[j] > orig[i];
            int want = larger < k;
            kept += want;
            bad += want != (logits[i] != -INFINITY) || (want && logits[i] != orig[i]);
        }
        ties += kept > k;
    }
    CHECK_INT(bad, 0);
    CHECK(ties > 0);  // the quantised draws did exercise ties at the threshold
}

static void test_top_p(void) {
    // probabilities 0.5, 0.3, 0.15, 0.05: ascending cumulative 0.05, 0.2, 0.5, 1.0
    const float pr[4] = {0.5f, 0.3f, 0.15f, 0.05f};
    float x[4];
    SamplerParams p = sampler_defaults(0, 4, 7);
    p.top_p = 0.7f;  // drop cumulative <= 0.3: ids 3 and 2
    for (int i = 0; i < 4; i++) x[i] = logf(pr[i]);
    sampler_process(&p, x, 4, NULL, 0);
    CHECK(isinf(x[2]) && isinf(x[3]) && !isinf(x[0]) && !isinf(x[1]));
    int count[4] = {0};
    for (uint32_t step = 0; step < 4000; step++) {
        for (int i = 0; i < 4; i++) x[i] = logf(pr[i]);
        count[sampler_pick(&p, x, 4, NULL, 0, 1, 2, step, NULL)]++;
    }
    printf("top-p 0.7 over 4000 draws: %d %d %d %d (expect 0.625 / 0.375 of them)\n", count[0], count[1], count[2],
           count[3]);
    CHECK(count[2] == 0 && count[3] == 0);
    CHECK_NEAR(count[0] / 4000.0, 0.625, 0.03);
    p.top_p = 0.45f;  // drop cumulative <= 0.55: only id 0 left
    for (int i = 0; i < 4; i++) x[i] = logf(pr[i]);
    sampler_process(&p, x, 4, NULL, 0);
    CHECK(!isinf(x[0]) && isinf(x[1]) && isinf(x[2]) && isinf(x[3]));
    p.top_p = 1e-9f;  // would drop everything: the most likely token stays
    for (int i = 0; i < 4; i++) x[i] = logf(pr[i]);
    sampler_process(&p, x, 4, NULL, 0);
    CHECK(!isinf(x[0]) && isinf(x[1]));
}

static void test_repetition_penalty_and_temperature(void) {
    float x[5] = {2.0f, -2.0f, 1.0f, 0.5f, 3.0f};
    SamplerParams p = sampler_defaults(0, 4, 7);
    p.repetition_penalty = 2.0f;
    p.temperature = 0.5f;
    const int hist[4] = {0, 1, 1, 4};  // repeated ids are penalised once
    sampler_process(&p, x, 5, hist, 4);
    CHECK_NEAR(x[0], 2.0 / 2 / 0.5, 1e-6);
    CHECK_NEAR(x[1], -2.0 * 2 / 0.5, 1e-6);
    CHECK_NEAR(x[2], 1.0 / 0.5, 1e-6);
    CHECK_NEAR(x[4], 3.0 / 2 / 0.5, 1e-6);
    // the log-prob reported is the unprocessed model's
    float y[3] = {0.0f, 1.0f, 2.0f}, lp;
    p = sampler_defaults(0, 4, 7);
    p.greedy = 1;
    int id = sampler_pick(&p, y, 3, NULL, 0, 0, 0, 0, &lp);
    CHECK_INT(id, 2);
    CHECK_NEAR(lp, 2.0 - log(exp(0.0) + exp(1.0) + exp(2.0)), 1e-6);
    // a suppressed id is never chosen, even when it is the argmax
    float w[3] = {0.0f, 1.0f, 5.0f};
    p.n_suppress = 1;
    p.suppress[0] = 2;
    CHECK_INT(sampler_pick(&p, w, 3, NULL, 0, 0, 0, 0, NULL), 1);
    char msg[128];
    p.top_p = 0;
    CHECK(sampler_check(&p, 3, msg, sizeof msg) == -1 && strstr(msg, "top_p"));
    p = sampler_defaults(9, 4, 7);
    CHECK(sampler_check(&p, 3, msg, sizeof msg) == -1 && strstr(msg, "eos"));
}

static void test_keyed_determinism(void) {
    float base[8] = {0.3f, 0.1f, 0.2f, 0.0f, 0.25f, 0.15f, 0.05f, 0.3f}, x[8];
    SamplerParams p = sampler_defaults(0, 4, 1234);
    int a[64], b[64], diff = 0;
    for (int i = 0; i < 64; i++) {
        memcpy(x, base, sizeof x);
        a[i] = sampler_pick(&p, x, 8, NULL, 0, 5, (uint32_t)i, 3, NULL);
        memcpy(x, base, sizeof x);
        b[i] = sampler_pick(&p, x, 8, NULL, 0, 5, (uint32_t)i, 3, NULL);
        diff += a[i] != a[0];
    }
    CHECK(memcmp(a, b, sizeof a) == 0);
    CHECK(diff > 0);  // different sample keys draw differently
}

// ---------------------------------------------------------------- generate

static ModelConfig C;
static Model M;
static float *FEAT;
static const int PROMPT_A[] = {38, 1, 37, 37, 37, 2, 5};  // 3 audio tokens (13 valid frames)
static const int PROMPT_B[] = {38, 3, 4, 11};

static void gen_setup(void) {
    C = tiny_config();
    ParamTable t;
    param_table_build(&t, &C);
    float *p = tiny_params(&t, 21);
    model_init(&M, &C, ops_cpu_create(), p);
    free(p);
    param_table_free(&t);
    Rng r;
    rng_init(&r, 3, 0);
    FEAT = mallocCheck((size_t)C.n_mels * 2 * C.a_max_pos * sizeof(float));
    fill_normal(FEAT, (size_t)C.n_mels * 2 * C.a_max_pos, 1.0f, &r);
}

// Argmax of the full forward's last row for ids (with the clip when it holds audio tokens).
static int full_argmax(const int *ids, int n) {
    ModelBatch b;
    mbatch_init(&b, &C);
    mbatch_add_seq(&b, ids, n, n);
    for (int i = 0; i < n; i++)
        if (ids[i] == C.audio_token_id) {
            mbatch_add_audio(&b, FEAT, 13);
            break;
        }
    ModelActs *a = model_acts_create(&M, n, 1, 0, 0);
    float lg[40];
    int last = n - 1;
    Err e;
    KVCache kv;
    kv_cache_init(&kv, &M, n);
    if (model_infer(&M, &b, a, &kv, &last, 1, lg, &e)) fatal("%s", e.msg);
    int best = 0;
    for (int i = 1; i < C.vocab; i++)
        if (lg[i] > lg[best]) best = i;
    kv_cache_free(&kv, &M);
    model_acts_free(&M, a);
    mbatch_free(&b);
    return best;
}

static void test_generate_greedy(void) {
    GenPrompt q = {PROMPT_A, 7, FEAT, 13, 0};
    SamplerParams p = sampler_defaults(39, 6, 1);
    p.greedy = 1;
    GenResult r;
    gen_result_init(&r, 2, 6);
    Err e;
    CHECK(model_generate(&M, &q, 1, 2, &p, &r, &e) == 0);
    int ids[16], ok = 1;
    memcpy(ids, PROMPT_A, sizeof PROMPT_A);
    for (int t = 0; t < r.len[0]; t++) {
        ok &= r.tokens[t] == full_argmax(ids, 7 + t);
        ok &= r.tokens[t] == r.tokens[6 + t];  // greedy samples agree
        ids[7 + t] = r.tokens[t];
    }
    CHECK(ok);
    CHECK(r.len[0] >= 1);
    // EOS: make the first greedy token a stop token -> one token, flagged, rest -1
    int first = r.tokens[0];
    gen_result_free(&r);
    p.eos[0] = first;
    gen_result_init(&r, 1, 6);
    CHECK(model_generate(&M, &q, 1, 1, &p, &r, &e) == 0);
    CHECK(r.len[0] == 1 && r.eos[0] == 1 && r.tokens[1] == -1);
    gen_result_free(&r);
}

static void test_generate_batch_independent(void) {
    GenPrompt qs[2] = {{PROMPT_A, 7, FEAT, 13, 10}, {PROMPT_B, 4, NULL, 0, 11}};
    SamplerParams p = sampler_defaults(39, 5, 77);
    p.temperature = 1.3f;
    p.top_k = 20;
    p.top_p = 0.9f;
    p.repetition_penalty = 1.1f;
    GenResult both[2], alone, one;
    gen_result_init(&both[0], 3, 5);
    gen_result_init(&both[1], 3, 5);
    gen_result_init(&alone, 3, 5);
    gen_result_init(&one, 1, 5);
    Err e;
    CHECK(model_generate(&M, qs, 2, 3, &p, both, &e) == 0);
    CHECK(model_generate(&M, &qs[1], 1, 3, &p, &alone, &e) == 0);
    CHECK(model_generate(&M, &qs[1], 1, 1, &p, &one, &e) == 0);  // G=1: sample 0 alone
    CHECK(memcmp(both[1].tokens, alone.tokens, 15 * sizeof(int)) == 0);
    CHECK(memcmp(both[1].len, alone.len, 3 * sizeof(int)) == 0);
    CHECK(cmp_rel_err(both[1].lp, alone.lp, 15) < 1e-5);
    CHECK(memcmp(one.tokens, alone.tokens, 5 * sizeof(int)) == 0);
    // batched == sequential exactly on the CPU: question 0 (with audio) alone too, tokens and log-probs
    // bit for bit (rows are computed independently of the batch they share)
    GenResult first;
    gen_result_init(&first, 3, 5);
    CHECK(model_generate(&M, &qs[0], 1, 3, &p, &first, &e) == 0);
    CHECK(memcmp(both[0].tokens, first.tokens, 15 * sizeof(int)) == 0);
    CHECK(memcmp(both[0].lp, first.lp, 15 * sizeof(float)) == 0);
    CHECK(memcmp(both[0].eos, first.eos, 3 * sizeof(int)) == 0);
    CHECK(memcmp(both[1].lp, alone.lp, 15 * sizeof(float)) == 0);
    gen_result_free(&first);
    int differ = 0;
    for (int i = 0; i < 5; i++)
        differ |= both[0].tokens[i] != both[0].tokens[5 + i] || both[0].tokens[i] != both[0].tokens[10 + i];
    CHECK(differ);  // samples of one question differ
    for (int g = 0; g < 3; g++) CHECK(both[0].len[g] >= 1 && both[0].len[g] <= 5);
    // a bad prompt is reported, not run
    GenPrompt bad = {PROMPT_A, 7, NULL, 0, 0};  // audio tokens without a clip
    CHECK(model_generate(&M, &bad, 1, 1, &p, &one, &e) == -1 && strstr(e.msg, "no audio features"));
    gen_result_free(&both[0]);
    gen_result_free(&both[1]);
    gen_result_free(&alone);
    gen_result_free(&one);
}

int main(void) {
    RUN(test_greedy_and_top_k);
    RUN(test_top_k_selection);
    RUN(test_top_p);
    RUN(test_repetition_penalty_and_temperature);
    RUN(test_keyed_determinism);
    gen_setup();
    RUN(test_generate_greedy);
    RUN(test_generate_batch_independent);
    Ops *o = M.ops;
    model_free(&M);
    ops_destroy(o);
    free(FEAT);
    return test_summary("test_sampler");
}
