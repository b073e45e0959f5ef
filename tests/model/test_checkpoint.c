// Tests of common/model/hf_config, param_init and checkpoint: config.json parsing in the transformers 4.4x
// and 5.x layouts (defaults, GQA, every rejection), the writer round trip, model_save_dir/model_load_dir
// (f32 bit-exact, bf16 rounded, sharded, tied), the bf16 save from weights read on demand and ranged
// reads, missing/unexpected/mis-shaped tensors, the atomic-save
// rule, deterministic initialisation and the aqa-init tool (path in argv[1]).
#include "test.h"
#include "model/checkpoint.h"
#include "model/hf_config.h"
#include "model/param_init.h"
#include "model/safetensors.h"
#include "util/fileio.h"

#include <sys/stat.h>
#include <sys/wait.h>

static const char *aqa_init_path;

// CHECK as an expression that also prints the Err message on failure.
#define CHECK_OK(cond, e) (CHECK(cond) || (fprintf(stderr, "     %s\n", (e).msg), 0))

// The hub config.json of Qwen2-Audio-7B-Instruct (transformers 4.45 layout, sparse).
static const char *HUB_7B =
    "{\"architectures\": [\"Qwen2AudioForConditionalGeneration\"],"
    " \"audio_config\": {\"model_type\": \"qwen2_audio_encoder\"}, \"audio_token_index\": 151646,"
    " \"model_type\": \"qwen2_audio\", \"text_config\": {\"bos_token_id\": 151643, \"eos_token_id\": 151645,"
    " \"intermediate_size\": 11008, \"max_position_embeddings\": 8192, \"model_type\": \"qwen2\","
    " \"rms_norm_eps\": 1e-05, \"torch_dtype\": \"bfloat16\", \"use_mrope\": false, \"vocab_size\": 156032},"
    " \"torch_dtype\": \"bfloat16\", \"transformers_version\": \"4.45.0.dev0\"}";

static int config_equal(const ModelConfig *a, const ModelConfig *b) { return memcmp(a, b, sizeof *a) == 0; }

static void test_config_4x(void) {
    Err e;
    ModelConfig c, want = model_config_qwen2_audio_7b();
    if (!CHECK(hf_config_parse(HUB_7B, "hub.json", &c, &e) == 0)) fprintf(stderr, "%s\n", e.msg);
    CHECK(config_equal(&c, &want));
    CHECK_INT(c.kv_heads, 32);
    CHECK_INT(c.head_dim, 128);
    CHECK(c.rms_eps == 1e-5f);
    // The file in configs/ is the same model.
    CHECK(hf_config_load(SRC_PATH("configs/model-7b.json"), &c, &e) == 0);
    CHECK(config_equal(&c, &want));
}

static void test_config_5x_gqa(void) {
    Err e;
    ModelConfig c;
    const char *v5 =
        "{\"model_type\": \"qwen2_audio\", \"audio_token_id\": 90,"
        " \"audio_config\": {\"d_model\": 64, \"encoder_layers\": 2, \"encoder_attention_heads\": 4,"
        "   \"encoder_ffn_dim\": 128, \"max_source_positions\": 1500, \"initializer_range\": 0.01},"
        " \"text_config\": {\"model_type\": \"qwen2\", \"vocab_size\": 128, \"hidden_size\": 96,"
        "   \"num_hidden_layers\": 3, \"num_attention_heads\": 6, \"num_key_value_heads\": 2,"
        "   \"intermediate_size\": 200, \"rope_parameters\": {\"rope_type\": \"default\", \"rope_theta\": 1000000.0},"
        "   \"layer_types\": [\"full_attention\", \"full_attention\", \"full_attention\"],"
        "   \"tie_word_embeddings\": true, \"eos_token_id\": [100, 101], \"bos_token_id\": 99, \"sliding_window\": 4096},"
        " \"tie_word_embeddings\": false}";
    if (!CHECK(hf_config_parse(v5, "v5.json", &c, &e) == 0)) fprintf(stderr, "%s\n", e.msg);
    CHECK_INT(c.audio_token_id, 90);
    CHECK_INT(c.a_dim, 64);
    CHECK_INT(c.a_heads, 4);
    CHECK_INT(c.n_mels, 128);  // default
    CHECK_INT(c.heads, 6);
    CHECK_INT(c.kv_heads, 2);
    CHECK_INT(c.head_dim, 16);
    CHECK_INT(c.tie_embeddings, 1);  // text_config's own key wins over the top level
    CHECK_INT(c.eos_id, 100);
    CHECK_INT(c.bos_id, 99);
    CHECK_NEAR(c.rope_theta, 1e6, 0);
    CHECK(c.rms_eps == 1e-6f);  // Qwen2Config default
    CHECK_INT(c.max_pos, 32768);      // Qwen2Config default
    CHECK_NEAR(c.init_std, 0.01, 1e-9);
    ParamTable t;
    param_table_build(&t, &c);
    CHECK_INT(t.specs[t.tlayer[0].k_w].shape[0], 32);  // kv_heads * head_dim
    CHECK(t.lm_head == t.embed);
    param_table_free(&t);
}

