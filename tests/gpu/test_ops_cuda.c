// test_ops_cuda: every forward and backward op of the CUDA backend (attention_bwd has its own test)
// against the CPU backend on bf16-exact random inputs, printing max abs / rel errors, and the time of
// the backward ops that move the most bytes. Tolerances are bf16's: one rounding of the output (2^-8
// relative) plus fp32 summation-order noise. Also the fused inference ops against the unfused ones, and
// a graph's captured and replayed passes against the same ops run one by one. Exits 77 (skipped)
// without a GPU or a CUDA build.
#include <string.h>
#include <time.h>

#include "gpu_testutil.h"

#ifdef AQA_CUDA
#include <cuda_runtime.h>
#include <stdlib.h>

#include "model/cuda/ops_cuda_kernels.h"

static Pair P;
static Rng R;

static void test_matmul(void) {
    const int shapes[][3] = {{33, 129, 200}, {8, 1000, 512}, {300, 64, 96}, {1, 7, 5}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                for (int mode = 0; mode < 3; mode++) {  // plain, bias, bias + accumulate
                    const int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
                    float *a = rand_bf16((size_t)M * K, 1, &R), *b = rand_bf16((size_t)K * N, 1, &R);
                    float *bias = rand_bf16(N + 1, 1, &R), *c0 = rand_bf16((size_t)M * N, 1, &R);
                    Tensor *ac, *ag, *bc, *bg, *biasc, *biasg, *cc, *cg;
                    put_act(&P, a, (size_t)M * K, &ac, &ag);
                    put_act(&P, b, (size_t)K * N, &bc, &bg);
                    put_act(&P, bias, N + 1, &biasc, &biasg);
                    put_act(&P, c0, (size_t)M * N, &cc, &cg);
                    // an odd offset into the bias buffer exercises unaligned epilogue inputs
                    const int off = s % 2;
                    for (int k = 0; k < 2; k++) {
                        Ops *o = k ? P.g : P.c;
                        Tensor *bb = mode ? ops_at(o, k ? biasg : biasc, off) : NULL;
                        o->matmul(o, k ? cg : cc, k ? ag : ac, k ? bg : bc, bb, M, N, K, ta, tb, mode == 2);
                    }
                    char what[96];
                    snprintf(what, sizeof what, "matmul %dx%dx%d ta%d tb%d %s", M, N, K, ta, tb,
                             mode == 0 ? "" : mode == 1 ? "+bias" : "+bias acc");
                    double e = cmp_act(&P, what, cc, cg, (size_t)M * N);
                    CHECKF(e < 1e-2, "%s: rel %.3e", what, e);
                    free_pair(&P, ac, ag), free_pair(&P, bc, bg), free_pair(&P, biasc, biasg);
                    free_pair(&P, cc, cg);
                    free(a), free(b), free(bias), free(c0);
                }
}

static void test_im2col(void) {
    // conv1: channel-major features; conv2: time-major activations with stride 2
    const int cfg[][7] = {{6, 20, 20, 1, 3, 1, 1}, {5, 16, 1, 5, 3, 2, 1}};
    for (int s = 0; s < 2; s++) {
        const int C = cfg[s][0], Tin = cfg[s][1], sc = cfg[s][2], st = cfg[s][3], K = cfg[s][4];
        const int stride = cfg[s][5], pad = cfg[s][6], Tout = (Tin + 2 * pad - K) / stride + 1;
        float *x = rand_bf16((size_t)C * Tin, 1, &R);
        Tensor *xc, *xg, *cc, *cg;
        put_act(&P, x, (size_t)C * Tin, &xc, &xg);
        cc = P.c->alloc(P.c, (size_t)Tout * C * K * P.c->act_size);
        cg = P.g->alloc(P.g, (size_t)Tout * C * K * P.g->act_size);
        P.c->im2col(P.c, cc, xc, C, Tin, sc, st, K, stride, pad, Tout);
        P.g->im2col(P.g, cg, xg, C, Tin, sc, st, K, stride, pad, Tout);
        CHECK(cmp_act(&P, s ? "im2col time-major stride 2" : "im2col channel-major", cc, cg, (size_t)Tout * C * K) == 0);
        free_pair(&P, xc, xg), free_pair(&P, cc, cg);
        free(x);
    }
}

static void test_norms(void) {
    const int T = 7, C = 1280;
    float *x = rand_bf16((size_t)T * C, 2, &R), *w = rand_bf16(C, 1, &R), *b = rand_bf16(C, 1, &R);
    for (int i = 0; i < T * C; i++) x[i] += (float)(i / C);  // rows with a mean
    Tensor *xc, *xg, *wc, *wg, *bc, *bg, *yc, *yg;
    put_act(&P, x, (size_t)T * C, &xc, &xg);
    put_act(&P, w, C, &wc, &wg);
    put_act(&P, b, C, &bc, &bg);
    yc = P.c->alloc(P.c, (size_t)T * C * P.c->act_size);
    yg = P.g->alloc(P.g, (size_t)T * C * P.g->act_size);
    float *mc = P.c->alloc(P.c, T * 4), *mg = P.g->alloc(P.g, T * 4), *rc = P.c->alloc(P.c, T * 4);
    float *rg = P.g->alloc(P.g, T * 4);
    P.c->layernorm(P.c, yc, mc, rc, xc, wc, bc, T, C, 1e-5f);
    P.g->layernorm(P.g, yg, mg, rg, xg, wg, bg, T, C, 1e-5f);
    CHECK(cmp_act(&P, "layernorm y", yc, yg, (size_t)T * C) < 1e-2);
    // means up to 6 summed over 1280 fp32 terms in another order: ~1e-4 relative
    CHECK(cmp_f32(&P, "layernorm mean", mc, mg, T) < 1e-3);
    CHECK(cmp_f32(&P, "layernorm rstd", rc, rg, T) < 1e-3);
    P.c->rmsnorm(P.c, yc, rc, xc, wc, T, C, 1e-6f);
    P.g->rmsnorm(P.g, yg, rg, xg, wg, T, C, 1e-6f);
    CHECK(cmp_act(&P, "rmsnorm y", yc, yg, (size_t)T * C) < 1e-2);
    CHECK(cmp_f32(&P, "rmsnorm rstd", rc, rg, T) < 1e-3);
    free_pair(&P, xc, xg), free_pair(&P, wc, wg), free_pair(&P, bc, bg), free_pair(&P, yc, yg);
    free_pair(&P, mc, mg), free_pair(&P, rc, rg);
    free(x), free(w), free(b);
}

static void test_rope(void) {
    const int T = 9, H = 3, hd = 128;
    float *x = rand_bf16((size_t)T * H * hd, 1, &R);
    int pos[9];
    for (int t = 0; t < T; t++) pos[t] = (int)rng_below(&R, 1000);
    Tensor *xc, *xg;
    void *pc, *pg;
    put_act(&P, x, (size_t)T * H * hd, &xc, &xg);
    put_raw(&P, pos, sizeof pos, &pc, &pg);
    for (int inv = 0; inv < 2; inv++) {
        P.c->rope(P.c, xc, pc, T, H, hd, 1e6f, inv);
        P.g->rope(P.g, xg, pg, T, H, hd, 1e6f, inv);
        CHECK(cmp_act(&P, inv ? "rope inverse" : "rope", xc, xg, (size_t)T * H * hd) < 1e-2);
    }
    // the inverse (the backward) undoes the rotation
    float *back = mallocCheck((size_t)T * H * hd * sizeof(float));
    P.g->download_act(P.g, back, xg, (size_t)T * H * hd);
    CHECK(err_report("rope then inverse vs input", back, x, (size_t)T * H * hd) < 1e-2);
    free(back);
    free_pair(&P, xc, xg), free_pair(&P, pc, pg);
    free(x);
}

// q [Tq, H*hd], k/v [Tk, KVH*hd] over segs; compares out and lse.
static const char *kern_name(AttnKernel kern) {
    return kern == ATTN_GENERIC ? "generic" : kern == ATTN_FLASH_WMMA ? "flash-wmma" : "auto";
}

// Attention on the GPU backend with kernel kern (ATTN_AUTO: what Ops.attention runs) against the CPU's.
static void attn_case(AttnKernel kern, const char *what, const AttnSeg *segs, int nseg, int Tq, int Tk, int H,
                      int KVH, int hd) {
    float *q = rand_bf16((size_t)Tq * H * hd, 1, &R), *k = rand_bf16((size_t)Tk * KVH * hd, 1, &R);
    float *v = rand_bf16((size_t)Tk * KVH * hd, 1, &R);
    Tensor *qc, *qg, *kc, *kg, *vc, *vg, *oc, *og;
    put_act(&P, q, (size_t)Tq * H * hd, &qc, &qg);
    put_act(&P, k, (size_t)Tk * KVH * hd, &kc, &kg);
    put_act(&P, v, (size_t)Tk * KVH * hd, &vc, &vg);
    oc = P.c->alloc(P.c, (size_t)Tq * H * hd * P.c->act_size);
    og = P.g->alloc(P.g, (size_t)Tq * H * hd * P.g->act_size);
    float *lc = P.c->alloc(P.c, (size_t)Tq * H * 4), *lg = P.g->alloc(P.g, (size_t)Tq * H * 4);
    const float scale = 1.0f / sqrtf((float)hd);
    P.c->attention(P.c, oc, lc, qc, kc, vc, segs, nseg, H, KVH, hd, scale);
    ops_cuda_attention_with(P.g, kern, og, lg, qg, kg, vg, segs, nseg, H, KVH, hd, scale);
    char name[128];
    snprintf(name, sizeof name, "attention [%s] %s out", kern_name(kern), what);
    CHECKF(cmp_act(&P, name, oc, og, (size_t)Tq * H * hd) < 2e-2, "%s", name);
    snprintf(name, sizeof name, "attention [%s] %s lse", kern_name(kern), what);
    CHECKF(cmp_f32(&P, name, lc, lg, (size_t)Tq * H) < 1e-3, "%s", name);
    free_pair(&P, qc, qg), free_pair(&P, kc, kg), free_pair(&P, vc, vg), free_pair(&P, oc, og);
    free_pair(&P, lc, lg);
    free(q), free(k), free(v);
}

// Every case on each kernel: the default choice, the WMMA flash kernel for the runs of many rows (the
// path of head dim 32 and of unaligned outputs) and the CUDA-core kernel for every run (the path of the
// other head dims and of unaligned rows).
static void attn_cases(AttnKernel kern) {
    // causal decoder, GQA group 2, more rows than one block holds
    AttnSeg causal = {.q_start = 0, .q_len = 150, .k_start = 0, .k_len = 150, .causal = 1};
    attn_case(kern, "causal T=150 H=4 KVH=2 hd=64", &causal, 1, 150, 150, 4, 2, 64);
    // bidirectional encoder: two clips, keys masked to each clip's valid length
    AttnSeg enc[2] = {{.q_start = 0, .q_len = 70, .k_start = 0, .k_len = 45, .causal = 0},
                      {.q_start = 70, .q_len = 70, .k_start = 70, .k_len = 70, .causal = 0}};
    attn_case(kern, "encoder 2 clips hd=32", enc, 2, 140, 140, 4, 4, 32);
    // training group: prompt (causal) then G completions seeing it as a prefix, GQA group 4, hd 128
    AttnSeg grp[4] = {{.q_start = 0, .q_len = 50, .k_start = 0, .k_len = 50, .causal = 1}};
    for (int g = 0; g < 3; g++)
        grp[g + 1] = (AttnSeg){.q_start = 50 + 10 * g, .q_len = 10, .pre_start = 0, .pre_len = 50,
                               .k_start = 50 + 10 * g, .k_len = 10, .causal = 1};
    attn_case(kern, "prefix+3 completions hd=128 G4", grp, 4, 80, 80, 8, 2, 128);
    // the mma.sync flash kernel's head dims over several key tiles with ragged ends: encoder clips of
    // 150 and 130 rows (keys masked to 97 and 130), and a 130-row prompt with completions of 70 rows
    // (two causal own tiles after three prefix tiles), GQA group 4
    AttnSeg enc64[2] = {{.q_start = 0, .q_len = 150, .k_start = 0, .k_len = 97, .causal = 0},
                        {.q_start = 150, .q_len = 130, .k_start = 150, .k_len = 130, .causal = 0}};
    attn_case(kern, "encoder 2 clips hd=64, ragged tiles", enc64, 2, 280, 280, 4, 4, 64);
    AttnSeg grp2[3] = {{.q_start = 0, .q_len = 130, .k_start = 0, .k_len = 130, .causal = 1}};
    for (int g = 0; g < 2; g++)
        grp2[g + 1] = (AttnSeg){.q_start = 130 + 70 * g, .q_len = 70, .pre_start = 0, .pre_len = 130,
                                .k_start = 130 + 70 * g, .k_len = 70, .causal = 1};
    attn_case(kern, "prefix 130 + 2 completions of 70 hd=128 G4", grp2, 3, 270, 270, 8, 2, 128);
    // decode step: 5 samples, one query each, shared 70-row prefix read once, own rows cached so far
    AttnSeg dec[5];
    for (int g = 0; g < 5; g++)
        dec[g] = (AttnSeg){.q_start = g, .q_len = 1, .pre_start = 0, .pre_len = 70, .k_start = 70 + 40 * g,
                           .k_len = 1 + 8 * g, .causal = 1};
    attn_case(kern, "decode 5 samples shared prefix", dec, 5, 5, 270, 4, 4, 128);
    // decode with a long prefix: few blocks, so the prefix is split over blocks and merged (GQA group 4)
    AttnSeg dl[8];
    for (int g = 0; g < 8; g++)
        dl[g] = (AttnSeg){.q_start = g, .q_len = 1, .pre_start = 0, .pre_len = 600, .k_start = 600 + 32 * g,
                          .k_len = 1 + 4 * g, .causal = 1};
    attn_case(kern, "decode 8 samples, 600-row prefix (split)", dl, 8, 8, 856, 8, 2, 128);
    // the 7B decode shape: 8 samples, MHA, one query vector a warp, 846-row prefix split over blocks
    AttnSeg d7[8];
    for (int g = 0; g < 8; g++)
        d7[g] = (AttnSeg){.q_start = g, .q_len = 1, .pre_start = 0, .pre_len = 846, .k_start = 846 + 32 * g,
                          .k_len = 1 + 3 * g, .causal = 1};
    attn_case(kern, "decode 8 samples, 846-row prefix, MHA", d7, 8, 8, 1102, 4, 4, 128);
    // tiny heads (head_dim 4) as in the tiny test models
    AttnSeg small = {.q_start = 0, .q_len = 9, .k_start = 0, .k_len = 9, .causal = 1};
    attn_case(kern, "causal hd=4", &small, 1, 9, 9, 4, 2, 4);
}

static void test_attention(void) {
    const AttnKernel kerns[] = {ATTN_AUTO, ATTN_FLASH_WMMA, ATTN_GENERIC};
    for (size_t i = 0; i < sizeof kerns / sizeof kerns[0]; i++) attn_cases(kerns[i]);
}

// Time of one attention call over segs on backend o: a graph of LAYERS calls (as a decode step's
// layers) is captured, then one replay is timed by events on the backend's stream around its launch
// alone (the replay pass's host staging happens before), so no launch gaps count; the replayed output
// must equal the op run directly. Prints the time per call and the GB/s of the K/V rows
// read (each key row once per kv head).
static void attn_time(Ops *o, AttnKernel kern, const char *what, const AttnSeg *segs, int nseg, int Tq, int Tk,
                      int H, int KVH, int hd) {
    enum { LAYERS = 200 };
    float *q = rand_bf16((size_t)Tq * H * hd, 1, &R), *k = rand_bf16((size_t)Tk * KVH * hd, 1, &R);
    float *v = rand_bf16((size_t)Tk * KVH * hd, 1, &R);
    const size_t nq = (size_t)Tq * H * hd, nk = (size_t)Tk * KVH * hd;
    Tensor *qg = o->alloc(o, nq * 2), *kg = o->alloc(o, nk * 2), *vg = o->alloc(o, nk * 2);
    Tensor *og = o->alloc(o, nq * 2);
    float *lg = o->alloc(o, (size_t)Tq * H * 4);
    o->upload_act(o, qg, q, nq), o->upload_act(o, kg, k, nk), o->upload_act(o, vg, v, nk);
    const float scale = 1.0f / sqrtf((float)hd);
    float *want = mallocCheck(nq * sizeof(float)), *got = mallocCheck(nq * sizeof(float));
    ops_cuda_attention_with(o, kern, og, lg, qg, kg, vg, segs, nseg, H, KVH, hd, scale);
    o->download_act(o, want, og, nq);
    o->zero(o, og, nq * 2);
    void *g = o->graph_create(o);
    o->graph_begin(o, g);  // capture pass (runs the graph once)
    for (int i = 0; i < LAYERS; i++)
        ops_cuda_attention_with(o, kern, og, lg, qg, kg, vg, segs, nseg, H, KVH, hd, scale);
    CHECK_INT(o->graph_end(o, g, 1), 0);
    o->zero(o, og, nq * 2);
    cudaStream_t st = (cudaStream_t)ops_cuda_stream(o);
    cudaEvent_t e0, e1;
    CHECK(cudaEventCreate(&e0) == cudaSuccess && cudaEventCreate(&e1) == cudaSuccess);
    o->graph_begin(o, g);  // replay pass: stages the work lists, launches at graph_end
    for (int i = 0; i < LAYERS; i++)
        ops_cuda_attention_with(o, kern, og, lg, qg, kg, vg, segs, nseg, H, KVH, hd, scale);
    CHECK(cudaEventRecord(e0, st) == cudaSuccess);
    CHECK_INT(o->graph_end(o, g, 1), 0);
    CHECK(cudaEventRecord(e1, st) == cudaSuccess);
    float ms = 0.0f;
    CHECK(cudaEventSynchronize(e1) == cudaSuccess && cudaEventElapsedTime(&ms, e0, e1) == cudaSuccess);
    o->download_act(o, got, og, nq);
    CHECKF(memcmp(want, got, nq * sizeof(float)) == 0, "attention %s: graph replay differs from the direct op", what);
    double rows = 0;
    for (int i = 0; i < nseg; i++) rows += (i == 0 || segs[i].pre_start != segs[i - 1].pre_start ? segs[i].pre_len : 0) +
                                           segs[i].k_len;
    const double us = ms * 1e3 / LAYERS, bytes = rows * KVH * hd * 2 * 2;
    printf("  time attention [%s] %-38s %7.2f us/call  %7.1f GB/s (K/V read once per kv head)\n", kern_name(kern),
           what, us, bytes / (us * 1e-6) * 1e-9);
    CHECK(cudaEventDestroy(e0) == cudaSuccess && cudaEventDestroy(e1) == cudaSuccess);
    o->graph_free(o, g);
    o->free(o, qg), o->free(o, kg), o->free(o, vg), o->free(o, og), o->free(o, lg);
    free(q), free(k), free(v), free(want), free(got);
}

// The 7B decode step's attention: G = 8 samples, one new query each, a shared 878-row prompt prefix and
// 1..32 own keys per sample, H 32, hd 128; MHA (KVH 32, Qwen2-Audio-7B) and GQA (KVH 8). Both the decode
// path (the default) and the CUDA-core kernel against the CPU backend, and their times per call.
static void test_attention_decode7b(void) {
    const int G = 8, PRE = 878, own[8] = {1, 32, 5, 17, 9, 28, 13, 24};
    AttnSeg segs[8];
    for (int g = 0; g < G; g++)
        segs[g] = (AttnSeg){.q_start = g, .q_len = 1, .pre_start = 0, .pre_len = PRE, .k_start = PRE + 32 * g,
                            .k_len = own[g], .causal = 1};
    const int Tk = PRE + 32 * G, kvh[2] = {32, 8};
    const AttnKernel kerns[2] = {ATTN_AUTO, ATTN_GENERIC};
    for (int path = 0; path < 2; path++)
        for (int i = 0; i < 2; i++) {
            char what[96];
            snprintf(what, sizeof what, "7B decode G8 pre%d H32 KVH%d hd128", PRE, kvh[i]);
            attn_case(kerns[path], what, segs, G, G, Tk, 32, kvh[i], 128);
            attn_time(P.g, kerns[path], what, segs, G, G, Tk, 32, kvh[i], 128);
        }
}

static void test_elementwise(void) {
    const size_t n = 10000;
    float *a = rand_bf16(n, 3, &R), *b = rand_bf16(n, 3, &R);
    Tensor *ac, *ag, *bc, *bg, *yc, *yg;
    put_act(&P, a, n, &ac, &ag);
    put_act(&P, b, n, &bc, &bg);
    yc = P.c->alloc(P.c, n * P.c->act_size);
    yg = P.g->alloc(P.g, n * P.g->act_size);
    P.c->gelu(P.c, yc, ac, n), P.g->gelu(P.g, yg, ag, n);
    CHECK(cmp_act(&P, "gelu", yc, yg, n) < 1e-2);
    P.c->silu_mul(P.c, yc, ac, bc, n), P.g->silu_mul(P.g, yg, ag, bg, n);
    CHECK(cmp_act(&P, "silu_mul", yc, yg, n) < 1e-2);
    P.c->add(P.c, yc, ac, bc, n), P.g->add(P.g, yg, ag, bg, n);
    CHECK(cmp_act(&P, "add", yc, yg, n) < 1e-2);
    P.c->avgpool2(P.c, yc, ac, 50, 100), P.g->avgpool2(P.g, yg, ag, 50, 100);
    CHECK(cmp_act(&P, "avgpool2", yc, yg, 5000) < 1e-2);
    free_pair(&P, ac, ag), free_pair(&P, bc, bg), free_pair(&P, yc, yg);
    free(a), free(b);
}

// The fused inference ops against the CPU's unfused ones: swiglu over stacked [g | u] rows against
// silu_mul, and qkv_rope_cache against rope on q and k plus copy_rows into cache rows (GQA 4 / 2 heads).
static void test_fused(void) {
    const int T = 5, FF = 96, H = 4, KVH = 2, hd = 64, Q = H * hd, KV = KVH * hd, ROWS = 12;
    float *gu = rand_bf16((size_t)T * 2 * FF, 2, &R), *g = mallocCheck((size_t)T * FF * 4);
    float *u = mallocCheck((size_t)T * FF * 4);
    for (int t = 0; t < T; t++)
        for (int j = 0; j < FF; j++) g[t * FF + j] = gu[t * 2 * FF + j], u[t * FF + j] = gu[t * 2 * FF + FF + j];
    Tensor *guc, *gug, *gc, *gg, *uc, *ug;
    put_act(&P, gu, (size_t)T * 2 * FF, &guc, &gug);
    put_act(&P, g, (size_t)T * FF, &gc, &gg);
    put_act(&P, u, (size_t)T * FF, &uc, &ug);
    Tensor *yc = P.c->alloc(P.c, (size_t)T * FF * 4), *yg = P.g->alloc(P.g, (size_t)T * FF * 2);
    P.c->silu_mul(P.c, yc, gc, uc, (size_t)T * FF);
    P.g->swiglu(P.g, yg, gug, T, FF);
    CHECK(cmp_act(&P, "swiglu vs silu_mul", yc, yg, (size_t)T * FF) < 1e-2);
    free_pair(&P, guc, gug), free_pair(&P, gc, gg), free_pair(&P, uc, ug), free_pair(&P, yc, yg);
    free(gu), free(g), free(u);

    float *qkv = rand_bf16((size_t)T * (Q + 2 * KV), 1, &R), *qh = mallocCheck((size_t)T * Q * 4);
    float *kh = mallocCheck((size_t)T * KV * 4), *vh = mallocCheck((size_t)T * KV * 4);
    for (int t = 0; t < T; t++) {
        memcpy(qh + t * Q, qkv + t * (Q + 2 * KV), Q * 4);
        memcpy(kh + t * KV, qkv + t * (Q + 2 * KV) + Q, KV * 4);
        memcpy(vh + t * KV, qkv + t * (Q + 2 * KV) + Q + KV, KV * 4);
    }
    int pos[5] = {0, 7, 300, 301, 4095}, rows[5] = {11, 0, 3, 4, 8};
    Tensor *qkvc, *qkvg, *qc, *qg, *kc, *kg, *vc, *vg;
    void *pc, *pg, *rc, *rg;
    put_act(&P, qkv, (size_t)T * (Q + 2 * KV), &qkvc, &qkvg);
    put_act(&P, qh, (size_t)T * Q, &qc, &qg);
    put_act(&P, kh, (size_t)T * KV, &kc, &kg);
    put_act(&P, vh, (size_t)T * KV, &vc, &vg);
    put_raw(&P, pos, sizeof pos, &pc, &pg);
    put_raw(&P, rows, sizeof rows, &rc, &rg);
    Tensor *kcc = P.c->alloc(P.c, (size_t)ROWS * KV * 4), *kcg = P.g->alloc(P.g, (size_t)ROWS * KV * 2);
    Tensor *vcc = P.c->alloc(P.c, (size_t)ROWS * KV * 4), *vcg = P.g->alloc(P.g, (size_t)ROWS * KV * 2);
    P.c->rope(P.c, qc, pc, T, H, hd, 1e4f, 0);
    P.c->rope(P.c, kc, pc, T, KVH, hd, 1e4f, 0);
    P.c->copy_rows(P.c, kcc, rc, kc, NULL, T, KV, 0);
    P.c->copy_rows(P.c, vcc, rc, vc, NULL, T, KV, 0);
    P.g->qkv_rope_cache(P.g, qg, kcg, vcg, qkvg, pg, rg, T, H, KVH, hd, 1e4f);
    CHECK(cmp_act(&P, "qkv_rope_cache q", qc, qg, (size_t)T * Q) < 1e-2);
    CHECK(cmp_act(&P, "qkv_rope_cache key rows", kcc, kcg, (size_t)ROWS * KV) < 1e-2);
    CHECK(cmp_act(&P, "qkv_rope_cache value rows", vcc, vcg, (size_t)ROWS * KV) < 1e-2);
    free_pair(&P, qkvc, qkvg), free_pair(&P, qc, qg), free_pair(&P, kc, kg), free_pair(&P, vc, vg);
    free_pair(&P, pc, pg), free_pair(&P, rc, rg), free_pair(&P, kcc, kcg), free_pair(&P, vcc, vcg);
    free(qkv), free(qh), free(kh), free(vh);
}

// A decode-like op sequence (upload of host rows, gather, GEMM, attention over a shared prefix with
// per-step own-key lengths) through a graph: the captured pass and replays with new host inputs give
// the op-by-op results exactly; a pass with another shape is refused (graph_end 1) and then recaptured.
static void graph_pass(Ops *o, void *g, Tensor *y, Tensor *att, float *lse, const Tensor *x, const Tensor *w,
                       const Tensor *kv, int *d_idx, const int *idx, int n, int step, int D) {
    AttnSeg segs[4];
    for (int i = 0; i < n; i++)
        segs[i] = (AttnSeg){.q_start = i, .q_len = 1, .pre_start = 0, .pre_len = 40, .k_start = 40 + 8 * i,
                            .k_len = step + 1, .causal = 1};
    if (g) o->graph_begin(o, g);
    o->upload(o, d_idx, idx, (size_t)n * sizeof(int));
    o->copy_rows(o, att, NULL, x, d_idx, n, D, 0);
    o->matmul(o, y, att, w, NULL, n, D, D, 0, 1, 0);
    o->attention(o, att, lse, y, kv, kv, segs, n, 2, 2, D / 2, 0.125f);
}

static void test_graph(void) {
    const int D = 64, ROWS = 80;
    float *x = rand_bf16((size_t)ROWS * D, 1, &R), *w = rand_bf16((size_t)D * D, 0.2f, &R);
    Ops *o = P.g;
    Tensor *xg = o->alloc(o, (size_t)ROWS * D * 2), *wg = o->alloc(o, (size_t)D * D * 2);
    o->upload_act(o, xg, x, (size_t)ROWS * D);
    o->upload_act(o, wg, w, (size_t)D * D);
    Tensor *y = o->alloc(o, 4 * D * 2), *att = o->alloc(o, 4 * D * 2);
    float *lse = o->alloc(o, 4 * 2 * 4);
    int *d_idx = o->alloc(o, 4 * sizeof(int));
    void *g = o->graph_create(o);
    float want[4 * 64], got[4 * 64];
    int ok = 1, refused = 0;
    for (int step = 0; step < 6; step++) {
        const int n = step < 4 ? 4 : 3;  // the batch shrinks at step 4: a new shape
        int idx[4];
        for (int i = 0; i < n; i++) idx[i] = (step * 7 + i * 13) % ROWS;
        graph_pass(o, NULL, y, att, lse, xg, wg, xg, d_idx, idx, n, step, D);
        o->download_act(o, want, att, (size_t)n * D);
        o->zero(o, att, (size_t)n * D * 2);
        int r;
        while ((r = (graph_pass(o, g, y, att, lse, xg, wg, xg, d_idx, idx, n, step, D), o->graph_end(o, g, 1))))
            refused += r;
        o->download_act(o, got, att, (size_t)n * D);
        ok &= memcmp(want, got, (size_t)n * D * sizeof(float)) == 0;
    }
    printf("  graph: 6 passes (capture, replays, one new shape): %s, %d pass refused\n", ok ? "exact" : "DIFFERENT",
           refused);
    CHECK(ok);
    CHECK_INT(refused, 1);
    o->graph_free(o, g);
    o->free(o, xg), o->free(o, wg), o->free(o, y), o->free(o, att), o->free(o, lse), o->free(o, d_idx);
    free(x), free(w);
}

static void test_copy_rows(void) {
    const int C = 300, n = 6;
    float *src = rand_bf16((size_t)10 * C, 1, &R), *dst = rand_bf16((size_t)10 * C, 1, &R);
    const int di[6] = {3, -1, 0, 9, 3, 5}, si[6] = {0, 1, 2, 2, 7, 9};
    Tensor *sc, *sg, *dc, *dg;
    void *dic, *dig, *sic, *sig;
    put_act(&P, src, (size_t)10 * C, &sc, &sg);
    put_act(&P, dst, (size_t)10 * C, &dc, &dg);
    put_raw(&P, di, sizeof di, &dic, &dig);
    put_raw(&P, si, sizeof si, &sic, &sig);
    // accumulate with a repeated destination row, then a gather (distinct destinations)
    P.c->copy_rows(P.c, dc, dic, sc, sic, n, C, 1), P.g->copy_rows(P.g, dg, dig, sg, sig, n, C, 1);
    CHECK(cmp_act(&P, "copy_rows accumulate", dc, dg, (size_t)10 * C) < 1e-2);
    // a gather into a fresh buffer moves bf16 values unchanged
    P.c->zero(P.c, dc, (size_t)10 * C * P.c->act_size), P.g->zero(P.g, dg, (size_t)10 * C * P.g->act_size);
    P.c->copy_rows(P.c, dc, NULL, sc, sic, n, C, 0), P.g->copy_rows(P.g, dg, NULL, sg, sig, n, C, 0);
    CHECK(cmp_act(&P, "copy_rows gather", dc, dg, (size_t)10 * C) == 0);
    free_pair(&P, sc, sg), free_pair(&P, dc, dg), free_pair(&P, dic, dig), free_pair(&P, sic, sig);
    free(src), free(dst);
}

static void test_logprob(void) {
    const int Rw = 5, V = 151680;
    float *x = rand_bf16((size_t)Rw * V, 3, &R);
    int tgt[5] = {0, 17, V - 1, 4242, 100000};
    Tensor *xc, *xg;
    void *tc, *tg;
    put_act(&P, x, (size_t)Rw * V, &xc, &xg);
    put_raw(&P, tgt, sizeof tgt, &tc, &tg);
    float *lpc = P.c->alloc(P.c, Rw * 4), *lpg = P.g->alloc(P.g, Rw * 4), *lsc = P.c->alloc(P.c, Rw * 4);
    float *lsg = P.g->alloc(P.g, Rw * 4);
    P.c->logprob(P.c, lpc, lsc, xc, tc, Rw, V);
    P.g->logprob(P.g, lpg, lsg, xg, tg, Rw, V);
    CHECK(cmp_f32(&P, "logprob lp (V=151680)", lpc, lpg, Rw) < 1e-3);
    CHECK(cmp_f32(&P, "logprob lse", lsc, lsg, Rw) < 1e-3);
    free_pair(&P, xc, xg), free_pair(&P, tc, tg), free_pair(&P, lpc, lpg), free_pair(&P, lsc, lsg);
    free(x);
}

// sample_rows against sampler_pick on the same (bf16-exact) logits: every processing option, several
// rows, questions and steps. The choice must be identical (a flip needs two fp64 cumulative sums tied to
// rounding), the log-prob equal to fp64 noise, and each choice appended to its row's device history.
static void test_sample_rows(void) {
    enum { Rw = 6, H = 40, STEPS = 3 };
    const int Vs[2] = {1000, 151680};
    for (int vi = 0; vi < 2; vi++) {
        const int V = Vs[vi];
        float *x = rand_bf16((size_t)Rw * V, 3, &R);
        Tensor *xg = P.g->alloc(P.g, (size_t)Rw * V * P.g->act_size);
        P.g->upload_act(P.g, xg, x, (size_t)Rw * V);
        int hist[Rw][H + STEPS];
        for (int r = 0; r < Rw; r++)
            for (int i = 0; i < H; i++) hist[r][i] = (int)rng_below(&R, (uint64_t)V);
        for (int cfg = 0; cfg < 6; cfg++) {
            SamplerParams sp = sampler_defaults(0, 8, 1234 + (uint64_t)cfg);
            const char *what = "T=1";
            if (cfg == 1) sp.top_k = 50, sp.temperature = 0.7f, what = "top_k=50 T=0.7";
            if (cfg == 2) sp.top_p = 0.9f, what = "top_p=0.9";
            if (cfg == 3) {
                sp.top_k = 50, sp.top_p = 0.8f, sp.repetition_penalty = 1.3f, sp.temperature = 1.2f;
                sp.n_suppress = 2, sp.suppress[0] = hist[0][0], sp.suppress[1] = V / 2;
                what = "top_k=50 top_p=0.8 penalty=1.3 suppress";
            }
            if (cfg == 4) sp.greedy = 1, sp.repetition_penalty = 1.1f, what = "greedy penalty=1.1";
            if (cfg == 5) sp.top_k = 1, what = "top_k=1";
            int *dh = P.g->alloc(P.g, sizeof hist);
            P.g->upload(P.g, dh, hist, sizeof hist);
            int n_hist = H, same = 0, total = 0;
            double lp_err = 0;
            for (int step = 0; step < STEPS; step++) {
                SampleRow rows[Rw];
                for (int r = 0; r < Rw; r++)
                    rows[r] = (SampleRow){.hist_off = r * (H + STEPS), .n_hist = n_hist, .question = 7 + r / 2,
                                          .sample = (uint32_t)r % 2};
                int ids[Rw];
                float lps[Rw];
                P.g->sample_rows(P.g, ids, lps, xg, Rw, V, &sp, dh, rows, (uint32_t)step);
                for (int r = 0; r < Rw; r++) {
                    float *row = mallocCheck((size_t)V * sizeof(float)), lp;
                    memcpy(row, x + (size_t)r * V, (size_t)V * sizeof(float));
                    int id = sampler_pick(&sp, row, V, hist[r], n_hist, rows[r].question, rows[r].sample,
                                          (uint32_t)step, &lp);
                    same += id == ids[r], total++;
                    lp_err = fmax(lp_err, fabs(lp - lps[r]));
                    hist[r][n_hist] = id;
                    free(row);
                }
                n_hist++;
            }
            int back[Rw][H + STEPS];
            P.g->download(P.g, back, dh, sizeof back);
            printf("  sample_rows V=%d %s: %d/%d choices equal, max |lp diff| %.2e\n", V, what, same, total,
                   lp_err);
            CHECKF(same == total, "sample_rows V=%d %s: %d of %d choices differ", V, what, total - same, total);
            CHECKF(lp_err < 1e-4, "sample_rows V=%d %s: lp diff %.3e", V, what, lp_err);
            CHECKF(memcmp(back, hist, sizeof hist) == 0, "sample_rows V=%d %s: history not appended", V, what);
            P.g->free(P.g, dh);
        }
        P.g->free(P.g, xg);
        free(x);
    }
}

// ---- backward ops. Gradients are bf16 on the GPU: each output is one bf16 rounding of an fp32 sum
// (2^-9 relative) of bf16-exact inputs, so the tolerance is 1e-2 of the reference's largest magnitude
// (GEMMs over long sums included); outputs that accumulate start from random values.

// Seconds on the monotonic clock.
static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

// Runs fn on the GPU backend reps times after one warm-up and prints the mean time and the bandwidth
// of `bytes` moved per call.
static void time_op(const char *what, void (*fn)(void *), void *ctx, double bytes) {
    const int reps = 10;
    fn(ctx);
    P.g->sync(P.g);
    const double t0 = now_s();
    for (int i = 0; i < reps; i++) fn(ctx);
    P.g->sync(P.g);
    const double dt = (now_s() - t0) / reps;
    printf("  time %-40s %8.3f ms  %7.1f GB/s\n", what, dt * 1e3, bytes / dt * 1e-9);
}

// The GEMMs of model_backward: input gradients (ta0 tb0, = then +=) and weight gradients (ta1 tb0 +=)
// at 7B-like widths, and the lm_head chunk (27 rows of V=151680).
static void test_matmul_bwd(void) {
    const int shapes[][6] = {
        // M, N, K, ta, tb, accumulate
        {128, 3584, 3584, 0, 0, 0},  // dln = dq Wq
        {128, 3584, 512, 0, 0, 1},   // dln += dk Wk
        {3584, 512, 256, 1, 0, 1},   // dWk += dk^T ln1
        {512, 3584, 256, 1, 0, 1},   // dWo-like: [out, in] += dy^T x
        {1280, 5120, 96, 1, 0, 1},   // audio fc1
        {27, 256, 151680, 0, 0, 0},  // dhsel = dlogits lm_head
        {151680, 256, 27, 1, 0, 1},  // dlm_head += dlogits^T h
    };
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2], ta = shapes[s][3], tb = shapes[s][4];
        const int acc = shapes[s][5];
        float *a = rand_bf16((size_t)M * K, 1, &R), *b = rand_bf16((size_t)K * N, 1, &R);
        float *c0 = rand_bf16((size_t)M * N, 10, &R);
        Tensor *ac, *ag, *bc, *bg, *cc, *cg;
        put_act(&P, a, (size_t)M * K, &ac, &ag);
        put_act(&P, b, (size_t)K * N, &bc, &bg);
        put_act(&P, c0, (size_t)M * N, &cc, &cg);
        P.c->matmul(P.c, cc, ac, bc, NULL, M, N, K, ta, tb, acc);
        P.g->matmul(P.g, cg, ag, bg, NULL, M, N, K, ta, tb, acc);
        char what[96];
        snprintf(what, sizeof what, "matmul bwd %dx%dx%d ta%d tb%d%s", M, N, K, ta, tb, acc ? " acc" : "");
        const double e = cmp_act(&P, what, cc, cg, (size_t)M * N);
        CHECKF(e < 1e-2, "%s: rel %.3e", what, e);
        free_pair(&P, ac, ag), free_pair(&P, bc, bg), free_pair(&P, cc, cg);
        free(a), free(b), free(c0);
    }
}

