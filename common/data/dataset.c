#include "data/dataset.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "util/fileio.h"
#include "util/log.h"

DataOptions data_options_default(void) {
    DataOptions o = {.audio_dir = NULL, .max_bad = DATA_DEFAULT_MAX_BAD, .format = DATA_FORMAT_AUTO};
    return o;
}

const char *data_format_name(DataFormat f) {
    switch (f) {
    case DATA_FORMAT_R1AQA: return "r1aqa";
    case DATA_FORMAT_MMAU: return "mmau";
    default: return "auto";
    }
}

static void question_free(Question *q) {
    free(q->id);
    free(q->audio_path);
    free(q->question);
    for (int i = 0; i < q->n_choices; i++) free(q->choices[i]);
    free(q->choices);
    free(q->task);
    free(q->category);
    free(q->sub_category);
    free(q->difficulty);
    free(q->dataset);
    free(q->split);
    memset(q, 0, sizeof *q);
}

void dataset_free(Dataset *ds) {
    for (int64_t i = 0; i < ds->n; i++) question_free(&ds->q[i]);
    free(ds->q);
    for (int64_t i = 0; i < ds->n_bad; i++) free(ds->bad[i]);
    free(ds->bad);
    memset(ds, 0, sizeof *ds);
}

// ---------------------------------------------------------------------------------------------
// One record -> Question. The two formats differ only in key names and in how the answer is given.

typedef struct {
    const char *question, *choices, *audio;
    int answer_is_text;  // MMAU: the answer is the text of a choice; R1-AQA: a 0-based index
} FormatKeys;

static const FormatKeys KEYS_R1AQA = {"question_text", "multi_choice", "audio_path", 0};
static const FormatKeys KEYS_MMAU = {"question", "choices", "audio_id", 1};

// The value of a required string field, or NULL with e set.
static const char *field_string(json_t *obj, const char *key, Err *e) {
    json_t *v = json_object_get(obj, key);
    if (!v) {
        err_set(e, "missing field \"%s\"", key);
        return NULL;
    }
    if (!json_is_string(v)) {
        err_set(e, "field \"%s\" is not a string", key);
        return NULL;
    }
    return json_string_value(v);
}

// An optional metadata string: *out = copy, or NULL when absent or null. A list of strings is joined
// with ", " (13 MMAU test-mini items have "category": ["Reasoning"]). Other types are errors.
static int field_optional(json_t *obj, const char *key, char **out, Err *e) {
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) return 0;
    if (json_is_string(v)) {
        free(*out);
        *out = strdupCheck(json_string_value(v));
        return 0;
    }
    if (!json_is_array(v) || json_array_size(v) == 0)
        return err_set(e, "field \"%s\" is not a string or a list of strings", key);
    size_t len = 1, i;
    json_t *item;
    json_array_foreach(v, i, item) {
        if (!json_is_string(item)) return err_set(e, "%s[%zu] is not a string", key, i);
        len += json_string_length(item) + 2;
    }
    char *joined = mallocCheck(len), *p = joined;
    json_array_foreach(v, i, item) p += sprintf(p, "%s%s", i ? ", " : "", json_string_value(item));
    free(*out);
    *out = joined;
    return 0;
}

// Relative paths (a leading "./" dropped) are joined to base; absolute paths are kept.
// Sized to fit: a path in a data line may be any length (a bad one fails later, when the audio is
// opened, as one bad question instead of ending the process).
static char *resolve_path(const char *rel, const char *base) {
    if (rel[0] == '/' || !base || !*base) return strdupCheck(rel);
    while (rel[0] == '.' && rel[1] == '/') rel += 2;
    size_t cap = strlen(base) + strlen(rel) + 2;
    return path_join(mallocCheck(cap), cap, base, rel);
}