static void test_config_defaults(void) {
    Err e;
    ModelConfig c;
    CHECK(hf_config_parse("{\"model_type\": \"qwen2_audio\", \"text_config\": null}", "d.json", &c, &e) == 0);
    CHECK_INT(c.a_dim, 1280);
    CHECK_INT(c.a_layers, 32);
    CHECK_INT(c.vocab, 151936);
    CHECK_INT(c.ffn, 22016);
    CHECK_INT(c.kv_heads, 32);
    CHECK_INT(c.max_pos, 32768);
    CHECK_INT(c.tie_embeddings, 0);
    CHECK_INT(c.audio_token_id, 151646);
    CHECK_NEAR(c.rope_theta, 10000, 0);
    // 4.x rope_theta; top-level tie when text_config has none; a rope_scaling of null is plain RoPE.
    CHECK(hf_config_parse("{\"model_type\": \"qwen2_audio\", \"tie_word_embeddings\": true, \"text_config\":"
                          " {\"rope_theta\": 500000, \"rope_scaling\": null, \"num_key_value_heads\": null}}",
                          "d.json", &c, &e) == 0);
    CHECK_NEAR(c.rope_theta, 500000, 0);
    CHECK_INT(c.tie_embeddings, 1);
    CHECK_INT(c.kv_heads, 32);
}

// Parsing text must fail with a message holding the file name and frag.
static void expect_config_error(const char *text, const char *frag) {
    Err e = {{0}};
    ModelConfig c;
    CHECKF(hf_config_parse(text, "bad.json", &c, &e) == -1, "accepted: %s", text);
    CHECKF(strstr(e.msg, "bad.json") && strstr(e.msg, frag), "'%s' not in \"%s\"", frag, e.msg);
}

static void test_config_errors(void) {
#define QA "{\"model_type\": \"qwen2_audio\", "
    expect_config_error("{\"model_type\": \"qwen2\"}", "model_type");
    expect_config_error("{}", "model_type");
    expect_config_error("[1]", "not a JSON object");
    expect_config_error("{\"model_type\": ", "not valid JSON");
    expect_config_error(QA "\"audio_config\": 3}", "audio_config: expected a JSON object");
    expect_config_error(QA "\"audio_config\": {\"model_type\": \"whisper\"}}", "audio_config.model_type");
    expect_config_error(QA "\"audio_config\": {\"activation_function\": \"relu\"}}", "audio_config.activation_function");
    expect_config_error(QA "\"audio_config\": {\"scale_embedding\": true}}", "audio_config.scale_embedding");
    expect_config_error(QA "\"audio_config\": {\"dropout\": 0.1}}", "audio_config.dropout");
    expect_config_error(QA "\"audio_config\": {\"d_model\": 100, \"encoder_attention_heads\": 3}}",
                        "audio_config.encoder_attention_heads");
    expect_config_error(QA "\"audio_config\": {\"encoder_layers\": 0}}", "audio_config.encoder_layers");
    expect_config_error(QA "\"text_config\": {\"model_type\": \"llama\"}}", "text_config.model_type");
    expect_config_error(QA "\"text_config\": {\"hidden_act\": \"gelu\"}}", "text_config.hidden_act");
    expect_config_error(QA "\"text_config\": {\"use_sliding_window\": true}}", "text_config.use_sliding_window");
    expect_config_error(QA "\"text_config\": {\"layer_types\": [\"full_attention\", \"sliding_attention\"]}}",
                        "text_config.layer_types");
    expect_config_error(QA "\"text_config\": {\"rope_parameters\": {\"rope_type\": \"yarn\", \"factor\": 4}}}",
                        "text_config.rope_parameters.rope_type");
    expect_config_error(QA "\"text_config\": {\"rope_scaling\": {\"type\": \"linear\"}}}", "text_config.rope_scaling.type");
    expect_config_error(QA "\"text_config\": {\"use_mrope\": true}}", "text_config.use_mrope");
    expect_config_error(QA "\"text_config\": {\"hidden_size\": \"big\"}}", "text_config.hidden_size: expected an integer");
    expect_config_error(QA "\"text_config\": {\"num_key_value_heads\": 5}}", "text_config.num_key_value_heads");
    expect_config_error(QA "\"text_config\": {\"rms_norm_eps\": \"x\"}}", "text_config.rms_norm_eps");
    expect_config_error(QA "\"text_config\": {\"tie_word_embeddings\": 1}}", "text_config.tie_word_embeddings");
    expect_config_error(QA "\"text_config\": {\"attention_dropout\": 0.5}}", "text_config.attention_dropout");
    expect_config_error(QA "\"text_config\": {\"eos_token_id\": []}}", "text_config.eos_token_id");
    expect_config_error(QA "\"text_config\": {\"rope_theta\": -1}}", "rope_theta");
    expect_config_error(QA "\"audio_token_index\": 5, \"audio_token_id\": 6}", "audio_token_id");
    expect_config_error(QA "\"audio_token_index\": 200000}", "audio_token_index");
#undef QA
    Err e;
    ModelConfig c;
    CHECK(hf_config_load(TMP_PATH("no_such_config.json"), &c, &e) == -1);
    CHECK(strstr(e.msg, "no_such_config.json") != NULL);
}