typedef struct {
    Tensor *c, *a, *b;
    int M, N, K;
} GemmCtx;
static void lm_head_grad_run(void *p) {
    GemmCtx *g = p;
    P.g->matmul(P.g, g->c, g->a, g->b, NULL, g->M, g->N, g->K, 1, 0, 1);
}

// The 7B lm_head weight gradient of one logits chunk, [V, D] += dlogits^T [V, R] h [R, D]: it reads and
// writes the whole [V, D] gradient whatever R is, so the chunk the model passes sets its cost per target.
static void test_lm_head_grad_time(void) {
    const int V = 151680, D = 3584, rows[2] = {27, 256};
    Tensor *c = P.g->alloc(P.g, (size_t)V * D * P.g->act_size);
    Tensor *a = P.g->alloc(P.g, (size_t)V * 256 * P.g->act_size);
    Tensor *b = P.g->alloc(P.g, (size_t)256 * D * P.g->act_size);
    for (int i = 0; i < 2; i++) {
        GemmCtx g = {c, a, b, V, D, rows[i]};
        char what[80];
        snprintf(what, sizeof what, "lm_head grad chunk R=%d (V=%d D=%d)", rows[i], V, D);
        time_op(what, lm_head_grad_run, &g, (double)V * D * 2 * 2);
    }
    float probe[4];
    P.g->download_act(P.g, probe, c, 4);
    CHECK(probe[0] == 0.0f);  // zero inputs keep the accumulated gradient zero
    P.g->free(P.g, c), P.g->free(P.g, a), P.g->free(P.g, b);
}

