// test_model_load: model_load_device against model_load_dir. On the CPU backend (suite cpu) the loaded
// parameters equal model_load_dir's exactly, for the fp32 fixture and for a bf16 copy of it; bad
// directories fail naming what is wrong. With a GPU, the CUDA backend gets the same values rounded to
// bf16, the bf16 copy going in as raw bytes.
#include <limits.h>
#include <stdlib.h>
#include <unistd.h>

#include "model/checkpoint.h"
#include "model/cuda/model_load_device.h"
#include "model/cuda/ops_cuda.h"
#include "model/safetensors.h"
#include "test.h"
#include "util/fileio.h"

static const char *fixture(void) { return SRC_PATH("tests/fixtures/model/tiny-hf"); }

// A bf16 copy of the fixture under AQA_TMP (once).
static const char *bf16_copy(void) {
    static char dir[4096];
    if (dir[0]) return dir;
    snprintf(dir, sizeof dir, "%s", TMP_PATH("model_load_bf16"));
    ModelConfig c;
    ParamTable t;
    float *p;
    Err e;
    if (model_load_dir(fixture(), &c, &t, &p, &e) || model_save_dir(dir, &c, &t, p, SAVE_BF16, 1 << 30, NULL, &e))
        fatal("%s", e.msg);
    param_table_free(&t);
    free(p);
    return dir;
}

// Loads dir with model_load_device on o and compares with model_load_dir's values (rounded to bf16 when
// the backend stores bf16): returns the number of differing elements, or -1 when loading failed.
static long compare_load(const char *dir, Ops *o) {
    Model m;
    Err e;
    if (model_load_device(&m, dir, o, &e)) {
        CHECKF(0, "%s", e.msg);
        return -1;
    }
    ModelConfig c;
    ParamTable t;
    float *ref;
    if (model_load_dir(dir, &c, &t, &ref, &e)) fatal("%s", e.msg);
    CHECK_INT(t.numel, m.t.numel);
    float *got = mallocCheck(m.t.numel * sizeof(float));
    o->download_act(o, got, m.params, m.t.numel);
    long bad = 0;
    for (size_t i = 0; i < t.numel; i++) {
        float want = o->act_size == 2 ? st_bf16_to_f32(st_f32_to_bf16(ref[i])) : ref[i];
        bad += got[i] != want;
    }
    free(got), free(ref);
    param_table_free(&t);
    model_free(&m);
    return bad;
}

static void test_cpu(void) {
    Ops *o = ops_cpu_create();
    CHECK(compare_load(fixture(), o) == 0);
    CHECK(compare_load(bf16_copy(), o) == 0);
    ops_destroy(o);
}

static void test_errors(void) {
    Ops *o = ops_cpu_create();
    Model m;
    Err e;
    CHECK(model_load_device(&m, TMP_PATH("no_such_model_dir"), o, &e) == -1);
    CHECKF(strstr(e.msg, "config.json") != NULL, "%s", e.msg);
    // a config whose hidden size disagrees with the tensors: the first mis-shaped tensor is named
    const char *bad = TMP_PATH("model_load_badshape");
    CHECK(dir_make(bad, &e) == 0);
    char src[4096], dst[4096];
    size_t n;
    char *cfg = file_read_all(path_join(src, sizeof src, fixture(), "config.json"), &n, &e);
    CHECK(cfg != NULL);
    if (cfg) {
        char *h = strstr(cfg, "\"hidden_size\": 32");
        CHECK(h != NULL);
        if (h) memcpy(h, "\"hidden_size\": 48", 17);
        CHECK(file_write_atomic(path_join(dst, sizeof dst, bad, "config.json"), cfg, n, &e) == 0);
        free(cfg);
    }
    path_join(dst, sizeof dst, bad, "model.safetensors");
    unlink(dst);
    char abs[PATH_MAX];
    CHECK(realpath(path_join(src, sizeof src, fixture(), "model.safetensors"), abs) != NULL);
    CHECK(symlink(abs, dst) == 0);
    CHECK(model_load_device(&m, bad, o, &e) == -1);
    CHECKF(strstr(e.msg, "tensor '") != NULL && strstr(e.msg, "config wants") != NULL, "%s", e.msg);
    // a config without tensors beside it
    unlink(dst);
    CHECK(model_load_device(&m, bad, o, &e) == -1);
    CHECKF(strstr(e.msg, "safetensors") != NULL || strstr(e.msg, bad) != NULL, "%s", e.msg);
    ops_destroy(o);
}

#ifdef AQA_CUDA
static void test_cuda(void) {
    Ops *o = ops_cuda_create();
    CHECK(compare_load(fixture(), o) == 0);    // fp32 file: converted on the way
    CHECK(compare_load(bf16_copy(), o) == 0);  // bf16 file: raw bytes
    ops_destroy(o);
}
#endif

int main(void) {
    RUN(test_cpu);
    RUN(test_errors);
#ifdef AQA_CUDA
    if (ops_cuda_device_count() > 0) RUN(test_cuda);
    else printf("test_model_load: no CUDA device, CUDA part skipped\n");
#endif
    return test_summary("test_model_load");
}