// The shipped configs parse; the writer round-trips every field.
static void test_config_files_and_writer(void) {
    Err e;
    ModelConfig c, back;
    const char *names[] = {"configs/model-tiny.json", "configs/model-small.json", "configs/model-tiny-smallvocab.json"};
    for (int i = 0; i < 3; i++) {
        if (!CHECK_OK(hf_config_load(SRC_PATH(names[i]), &c, &e) == 0, e)) continue;
        CHECK(hf_config_save(TMP_PATH("cfg_rt.json"), &c, "float32", &e) == 0);
        CHECK(hf_config_load(TMP_PATH("cfg_rt.json"), &back, &e) == 0);
        CHECKF(config_equal(&c, &back), "%s does not round-trip", names[i]);
        ParamTable t;
        param_table_build(&t, &c);
        if (i == 0) CHECK(c.vocab >= 151649 && c.vocab % 64 == 0 && c.kv_heads < c.heads);
        if (i == 1) CHECKF(t.numel >= 100000000 && t.numel <= 300000000, "small: %zu params", t.numel);
        param_table_free(&t);
    }
}

// A small model for checkpoint tests (vocab 256 keeps it fast).
static ModelConfig small_cfg(int tied) {
    ModelConfig c = model_config_qwen2_audio_7b();
    c.a_dim = 16, c.a_layers = 2, c.a_heads = 2, c.a_ffn = 32, c.a_max_pos = 30;
    c.dim = 32, c.layers = 2, c.heads = 4, c.kv_heads = 2, c.head_dim = 8, c.ffn = 48, c.vocab = 256;
    c.audio_token_id = 250, c.bos_id = 251, c.eos_id = 252, c.tie_embeddings = tied;
    return c;
}

static void rm_rf(const char *path) {
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s'.tmp.* '%s'.old.*", path, path, path);
    CHECK(system(cmd) == 0);
}

static const char *make_tokenizer_dir(void) {
    const char *dir = TMP_PATH("ckpt_tok");
    Err e;
    char p[4096];
    CHECK(dir_make(dir, &e) == 0);
    CHECK(file_write_atomic(path_join(p, sizeof p, dir, "tokenizer.json"), "{\"version\": \"1.0\"}", 18, &e) == 0);
    CHECK(file_write_atomic(path_join(p, sizeof p, dir, "tokenizer_config.json"), "{}", 2, &e) == 0);
    return dir;
}

static int dir_has_tmp(const char *dir) {
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "ls -d '%s'.tmp.* '%s'.old.* >/dev/null 2>&1", dir, dir);
    return system(cmd) == 0;
}

static void save_load(SaveDtype dt, int tied, size_t shard, const char *name) {
    Err e;
    ModelConfig c = small_cfg(tied), c2;
    ParamTable t, t2;
    param_table_build(&t, &c);
    float *p = mallocCheck(t.numel * sizeof(float)), *q = NULL;
    param_init_random(&c, &t, p, 42);
    const char *dir = TMP_PATH(name);
    rm_rf(dir);
    if (!CHECK_OK(model_save_dir(dir, &c, &t, p, dt, shard, make_tokenizer_dir(), &e) == 0, e)) goto out;
    CHECK(checkpoint_is_complete(dir));
    CHECK(!dir_has_tmp(dir));
    char f[4096];
    CHECK(path_exists(path_join(f, sizeof f, dir, "tokenizer.json")));
    CHECK(path_exists(path_join(f, sizeof f, dir, "tokenizer_config.json")));
    CHECK(path_exists(path_join(f, sizeof f, dir, "generation_config.json")));
    CHECK(path_exists(path_join(f, sizeof f, dir, "preprocessor_config.json")));
    CHECK(path_exists(path_join(f, sizeof f, dir, "model.safetensors.index.json")) == (shard < 4096));
    if (!CHECK_OK(model_load_dir(dir, &c2, &t2, &q, &e) == 0, e)) goto out;
    CHECK(config_equal(&c, &c2));
    CHECK_INT(t2.numel, t.numel);
    CHECK_INT(t2.n, t.n);
    int same = 1;
    for (size_t i = 0; i < t.numel; i++) {
        float want = dt == SAVE_F32 ? p[i] : st_bf16_to_f32(st_f32_to_bf16(p[i]));
        same &= memcmp(&q[i], &want, 4) == 0;
    }
    CHECKF(same, "%s: loaded values differ", name);
    // A tied model also stores lm_head (equal to embed_tokens) so transformers, which does not tie it
    // from the config, loads the same head.
    StReader r;
    if (CHECK_OK(st_open(&r, dir, &e) == 0, e)) {
        const StTensor *head = st_find(&r, "language_model.lm_head.weight");
        const StTensor *emb = st_find(&r, "language_model.model.embed_tokens.weight");
        CHECK(head != NULL && emb != NULL);
        if (tied && head && emb)
            CHECK(head->nbytes == emb->nbytes && memcmp(head->data, emb->data, emb->nbytes) == 0);
        st_close(&r);
    }
    free(q);
    param_table_free(&t2);
out:
    free(p);
    param_table_free(&t);
}