typedef struct {
    Tensor *db, *dy;
    int M, N;
} BiasCtx;
static void bias_run(void *p) {
    BiasCtx *c = p;
    P.g->bias_grad(P.g, c->db, c->dy, c->M, c->N);
}

static void test_bias_grad(void) {
    const int shapes[][2] = {{4096, 3584}, {1500, 5120}, {3, 1001}, {700, 1}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int M = shapes[s][0], N = shapes[s][1];
        float *dy = rand_bf16((size_t)M * N, 1, &R), *db = rand_bf16(N, 10, &R);
        Tensor *dyc, *dyg, *dbc, *dbg;
        put_act(&P, dy, (size_t)M * N, &dyc, &dyg);
        put_act(&P, db, N, &dbc, &dbg);
        P.c->bias_grad(P.c, dbc, dyc, M, N);
        P.g->bias_grad(P.g, dbg, dyg, M, N);
        char what[64];
        snprintf(what, sizeof what, "bias_grad M=%d N=%d", M, N);
        CHECKF(cmp_act(&P, what, dbc, dbg, N) < 1e-2, "%s", what);
        if (s == 0) {
            BiasCtx c = {dbg, dyg, M, N};
            time_op(what, bias_run, &c, (double)M * N * 2);
        }
        free_pair(&P, dyc, dyg), free_pair(&P, dbc, dbg);
        free(dy), free(db);
    }
}

