// Tests of tests/bench/bench_common: the training FLOP count (by hand on a small shape, and the 7B naive
// workload against the transformers figure), median, strict option parsing, the workload inputs.
#include "bench_common.h"

#include <math.h>

#include "audio/audio_len.h"
#include "model/hf_config.h"
#include "test.h"

// A shape small enough to count by hand.
static ModelConfig small_shape(void) {
    ModelConfig c;
    memset(&c, 0, sizeof c);
    c.dim = 8, c.heads = 2, c.kv_heads = 1, c.head_dim = 4, c.ffn = 16, c.vocab = 100, c.layers = 3;
    c.a_dim = 4, c.a_heads = 2, c.a_ffn = 8, c.a_layers = 2, c.a_max_pos = 6, c.n_mels = 2;
    return c;
}

static void test_flops_by_hand(void) {
    ModelConfig c = small_shape();
    ModelBatch b;
    mbatch_init(&b, &c);
    // a group: prefix 3, two completions of 2 tokens -> 7 tokens, 4 targets
    const int prefix[3] = {1, 2, 3}, c0[2] = {4, 5}, c1[2] = {6, 7}, lens[2] = {2, 2};
    const int *comp[2] = {c0, c1};
    mbatch_add_group(&b, prefix, 3, comp, lens, 2, 1, NULL);
    CHECK_INT(b.n_tokens, 7);
    BenchFlops f = bench_flops(&c, &b, b.n_tgt);
    // per token per layer: q 8*8 + k,v 2*8*4 + o 8*8 + MLP 3*8*16 = 576 weights, 2 FLOPs each
    CHECK_NEAR(f.dec_matmul, 2.0 * 7 * 3 * 576, 0);
    CHECK_NEAR(f.lm_head, 2.0 * 4 * 100 * 8, 0);
    // visible pairs: prefix causal 1+2+3 = 6; each completion 2 * 3 prefix keys + (1 + 2) own = 9
    CHECK_NEAR(f.dec_attn, 4.0 * (6 + 9 + 9) * 8 * 3, 0);
    CHECK_NEAR(f.audio_matmul, 0, 0);
    CHECK_NEAR(f.audio_attn, 0, 0);
    // one clip with 8 valid frames -> audio_encoder_len(8) = 4 keys for each of the 6 queries
    float feat[2 * 12] = {0};
    mbatch_add_audio(&b, feat, 8);
    f = bench_flops(&c, &b, b.n_tgt);
    // conv1 12 frames x 4 x (2*3), conv2 6 x 4 x 12, layers 6 x 2 x (4*16 + 2*4*8), projector 3 x 4 x 8
    CHECK_NEAR(f.audio_matmul, 2.0 * (12 * 4 * 6 + 6 * 4 * 12 + 6 * 2 * 128 + 3 * 4 * 8), 0);
    CHECK_NEAR(f.audio_attn, 4.0 * 6 * audio_encoder_len(8) * 4 * 2, 0);
    CHECK_INT(audio_encoder_len(8), 4);
    const double fwd = f.dec_matmul + f.lm_head + f.dec_attn + f.audio_matmul + f.audio_attn;
    CHECK_NEAR(bench_flops_forward(&f), fwd, 0);
    CHECK_NEAR(bench_flops_train(&f), 3 * fwd, 0);
    // lm_rows is the caller's: every token for transformers with labels
    CHECK_NEAR(bench_flops(&c, &b, b.n_tokens).lm_head, 2.0 * 7 * 100 * 8, 0);
    mbatch_free(&b);
}

// The 7B group: naive 8 x 878 with the lm_head on every row is what transformers runs; the issue quotes
// 0.77 s at 462 TFLOP/s for it, i.e. 355.7 TFLOP.
static void test_flops_7b(void) {
    ModelConfig c;
    Err e;
    CHECKF(hf_config_load(SRC_PATH("configs/model-7b.json"), &c, &e) == 0, "%s", e.msg);
    Rng r;
    rng_init(&r, 3, 0);
    float *feat = bench_features(&c, &r);
    int P;
    int *prompt = bench_prompt(&c, &r, &P);
    int comp_ids[8][32];
    const int *comp[8];
    int lens[8];
    for (int g = 0; g < 8; g++) {
        for (int j = 0; j < 32; j++) comp_ids[g][j] = 1000 + g * 32 + j;
        comp[g] = comp_ids[g], lens[g] = 32;
    }
    ModelBatch naive, shared;
    mbatch_init(&naive, &c);
    mbatch_init(&shared, &c);
    int *seq = mallocCheck((size_t)(P + 32) * sizeof(int));
    memcpy(seq, prompt, (size_t)P * sizeof(int));
    for (int g = 0; g < 8; g++) {
        memcpy(seq + P, comp_ids[g], sizeof comp_ids[g]);
        mbatch_add_seq(&naive, seq, P + 32, P);
        mbatch_add_audio(&naive, feat, BENCH_FRAMES);
    }
    mbatch_add_group(&shared, prompt, P, comp, lens, 8, 1, NULL);
    mbatch_add_audio(&shared, feat, BENCH_FRAMES);
    CHECK_INT(naive.n_tokens, 8 * 878);
    CHECK_INT(shared.n_tokens, 846 + 256);
    CHECK_INT(naive.n_tgt, 256);
    CHECK_INT(shared.n_tgt, 256);
    BenchFlops hf = bench_flops(&c, &naive, naive.n_tokens);
    const double t_hf = bench_flops_train(&hf);
    printf("7B naive, lm_head on all rows: %.1f TFLOP (issue: 0.77 s x 462 TFLOP/s = 355.7)\n", t_hf / 1e12);
    CHECKF(fabs(t_hf / 355.7e12 - 1) < 0.02, "%.1f TFLOP", t_hf / 1e12);
    BenchFlops fn = bench_flops(&c, &naive, naive.n_tgt), fs = bench_flops(&c, &shared, shared.n_tgt);
    const double tn = bench_flops_train(&fn), ts = bench_flops_train(&fs);
    printf("7B ours: naive %.1f TFLOP, shared prefix %.1f TFLOP (%.2fx less)\n", tn / 1e12, ts / 1e12, tn / ts);
    // the prefix and its clip run once instead of 8 times: about 1102 / 7024 of the token work
    CHECK(ts < tn / 5 && ts > tn / 8);
    CHECK_NEAR(fn.lm_head, fs.lm_head, 0);
    mbatch_free(&naive), mbatch_free(&shared);
    free(seq), free(prompt), free(feat);
}

