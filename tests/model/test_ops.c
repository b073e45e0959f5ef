// Every CPU op against a direct (double) evaluation of its formula, and every backward against finite
// differences of loss = sum(w * forward(x)) (or, for linear ops, the adjoint identity <Ax, y> = <x, A^T y>).
#include "test.h"
#include "model_testutil.h"

static Ops *O;
static Rng R;
static const double TOL = 2e-3;  // fd_check measure (|num - an| / (|num| + |an| + floor))

static float *randn(size_t n, float scale) {
    float *x = mallocCheck((n ? n : 1) * sizeof(float));
    fill_normal(x, n, scale, &R);
    return x;
}

static double dotw(const float *w, const float *y, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)w[i] * y[i];
    return s;
}

// ---------------------------------------------------------------- matmul

static void test_matmul_forms(void) {
    const int M = 5, N = 7, K = 6;
    float *A = randn(M * K, 1), *B = randn(K * N, 1), *bias = randn(N, 1), *C = randn(M * N, 1),
          *C0 = mallocCheck(M * N * 4);
    double worst = 0;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            for (int acc = 0; acc < 2; acc++)
                for (int hb = 0; hb < 2; hb++) {
                    memcpy(C0, C, M * N * 4);
                    O->matmul(O, C, A, B, hb ? bias : NULL, M, N, K, ta, tb, acc);
                    for (int i = 0; i < M; i++)
                        for (int j = 0; j < N; j++) {
                            double s = acc ? C0[i * N + j] : 0;
                            s += hb ? bias[j] : 0;
                            for (int k = 0; k < K; k++)
                                s += (double)(ta ? A[k * M + i] : A[i * K + k]) *
                                     (tb ? B[j * K + k] : B[k * N + j]);
                            worst = fmax(worst, cmp_diff(s, C[i * N + j]));
                        }
                }
    printf("matmul: max abs error over 16 forms %.2e\n", worst);
    CHECK(worst < 1e-5);
    O->bias_grad(O, bias, C, M, N);  // bias += column sums
    free(A), free(B), free(bias), free(C), free(C0);
}

typedef struct {
    int T, in, out;
    float *x, *w, *b, *y, *dy;
} LinCtx;

static double lin_loss(void *p) {
    LinCtx *c = p;
    O->matmul(O, c->y, c->x, c->w, c->b, c->T, c->out, c->in, 0, 1, 0);
    return dotw(c->dy, c->y, (size_t)c->T * c->out);
}

// The Linear backward as the model composes it: dx = dy W, dW += dy^T x, db += column sums of dy.
static void test_linear_grad(void) {
    LinCtx c = {.T = 4, .in = 5, .out = 3};
    c.x = randn(c.T * c.in, 1), c.w = randn(c.out * c.in, 1), c.b = randn(c.out, 1);
    c.y = mallocCheck(c.T * c.out * 4), c.dy = randn(c.T * c.out, 1);
    float *dx = mallocCheck(c.T * c.in * 4), *dw = callocCheck(c.out * c.in, 4), *db = callocCheck(c.out, 4);
    O->matmul(O, dx, c.dy, c.w, NULL, c.T, c.in, c.out, 0, 0, 0);
    O->matmul(O, dw, c.dy, c.x, NULL, c.out, c.in, c.T, 1, 0, 1);
    O->bias_grad(O, db, c.dy, c.T, c.out);
    double ex = fd_check(lin_loss, &c, c.x, dx, c.T * c.in, 1, 3e-2, 1e-2);
    double ew = fd_check(lin_loss, &c, c.w, dw, c.out * c.in, 1, 3e-2, 1e-2);
    double eb = fd_check(lin_loss, &c, c.b, db, c.out, 1, 3e-2, 1e-2);
    printf("linear: fd rel error x %.2e w %.2e b %.2e\n", ex, ew, eb);
    CHECK(ex < TOL && ew < TOL && eb < TOL);
    free(c.x), free(c.w), free(c.b), free(c.y), free(c.dy), free(dx), free(dw), free(db);
}

// ---------------------------------------------------------------- conv (im2col / col2im)