static void test_col2im(void) {
    // conv2 of the encoder at full size (time-major, stride 2), then a channel-major stride-1 layout
    const int cfg[][7] = {{1280, 3000, 1, 1280, 3, 2, 1}, {6, 20, 20, 1, 3, 1, 1}, {5, 17, 1, 5, 3, 2, 1}};
    for (int s = 0; s < 3; s++) {
        const int C = cfg[s][0], Tin = cfg[s][1], sc = cfg[s][2], st = cfg[s][3], K = cfg[s][4];
        const int stride = cfg[s][5], pad = cfg[s][6], Tout = (Tin + 2 * pad - K) / stride + 1;
        float *dcols = rand_bf16((size_t)Tout * C * K, 1, &R), *dx = rand_bf16((size_t)C * Tin, 1, &R);
        Tensor *cc, *cg, *xc, *xg;
        put_act(&P, dcols, (size_t)Tout * C * K, &cc, &cg);
        put_act(&P, dx, (size_t)C * Tin, &xc, &xg);
        P.c->col2im(P.c, xc, cc, C, Tin, sc, st, K, stride, pad, Tout);
        P.g->col2im(P.g, xg, cg, C, Tin, sc, st, K, stride, pad, Tout);
        char what[64];
        snprintf(what, sizeof what, "col2im C=%d Tin=%d stride %d", C, Tin, stride);
        CHECKF(cmp_act(&P, what, xc, xg, (size_t)C * Tin) < 1e-2, "%s", what);
        free_pair(&P, cc, cg), free_pair(&P, xc, xg);
        free(dcols), free(dx);
    }
}

