#include "model/safetensors.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/fileio.h"

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data is little-endian; this reader maps it directly"
#endif

// The format's own limit on the JSON header (safetensors rejects larger ones).
static const uint64_t ST_MAX_HEADER = 100u << 20;

static const struct {
    const char *name;
    size_t size;
} st_dtypes[] = {
    [ST_F32] = {"F32", 4}, [ST_F16] = {"F16", 2}, [ST_BF16] = {"BF16", 2}, [ST_F64] = {"F64", 8},
    [ST_I64] = {"I64", 8}, [ST_I32] = {"I32", 4}, [ST_I16] = {"I16", 2},  [ST_I8] = {"I8", 1},
    [ST_U8] = {"U8", 1},   [ST_BOOL] = {"BOOL", 1},
};
enum { ST_N_DTYPES = sizeof st_dtypes / sizeof st_dtypes[0] };

const char *st_dtype_name(StDtype d) { return st_dtypes[d].name; }
size_t st_dtype_size(StDtype d) { return st_dtypes[d].size; }

static int st_dtype_parse(const char *s) {
    for (int i = 0; i < ST_N_DTYPES; i++)
        if (strcmp(s, st_dtypes[i].name) == 0) return i;
    return -1;
}

// ---------------------------------------------------------------- scalar conversions

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}