static void test_conv_im2col(void) {
    // conv1d k3 stride 2 pad 1 on a channel-major [C, T] input, against the direct sum
    const int C = 3, T = 10, K = 3, S = 2, Tout = 5, Co = 4;
    float *x = randn(C * T, 1), *w = randn(Co * C * K, 1), *cols = mallocCheck(Tout * C * K * 4),
          *y = mallocCheck(Tout * Co * 4);
    O->im2col(O, cols, x, C, T, T, 1, K, S, 1, Tout);
    O->matmul(O, y, cols, w, NULL, Tout, Co, C * K, 0, 1, 0);
    double worst = 0;
    for (int t = 0; t < Tout; t++)
        for (int o = 0; o < Co; o++) {
            double s = 0;
            for (int c = 0; c < C; c++)
                for (int k = 0; k < K; k++) {
                    int ti = t * S + k - 1;
                    if (ti >= 0 && ti < T) s += (double)w[(o * C + c) * K + k] * x[c * T + ti];
                }
            worst = fmax(worst, cmp_diff(s, y[t * Co + o]));
        }
    CHECK(worst < 1e-5);
    // col2im is im2col's adjoint, in both layouts (time-major input too)
    for (int layout = 0; layout < 2; layout++) {
        int sc = layout ? 1 : T, st = layout ? C : 1;
        float *yc = randn(Tout * C * K, 1), *dx = callocCheck(C * T, 4);
        O->im2col(O, cols, x, C, T, sc, st, K, S, 1, Tout);
        O->col2im(O, dx, yc, C, T, sc, st, K, S, 1, Tout);
        double lhs = dotw(cols, yc, Tout * C * K), rhs = dotw(x, dx, C * T);
        CHECK_NEAR(lhs, rhs, 1e-4 * (fabs(lhs) + 1));
        free(yc), free(dx);
    }
    printf("conv1d: max abs error %.2e\n", worst);
    free(x), free(w), free(cols), free(y);
}

// ---------------------------------------------------------------- norms

typedef struct {
    int T, C, rms;
    float *x, *w, *b, *y, *mean, *rstd, *dy;
} NormCtx;

static double norm_loss(void *p) {
    NormCtx *c = p;
    if (c->rms)
        O->rmsnorm(O, c->y, c->rstd, c->x, c->w, c->T, c->C, 1e-5f);
    else
        O->layernorm(O, c->y, c->mean, c->rstd, c->x, c->w, c->b, c->T, c->C, 1e-5f);
    return dotw(c->dy, c->y, (size_t)c->T * c->C);
}

static void test_norms(void) {
    for (int rms = 0; rms < 2; rms++) {
        NormCtx c = {.T = 3, .C = 8, .rms = rms};
        size_t n = c.T * c.C;
        c.x = randn(n, 1), c.w = randn(c.C, 1), c.b = randn(c.C, 1), c.y = mallocCheck(n * 4);
        c.mean = mallocCheck(c.T * 4), c.rstd = mallocCheck(c.T * 4), c.dy = randn(n, 1);
        float *dx = callocCheck(n, 4), *dw = callocCheck(c.C, 4), *db = callocCheck(c.C, 4);
        norm_loss(&c);
        // direct formula for row 0
        double m = 0, v = 0, ss = 0;
        for (int i = 0; i < c.C; i++) m += c.x[i], ss += (double)c.x[i] * c.x[i];
        m /= c.C;
        for (int i = 0; i < c.C; i++) v += (c.x[i] - m) * (c.x[i] - m);
        v /= c.C;
        double y3 =
            rms ? c.w[3] * c.x[3] / sqrt(ss / c.C + 1e-5) : (c.x[3] - m) / sqrt(v + 1e-5) * c.w[3] + c.b[3];
        CHECK_NEAR(c.y[3], y3, 1e-5);
        if (rms)
            O->rmsnorm_bwd(O, dx, dw, c.dy, c.x, c.w, c.rstd, c.T, c.C);
        else
            O->layernorm_bwd(O, dx, dw, db, c.dy, c.x, c.w, c.mean, c.rstd, c.T, c.C);
        double ex = fd_check(norm_loss, &c, c.x, dx, n, 1, 3e-2, 1e-2);
        double ew = fd_check(norm_loss, &c, c.w, dw, c.C, 1, 3e-2, 1e-2);
        double eb = rms ? 0 : fd_check(norm_loss, &c, c.b, db, c.C, 1, 3e-2, 1e-2);
        printf("%s: fd rel error x %.2e w %.2e b %.2e\n", rms ? "rmsnorm" : "layernorm", ex, ew, eb);
        CHECK(ex < TOL && ew < TOL && eb < TOL);
        free(c.x), free(c.w), free(c.b), free(c.y), free(c.mean), free(c.rstd), free(c.dy), free(dx), free(dw),
            free(db);
    }
}