typedef struct {
    Tensor *dx, *dw, *db, *dy, *x, *w;
    float *mean, *rstd;
    int T, C, ln;
} NormCtx;
static void norm_run(void *p) {
    NormCtx *c = p;
    if (c->ln)
        P.g->layernorm_bwd(P.g, c->dx, c->dw, c->db, c->dy, c->x, c->w, c->mean, c->rstd, c->T, c->C);
    else
        P.g->rmsnorm_bwd(P.g, c->dx, c->dw, c->dy, c->x, c->w, c->rstd, c->T, c->C);
}

// The statistics come from the CPU forward and go to both backends, so only the backward differs.
static void norm_bwd_case(int ln, int T, int C, int timed) {
    float *x = rand_bf16((size_t)T * C, 2, &R), *dy = rand_bf16((size_t)T * C, 1, &R);
    float *w = rand_bf16(C, 0.3f, &R), *b = rand_bf16(C, 1, &R), *dx = rand_bf16((size_t)T * C, 1, &R);
    float *dw = rand_bf16(C, 10, &R), *db = rand_bf16(C, 10, &R);
    for (int i = 0; i < C; i++) w[i] = st_bf16_to_f32(st_f32_to_bf16(w[i] + 1.0f));
    for (size_t i = 0; i < (size_t)T * C; i++) x[i] = st_bf16_to_f32(st_f32_to_bf16(x[i] + (float)(i / C % 5)));
    Tensor *xc, *xg, *dyc, *dyg, *wc, *wg, *bc, *bg, *dxc, *dxg, *dwc, *dwg, *dbc, *dbg;
    put_act(&P, x, (size_t)T * C, &xc, &xg);
    put_act(&P, dy, (size_t)T * C, &dyc, &dyg);
    put_act(&P, w, C, &wc, &wg);
    put_act(&P, b, C, &bc, &bg);
    put_act(&P, dx, (size_t)T * C, &dxc, &dxg);
    put_act(&P, dw, C, &dwc, &dwg);
    put_act(&P, db, C, &dbc, &dbg);
    float *mean = mallocCheck((size_t)T * 4), *rstd = mallocCheck((size_t)T * 4);
    Tensor *y = P.c->alloc(P.c, (size_t)T * C * P.c->act_size);
    void *mc, *mg, *rc, *rg;
    if (ln)
        P.c->layernorm(P.c, y, mean, rstd, xc, wc, bc, T, C, 1e-5f);
    else
        P.c->rmsnorm(P.c, y, rstd, xc, wc, T, C, 1e-6f);
    put_raw(&P, mean, (size_t)T * 4, &mc, &mg);
    put_raw(&P, rstd, (size_t)T * 4, &rc, &rg);
    NormCtx g = {dxg, dwg, dbg, dyg, xg, wg, mg, rg, T, C, ln};
    if (ln) {
        P.c->layernorm_bwd(P.c, dxc, dwc, dbc, dyc, xc, wc, mc, rc, T, C);
    } else {
        P.c->rmsnorm_bwd(P.c, dxc, dwc, dyc, xc, wc, rc, T, C);
    }
    norm_run(&g);
    char what[80];
    const char *name = ln ? "layernorm_bwd" : "rmsnorm_bwd";
    snprintf(what, sizeof what, "%s T=%d C=%d dx", name, T, C);
    CHECKF(cmp_act(&P, what, dxc, dxg, (size_t)T * C) < 1e-2, "%s", what);
    snprintf(what, sizeof what, "%s T=%d C=%d dw", name, T, C);
    CHECKF(cmp_act(&P, what, dwc, dwg, C) < 1e-2, "%s", what);
    if (ln) {
        snprintf(what, sizeof what, "%s T=%d C=%d db", name, T, C);
        CHECKF(cmp_act(&P, what, dbc, dbg, C) < 1e-2, "%s", what);
    }
    if (timed) {
        snprintf(what, sizeof what, "%s T=%d C=%d", name, T, C);
        time_op(what, norm_run, &g, (double)T * C * 2 * 4);
    }
    free_pair(&P, xc, xg), free_pair(&P, dyc, dyg), free_pair(&P, wc, wg), free_pair(&P, bc, bg);
    free_pair(&P, dxc, dxg), free_pair(&P, dwc, dwg), free_pair(&P, dbc, dbg), free_pair(&P, mc, mg);
    free_pair(&P, rc, rg);
    P.c->free(P.c, y);
    free(x), free(dy), free(w), free(b), free(dx), free(dw), free(db), free(mean), free(rstd);
}

