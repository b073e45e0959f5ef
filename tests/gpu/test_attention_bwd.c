// test_attention_bwd: the CUDA flash attention backward against the CPU backend (causal, bidirectional
// with a key-length mask, a shared-prefix group of G 8, GQA, head_dim 4 to 128, the 7B group and encoder
// shapes), and a shared-prefix group against the same sequences laid out naively: the prefix rows' dq/dk/dv
// must be the sum over the G copies. Both backends get identical bf16-exact inputs; out and lse come from
// the CPU forward (out rounded to bf16). Tolerance: max abs error under 3e-2 of the reference's largest
// magnitude - P and dS are rounded to bf16 for the tensor-core products, each result once more when added.
// The FA2 kernel (head_dim 33..128 in 16-byte rows) runs by default, the WMMA one at the other head dims;
// test_wmma_kernel runs the layouts again on the WMMA kernel everywhere (ops_cuda_attention_bwd_with).
// Exits 77 (skipped) without a GPU or a CUDA build.
#include "gpu_testutil.h"

#ifdef AQA_CUDA
#include "model/cuda/ops_cuda_kernels.h"
static Pair P;
static Rng R;
static AttnKernel bwd_kern = ATTN_AUTO;  // the GPU backward's kernel in bwd_case

enum { G8 = 8 };
static const double TOL = 3e-2;

static float bf16_round(float x) { return st_bf16_to_f32(st_f32_to_bf16(x)); }

// Backward of attention over segs on both backends from the same inputs; compares dq, dk, dv, which start
// from the same nonzero values (the op accumulates). reps > 1 runs the backward again on top (+= twice).
static void bwd_case(const char *what, const AttnSeg *segs, int nseg, int Tq, int Tk, int H, int KVH, int hd,
                     int reps) {
    const size_t nq = (size_t)Tq * H * hd, nk = (size_t)Tk * KVH * hd;
    const float scale = 1.0f / sqrtf((float)hd);
    float *q = rand_bf16(nq, 1, &R), *k = rand_bf16(nk, 1, &R), *v = rand_bf16(nk, 1, &R);
    float *dout = rand_bf16(nq, 1, &R), *dq0 = rand_bf16(nq, 0.1f, &R), *dk0 = rand_bf16(nk, 0.1f, &R);
    float *dv0 = rand_bf16(nk, 0.1f, &R), *out = mallocCheck(nq * sizeof(float));
    float *lse = mallocCheck((size_t)Tq * H * sizeof(float));
    Tensor *qc, *qg, *kc, *kg, *vc, *vg, *oc, *og, *doc, *dog, *dqc, *dqg, *dkc, *dkg, *dvc, *dvg;
    void *lc, *lg;
    put_act(&P, q, nq, &qc, &qg);
    put_act(&P, k, nk, &kc, &kg);
    put_act(&P, v, nk, &vc, &vg);
    put_act(&P, dout, nq, &doc, &dog);
    Tensor *fo = P.c->alloc(P.c, nq * P.c->act_size);
    float *fl = P.c->alloc(P.c, (size_t)Tq * H * sizeof(float));
    P.c->attention(P.c, fo, fl, qc, kc, vc, segs, nseg, H, KVH, hd, scale);
    P.c->download_act(P.c, out, fo, nq);
    P.c->download(P.c, lse, fl, (size_t)Tq * H * sizeof(float));
    P.c->free(P.c, fo), P.c->free(P.c, fl);
    for (size_t i = 0; i < nq; i++) out[i] = bf16_round(out[i]);
    put_act(&P, out, nq, &oc, &og);
    put_raw(&P, lse, (size_t)Tq * H * sizeof(float), &lc, &lg);
    put_act(&P, dq0, nq, &dqc, &dqg);
    put_act(&P, dk0, nk, &dkc, &dkg);
    put_act(&P, dv0, nk, &dvc, &dvg);
    for (int r = 0; r < reps; r++) {
        P.c->attention_bwd(P.c, dqc, dkc, dvc, doc, oc, lc, qc, kc, vc, segs, nseg, H, KVH, hd, scale);
        ops_cuda_attention_bwd_with(P.g, bwd_kern, dqg, dkg, dvg, dog, og, lg, qg, kg, vg, segs, nseg, H, KVH, hd,
                                    scale);
    }
    char name[3][160];
    const char *t[3] = {"dq", "dk", "dv"};
    for (int i = 0; i < 3; i++)
        snprintf(name[i], sizeof name[i], "%s%s %s%s", bwd_kern == ATTN_BWD_WMMA ? "[wmma] " : "", what, t[i],
                 reps > 1 ? " (x2)" : "");
    CHECKF(cmp_act(&P, name[0], dqc, dqg, nq) < TOL, "%s", name[0]);
    CHECKF(cmp_act(&P, name[1], dkc, dkg, nk) < TOL, "%s", name[1]);
    CHECKF(cmp_act(&P, name[2], dvc, dvg, nk) < TOL, "%s", name[2]);
    free_pair(&P, qc, qg), free_pair(&P, kc, kg), free_pair(&P, vc, vg), free_pair(&P, doc, dog);
    free_pair(&P, oc, og), free_pair(&P, lc, lg), free_pair(&P, dqc, dqg), free_pair(&P, dkc, dkg);
    free_pair(&P, dvc, dvg);
    free(q), free(k), free(v), free(dout), free(dq0), free(dk0), free(dv0), free(out), free(lse);
}