// ---------------------------------------------------------------- rope

static void test_rope(void) {
    const int T = 3, H = 2, hd = 8;
    int pos[3] = {0, 5, 1000};
    float *x = randn(T * H * hd, 1), *y = mallocCheck(T * H * hd * 4), *z = randn(T * H * hd, 1);
    memcpy(y, x, T * H * hd * 4);
    O->rope(O, y, pos, T, H, hd, 10000.0f, 0);
    // direct: x'[i] = x[i] cos - x[i+4] sin, x'[i+4] = x[i+4] cos + x[i] sin at row 2, head 1, i = 1
    float invf = 1.0f / powf(10000.0f, 2.0f / 8.0f), ang = invf * 1000.0f;
    const float *xr = x + (2 * H + 1) * hd;
    CHECK_NEAR(y[(2 * H + 1) * hd + 1], xr[1] * cosf(ang) - xr[5] * sinf(ang), 1e-5);
    CHECK_NEAR(y[(2 * H + 1) * hd + 5], xr[5] * cosf(ang) + xr[1] * sinf(ang), 1e-5);
    CHECK_NEAR(y[3], x[3], 0);  // position 0 is the identity
    // the inverse is the adjoint (rotation): <rope(x), z> = <x, rope^-1(z)>, and undoes rope
    double lhs = dotw(y, z, T * H * hd);
    O->rope(O, z, pos, T, H, hd, 10000.0f, 1);
    CHECK_NEAR(lhs, dotw(x, z, T * H * hd), 1e-4);
    O->rope(O, y, pos, T, H, hd, 10000.0f, 1);
    CHECK(cmp_rel_err(y, x, T * H * hd) < 1e-5);
    free(x), free(y), free(z);
}

// ---------------------------------------------------------------- attention

typedef struct {
    int Tq, Tk, H, KVH, hd, nseg;
    AttnSeg segs[4];
    float *q, *k, *v, *out, *lse, *dy;
} AttnCtx;

static double attn_loss(void *p) {
    AttnCtx *c = p;
    O->attention(O, c->out, c->lse, c->q, c->k, c->v, c->segs, c->nseg, c->H, c->KVH, c->hd, 0.5f);
    return dotw(c->dy, c->out, (size_t)c->Tq * c->H * c->hd);
}

// Key rows query row r may see, by a direct reading of the segment rules; returns the count.
static int visible_keys(const AttnCtx *c, int r, int *rows) {
    for (int s = 0; s < c->nseg; s++) {
        const AttnSeg *g = &c->segs[s];
        if (r < g->q_start || r >= g->q_start + g->q_len) continue;
        int n = 0, j = r - g->q_start;
        for (int i = 0; i < g->pre_len; i++) rows[n++] = g->pre_start + i;
        int own = g->causal ? g->k_len - g->q_len + j + 1 : g->k_len;
        for (int i = 0; i < own; i++) rows[n++] = g->k_start + i;
        return n;
    }
    return 0;
}