static void test_save_load_f32_sharded(void) { save_load(SAVE_F32, 0, 4000, "ckpt_f32"); }
static void test_save_load_bf16(void) { save_load(SAVE_BF16, 0, 1 << 30, "ckpt_bf16"); }
static void test_save_load_tied(void) { save_load(SAVE_BF16, 1, 3000, "ckpt_tied"); }

// A bf16 source read on demand (a GPU's weights): every read inside the model, counted.
typedef struct {
    const uint16_t *h;  // [numel]
    size_t numel, reads, outside;
} Bf16Src;

static void bf16_read(void *ctx, size_t off, size_t n, uint16_t *out) {
    Bf16Src *s = ctx;
    s->reads++;
    if (off > s->numel || n > s->numel - off) {
        s->outside++;
        return;
    }
    memcpy(out, s->h + off, n * sizeof *out);
}

// Every tensor of dir a equals dir b's byte for byte (same names, dtypes, shapes, shard files).
static int same_tensors(const char *a, const char *b, Err *e) {
    StReader ra, rb;
    if (st_open(&ra, a, e)) return 0;
    if (st_open(&rb, b, e)) {
        st_close(&ra);
        return 0;
    }
    int same = ra.n == rb.n && ra.n_files == rb.n_files;
    for (int i = 0; same && i < ra.n; i++) {
        const StTensor *x = &ra.tensors[i], *y = st_find(&rb, x->name);
        same = y && x->dtype == ST_BF16 && y->dtype == ST_BF16 && x->nbytes == y->nbytes &&
               memcmp(x->shape, y->shape, sizeof x->shape) == 0 && memcmp(x->data, y->data, x->nbytes) == 0 &&
               strcmp(strrchr(st_tensor_file(&ra, x), '/'), strrchr(st_tensor_file(&rb, y), '/')) == 0;
    }
    st_close(&ra);
    st_close(&rb);
    return same;
}

// model_save_dir_bf16 (the GPU learner's model/ from its bf16 weights, read in chunks): the same files as
// model_save_dir of the widened weights in bf16, tensor for tensor and shard for shard (tied lm_head
// included); model_load_dir gives the bf16 values back bit for bit; model_read_range of any range
// (tensor boundaries inside, the whole model) equals the loaded array's slice.
static void test_save_bf16_source(void) {
    Err e;
    ModelConfig c = small_cfg(1), c2;
    ParamTable t, t2;
    param_table_build(&t, &c);
    float *p = mallocCheck(t.numel * sizeof(float)), *w = mallocCheck(t.numel * sizeof(float)), *q = NULL;
    uint16_t *h = mallocCheck(t.numel * sizeof *h);
    param_init_random(&c, &t, p, 7);
    for (size_t i = 0; i < t.numel; i++) h[i] = st_f32_to_bf16(p[i]), w[i] = st_bf16_to_f32(h[i]);
    const char *a = TMP_PATH("ckpt_bf16_src"), *b = TMP_PATH("ckpt_bf16_ref");
    rm_rf(a), rm_rf(b);
    Bf16Src src = {h, t.numel, 0, 0};
    if (!CHECK_OK(model_save_dir_bf16(a, &c, &t, bf16_read, &src, 3000, make_tokenizer_dir(), &e) == 0, e) ||
        !CHECK_OK(model_save_dir(b, &c, &t, w, SAVE_BF16, 3000, make_tokenizer_dir(), &e) == 0, e))
        goto out;
    CHECK(checkpoint_is_complete(a) && !dir_has_tmp(a));
    CHECK(src.reads >= (size_t)t.n + 1 && src.outside == 0);  // every tensor and the tied lm_head, in range
    CHECK_OK(same_tensors(a, b, &e), e);
    char fa[4096], fb[4096];
    char *ia = file_read_all(path_join(fa, sizeof fa, a, "model.safetensors.index.json"), NULL, &e);
    char *ib = file_read_all(path_join(fb, sizeof fb, b, "model.safetensors.index.json"), NULL, &e);
    CHECK(ia && ib && strcmp(ia, ib) == 0);
    free(ia), free(ib);
    if (!CHECK_OK(model_load_dir(a, &c2, &t2, &q, &e) == 0, e)) goto out;
    CHECK(t2.numel == t.numel && memcmp(q, w, t.numel * sizeof(float)) == 0);
    param_table_free(&t2);
    StReader r;
    if (CHECK_OK(checkpoint_open(&r, a, &e) == 0, e)) {
        const ParamSpec *s3 = &t.specs[3];
        const size_t ranges[][2] = {{0, t.numel}, {s3->offset - 5, s3->numel + 10}, {t.numel - 1, 1}, {17, 0}};
        float *got = mallocCheck(t.numel * sizeof(float));
        for (size_t k = 0; k < sizeof ranges / sizeof ranges[0]; k++) {
            size_t lo = ranges[k][0], n = ranges[k][1];
            CHECKF(model_read_range(&r, &t, lo, n, got, &e) == 0 && memcmp(got, q + lo, n * sizeof(float)) == 0,
                   "range [%zu, +%zu): %s", lo, n, e.msg);
        }
        free(got);
        st_close(&r);
    }
out:
    free(q), free(p), free(w), free(h);
    param_table_free(&t);
}