// A group's segments: prompt rows [0, Pn) causal, then G completions of L rows seeing it as a prefix.
static void group_segs(AttnSeg *s, int Pn, int G, int L) {
    s[0] = (AttnSeg){.q_start = 0, .q_len = Pn, .k_start = 0, .k_len = Pn, .causal = 1};
    for (int g = 0; g < G; g++)
        s[g + 1] = (AttnSeg){.q_start = Pn + g * L, .q_len = L, .pre_start = 0, .pre_len = Pn,
                             .k_start = Pn + g * L, .k_len = L, .causal = 1};
}

static void test_vs_cpu(void) {
    // causal decoder, GQA group 2, several 64-row tiles, backward twice (accumulation)
    AttnSeg causal = {.q_start = 0, .q_len = 150, .k_start = 0, .k_len = 150, .causal = 1};
    bwd_case("causal T=150 H=4 KVH=2 hd=64", &causal, 1, 150, 150, 4, 2, 64, 2);
    // bidirectional encoder: two clips, the first's keys masked to 61 valid rows
    AttnSeg enc[2] = {{.q_start = 0, .q_len = 100, .k_start = 0, .k_len = 61, .causal = 0},
                      {.q_start = 100, .q_len = 100, .k_start = 100, .k_len = 100, .causal = 0}};
    bwd_case("encoder 2 clips masked hd=64", enc, 2, 200, 200, 4, 4, 64, 1);
    // training group: prompt + G 8 completions on the shared prefix, GQA group 4, hd 128
    AttnSeg grp[G8 + 1];
    group_segs(grp, 130, G8, 20);
    bwd_case("prefix 130 + 8x20 H=8 KVH=2 hd=128", grp, G8 + 1, 130 + G8 * 20, 130 + G8 * 20, 8, 2, 128, 1);
    // the decoder's GQA: 28 query heads on 4 kv heads (group 7)
    AttnSeg c70 = {.q_start = 0, .q_len = 70, .k_start = 0, .k_len = 70, .causal = 1};
    bwd_case("causal T=70 H=28 KVH=4 hd=128", &c70, 1, 70, 70, 28, 4, 128, 1);
    // head sizes of the tiny models and padded ones: 16 and 32 exact, 40 (16-byte loads, padded to 64),
    // 36 (element loads, float4 atomics), 6 and 4 (element loads and atomics)
    const int hds[] = {16, 32, 40, 36, 6, 4};
    for (size_t i = 0; i < sizeof hds / sizeof hds[0]; i++) {
        char what[64];
        snprintf(what, sizeof what, "causal T=90 H=4 KVH=2 hd=%d", hds[i]);
        AttnSeg s = {.q_start = 0, .q_len = 90, .k_start = 0, .k_len = 90, .causal = 1};
        bwd_case(what, &s, 1, 90, 90, 4, 2, hds[i], 1);
    }
    // a prefix after the own keys, a causal segment whose queries are the last 33 of 77 keys (keys cached
    // before them), and key rows no segment reads
    AttnSeg odd[2] = {{.q_start = 0, .q_len = 40, .pre_start = 200, .pre_len = 70, .k_start = 10, .k_len = 40,
                       .causal = 1},
                      {.q_start = 40, .q_len = 33, .k_start = 100, .k_len = 77, .causal = 1}};
    bwd_case("cached keys, late prefix, gaps hd=64", odd, 2, 73, 300, 2, 1, 64, 1);
}