static void test_norms_bwd(void) {
    norm_bwd_case(1, 1500, 1280, 1);  // encoder layer norm, one clip
    norm_bwd_case(1, 5, 100, 0);
    norm_bwd_case(0, 4096, 3584, 1);  // 7B decoder
    norm_bwd_case(0, 300, 4096, 0);
    norm_bwd_case(0, 3, 16, 0);
}

static void test_elementwise_bwd(void) {
    const size_t n = (size_t)1 << 20;
    float *x = rand_bf16(n, 3, &R), *u = rand_bf16(n, 3, &R), *dy = rand_bf16(n, 1, &R);
    Tensor *xc, *xg, *uc, *ug, *dyc, *dyg, *dc, *dg, *ec, *eg;
    put_act(&P, x, n, &xc, &xg);
    put_act(&P, u, n, &uc, &ug);
    put_act(&P, dy, n, &dyc, &dyg);
    put_act(&P, dy, n, &dc, &dg);  // a second copy of dy, overwritten in place (dx aliases dy)
    ec = P.c->alloc(P.c, n * P.c->act_size);
    eg = P.g->alloc(P.g, n * P.g->act_size);
    P.c->gelu_bwd(P.c, ec, dyc, xc, n), P.g->gelu_bwd(P.g, eg, dyg, xg, n);
    CHECK(cmp_act(&P, "gelu_bwd", ec, eg, n) < 1e-2);
    P.c->gelu_bwd(P.c, dc, dc, xc, n), P.g->gelu_bwd(P.g, dg, dg, xg, n);
    CHECK(cmp_act(&P, "gelu_bwd in place", dc, dg, n) < 1e-2);
    P.c->upload_act(P.c, dc, dy, n), P.g->upload_act(P.g, dg, dy, n);
    P.c->silu_mul_bwd(P.c, dc, ec, dc, xc, uc, n), P.g->silu_mul_bwd(P.g, dg, eg, dg, xg, ug, n);
    CHECK(cmp_act(&P, "silu_mul_bwd dg (in place)", dc, dg, n) < 1e-2);
    CHECK(cmp_act(&P, "silu_mul_bwd du", ec, eg, n) < 1e-2);
    P.c->avgpool2_bwd(P.c, ec, dyc, 400, 1280), P.g->avgpool2_bwd(P.g, eg, dyg, 400, 1280);
    CHECK(cmp_act(&P, "avgpool2_bwd", ec, eg, 800 * 1280) == 0);  // halving is exact
    free_pair(&P, xc, xg), free_pair(&P, uc, ug), free_pair(&P, dyc, dyg), free_pair(&P, dc, dg);
    free_pair(&P, ec, eg);
    free(x), free(u), free(dy);
}