// A fresh model dir TMP/name holding c's config.json; t gets c's table. Returns the dir.
static const char *model_dir_begin(const ModelConfig *c, const char *name, ParamTable *t) {
    Err e;
    const char *dir = TMP_PATH(name);
    rm_rf(dir);
    CHECK(dir_make(dir, &e) == 0);
    char p[4096];
    CHECK(hf_config_save(path_join(p, sizeof p, dir, "config.json"), c, "float32", &e) == 0);
    param_table_build(t, c);
    return dir;
}

// A model dir whose safetensors hold the table's tensors, edited: `drop` left out, `reshape` given a wrong
// first dimension, `extra` added (each may be NULL).
static const char *write_edited(const ModelConfig *c, const char *name, const char *drop, const char *reshape,
                                const char *extra) {
    Err e;
    ParamTable t;
    const char *dir = model_dir_begin(c, name, &t);
    float *w = callocCheck(t.numel + 64, sizeof(float));
    StWriteTensor *ts = callocCheck((size_t)t.n + 1, sizeof(StWriteTensor));
    int n = 0;
    for (int i = 0; i < t.n; i++) {
        const ParamSpec *s = &t.specs[i];
        if (drop && strcmp(s->name, drop) == 0) continue;
        ts[n] = (StWriteTensor){.name = s->name, .ndim = s->ndim, .data = w + s->offset};
        memcpy(ts[n].shape, s->shape, sizeof s->shape);
        if (reshape && strcmp(s->name, reshape) == 0) ts[n].shape[0] = 1;
        n++;
    }
    if (extra) ts[n++] = (StWriteTensor){.name = extra, .ndim = 2, .shape = {c->vocab, c->dim}, .data = w};
    CHECK(st_write_sharded(dir, ts, n, ST_F32, 1 << 30, &e) == 1);
    free(ts);
    free(w);
    param_table_free(&t);
    return dir;
}

static void expect_load_error(const char *dir, const char *frag1, const char *frag2) {
    Err e = {{0}};
    ModelConfig c;
    ParamTable t;
    float *p;
    int rc = model_load_dir(dir, &c, &t, &p, &e);
    CHECKF(rc == -1, "%s loaded", dir);
    if (rc == 0) {
        free(p);
        param_table_free(&t);
    }
    CHECKF(strstr(e.msg, frag1) && strstr(e.msg, frag2), "'%s'/'%s' not in \"%s\"", frag1, frag2, e.msg);
}