// The shapes that matter, still against the CPU: the 7B group (prompt 846 + 8 x 32, H 28, KVH 4, hd 128)
// and one encoder clip (1500 rows, keys masked to 1100 valid, H 20, hd 64). Rows per block reach 512 here,
// so each block carries its dk/dv across several 64-row chunks.
static void test_real_shapes(void) {
    AttnSeg grp[G8 + 1];
    group_segs(grp, 846, G8, 32);
    bwd_case("7B group 846 + 8x32 H=28 KVH=4 hd=128", grp, G8 + 1, 846 + 256, 846 + 256, 28, 4, 128, 1);
    AttnSeg clip = {.q_start = 0, .q_len = 1500, .k_start = 0, .k_len = 1100, .causal = 0};
    bwd_case("encoder clip 1500 (1100 keys) H=20 hd=64", &clip, 1, 1500, 1500, 20, 20, 64, 1);
}

// Small integers / 16: sums of G8 of them stay exact in bf16.
static void rand_exact(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = (float)((int)rng_below(&R, 9) - 4) / 16.0f;
}

// Forward then backward of `segs` on the GPU; dq/dk/dv (from zero) come back as fp32 host arrays.
static void gpu_grads(const AttnSeg *segs, int nseg, int Tq, int Tk, int H, int KVH, int hd, const float *q,
                      const float *k, const float *v, const float *dout, float *dq, float *dk, float *dv) {
    Ops *g = P.g;
    const size_t nq = (size_t)Tq * H * hd, nk = (size_t)Tk * KVH * hd;
    const float scale = 1.0f / sqrtf((float)hd);
    const size_t a = g->act_size;
    Tensor *tq = g->alloc(g, nq * a), *tk = g->alloc(g, nk * a), *tv = g->alloc(g, nk * a), *to = g->alloc(g, nq * a);
    Tensor *tdo = g->alloc(g, nq * a), *tdq = g->alloc(g, nq * a), *tdk = g->alloc(g, nk * a);
    Tensor *tdv = g->alloc(g, nk * a);
    float *lse = g->alloc(g, (size_t)Tq * H * sizeof(float));
    g->upload_act(g, tq, q, nq), g->upload_act(g, tk, k, nk), g->upload_act(g, tv, v, nk);
    g->upload_act(g, tdo, dout, nq);
    g->attention(g, to, lse, tq, tk, tv, segs, nseg, H, KVH, hd, scale);
    g->attention_bwd(g, tdq, tdk, tdv, tdo, to, lse, tq, tk, tv, segs, nseg, H, KVH, hd, scale);
    g->download_act(g, dq, tdq, nq), g->download_act(g, dk, tdk, nk), g->download_act(g, dv, tdv, nk);
    void *bufs[] = {tq, tk, tv, to, tdo, tdq, tdk, tdv, lse};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) g->free(g, bufs[i]);
}