float st_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    if (exp == 0x1f) return bits_f32(sign | 0x7f800000u | (man << 13));
    if (exp == 0) {
        // subnormal: man * 2^-24, exact in fp32
        float v = (float)man * (1.0f / 16777216.0f);
        return sign ? -v : v;
    }
    return bits_f32(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t st_f32_to_f16(float f) {
    uint32_t u = f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return sign | 0x7e00;  // NaN
    if (a >= 0x477ff000u) return sign | 0x7c00;  // rounds to >= 65520: infinity
    if (a < 0x38800000u) {
        // below the smallest normal (2^-14): scale to units of 2^-24 and round to nearest even
        float v = bits_f32(a) * 16777216.0f;
        uint32_t q = (uint32_t)v;
        float rem = v - (float)q;
        if (rem > 0.5f || (rem == 0.5f && (q & 1))) q++;
        return sign | (uint16_t)q;
    }
    uint32_t r = a + 0xfffu + ((a >> 13) & 1);  // round mantissa to 10 bits, ties to even
    return sign | (uint16_t)((r - (112u << 23)) >> 13);
}

// ---------------------------------------------------------------- reader

static uint64_t st_hash(const char *s) {
    uint64_t h = 1469598103934665603ull;  // FNV-1a
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

static int st_json_nonneg_int(json_t *v, int64_t *out) {
    if (!json_is_integer(v) || json_integer_value(v) < 0) return -1;
    *out = json_integer_value(v);
    return 0;
}

// Parses one header entry into t. Errors name the tensor (the caller adds the file).
static int st_parse_entry(const char *name, json_t *v, size_t data_size, StTensor *t, Err *e) {
    if (!json_is_object(v)) return err_set(e, "tensor '%s': entry is not a JSON object", name);
    json_t *dt = json_object_get(v, "dtype"), *shape = json_object_get(v, "shape");
    json_t *offs = json_object_get(v, "data_offsets");
    if (!json_is_string(dt)) return err_set(e, "tensor '%s': missing or non-string \"dtype\"", name);
    int d = st_dtype_parse(json_string_value(dt));
    if (d < 0) return err_set(e, "tensor '%s': unsupported dtype \"%s\"", name, json_string_value(dt));
    if (!json_is_array(shape)) return err_set(e, "tensor '%s': missing or non-array \"shape\"", name);
    if (json_array_size(shape) > ST_MAX_DIMS)
        return err_set(e, "tensor '%s': %zu dimensions (at most %d)", name, json_array_size(shape),
                       ST_MAX_DIMS);
    t->dtype = (StDtype)d;
    t->ndim = (int)json_array_size(shape);
    t->numel = 1;
    for (int i = 0; i < t->ndim; i++) {
        if (st_json_nonneg_int(json_array_get(shape, (size_t)i), &t->shape[i]))
            return err_set(e, "tensor '%s': shape[%d] is not a non-negative integer", name, i);
        if (__builtin_mul_overflow(t->numel, (size_t)t->shape[i], &t->numel))
            return err_set(e, "tensor '%s': shape overflows", name);
    }
    int64_t begin, end;
    if (!json_is_array(offs) || json_array_size(offs) != 2 || st_json_nonneg_int(json_array_get(offs, 0), &begin) ||
        st_json_nonneg_int(json_array_get(offs, 1), &end) || begin > end)
        return err_set(e, "tensor '%s': \"data_offsets\" must be [begin, end] with 0 <= begin <= end", name);
    if ((uint64_t)end > data_size)
        return err_set(e, "tensor '%s': data_offsets [%lld, %lld) outside the data region (%zu bytes)", name,
                       (long long)begin, (long long)end, data_size);
    size_t want;
    if (__builtin_mul_overflow(t->numel, st_dtypes[d].size, &want) || want != (size_t)(end - begin))
        return err_set(e, "tensor '%s': %lld bytes for %zu elements of %s (want %zu)", name,
                       (long long)(end - begin), t->numel, st_dtypes[d].name, t->numel * st_dtypes[d].size);
    t->nbytes = want;
    t->data = (const uint8_t *)(uintptr_t)begin;  // made absolute once the file is mapped
    t->name = strdupCheck(name);
    return 0;
}

static int st_cmp_offset(const void *a, const void *b) {
    const StTensor *x = a, *y = b;
    return x->data < y->data ? -1 : x->data > y->data;
}

// Maps one file and appends its tensors. Errors are prefixed with the file path.
static int st_add_file(StReader *r, const char *path, Err *e) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return err_set(e, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return err_set(e, "%s: not a regular file", path);
    }
    size_t size = (size_t)st.st_size;
    if (size < 8) {
        close(fd);
        return err_set(e, "%s: truncated: %zu bytes, shorter than the 8-byte header length", path, size);
    }
    uint8_t *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) fatal("%s: mmap of %zu bytes failed: %s", path, size, strerror(errno));
    r->files = reallocCheck(r->files, (size_t)(r->n_files + 1) * sizeof(StFile));
    int fi = r->n_files++;
    r->files[fi] = (StFile){.path = strdupCheck(path), .map = map, .size = size};

    uint64_t hlen;
    memcpy(&hlen, map, 8);
    if (hlen < 2 || hlen > ST_MAX_HEADER || hlen > size - 8)
        return err_set(e, "%s: bad header length %llu (file is %zu bytes)", path, (unsigned long long)hlen,
                       size);
    json_error_t jerr;
    json_t *root = json_loadb((const char *)map + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) return err_set(e, "%s: header is not valid JSON: %s (at byte %d)", path, jerr.text, jerr.position);
    if (!json_is_object(root)) {
        json_decref(root);
        return err_set(e, "%s: header is not a JSON object", path);
    }
    size_t data_size = size - 8 - (size_t)hlen;
    const uint8_t *data = map + 8 + hlen;
    int first = r->n, rc = 0;
    r->tensors = reallocCheck(r->tensors, (size_t)(r->n + (int)json_object_size(root)) * sizeof(StTensor));
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (strcmp(key, "__metadata__") == 0) {
            if (!json_is_object(v)) rc = err_set(e, "\"__metadata__\" is not a JSON object");
            if (rc) break;
            continue;
        }
        StTensor *t = &r->tensors[r->n];
        memset(t, 0, sizeof *t);
        if ((rc = st_parse_entry(key, v, data_size, t, e))) break;
        t->file = fi;
        r->n++;
    }
    json_decref(root);
    if (rc) return err_prefix(e, "%s", path);
    // Overlapping byte ranges mean a corrupt header: two names would alias the same data.
    int cnt = r->n - first;
    qsort(r->tensors + first, (size_t)cnt, sizeof(StTensor), st_cmp_offset);
    size_t prev_end = 0;
    for (int i = first; i < r->n; i++) {
        StTensor *t = &r->tensors[i];
        size_t begin = (size_t)(uintptr_t)t->data;
        if (t->nbytes > 0 && begin < prev_end)
            return err_set(e, "%s: tensors '%s' and '%s' overlap", path, r->tensors[i - 1].name, t->name);
        if (t->nbytes > 0) prev_end = begin + t->nbytes;
        t->data = data + begin;
    }
    return 0;
}