static void test_load_errors(void) {
    ModelConfig c = small_cfg(0), tied = small_cfg(1);
    const char *q = "language_model.model.layers.1.self_attn.q_proj.weight";
    expect_load_error(write_edited(&c, "ckpt_missing", q, NULL, NULL), q, "not found");
    expect_load_error(write_edited(&c, "ckpt_shape", NULL, q, NULL), q, "expected [32, 32]");
    expect_load_error(write_edited(&c, "ckpt_extra", NULL, NULL, "vision.proj.weight"), "vision.proj.weight",
                      "unexpected");
    expect_load_error(write_edited(&c, "ckpt_nohead", "language_model.lm_head.weight", NULL, NULL),
                      "language_model.lm_head.weight", "not found");
    // Tied: a stored lm_head is ignored, a missing one (the normal case) is fine.
    ModelConfig c2;
    ParamTable t;
    float *p;
    Err e;
    const char *dir = write_edited(&tied, "ckpt_tied_head", NULL, NULL, NULL);
    CHECK_OK(model_load_dir(dir, &c2, &t, &p, &e) == 0, e);
    free(p);
    param_table_free(&t);
    // An extra lm_head in a tied checkpoint: same shape as embed_tokens ([256, 32]) is tolerated.
    dir = write_edited(&tied, "ckpt_tied_extra", NULL, NULL, "language_model.lm_head.weight");
    CHECK_OK(model_load_dir(dir, &c2, &t, &p, &e) == 0, e);
    free(p);
    param_table_free(&t);
    expect_load_error(TMP_PATH("ckpt_no_such_dir"), "ckpt_no_such_dir", "config.json");
    // A config.json that disagrees with the weights: every tensor is then mis-shaped or missing.
    char cfgp[4096];
    ModelConfig wide = c;
    wide.ffn = 64;
    dir = write_edited(&c, "ckpt_cfg_mismatch", NULL, NULL, NULL);
    CHECK(hf_config_save(path_join(cfgp, sizeof cfgp, dir, "config.json"), &wide, "float32", &e) == 0);
    expect_load_error(dir, "mlp.gate_proj.weight", "expected [64, 32]");
}

// The transformers 5 name of a table name (the inverse of checkpoint_canonical_name), into buf.
static const char *t5_name(const char *name, char *buf, size_t cap) {
    static const char *const map[][2] = {{"language_model.model.", "model.language_model."},
                                         {"language_model.lm_head.", "lm_head."},
                                         {"audio_tower.", "model.audio_tower."},
                                         {"multi_modal_projector.", "model.multi_modal_projector."}};
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
        size_t n = strlen(map[i][0]);
        if (strncmp(name, map[i][0], n) == 0) {
            snprintf(buf, cap, "%s%s", map[i][1], name + n);
            return buf;
        }
    }
    CHECKF(0, "no transformers 5 name for %s", name);
    return name;
}

// A checkpoint as transformers 5 saves a model built in memory: every table tensor of w under its
// module-tree name (f32, sharded small so the index maps the new names), plus the table tensor `also`
// under its transformers 4 name when given (both layouts of one tensor).
static const char *write_t5(const ModelConfig *c, const char *name, const float *w, const char *also) {
    Err e;
    ParamTable t;
    const char *dir = model_dir_begin(c, name, &t);
    StWriteTensor *ts = callocCheck((size_t)t.n + 2, sizeof(StWriteTensor));
    char(*names)[256] = callocCheck((size_t)t.n, 256);
    int n = 0;
    for (int i = 0; i < t.n; i++) {
        const ParamSpec *s = &t.specs[i];
        ts[n] = (StWriteTensor){.name = t5_name(s->name, names[i], 256), .ndim = s->ndim, .data = w + s->offset};
        memcpy(ts[n].shape, s->shape, sizeof s->shape);
        n++;
        if (also && strcmp(s->name, also) == 0) {
            ts[n] = ts[n - 1];
            ts[n++].name = s->name;
        }
    }
    // A tied model saved by transformers 5 stores lm_head.weight too (the table has no slot for it).
    if (t.lm_head == t.embed) {
        ts[n] = ts[t.embed];
        ts[n++].name = "lm_head.weight";
    }
    CHECK(st_write_sharded(dir, ts, n, ST_F32, 3000, &e) > 1);
    free(names);
    free(ts);
    param_table_free(&t);
    return dir;
}

// transformers 5 names load to the same parameters as the transformers 4 ones (f32: bit-exact), tied or
// not; a file holding one tensor under both names is refused, naming it.
static void test_load_t5_names(void) {
    Err e;
    char buf[256];
    CHECK_STR(checkpoint_canonical_name("model.language_model.layers.3.mlp.up_proj.weight", buf, sizeof buf),
              "language_model.model.layers.3.mlp.up_proj.weight");
    CHECK_STR(checkpoint_canonical_name("lm_head.weight", buf, sizeof buf), "language_model.lm_head.weight");
    CHECK_STR(checkpoint_canonical_name("model.audio_tower.conv1.bias", buf, sizeof buf), "audio_tower.conv1.bias");
    CHECK_STR(checkpoint_canonical_name("model.multi_modal_projector.linear.weight", buf, sizeof buf),
              "multi_modal_projector.linear.weight");
    CHECK_STR(checkpoint_canonical_name("audio_tower.conv1.bias", buf, sizeof buf), "audio_tower.conv1.bias");
    CHECK_STR(checkpoint_canonical_name("model.vision_tower.x", buf, sizeof buf), "model.vision_tower.x");
    for (int tied = 0; tied <= 1; tied++) {
        ModelConfig c = small_cfg(tied), c2;
        ParamTable t, t2;
        param_table_build(&t, &c);
        float *p = mallocCheck(t.numel * sizeof(float)), *q = NULL;
        param_init_random(&c, &t, p, 7 + tied);
        const char *dir = write_t5(&c, tied ? "ckpt_t5_tied" : "ckpt_t5", p, NULL);
        if (CHECK_OK(model_load_dir(dir, &c2, &t2, &q, &e) == 0, e)) {
            CHECK_INT(t2.numel, t.numel);
            CHECKF(memcmp(p, q, t.numel * sizeof(float)) == 0, "tied %d: loaded values differ", tied);
            free(q);
            param_table_free(&t2);
        }
        free(p);
        param_table_free(&t);
    }
    ModelConfig c = small_cfg(0);
    ParamTable t;
    param_table_build(&t, &c);
    float *p = callocCheck(t.numel, sizeof(float));
    const char *both = "audio_tower.conv2.weight";
    expect_load_error(write_t5(&c, "ckpt_t5_both", p, both), both, "appears in both");
    free(p);
    param_table_free(&t);
}