static int question_from_json(Question *q, json_t *obj, const FormatKeys *k, const char *base,
                              Err *e) {
    memset(q, 0, sizeof *q);
    if (!json_is_object(obj)) return err_set(e, "not a JSON object");

    json_t *id = json_object_get(obj, "id");
    if (!id) return err_set(e, "missing field \"id\"");
    if (json_is_integer(id)) {
        char buf[32];
        snprintf(buf, sizeof buf, "%" JSON_INTEGER_FORMAT, json_integer_value(id));
        q->id = strdupCheck(buf);
    } else if (json_is_string(id)) {
        q->id = strdupCheck(json_string_value(id));
    } else {
        return err_set(e, "field \"id\" is not an integer or a string");
    }

    const char *text = field_string(obj, k->question, e);
    if (!text) goto bad;
    q->question = strdupCheck(text);

    const char *audio = field_string(obj, k->audio, e);
    if (!audio) goto bad;
    if (!*audio) {
        err_set(e, "field \"%s\" is empty", k->audio);
        goto bad;
    }
    q->audio_path = resolve_path(audio, base);

    json_t *choices = json_object_get(obj, k->choices);
    if (!choices) {
        err_set(e, "missing field \"%s\"", k->choices);
        goto bad;
    }
    if (!json_is_array(choices)) {
        err_set(e, "field \"%s\" is not an array", k->choices);
        goto bad;
    }
    size_t nc = json_array_size(choices);
    if (nc < 2) {
        err_set(e, "field \"%s\" has %zu choice%s, need at least 2", k->choices, nc, nc == 1 ? "" : "s");
        goto bad;
    }
    q->choices = callocCheck(nc, sizeof *q->choices);
    for (size_t i = 0; i < nc; i++) {
        json_t *c = json_array_get(choices, i);
        if (!json_is_string(c)) {
            err_set(e, "%s[%zu] is not a string", k->choices, i);
            goto bad;
        }
        q->choices[i] = strdupCheck(json_string_value(c));
        q->n_choices = (int)i + 1;
    }

    json_t *ans = json_object_get(obj, "answer");
    if (!ans) {
        err_set(e, "missing field \"answer\"");
        goto bad;
    }
    if (k->answer_is_text) {
        if (!json_is_string(ans)) {
            err_set(e, "field \"answer\" is not a string");
            goto bad;
        }
        const char *a = json_string_value(ans);
        q->answer = -1;
        for (int i = 0; i < q->n_choices && q->answer < 0; i++)
            if (strcmp(q->choices[i], a) == 0) q->answer = i;
        if (q->answer < 0) {
            err_set(e, "answer \"%.200s\" is not among the choices", a);
            goto bad;
        }
    } else {
        if (!json_is_integer(ans)) {
            err_set(e, "field \"answer\" is not an integer");
            goto bad;
        }
        json_int_t a = json_integer_value(ans);
        if (a < 0 || a >= q->n_choices) {
            err_set(e, "answer %" JSON_INTEGER_FORMAT " out of range [0, %d)", a, q->n_choices);
            goto bad;
        }
        q->answer = (int)a;
    }
    q->answer_text = q->choices[q->answer];

    if (field_optional(obj, "task", &q->task, e) || field_optional(obj, "category", &q->category, e) ||
        field_optional(obj, "sub-category", &q->sub_category, e) ||
        field_optional(obj, "difficulty", &q->difficulty, e) ||
        field_optional(obj, "dataset_name", &q->dataset, e) ||
        field_optional(obj, "dataset", &q->dataset, e) || field_optional(obj, "split", &q->split, e))
        goto bad;
    return 0;
bad:
    question_free(q);
    return -1;
}

// ---------------------------------------------------------------------------------------------
// Loading: a Loader collects good questions and bad-record messages for one file.

typedef struct {
    const char *path;
    const char *base;  // directory for relative audio paths
    const FormatKeys *keys;
    int max_bad;
    Dataset *ds;
    int64_t cap;
} Loader;

static void loader_bad(Loader *L, const char *msg) {
    Dataset *ds = L->ds;
    ds->bad = reallocCheck(ds->bad, (size_t)(ds->n_bad + 1) * sizeof *ds->bad);
    ds->bad[ds->n_bad++] = strdupCheck(msg);
    log_warn("skipping record: %s", msg);
}

// Adds the record parsed from obj, or records why it is bad; `where` is "file:line" or the MMAU form.
static void loader_add(Loader *L, json_t *obj, int line, const char *where) {
    Question q;
    Err why;
    if (question_from_json(&q, obj, L->keys, L->base, &why)) {
        char msg[sizeof why.msg + 4300];
        snprintf(msg, sizeof msg, "%s: %s", where, why.msg);
        loader_bad(L, msg);
        return;
    }
    Dataset *ds = L->ds;
    if (ds->n == L->cap) {
        L->cap = L->cap ? 2 * L->cap : 256;
        ds->q = reallocCheck(ds->q, (size_t)L->cap * sizeof *ds->q);
    }
    q.index = ds->n;
    q.line = line;
    ds->q[ds->n++] = q;
}

static int loader_over_limit(const Loader *L, Err *e) {
    const Dataset *ds = L->ds;
    if (ds->n_bad <= L->max_bad) return 0;
    return err_set(e, "%s: %" PRId64 " bad records, more than max_bad %d (last: %.600s)", L->path,
                   ds->n_bad, L->max_bad, ds->bad[ds->n_bad - 1]);
}

static int load_jsonl(Loader *L, const char *text, size_t size, Err *e) {
    const char *p = text, *end = text + size;
    for (int line = 1; p < end; line++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *eol = nl ? nl : end;
        const char *s = p;
        while (s < eol && (*s == ' ' || *s == '\t' || *s == '\r')) s++;
        if (s < eol) {
            char where[4200];
            snprintf(where, sizeof where, "%s:%d", L->path, line);
            json_error_t je;
            json_t *obj = json_loadb(p, (size_t)(eol - p), JSON_DECODE_ANY, &je);
            if (!obj) {
                char msg[4600];
                snprintf(msg, sizeof msg, "%s: bad JSON: %s (column %d)", where, je.text, je.column);
                loader_bad(L, msg);
            } else {
                loader_add(L, obj, line, where);
                json_decref(obj);
            }
            if (loader_over_limit(L, e)) return -1;
        }
        p = eol + 1;
    }
    return 0;
}