static void test_median(void) {
    double odd[] = {3, 1, 2}, even[] = {4, 1, 3, 2}, one[] = {7};
    CHECK_NEAR(bench_median(odd, 3), 2, 0);
    CHECK_NEAR(bench_median(even, 4), 2.5, 0);
    CHECK_NEAR(bench_median(one, 1), 7, 0);
}

static void test_parse(void) {
    Err e;
    int v = -1;
    CHECK(bench_parse_int("--layers", "16", 1, 32, &v, &e) == 0 && v == 16);
    CHECK(bench_parse_int("--layers", "x", 1, 32, &v, &e) == -1);
    CHECK(strstr(e.msg, "--layers") && strstr(e.msg, "not an integer"));
    CHECK(bench_parse_int("--layers", "4x", 1, 32, &v, &e) == -1);
    CHECK(bench_parse_int("--layers", "", 1, 32, &v, &e) == -1);
    CHECK(bench_parse_int("--reps", "0", 1, 32, &v, &e) == -1);
    CHECK(strstr(e.msg, "--reps 0 outside 1..32") != NULL);
    CHECK(bench_parse_int("--reps", "99999999999999999999", 1, 32, &v, &e) == -1);
    CHECK(bench_parse_int("--reps", NULL, 1, 32, &v, &e) == -1);
    CHECK(strstr(e.msg, "--reps needs a value") != NULL);
    CHECK_INT(v, 16);  // untouched by the refusals
    double d = 0;
    CHECK(bench_parse_pos("--peak-tflops", "989.4", &d, &e) == 0 && d == 989.4);
    CHECK(bench_parse_pos("--peak-tflops", "0", &d, &e) == -1);
    CHECK(strstr(e.msg, "must be positive") != NULL);
    CHECK(bench_parse_pos("--peak-tflops", "-5", &d, &e) == -1);
    CHECK(bench_parse_pos("--peak-tflops", "inf", &d, &e) == -1);
    CHECK(bench_parse_pos("--peak-tflops", "nan", &d, &e) == -1);
    CHECK(bench_parse_pos("--peak-tflops", "1e3x", &d, &e) == -1);
    CHECK(strstr(e.msg, "not a number") != NULL);
    CHECK(bench_parse_pos("--peak-tflops", NULL, &d, &e) == -1);
    CHECK(d == 989.4);
}

static void test_inputs(void) {
    ModelConfig c;
    Err e;
    CHECKF(hf_config_load(SRC_PATH("configs/model-7b.json"), &c, &e) == 0, "%s", e.msg);
    Rng r1, r2;
    rng_init(&r1, 3, 0), rng_init(&r2, 3, 0);
    float *f1 = bench_features(&c, &r1), *f2 = bench_features(&c, &r2);
    CHECK(memcmp(f1, f2, (size_t)c.n_mels * BENCH_FRAMES * sizeof(float)) == 0);
    int P;
    int *p = bench_prompt(&c, &r1, &P);
    CHECK_INT(P, 846);
    int audio = 0, inrange = 1;
    for (int i = 0; i < P; i++) {
        if (p[i] == c.audio_token_id) audio += i >= 3 && i < 753;
        else inrange &= p[i] >= 100 && p[i] < 100100;
    }
    CHECK_INT(audio, 750);
    CHECK(inrange);
    free(f1), free(f2), free(p);
}

int main(void) {
    RUN(test_flops_by_hand);
    RUN(test_flops_7b);
    RUN(test_median);
    RUN(test_parse);
    RUN(test_inputs);
    return test_summary("test_bench_common");
}