// A save that fails part-way (no tokenizer files in the tokenizer dir, checked after the shards are
// written) leaves neither the final directory nor a temporary one; a later save replaces a directory.
static void test_atomic_save(void) {
    Err e;
    ModelConfig c = small_cfg(0);
    ParamTable t;
    param_table_build(&t, &c);
    float *p = mallocCheck(t.numel * sizeof(float));
    param_init_random(&c, &t, p, 1);
    const char *dir = TMP_PATH("ckpt_atomic"), *empty_tok = TMP_PATH("ckpt_empty_tok");
    rm_rf(dir);
    rm_rf(empty_tok);
    CHECK(dir_make(empty_tok, &e) == 0);
    CHECK(model_save_dir(dir, &c, &t, p, SAVE_F32, 1 << 30, empty_tok, &e) == -1);
    CHECK(strstr(e.msg, "ckpt_empty_tok") && strstr(e.msg, "tokenizer"));
    CHECK(!path_exists(dir));
    CHECK(!checkpoint_is_complete(dir));
    CHECK(!dir_has_tmp(dir));
    // Replace: the second save's values are what loads; nothing left beside it.
    CHECK(model_save_dir(dir, &c, &t, p, SAVE_F32, 1 << 30, NULL, &e) == 0);
    param_init_random(&c, &t, p, 2);
    CHECK(model_save_dir(dir, &c, &t, p, SAVE_F32, 1 << 30, NULL, &e) == 0);
    CHECK(!dir_has_tmp(dir));
    ModelConfig c2;
    ParamTable t2;
    float *q;
    if (CHECK(model_load_dir(dir, &c2, &t2, &q, &e) == 0)) {
        CHECK(memcmp(p, q, t.numel * sizeof(float)) == 0);
        free(q);
        param_table_free(&t2);
    }
    // A directory without the marker is incomplete even though it loads.
    char m[4096];
    CHECK(unlink(path_join(m, sizeof m, dir, CHECKPOINT_MARKER)) == 0);
    CHECK(!checkpoint_is_complete(dir));
    free(p);
    param_table_free(&t);
}

static void test_param_init(void) {
    ModelConfig c = small_cfg(0), c1 = small_cfg(0);
    c1.layers = 1;  // a different table (fewer tensors, shifted offsets)
    ParamTable t, t1;
    param_table_build(&t, &c);
    param_table_build(&t1, &c1);
    float *a = mallocCheck(t.numel * 4), *b = mallocCheck(t.numel * 4), *d = mallocCheck(t1.numel * 4);
    param_init_random(&c, &t, a, 7);
    param_init_random(&c, &t, b, 7);
    CHECK(memcmp(a, b, t.numel * 4) == 0);
    param_init_random(&c, &t, b, 8);
    CHECK(memcmp(a, b, t.numel * 4) != 0);
    // Keyed by name: the same tensor gets the same values in a table of another shape.
    param_init_random(&c1, &t1, d, 7);
    const ParamSpec *s = &t.specs[t.tlayer[0].q_w], *s1 = &t1.specs[t1.tlayer[0].q_w];
    CHECK(memcmp(a + s->offset, d + s1->offset, s->numel * 4) == 0);
    CHECK(memcmp(a + t.specs[t.embed].offset, d + t1.specs[t1.embed].offset, t.specs[t.embed].numel * 4) == 0);
    CHECK(a[t.specs[t.norm].offset] == 1.0f && a[t.specs[t.tlayer[1].in_norm].offset + 3] == 1.0f);
    CHECK(a[t.specs[t.alayer[0].ln1_w].offset] == 1.0f && a[t.specs[t.alayer[0].ln1_b].offset] == 0.0f);
    CHECK(a[t.specs[t.proj_b].offset + 5] == 0.0f && a[t.specs[t.conv1_b].offset] == 0.0f);
    // normal(0, 0.02) on the embedding (8192 values) and on embed_positions (nn.Embedding init in HF)
    const int ids[2] = {t.embed, t.embed_pos};
    for (int k = 0; k < 2; k++) {
        const ParamSpec *e = &t.specs[ids[k]];
        double m = 0, v = 0;
        for (size_t i = 0; i < e->numel; i++) m += a[e->offset + i];
        m /= (double)e->numel;
        for (size_t i = 0; i < e->numel; i++) v += (a[e->offset + i] - m) * (a[e->offset + i] - m);
        double sd = sqrt(v / (double)e->numel);
        CHECKF(fabs(m) < 0.002 && fabs(sd - 0.02) < 0.002, "%s: mean %g sd %g", e->name, m, sd);
    }
    free(a);
    free(b);
    free(d);
    param_table_free(&t);
    param_table_free(&t1);
}