static int st_build_index(StReader *r, Err *e) {
    r->n_slots = 16;
    while (r->n_slots < 2 * (size_t)r->n) r->n_slots *= 2;
    r->slots = mallocCheck(r->n_slots * sizeof(int));
    for (size_t i = 0; i < r->n_slots; i++) r->slots[i] = -1;
    for (int i = 0; i < r->n; i++) {
        size_t s = st_hash(r->tensors[i].name) & (r->n_slots - 1);
        while (r->slots[s] >= 0) {
            const StTensor *o = &r->tensors[r->slots[s]];
            if (strcmp(o->name, r->tensors[i].name) == 0)
                return err_set(e, "tensor '%s' appears in both %s and %s", o->name, r->files[o->file].path,
                               r->files[r->tensors[i].file].path);
            s = (s + 1) & (r->n_slots - 1);
        }
        r->slots[s] = i;
    }
    return 0;
}

int st_rename(StReader *r, const char *(*map)(const char *name, char *buf, size_t cap), Err *e) {
    char buf[1024];
    for (int i = 0; i < r->n; i++) {
        const char *to = map(r->tensors[i].name, buf, sizeof buf);
        if (to == r->tensors[i].name) continue;
        char *dup = strdupCheck(to);
        free(r->tensors[i].name);
        r->tensors[i].name = dup;
    }
    free(r->slots);
    r->slots = NULL;
    if (st_build_index(r, e)) return err_prefix(e, "%s: after renaming", r->source);
    return 0;
}

const StTensor *st_find(const StReader *r, const char *name) {
    if (!r->slots) return NULL;
    size_t s = st_hash(name) & (r->n_slots - 1);
    for (; r->slots[s] >= 0; s = (s + 1) & (r->n_slots - 1))
        if (strcmp(r->tensors[r->slots[s]].name, name) == 0) return &r->tensors[r->slots[s]];
    return NULL;
}

const char *st_tensor_file(const StReader *r, const StTensor *t) { return r->files[t->file].path; }

static int st_ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

// Opens the shards an index names and checks the weight_map against their headers.
static int st_open_index(StReader *r, const char *path, Err *e) {
    size_t len;
    char *text = file_read_all(path, &len, e);
    if (!text) return -1;
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    free(text);
    if (!root) return err_set(e, "%s: not valid JSON: %s (line %d)", path, jerr.text, jerr.line);
    json_t *wm = json_object_get(root, "weight_map");
    int rc = 0;
    if (!json_is_object(root) || !json_is_object(wm)) {
        rc = err_set(e, "%s: missing \"weight_map\" object", path);
        goto done;
    }
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = 0;
    else snprintf(dir, sizeof dir, ".");
    const char *name;
    json_t *v;
    json_object_foreach(wm, name, v) {
        const char *file = json_string_value(v);
        char full[4096];
        if (!file || !*file || file[0] == '/' || strstr(file, "..") || strlen(dir) + 1 + strlen(file) >= sizeof full) {
            rc = err_set(e, "%s: weight_map[\"%.200s\"] is not a shard file name (or too long)", path, name);
            goto done;
        }
        path_join(full, sizeof full, dir, file);
        int have = 0;
        for (int i = 0; i < r->n_files && !have; i++) have = strcmp(r->files[i].path, full) == 0;
        if (have) continue;
        if (!path_exists(full)) {
            rc = err_set(e, "%s: weight_map[\"%s\"] names shard %s, which does not exist", path, name, full);
            goto done;
        }
        if ((rc = st_add_file(r, full, e))) goto done;
    }
    if ((rc = st_build_index(r, e))) goto done;
    json_object_foreach(wm, name, v) {
        const StTensor *t = st_find(r, name);
        char full[4096];
        path_join(full, sizeof full, dir, json_string_value(v));
        if (!t || strcmp(st_tensor_file(r, t), full) != 0) {
            rc = err_set(e, "%s: tensor '%s' is mapped to %s but that shard does not hold it", path, name,
                         json_string_value(v));
            goto done;
        }
    }
    for (int i = 0; i < r->n; i++)
        if (!json_object_get(wm, r->tensors[i].name)) {
            rc = err_set(e, "%s: tensor '%s' in %s is missing from the weight_map", path, r->tensors[i].name,
                         st_tensor_file(r, &r->tensors[i]));
            goto done;
        }
done:
    json_decref(root);
    return rc;
}