static void test_attention(void) {
    // rows 0-3: a causal prompt; rows 4-5 and 6-8: two completions over that prefix; rows 9-11:
    // bidirectional with 2 visible keys (the audio mask); GQA 4 query heads over 2 kv heads.
    AttnCtx c = {.Tq = 12, .Tk = 12, .H = 4, .KVH = 2, .hd = 4, .nseg = 4};
    c.segs[0] = (AttnSeg){.q_start = 0, .q_len = 4, .k_start = 0, .k_len = 4, .causal = 1};
    c.segs[1] =
        (AttnSeg){.q_start = 4, .q_len = 2, .pre_start = 0, .pre_len = 4, .k_start = 4, .k_len = 2, .causal = 1};
    c.segs[2] =
        (AttnSeg){.q_start = 6, .q_len = 3, .pre_start = 0, .pre_len = 4, .k_start = 6, .k_len = 3, .causal = 1};
    c.segs[3] = (AttnSeg){.q_start = 9, .q_len = 3, .k_start = 9, .k_len = 2, .causal = 0};
    size_t nq = (size_t)c.Tq * c.H * c.hd, nk = (size_t)c.Tk * c.KVH * c.hd;
    c.q = randn(nq, 1), c.k = randn(nk, 1), c.v = randn(nk, 1), c.out = mallocCheck(nq * 4);
    c.lse = mallocCheck(c.Tq * c.H * 4), c.dy = randn(nq, 1);
    attn_loss(&c);
    // direct softmax over the visible keys
    double worst = 0;
    for (int r = 0; r < c.Tq; r++)
        for (int h = 0; h < c.H; h++) {
            int rows[16], n = visible_keys(&c, r, rows), kvh = h / 2;
            double sc[16], mx = -1e30, z = 0;
            for (int i = 0; i < n; i++) {
                sc[i] = 0;
                for (int d = 0; d < c.hd; d++)
                    sc[i] += (double)c.q[(r * c.H + h) * c.hd + d] * c.k[(rows[i] * c.KVH + kvh) * c.hd + d];
                sc[i] *= 0.5;
                mx = fmax(mx, sc[i]);
            }
            for (int i = 0; i < n; i++) z += exp(sc[i] - mx);
            for (int d = 0; d < c.hd; d++) {
                double o = 0;
                for (int i = 0; i < n; i++) o += exp(sc[i] - mx) / z * c.v[(rows[i] * c.KVH + kvh) * c.hd + d];
                worst = fmax(worst, cmp_diff(o, c.out[(r * c.H + h) * c.hd + d]));
            }
            worst = fmax(worst, cmp_diff(mx + log(z), c.lse[r * c.H + h]));
        }
    printf("attention: forward max abs error %.2e\n", worst);
    CHECK(worst < 1e-5);
    float *dq = callocCheck(nq, 4), *dk = callocCheck(nk, 4), *dv = callocCheck(nk, 4);
    O->attention_bwd(O, dq, dk, dv, c.dy, c.out, c.lse, c.q, c.k, c.v, c.segs, c.nseg, c.H, c.KVH, c.hd, 0.5f);
    double eq = fd_check(attn_loss, &c, c.q, dq, nq, 1, 3e-2, 1e-2);
    double ek = fd_check(attn_loss, &c, c.k, dk, nk, 1, 3e-2, 1e-2);
    double ev = fd_check(attn_loss, &c, c.v, dv, nk, 1, 3e-2, 1e-2);
    printf("attention: fd rel error q %.2e k %.2e v %.2e\n", eq, ek, ev);
    CHECK(eq < TOL && ek < TOL && ev < TOL);
    free(c.q), free(c.k), free(c.v), free(c.out), free(c.lse), free(c.dy), free(dq), free(dk), free(dv);
}

// ---------------------------------------------------------------- pointwise, pooling, rows

typedef struct {
    int kind;  // 0 gelu, 1 silu*mul, 2 avgpool
    size_t n;
    float *x, *u, *y, *dy;
} PwCtx;

static double pw_loss(void *p) {
    PwCtx *c = p;
    if (c->kind == 0)
        O->gelu(O, c->y, c->x, c->n);
    else if (c->kind == 1)
        O->silu_mul(O, c->y, c->x, c->u, c->n);
    else
        O->avgpool2(O, c->y, c->x, (int)c->n / 2 / 3, 3);
    return dotw(c->dy, c->y, c->kind == 2 ? c->n / 2 : c->n);
}