static int run_cmd(const char *fmt, const char *a, const char *b, const char *c, const char *d) {
    char cmd[8192];
    snprintf(cmd, sizeof cmd, fmt, a, b, c, d);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int files_equal(const char *d1, const char *d2, const char *name) {
    char p1[4096], p2[4096];
    Err e;
    size_t n1, n2;
    char *x = file_read_all(path_join(p1, sizeof p1, d1, name), &n1, &e), *y = file_read_all(path_join(p2, sizeof p2, d2, name), &n2, &e);
    int same = x && y && n1 == n2 && memcmp(x, y, n1) == 0;
    free(x);
    free(y);
    return same;
}

static void test_aqa_init(void) {
    if (!CHECK(aqa_init_path != NULL)) return;  // meson passes the aqa-init executable
    const char *cfg = TMP_PATH("init_cfg.json"), *o1 = TMP_PATH("init_a"), *o2 = TMP_PATH("init_b"),
               *o3 = TMP_PATH("init_c");
    ModelConfig c = small_cfg(0);
    Err e;
    CHECK(hf_config_save(cfg, &c, "bfloat16", &e) == 0);
    rm_rf(o1), rm_rf(o2), rm_rf(o3);
    const char *fmt = "'%s' --config '%s' --out '%s' --seed %s 2>/dev/null";
    CHECK(run_cmd(fmt, aqa_init_path, cfg, o1, "5") == 0);
    CHECK(run_cmd(fmt, aqa_init_path, cfg, o2, "5") == 0);
    CHECK(run_cmd(fmt, aqa_init_path, cfg, o3, "6") == 0);
    CHECK(files_equal(o1, o2, "model.safetensors"));
    CHECK(files_equal(o1, o2, "config.json"));
    CHECK(!files_equal(o1, o3, "model.safetensors"));
    CHECK(checkpoint_is_complete(o1));
    // What it wrote is what param_init gives, in bf16.
    ModelConfig c2;
    ParamTable t, t2;
    float *q;
    param_table_build(&t, &c);
    float *p = mallocCheck(t.numel * 4);
    param_init_random(&c, &t, p, 5);
    if (CHECK_OK(model_load_dir(o1, &c2, &t2, &q, &e) == 0, e)) {
        int same = 1;
        for (size_t i = 0; i < t.numel; i++) same &= q[i] == st_bf16_to_f32(st_f32_to_bf16(p[i]));
        CHECK(same);
        free(q);
        param_table_free(&t2);
    }
    free(p);
    param_table_free(&t);
    // Bad arguments and a bad config are refused.
    CHECK(run_cmd("'%s' --config '%s' --out '%s' --seed %s --dtype fp8 2>/dev/null", aqa_init_path, cfg, o3, "1") == 2);
    CHECK(run_cmd("'%s' --config '%s' --out '%s' --seed %s 2>/dev/null", aqa_init_path, cfg, o3, "x1") == 2);
    CHECK(run_cmd("'%s' --config '%s' --out '%s' --seed %s 2>/dev/null", aqa_init_path, TMP_PATH("nope.json"), o3, "1") == 1);
}

int main(int argc, char **argv) {
    aqa_init_path = argc > 1 ? argv[1] : NULL;
    RUN(test_config_4x);
    RUN(test_config_5x_gqa);
    RUN(test_config_defaults);
    RUN(test_config_errors);
    RUN(test_config_files_and_writer);
    RUN(test_save_load_f32_sharded);
    RUN(test_save_load_bf16);
    RUN(test_save_load_tied);
    RUN(test_save_bf16_source);
    RUN(test_load_errors);
    RUN(test_load_t5_names);
    RUN(test_atomic_save);
    RUN(test_param_init);
    RUN(test_aqa_init);
    return test_summary("test_checkpoint");
}