// A directory: the index if there is one, else model.safetensors, else its only *.safetensors file.
static int st_open_dir(StReader *r, const char *dir, Err *e) {
    char p[4096];
    path_join(p, sizeof p, dir, "model.safetensors.index.json");
    if (path_exists(p)) return st_open_index(r, p, e);
    path_join(p, sizeof p, dir, "model.safetensors");
    if (!path_exists(p)) {
        DIR *d = opendir(dir);
        if (!d) return err_set(e, "%s: cannot open directory: %s", dir, strerror(errno));
        int found = 0;
        struct dirent *de;
        while ((de = readdir(d)))
            if (st_ends_with(de->d_name, ".safetensors") && found++ == 0) path_join(p, sizeof p, dir, de->d_name);
        closedir(d);
        if (found != 1)
            return err_set(e, "%s: %s", dir,
                           found ? "several .safetensors files but no model.safetensors.index.json"
                                 : "no model.safetensors.index.json or .safetensors file");
    }
    if (st_add_file(r, p, e)) return -1;
    return st_build_index(r, e);
}

int st_open(StReader *r, const char *path, Err *e) {
    memset(r, 0, sizeof *r);
    r->source = strdupCheck(path);
    struct stat st;
    int rc;
    if (stat(path, &st) != 0) rc = err_set(e, "%s: cannot open: %s", path, strerror(errno));
    else if (S_ISDIR(st.st_mode)) rc = st_open_dir(r, path, e);
    else if (st_ends_with(path, ".json")) rc = st_open_index(r, path, e);
    else rc = st_add_file(r, path, e) ? -1 : st_build_index(r, e);
    if (rc) st_close(r);
    return rc;
}

void st_close(StReader *r) {
    for (int i = 0; i < r->n_files; i++) {
        munmap(r->files[i].map, r->files[i].size);
        free(r->files[i].path);
    }
    for (int i = 0; i < r->n; i++) free(r->tensors[i].name);
    free(r->files);
    free(r->tensors);
    free(r->slots);
    free(r->source);
    memset(r, 0, sizeof *r);
}

int st_to_f32_range(const StReader *r, const StTensor *t, size_t off, size_t n, float *out, Err *e) {
    const uint8_t *p = t->data + off * st_dtypes[t->dtype].size;
    switch (t->dtype) {
    case ST_F32:
        memcpy(out, p, n * 4);
        return 0;
    case ST_BF16:
    case ST_F16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            out[i] = t->dtype == ST_BF16 ? st_bf16_to_f32(h) : st_f16_to_f32(h);
        }
        return 0;
    case ST_F64:
        for (size_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, p + 8 * i, 8);
            out[i] = (float)d;
        }
        return 0;
    default:
        return err_set(e, "%s: tensor '%s' has dtype %s, not a floating type", st_tensor_file(r, t), t->name,
                       st_dtype_name(t->dtype));
    }
}

int st_to_f32(const StReader *r, const StTensor *t, float *out, Err *e) {
    return st_to_f32_range(r, t, 0, t->numel, out, e);
}