// End of the array element starting at p: the first ',' or ']' outside strings and nested
// brackets. NULL when the text ends first. Lets a syntactically bad item be skipped by itself.
static const char *mmau_item_end(const char *p, const char *end) {
    int depth = 0;
    for (; p < end; p++) {
        char c = *p;
        if (c == '"') {
            for (p++; p < end && *p != '"'; p++)
                if (*p == '\\') p++;
            if (p >= end) return NULL;
        } else if (c == '{' || c == '[') {
            depth++;
        } else if (c == '}' || c == ']') {
            if (depth == 0) return c == ']' ? p : NULL;
            depth--;
        } else if (c == ',' && depth == 0) {
            return p;
        }
    }
    return NULL;
}

static const char *skip_space(const char *p, const char *end, int *line) {
    for (; p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'); p++)
        if (*p == '\n') (*line)++;
    return p;
}

static int count_lines(const char *p, const char *end) {
    int n = 0;
    for (; p < end; p++) n += *p == '\n';
    return n;
}

static int load_mmau(Loader *L, const char *text, size_t size, Err *e) {
    const char *p = text, *end = text + size;
    int line = 1;
    p = skip_space(p, end, &line);
    if (p == end || *p != '[') return err_set(e, "%s:%d: expected a JSON array of questions", L->path, line);
    p = skip_space(p + 1, end, &line);
    if (p < end && *p == ']') {  // an empty array
        if (skip_space(p + 1, end, &line) != end)
            return err_set(e, "%s:%d: unexpected text after the array", L->path, line);
        return 0;
    }
    for (int item = 0;; item++) {
        const char *q = mmau_item_end(p, end);
        if (!q)
            return err_set(e, "%s: item %d (line %d): unbalanced brackets or unterminated array", L->path,
                           item, line);
        const char *stop = q;
        while (stop > p && (stop[-1] == ' ' || stop[-1] == '\t' || stop[-1] == '\r' || stop[-1] == '\n')) stop--;
        char where[4200];
        snprintf(where, sizeof where, "%s: item %d (line %d)", L->path, item, line);
        if (stop == p) {
            char msg[4400];
            snprintf(msg, sizeof msg, "%s: empty item", where);
            loader_bad(L, msg);
        } else {
            json_error_t je;
            json_t *obj = json_loadb(p, (size_t)(stop - p), JSON_DECODE_ANY, &je);
            if (!obj) {
                char msg[4800];
                snprintf(msg, sizeof msg, "%s: bad JSON at line %d: %s", where, line + je.line - 1, je.text);
                loader_bad(L, msg);
            } else {
                loader_add(L, obj, line, where);
                json_decref(obj);
            }
        }
        if (loader_over_limit(L, e)) return -1;
        line += count_lines(p, q);
        if (*q == ']') {
            if (skip_space(q + 1, end, &line) != end)
                return err_set(e, "%s:%d: unexpected text after the array", L->path, line);
            return 0;
        }
        p = skip_space(q + 1, end, &line);
    }
}

int dataset_load(Dataset *ds, const char *path, const DataOptions *opts, Err *e) {
    memset(ds, 0, sizeof *ds);
    size_t size = 0;
    char *text = file_read_all(path, &size, e);
    if (!text) return -1;
    int rc = dataset_parse(ds, path, text, size, opts, e);
    free(text);
    return rc;
}

int dataset_parse(Dataset *ds, const char *path, const char *text, size_t size, const DataOptions *opts,
                  Err *e) {
    memset(ds, 0, sizeof *ds);
    DataOptions o = opts ? *opts : data_options_default();

    // Relative audio paths resolve against audio_dir, else the data file's directory.
    char base[4096];
    const char *slash = strrchr(path, '/');
    if (o.audio_dir) snprintf(base, sizeof base, "%s", o.audio_dir);
    else if (slash == path) snprintf(base, sizeof base, "/");
    else if (slash) snprintf(base, sizeof base, "%.*s", (int)(slash - path), path);
    else base[0] = 0;

    DataFormat fmt = o.format;
    if (fmt == DATA_FORMAT_AUTO) {
        int line = 1;
        const char *p = skip_space(text, text + size, &line);
        fmt = p < text + size && *p == '[' ? DATA_FORMAT_MMAU : DATA_FORMAT_R1AQA;
    }
    Loader L = {.path = path, .base = base, .keys = fmt == DATA_FORMAT_MMAU ? &KEYS_MMAU : &KEYS_R1AQA,
                .max_bad = o.max_bad, .ds = ds};
    ds->format = fmt;
    int rc = fmt == DATA_FORMAT_MMAU ? load_mmau(&L, text, size, e) : load_jsonl(&L, text, size, e);
    if (rc == 0 && ds->n == 0)
        rc = err_set(e, "%s: no valid questions (%" PRId64 " bad records)", path, ds->n_bad);
    if (rc) {
        dataset_free(ds);
        return -1;
    }
    if (ds->n_bad)
        log_warn("%s: %" PRId64 " questions loaded, %" PRId64 " bad records skipped", path, ds->n, ds->n_bad);
    return 0;
}