typedef struct {
    Tensor *dst;
    const Tensor *src;
    int *di, *si;
    int n, C;
} ScatterCtx;
static void scatter_run(void *p) {
    ScatterCtx *c = p;
    P.g->copy_rows(P.g, c->dst, c->di, c->src, c->si, c->n, c->C, 1);
}

// The embedding's scatter-add: 4096 token rows into a 1000-row table (many repeats), rows replaced by
// audio skipped (-1), one row repeated 600 times; then gathered sources with distinct destinations. The
// GPU result must also be bit-identical between two runs (no atomics).
static void test_scatter_add(void) {
    const int n = 4096, rows = 1000, C = 3584;
    float *src = rand_bf16((size_t)n * C, 1, &R), *dst = rand_bf16((size_t)rows * C, 1, &R);
    int *di = mallocCheck(n * sizeof(int)), *si = mallocCheck(n * sizeof(int));
    for (int i = 0; i < n; i++) {
        di[i] = (int)rng_below(&R, rows);
        if (i % 7 == 3) di[i] = 5;
        if (i % 97 == 1) di[i] = -1;
        si[i] = (int)rng_below(&R, n);
    }
    Tensor *sc, *sg, *dc, *dg;
    void *dic, *dig, *sic, *sig;
    put_act(&P, src, (size_t)n * C, &sc, &sg);
    put_act(&P, dst, (size_t)rows * C, &dc, &dg);
    put_raw(&P, di, n * sizeof(int), &dic, &dig);
    put_raw(&P, si, n * sizeof(int), &sic, &sig);
    P.c->copy_rows(P.c, dc, dic, sc, NULL, n, C, 1), P.g->copy_rows(P.g, dg, dig, sg, NULL, n, C, 1);
    CHECK(cmp_act(&P, "scatter-add 4096 rows -> 1000 (dups)", dc, dg, (size_t)rows * C) < 1e-2);
    float *r1 = mallocCheck((size_t)rows * C * 4), *r2 = mallocCheck((size_t)rows * C * 4);
    P.g->download_act(P.g, r1, dg, (size_t)rows * C);
    P.g->upload_act(P.g, dg, dst, (size_t)rows * C);
    P.g->copy_rows(P.g, dg, dig, sg, NULL, n, C, 1);
    P.g->download_act(P.g, r2, dg, (size_t)rows * C);
    CHECKF(memcmp(r1, r2, (size_t)rows * C * 4) == 0, "scatter-add differs between two runs");
    ScatterCtx t = {dg, sg, dig, NULL, n, C};
    time_op("scatter-add n=4096 C=3584", scatter_run, &t, (double)n * C * 2 + (double)rows * C * 4);
    // with gathered sources, and with no destination index (distinct rows), from the initial table
    P.c->upload_act(P.c, dc, dst, (size_t)rows * C), P.g->upload_act(P.g, dg, dst, (size_t)rows * C);
    P.c->copy_rows(P.c, dc, dic, sc, sic, n, C, 1), P.g->copy_rows(P.g, dg, dig, sg, sig, n, C, 1);
    CHECK(cmp_act(&P, "scatter-add gathered sources", dc, dg, (size_t)rows * C) < 1e-2);
    P.c->copy_rows(P.c, dc, NULL, sc, sic, rows, C, 1), P.g->copy_rows(P.g, dg, NULL, sg, sig, rows, C, 1);
    CHECK(cmp_act(&P, "copy_rows accumulate, no dst index", dc, dg, (size_t)rows * C) < 1e-2);
    free_pair(&P, sc, sg), free_pair(&P, dc, dg), free_pair(&P, dic, dig), free_pair(&P, sic, sig);
    free(src), free(dst), free(di), free(si), free(r1), free(r2);
}