static void st_shape_str(char *buf, size_t cap, int ndim, const int64_t *shape) {
    size_t n = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && n < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (n < cap) snprintf(buf + n, cap - n, "]");
}

int st_read_f32_range(const StReader *r, const char *name, int ndim, const int64_t *shape, size_t off, size_t n,
                      float *out, Err *e) {
    const StTensor *t = st_find(r, name);
    if (!t) return err_set(e, "%s: tensor '%s' not found", r->source, name);
    int same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = t->shape[i] == shape[i];
    if (!same) {
        char want[128], got[128];
        st_shape_str(want, sizeof want, ndim, shape);
        st_shape_str(got, sizeof got, t->ndim, t->shape);
        return err_set(e, "%s: tensor '%s' has shape %s, expected %s", st_tensor_file(r, t), name, got, want);
    }
    if (off > t->numel || n > t->numel - off)
        return err_set(e, "%s: tensor '%s': elements [%zu, %zu) outside its %zu", st_tensor_file(r, t), name, off,
                       off + n, t->numel);
    return st_to_f32_range(r, t, off, n, out, e);
}

int st_read_f32(const StReader *r, const char *name, int ndim, const int64_t *shape, float *out, Err *e) {
    size_t numel = 1;
    for (int i = 0; i < ndim; i++) numel *= (size_t)shape[i];
    return st_read_f32_range(r, name, ndim, shape, 0, numel, out, e);
}

// ---------------------------------------------------------------- writer

static size_t st_numel(const StWriteTensor *t) {
    size_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= (size_t)t->shape[i];
    return n;
}

// Elements converted per chunk: a bf16 source is fetched this many at a time (2 MiB of bf16).
enum { ST_CHUNK = 1 << 20 };

// Converts and writes one tensor's data in chunks (no full-size temporary copy) through half[ST_CHUNK]
// and wide[ST_CHUNK].
static int st_write_data(FILE *f, const StWriteTensor *t, StDtype dtype, uint16_t *half, float *wide) {
    size_t n = st_numel(t);
    if (t->data && dtype == ST_F32) return fwrite(t->data, 4, n, f) == n ? 0 : -1;
    for (size_t i = 0; i < n; i += ST_CHUNK) {
        size_t m = n - i < ST_CHUNK ? n - i : ST_CHUNK;
        const float *src = t->data ? t->data + i : wide;
        if (!t->data) {
            t->read_bf16(t->ctx, t->at + i, m, half);
            if (dtype == ST_BF16) {  // as it is
                if (fwrite(half, 2, m, f) != m) return -1;
                continue;
            }
            for (size_t j = 0; j < m; j++) wide[j] = st_bf16_to_f32(half[j]);
        }
        if (dtype == ST_F32) {
            if (fwrite(src, 4, m, f) != m) return -1;
            continue;
        }
        for (size_t j = 0; j < m; j++) half[j] = dtype == ST_BF16 ? st_f32_to_bf16(src[j]) : st_f32_to_f16(src[j]);
        if (fwrite(half, 2, m, f) != m) return -1;
    }
    return 0;
}