static void test_pointwise(void) {
    const char *names[3] = {"gelu", "silu_mul", "avgpool2"};
    for (int kind = 0; kind < 3; kind++) {
        PwCtx c = {.kind = kind, .n = 12};
        c.x = randn(c.n, 2), c.u = randn(c.n, 1), c.y = mallocCheck(c.n * 4), c.dy = randn(c.n, 1);
        pw_loss(&c);
        if (kind == 0) CHECK_NEAR(c.y[2], 0.5 * c.x[2] * (1 + erf(c.x[2] / sqrt(2.0))), 1e-6);
        if (kind == 1) CHECK_NEAR(c.y[2], c.x[2] / (1 + exp(-c.x[2])) * c.u[2], 1e-6);
        if (kind == 2) CHECK_NEAR(c.y[4], 0.5 * (c.x[7] + c.x[10]), 1e-6);  // row 1 col 1 = rows 2,3 col 1
        float *dx = callocCheck(c.n, 4), *du = callocCheck(c.n, 4);
        if (kind == 0)
            O->gelu_bwd(O, dx, c.dy, c.x, c.n);
        else if (kind == 1)
            O->silu_mul_bwd(O, dx, du, c.dy, c.x, c.u, c.n);
        else
            O->avgpool2_bwd(O, dx, c.dy, (int)c.n / 6, 3);
        double ex = fd_check(pw_loss, &c, c.x, dx, c.n, 1, 3e-2, 1e-2);
        double eu = kind == 1 ? fd_check(pw_loss, &c, c.u, du, c.n, 1, 3e-2, 1e-2) : 0;
        printf("%s: fd rel error %.2e %.2e\n", names[kind], ex, eu);
        CHECK(ex < TOL && eu < TOL);
        free(c.x), free(c.u), free(c.y), free(c.dy), free(dx), free(du);
    }
    float a[3] = {1, 2, 3}, b[3] = {10, 20, 30};
    O->add(O, a, a, b, 3);
    CHECK(a[0] == 11 && a[2] == 33);
}

static void test_copy_rows(void) {
    float src[6] = {1, 2, 3, 4, 5, 6}, dst[8] = {0};  // src [3,2], dst [4,2]
    int di[3] = {3, -1, 3}, si[3] = {0, 1, 2};
    O->copy_rows(O, dst, di, src, si, 3, 2, 1);  // repeated row accumulates, -1 skipped
    CHECK(dst[6] == 6 && dst[7] == 8 && dst[2] == 0);
    O->copy_rows(O, dst, NULL, src, (int[]){2, 0}, 2, 2, 0);  // gather
    CHECK(dst[0] == 5 && dst[1] == 6 && dst[2] == 1 && dst[3] == 2);
    // the embedding backward (scatter-add by id) is the gather's adjoint
    int ids[5] = {3, 0, 3, 1, 0};
    float *table = randn(4 * 3, 1), *g = randn(5 * 3, 1), *rows = mallocCheck(5 * 3 * 4), *dt = callocCheck(12, 4);
    O->copy_rows(O, rows, NULL, table, ids, 5, 3, 0);
    O->copy_rows(O, dt, ids, g, NULL, 5, 3, 1);
    CHECK_NEAR(dotw(rows, g, 15), dotw(table, dt, 12), 1e-5);
    free(table), free(g), free(rows), free(dt);
}

// ---------------------------------------------------------------- log-prob

typedef struct {
    int R, V;
    int tgt[3];
    float *x, *lp, *lse, *w;
} LpCtx;

static double lp_loss(void *p) {
    LpCtx *c = p;
    O->logprob(O, c->lp, c->lse, c->x, c->tgt, c->R, c->V);
    return dotw(c->w, c->lp, c->R);
}

static void test_logprob(void) {
    LpCtx c = {.R = 3, .V = 11, .tgt = {0, 10, 4}};
    c.x = randn(c.R * c.V, 3), c.lp = mallocCheck(12), c.lse = mallocCheck(12), c.w = randn(3, 1);
    lp_loss(&c);
    double z = 0;
    for (int i = 0; i < c.V; i++) z += exp(c.x[c.V + i]);
    CHECK_NEAR(c.lp[1], c.x[c.V + 10] - log(z), 1e-5);
    float *g = mallocCheck(c.R * c.V * 4);
    memcpy(g, c.x, c.R * c.V * 4);
    O->logprob_bwd(O, g, c.lse, c.tgt, c.w, c.R, c.V);
    double e = fd_check(lp_loss, &c, c.x, g, c.R * c.V, 1, 3e-2, 1e-2);
    printf("logprob: fd rel error %.2e\n", e);
    CHECK(e < TOL);
    free(c.x), free(c.lp), free(c.lse), free(c.w), free(g);
}

int main(void) {
    O = ops_cpu_create();
    rng_init(&R, 1234, 0);
    RUN(test_matmul_forms);
    RUN(test_linear_grad);
    RUN(test_conv_im2col);
    RUN(test_norms);
    RUN(test_rope);
    RUN(test_attention);
    RUN(test_pointwise);
    RUN(test_copy_rows);
    RUN(test_logprob);
    ops_destroy(O);
    return test_summary("test_ops");
}
