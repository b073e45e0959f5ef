// fuzz_safetensors: safetensors checkpoints through st_open. An input that starts with '{' is a
// model.safetensors.index.json (its shards: a fixed valid "model-00001-of-00001.safetensors" beside
// it); any other input is a .safetensors file (u64 header length, JSON header, data). Every tensor is
// then looked up by name and converted. Invariant: every accepted tensor lies inside its file, has the
// size its shape and dtype say, and is found under its name.
#include "fuzz.h"
#include "model/safetensors.h"

// A shard holding "w" (F32 [2]) and "b" (BF16 [1]).
static const char shard_header[] =
    "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
    "\"b\":{\"dtype\":\"BF16\",\"shape\":[1],\"data_offsets\":[8,10]}}";

static void write_shard(void) {
    uint8_t buf[256];
    uint64_t n = sizeof shard_header - 1;
    memcpy(buf, &n, 8);
    memcpy(buf + 8, shard_header, n);
    memset(buf + 8 + n, 0x3f, 10);
    fuzz_write_file("model-00001-of-00001.safetensors", buf, 8 + n + 10);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_quiet();
    const char *path;
    if (size > 0 && data[0] == '{') {
        write_shard();
        path = fuzz_write_file("model.safetensors.index.json", data, size);
    } else {
        path = fuzz_write_file("model.safetensors", data, size);
    }
    StReader r;
    Err e;
    if (st_open(&r, path, &e) != 0) return 0;
    for (int i = 0; i < r.n; i++) {
        const StTensor *t = &r.tensors[i];
        const StFile *f = &r.files[t->file];
        FUZZ_CHECK(t->data >= f->map && t->data + t->nbytes <= f->map + f->size, "tensor '%s' outside the file",
                   t->name);
        FUZZ_CHECK(st_find(&r, t->name) == t, "tensor '%s' not found by name", t->name);
        FUZZ_CHECK(t->nbytes == t->numel * st_dtype_size(t->dtype), "tensor '%s' size", t->name);
        float *x = mallocCheck(t->numel * sizeof(float) + 1);
        st_to_f32(&r, t, x, &e);
        free(x);
    }
    st_close(&r);
    return 0;
}