int st_write_file(const char *path, const StWriteTensor *ts, int n, StDtype dtype, Err *e) {
    if (dtype != ST_F32 && dtype != ST_BF16 && dtype != ST_F16)
        return err_set(e, "%s: cannot write dtype %s (F32, BF16 or F16 only)", path, st_dtype_name(dtype));
    json_t *hdr = json_object();
    json_object_set_new(hdr, "__metadata__", json_pack("{s:s}", "format", "pt"));
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        if (ts[i].ndim < 0 || ts[i].ndim > ST_MAX_DIMS) {
            json_decref(hdr);
            return err_set(e, "%s: tensor '%s' has %d dimensions", path, ts[i].name, ts[i].ndim);
        }
        json_t *shape = json_array();
        for (int d = 0; d < ts[i].ndim; d++) json_array_append_new(shape, json_integer(ts[i].shape[d]));
        size_t nb = st_numel(&ts[i]) * st_dtype_size(dtype);
        json_t *ent = json_pack("{s:s,s:o,s:[I,I]}", "dtype", st_dtype_name(dtype), "shape", shape,
                                "data_offsets", (json_int_t)off, (json_int_t)(off + nb));
        if (json_object_get(hdr, ts[i].name)) {
            json_decref(ent);
            json_decref(hdr);
            return err_set(e, "%s: tensor '%s' given twice", path, ts[i].name);
        }
        json_object_set_new(hdr, ts[i].name, ent);
        off += nb;
    }
    char *text = json_dumps(hdr, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(hdr);
    if (!text) fatal("json_dumps failed");
    // Pad the header with spaces so the data region starts 8-byte aligned, as the reference writer does.
    size_t len = strlen(text), padded = (len + 7) & ~(size_t)7;
    uint64_t hlen = padded;
    AtomicFile af;
    if (atomic_open(&af, path, e)) {
        free(text);
        return -1;
    }
    int bad = fwrite(&hlen, 8, 1, af.f) != 1 || fwrite(text, 1, len, af.f) != len;
    for (size_t i = len; i < padded && !bad; i++) bad = fputc(' ', af.f) == EOF;
    free(text);
    uint16_t *half = mallocCheck(ST_CHUNK * sizeof *half);
    float *wide = mallocCheck(ST_CHUNK * sizeof *wide);
    for (int i = 0; i < n && !bad; i++) bad = st_write_data(af.f, &ts[i], dtype, half, wide);
    free(half);
    free(wide);
    if (bad) {
        int saved = errno;
        atomic_abort(&af);
        return err_set(e, "%s: write failed: %s", path, strerror(saved));
    }
    return atomic_commit(&af, e);
}

int st_write_sharded(const char *dir, const StWriteTensor *ts, int n, StDtype dtype, size_t max_shard_bytes,
                     Err *e) {
    // shard_of[i]: which shard tensor i goes to
    int *shard_of = mallocCheck((size_t)(n > 0 ? n : 1) * sizeof(int));
    int n_shards = 0;
    size_t cur = 0, total = 0;
    for (int i = 0; i < n; i++) {
        size_t nb = st_numel(&ts[i]) * st_dtype_size(dtype);
        if (n_shards == 0 || (cur > 0 && cur + nb > max_shard_bytes)) {
            n_shards++;
            cur = 0;
        }
        shard_of[i] = n_shards - 1;
        cur += nb;
        total += nb;
    }
    if (n_shards == 0) n_shards = 1;
    int rc = 0;
    char file[64], path[4096];
    if (n_shards == 1) {
        rc = st_write_file(path_join(path, sizeof path, dir, "model.safetensors"), ts, n, dtype, e);
        free(shard_of);
        return rc ? -1 : 1;
    }
    json_t *wm = json_object();
    for (int s = 0, i = 0; s < n_shards && !rc; s++) {
        snprintf(file, sizeof file, "model-%05d-of-%05d.safetensors", s + 1, n_shards);
        int first = i;
        while (i < n && shard_of[i] == s) json_object_set_new(wm, ts[i++].name, json_string(file));
        rc = st_write_file(path_join(path, sizeof path, dir, file), ts + first, i - first, dtype, e);
    }
    free(shard_of);
    if (!rc) {
        json_t *index = json_pack("{s:{s:I},s:o}", "metadata", "total_size", (json_int_t)total, "weight_map", wm);
        char *text = json_dumps(index, JSON_INDENT(2) | JSON_SORT_KEYS);
        json_decref(index);
        if (!text) fatal("json_dumps failed");
        size_t len = strlen(text);
        text = reallocCheck(text, len + 2);
        memcpy(text + len, "\n", 2);
        rc = file_write_atomic(path_join(path, sizeof path, dir, "model.safetensors.index.json"), text, len + 1, e);
        free(text);
    } else {
        json_decref(wm);
    }
    return rc ? -1 : n_shards;
}