// One lm_head chunk at the real vocabulary: the target entries (dlp * (1 - p)) and the rest (-dlp * p,
// tiny) are compared apart, each against its own largest magnitude.
static void test_logprob_bwd(void) {
    const int Rw = 27, V = 151680;
    float *x = rand_bf16((size_t)Rw * V, 3, &R), dlp[27];
    int tgt[27];
    for (int r = 0; r < Rw; r++) {
        tgt[r] = (int)rng_below(&R, V);
        dlp[r] = (float)rng_normal(&R);
    }
    x[(size_t)3 * V + tgt[3]] = 20.0f;  // a confident row: p(target) near 1
    Tensor *xc, *xg;
    void *tc, *tg, *gc, *gg;
    put_act(&P, x, (size_t)Rw * V, &xc, &xg);
    put_raw(&P, tgt, sizeof tgt, &tc, &tg);
    put_raw(&P, dlp, sizeof dlp, &gc, &gg);
    float *lpc = P.c->alloc(P.c, Rw * 4), *lsc = P.c->alloc(P.c, Rw * 4), lse[27];
    P.c->logprob(P.c, lpc, lsc, xc, tc, Rw, V);
    P.c->download(P.c, lse, lsc, sizeof lse);
    void *lc, *lg;
    put_raw(&P, lse, sizeof lse, &lc, &lg);
    P.c->logprob_bwd(P.c, xc, lc, tc, gc, Rw, V);
    P.g->logprob_bwd(P.g, xg, lg, tg, gg, Rw, V);
    float *a = mallocCheck((size_t)Rw * V * 4), *b = mallocCheck((size_t)Rw * V * 4), at[27], bt[27];
    P.g->download_act(P.g, a, xg, (size_t)Rw * V);
    P.c->download_act(P.c, b, xc, (size_t)Rw * V);
    for (int r = 0; r < Rw; r++) {
        at[r] = a[(size_t)r * V + tgt[r]], bt[r] = b[(size_t)r * V + tgt[r]];
        a[(size_t)r * V + tgt[r]] = b[(size_t)r * V + tgt[r]] = 0.0f;
    }
    CHECK(err_report("logprob_bwd R=27 V=151680 targets", at, bt, Rw) < 1e-2);
    CHECK(err_report("logprob_bwd R=27 V=151680 others", a, b, (size_t)Rw * V) < 1e-2);
    free_pair(&P, xc, xg), free_pair(&P, tc, tg), free_pair(&P, gc, gg), free_pair(&P, lc, lg);
    P.c->free(P.c, lpc), P.c->free(P.c, lsc);
    free(x), free(a), free(b);
}

static void test_memory(void) {
    Ops *g = P.g;
    int h[1000], back[1000];
    for (int i = 0; i < 1000; i++) h[i] = i * 7 - 300;
    int *d1 = g->alloc(g, sizeof h), *d2 = g->alloc(g, sizeof h);
    g->download(g, back, d1, sizeof back);
    int zero = 1;
    for (int i = 0; i < 1000; i++) zero &= back[i] == 0;
    CHECK(zero);  // alloc is zero-filled
    g->upload(g, d1, h, sizeof h);
    g->copy(g, d2, d1, sizeof h);
    g->download(g, back, d2, sizeof back);
    CHECK(memcmp(back, h, sizeof h) == 0);
    g->zero(g, d2, 400 * sizeof(int));
    g->download(g, back, d2, sizeof back);
    CHECK(back[399] == 0 && back[400] == h[400]);
    g->free(g, d1), g->free(g, d2);
    // bf16 round trip is exact for bf16 values
    float *x = rand_bf16(100, 5, &R), y[100];
    Tensor *t = g->alloc(g, 100 * g->act_size);
    g->upload_act(g, t, x, 100);
    g->download_act(g, y, t, 100);
    CHECK(memcmp(x, y, sizeof y) == 0);
    g->free(g, t);
    free(x);
}
#endif

int main(void) {
#ifdef AQA_CUDA
    if (ops_cuda_device_count() < 1) {
        printf("test_ops_cuda: no CUDA device, skipped\n");
        return 77;
    }
    P.c = ops_cpu_create();
    P.g = ops_cuda_create();
    rng_init(&R, 7, 0);
    RUN(test_memory);
    RUN(test_matmul);
    RUN(test_im2col);
    RUN(test_norms);
    RUN(test_rope);
    RUN(test_attention);
    RUN(test_attention_decode7b);
    RUN(test_elementwise);
    RUN(test_copy_rows);
    RUN(test_fused);
    RUN(test_graph);
    RUN(test_logprob);
    RUN(test_sample_rows);
    RUN(test_matmul_bwd);
    RUN(test_lm_head_grad_time);
    RUN(test_bias_grad);
    RUN(test_col2im);
    RUN(test_norms_bwd);
    RUN(test_elementwise_bwd);
    RUN(test_scatter_add);
    RUN(test_logprob_bwd);
    ops_destroy(P.c);
    ops_destroy(P.g);
    return test_summary("test_ops_cuda");
#else
    printf("test_ops_cuda: built without CUDA, skipped\n");
    return 77;
#endif
}