// The shared-prefix layout (prompt once, G completions on it) against G full sequences prompt + completion:
// with the prompt's dout in the shared layout the sum of the copies' prompt douts, every prompt row's
// dq/dk/dv equals the sum over the copies, every completion row's equals its copy's.
static void test_shared_vs_naive(void) {
    const int Pn = 100, L = 24, G = G8, H = 8, KVH = 2, hd = 128, S = Pn + L;
    const int Ts = Pn + G * L, Tn = G * S, wq = H * hd, wk = KVH * hd;
    float *qs = rand_bf16((size_t)Ts * wq, 1, &R), *ks = rand_bf16((size_t)Ts * wk, 1, &R);
    float *vs = rand_bf16((size_t)Ts * wk, 1, &R), *dos = callocCheck((size_t)Ts * wq, sizeof(float));
    float *qn = mallocCheck((size_t)Tn * wq * sizeof(float)), *kn = mallocCheck((size_t)Tn * wk * sizeof(float));
    float *vn = mallocCheck((size_t)Tn * wk * sizeof(float)), *don = mallocCheck((size_t)Tn * wq * sizeof(float));
    rand_exact(don, (size_t)Tn * wq);
    AttnSeg shared[G8 + 1], naive[G8];
    group_segs(shared, Pn, G, L);
    // copy g: rows [g S, g S + Pn) the prompt, then completion g
    for (int g = 0; g < G; g++) {
        naive[g] = (AttnSeg){.q_start = g * S, .q_len = S, .k_start = g * S, .k_len = S, .causal = 1};
        for (int r = 0; r < S; r++) {
            const int sr = r < Pn ? r : Pn + g * L + r - Pn, nr = g * S + r;
            memcpy(qn + (size_t)nr * wq, qs + (size_t)sr * wq, wq * sizeof(float));
            memcpy(kn + (size_t)nr * wk, ks + (size_t)sr * wk, wk * sizeof(float));
            memcpy(vn + (size_t)nr * wk, vs + (size_t)sr * wk, wk * sizeof(float));
            for (int c = 0; c < wq; c++) dos[(size_t)sr * wq + c] += don[(size_t)nr * wq + c];
        }
    }
    float *dqs = mallocCheck((size_t)Ts * wq * sizeof(float)), *dks = mallocCheck((size_t)Ts * wk * sizeof(float));
    float *dvs = mallocCheck((size_t)Ts * wk * sizeof(float)), *dqn = mallocCheck((size_t)Tn * wq * sizeof(float));
    float *dkn = mallocCheck((size_t)Tn * wk * sizeof(float)), *dvn = mallocCheck((size_t)Tn * wk * sizeof(float));
    gpu_grads(shared, G + 1, Ts, Ts, H, KVH, hd, qs, ks, vs, dos, dqs, dks, dvs);
    gpu_grads(naive, G, Tn, Tn, H, KVH, hd, qn, kn, vn, don, dqn, dkn, dvn);
    // the naive gradients folded onto the shared layout's rows
    float *fq = callocCheck((size_t)Ts * wq, sizeof(float)), *fk = callocCheck((size_t)Ts * wk, sizeof(float));
    float *fv = callocCheck((size_t)Ts * wk, sizeof(float));
    for (int g = 0; g < G; g++)
        for (int r = 0; r < S; r++) {
            const int sr = r < Pn ? r : Pn + g * L + r - Pn, nr = g * S + r;
            for (int c = 0; c < wq; c++) fq[(size_t)sr * wq + c] += dqn[(size_t)nr * wq + c];
            for (int c = 0; c < wk; c++) {
                fk[(size_t)sr * wk + c] += dkn[(size_t)nr * wk + c];
                fv[(size_t)sr * wk + c] += dvn[(size_t)nr * wk + c];
            }
        }
    CHECK(err_report("shared vs naive: prompt dq", dqs, fq, (size_t)Pn * wq) < TOL);
    CHECK(err_report("shared vs naive: prompt dk", dks, fk, (size_t)Pn * wk) < TOL);
    CHECK(err_report("shared vs naive: prompt dv", dvs, fv, (size_t)Pn * wk) < TOL);
    const size_t cq = (size_t)Pn * wq, ck = (size_t)Pn * wk;
    CHECK(err_report("shared vs naive: completions dq", dqs + cq, fq + cq, (size_t)G * L * wq) < TOL);
    CHECK(err_report("shared vs naive: completions dk", dks + ck, fk + ck, (size_t)G * L * wk) < TOL);
    CHECK(err_report("shared vs naive: completions dv", dvs + ck, fv + ck, (size_t)G * L * wk) < TOL);
    free(qs), free(ks), free(vs), free(dos), free(qn), free(kn), free(vn), free(don);
    free(dqs), free(dks), free(dvs), free(dqn), free(dkn), free(dvn), free(fq), free(fk), free(fv);
}

// The WMMA kernel (the FA2 kernel's fallback: head dims outside 33..128, rows not 16-byte aligned) on
// every layout of test_vs_cpu, head dims where the FA2 kernel runs by default included.
static void test_wmma_kernel(void) {
    bwd_kern = ATTN_BWD_WMMA;
    test_vs_cpu();
    bwd_kern = ATTN_AUTO;
}
#endif

int main(void) {
#ifdef AQA_CUDA
    if (ops_cuda_device_count() < 1) {
        printf("test_attention_bwd: no CUDA device, skipped\n");
        return 77;
    }
    P.c = ops_cpu_create();
    P.g = ops_cuda_create();
    rng_init(&R, 11, 0);
    RUN(test_vs_cpu);
    RUN(test_real_shapes);
    RUN(test_shared_vs_naive);
    RUN(test_wmma_kernel);
    ops_destroy(P.c);
    ops_destroy(P.g);
    return test_summary("test_attention_bwd");
#else
    printf("test_attention_bwd: built without CUDA, skipped\n");
    return 77;
#endif
}
