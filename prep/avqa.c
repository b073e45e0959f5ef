#include "avqa.h"

#include <ctype.h>
#include <errno.h>
#include <dirent.h>
#include <jansson.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "audio/audio.h"
#include "avdecode.h"
#include "pool.h"
#include "text/strmap.h"
#include "util/fileio.h"
#include "util/log.h"

typedef enum { CLIP_CONVERTED, CLIP_ALREADY, CLIP_MISSING, CLIP_UNDECODABLE } ClipStatus;

typedef struct {
    const char *video_name;  // inside the parsed JSON
    char audio_name[512];    // R1-AQA wav name without extension
    const char *source;      // found media file, or NULL
    int64_t questions;
    ClipStatus status;
    char reason[1024];
} Clip;

typedef struct {
    Clip *clip;  // [n]
    int64_t n, cap;
    StrMap by_name;  // R1-AQA audio name -> clip index ("x_000030" and "x_30" are one clip, one wav)
    char **media;    // [n_media] paths of candidate media files
    int64_t n_media, cap_media;
    StrMap by_stem;  // file name without extension -> media index
    char wav_dir[4096];
} Avqa;

static const char *const media_exts[] = {"mp4", "mkv", "webm", "avi", "mov", "wav", "flac", "mp3", "m4a", "ogg", "opus"};

char *avqa_audio_name(const char *video_name, char *out, size_t cap) {
    snprintf(out, cap, "%s", video_name);
    char *us = strrchr(out, '_');
    if (!us || !us[1]) return out;
    for (const char *p = us + 1; *p; p++)
        if (!isdigit((unsigned char)*p)) return out;
    const char *digits = us + 1;
    while (digits[0] == '0' && digits[1]) digits++;
    memmove(us + 1, digits, strlen(digits) + 1);
    return out;
}

static int has_media_ext(const char *name, size_t *stem_len) {
    const char *dot = strrchr(name, '.');
    if (!dot || dot == name) return 0;
    for (size_t i = 0; i < sizeof media_exts / sizeof media_exts[0]; i++)
        if (strcasecmp(dot + 1, media_exts[i]) == 0) {
            *stem_len = (size_t)(dot - name);
            return 1;
        }
    return 0;
}

static int media_scan(Avqa *a, const char *dir, int depth, Err *e);

// One directory entry: a folder is searched, a media file joins the index under its stem (the first
// file found for a stem wins).
static int media_add(Avqa *a, const char *dir, const char *name, int depth, Err *e) {
    char path[4096];
    size_t stem;
    struct stat st;
    if (name[0] == '.' || stat(path_join(path, sizeof path, dir, name), &st) != 0) return 0;  // hidden, gone
    if (S_ISDIR(st.st_mode)) return media_scan(a, path, depth + 1, e);
    if (!S_ISREG(st.st_mode) || !has_media_ext(name, &stem) || strmap_get(&a->by_stem, name, stem)) return 0;
    if (a->n_media == a->cap_media) {
        a->cap_media = a->cap_media ? 2 * a->cap_media : 1024;
        a->media = reallocCheck(a->media, (size_t)a->cap_media * sizeof(char *));
    }
    strmap_put(&a->by_stem, name, stem, (int32_t)a->n_media, 0);
    a->media[a->n_media++] = strdupCheck(path);
    return 0;
}

// Adds every media file under dir (recursively, in name order within a folder) to the stem index.
static int media_scan(Avqa *a, const char *dir, int depth, Err *e) {
    if (depth > 16) return err_set(e, "%s: folders nested too deep", dir);
    struct dirent **ents;
    int n = scandir(dir, &ents, NULL, alphasort);
    if (n < 0) return err_set(e, "%s: cannot list: %s", dir, strerror(errno));
    int rc = 0;
    for (int i = 0; i < n; i++) {
        if (!rc) rc = media_add(a, dir, ents[i]->d_name, depth, e);
        free(ents[i]);
    }
    free(ents);
    return rc;
}

static const char *media_find(const Avqa *a, const char *stem) {
    const StrSlot *s = strmap_get(&a->by_stem, stem, strlen(stem));
    return s ? a->media[s->a] : NULL;
}

// Checks one record; returns its video_name, or NULL with the reason in e.
static const char *record_check(const json_t *r, Err *e) {
    if (!json_is_object(r)) return err_set(e, "not a JSON object"), NULL;
    const json_t *id = json_object_get(r, "id"), *vn = json_object_get(r, "video_name");
    const json_t *q = json_object_get(r, "question_text"), *mc = json_object_get(r, "multi_choice");
    const json_t *ans = json_object_get(r, "answer");
    if (!json_is_integer(id) && !json_is_string(id)) return err_set(e, "\"id\" missing or not an integer/string"), NULL;
    if (!json_is_string(vn) || !json_string_length(vn)) return err_set(e, "\"video_name\" missing or empty"), NULL;
    if (strchr(json_string_value(vn), '/')) return err_set(e, "\"video_name\" holds a '/'"), NULL;
    if (!json_is_string(q)) return err_set(e, "\"question_text\" missing or not a string"), NULL;
    if (!json_is_array(mc) || json_array_size(mc) < 2)
        return err_set(e, "\"multi_choice\" missing or fewer than 2 choices"), NULL;
    for (size_t c = 0; c < json_array_size(mc); c++)
        if (!json_is_string(json_array_get(mc, c))) return err_set(e, "choice %zu is not a string", c), NULL;
    if (!json_is_integer(ans) || json_integer_value(ans) < 0 || json_integer_value(ans) >= (json_int_t)json_array_size(mc))
        return err_set(e, "\"answer\" missing or not an index into multi_choice"), NULL;
    return json_string_value(vn);
}

// The clip of a video_name (added on first sight).
static int64_t clip_of(Avqa *a, const char *video_name) {
    char name[512];
    avqa_audio_name(video_name, name, sizeof name);
    const StrSlot *s = strmap_get(&a->by_name, name, strlen(name));
    if (s) return s->a;
    if (a->n == a->cap) {
        a->cap = a->cap ? 2 * a->cap : 1024;
        a->clip = reallocCheck(a->clip, (size_t)a->cap * sizeof(Clip));
    }
    Clip *c = &a->clip[a->n];
    memset(c, 0, sizeof *c);
    c->video_name = video_name;
    snprintf(c->audio_name, sizeof c->audio_name, "%s", name);
    strmap_put(&a->by_name, name, strlen(name), (int32_t)a->n, 0);
    return a->n++;
}

static void wav_path(const Avqa *a, const Clip *c, char *out, size_t cap) {
    snprintf(out, cap, "%s/%s.wav", a->wav_dir, c->audio_name);
}

// One clip: skip if finished, else find, decode and write it.
static void clip_convert(void *ctx, int64_t i) {
    Avqa *a = ctx;
    Clip *c = &a->clip[i];
    char out[4700];
    wav_path(a, c, out, sizeof out);
    if (path_exists(out)) {
        c->status = CLIP_ALREADY;
        return;
    }
    if (!c->source) {
        c->status = CLIP_MISSING;
        snprintf(c->reason, sizeof c->reason, "no media file named %s or %s", c->video_name, c->audio_name);
        return;
    }
    float *x;
    int64_t n;
    Err e;
    if (avdec_load(c->source, &x, &n, &e) || audio_write_wav(out, x, n, 1, AUDIO_SAMPLE_RATE, AUDIO_WAV_PCM16, &e)) {
        c->status = CLIP_UNDECODABLE;
        snprintf(c->reason, sizeof c->reason, "%s", e.msg);
    } else {
        c->status = CLIP_CONVERTED;
    }
    free(x);
}

// Removes temporary files a killed run left in the wav folder ("<name>.wav.tmp.<pid>").
static void wav_dir_clean(const Avqa *a) {
    DIR *d = opendir(a->wav_dir);
    if (!d) return;
    struct dirent *de;
    char p[4096];
    while ((de = readdir(d)))
        if (strstr(de->d_name, ".wav.tmp.")) unlink(path_join(p, sizeof p, a->wav_dir, de->d_name));
    closedir(d);
}

static int tsv_line(FILE *f, const char *what, int64_t questions, const char *reason) {
    // Tabs and newlines inside a field would break the columns.
    char buf[2048];
    snprintf(buf, sizeof buf, "%s", reason);
    for (char *p = buf; *p; p++)
        if (*p == '\t' || *p == '\n' || *p == '\r') *p = ' ';
    return fprintf(f, "%s\t%lld\t%s\n", what, (long long)questions, buf) < 0 ? -1 : 0;
}

static int write_outputs(Avqa *a, json_t *root, const char *out_dir, AvqaStats *st, Err *e) {
    char jsonl[4096], tsv[4096], abs_wav[PATH_MAX];
    if (!realpath(a->wav_dir, abs_wav)) return err_set(e, "%s: %s", a->wav_dir, strerror(errno));
    AtomicFile jf, tf;
    if (atomic_open(&jf, path_join(jsonl, sizeof jsonl, out_dir, "train.jsonl"), e)) return -1;
    if (atomic_open(&tf, path_join(tsv, sizeof tsv, out_dir, "excluded.tsv"), e)) {
        atomic_abort(&jf);
        return -1;
    }
    int rc = 0;
    for (size_t i = 0; i < json_array_size(root) && !rc; i++) {
        json_t *r = json_array_get(root, i);
        Err why;
        const char *vn = record_check(r, &why);
        if (!vn) {
            char what[64];
            snprintf(what, sizeof what, "item %zu", i);
            rc = tsv_line(tf.f, what, 1, why.msg);
            continue;
        }
        const Clip *c = &a->clip[clip_of(a, vn)];
        if (c->status != CLIP_CONVERTED && c->status != CLIP_ALREADY) continue;
        char path[PATH_MAX + 600];
        snprintf(path, sizeof path, "%s/%s.wav", abs_wav, c->audio_name);
        json_object_set_new(r, "dataset_name", json_string("AVQA"));
        json_object_set_new(r, "audio_path", json_string(path));
        char *line = json_dumps(r, JSON_PRESERVE_ORDER);
        if (!line) fatal("json_dumps: out of memory");
        rc = fprintf(jf.f, "%s\n", line) < 0 ? -1 : 0;
        free(line);
        st->written++;
    }
    for (int64_t k = 0; k < a->n && !rc; k++) {
        const Clip *c = &a->clip[k];
        if (c->status == CLIP_MISSING || c->status == CLIP_UNDECODABLE)
            rc = tsv_line(tf.f, c->video_name, c->questions, c->reason);
    }
    if (rc) {
        atomic_abort(&jf);
        atomic_abort(&tf);
        return err_set(e, "%s: write failed: %s", out_dir, strerror(errno));
    }
    if (atomic_commit(&tf, e)) {
        atomic_abort(&jf);
        return -1;
    }
    return atomic_commit(&jf, e);
}

static void avqa_free(Avqa *a) {
    for (int64_t i = 0; i < a->n_media; i++) free(a->media[i]);
    free(a->media);
    free(a->clip);
    strmap_free(&a->by_name);
    strmap_free(&a->by_stem);
}

static int avqa_run(Avqa *a, json_t *root, const AvqaOptions *o, AvqaStats *st, Err *e) {
    for (size_t i = 0; i < json_array_size(root); i++) {
        Err why;
        const char *vn = record_check(json_array_get(root, i), &why);
        if (!vn) {
            log_warn("%s: item %zu: %s (left out)", o->qa_path, i, why.msg);
            st->bad_records++;
            continue;
        }
        int64_t k = clip_of(a, vn);  // may move a->clip
        a->clip[k].questions++;
    }
    st->clips = a->n;
    if (media_scan(a, o->media_dir, 0, e)) return -1;
    for (int64_t i = 0; i < a->n; i++) {
        Clip *c = &a->clip[i];
        c->source = media_find(a, c->video_name);
        if (!c->source) c->source = media_find(a, c->audio_name);
    }
    log_info("%s: %lld questions (%lld malformed), %lld clips; %lld media files under %s", o->qa_path,
             (long long)st->questions, (long long)st->bad_records, (long long)a->n, (long long)a->n_media,
             o->media_dir);
    path_join(a->wav_dir, sizeof a->wav_dir, o->out_dir, "wav");
    if (dir_make(a->wav_dir, e)) return -1;
    wav_dir_clean(a);
    pool_run(a->n, o->threads, "clips", clip_convert, a);
    for (int64_t i = 0; i < a->n; i++) {
        ClipStatus s = a->clip[i].status;
        st->converted += s == CLIP_CONVERTED;
        st->already += s == CLIP_ALREADY;
        st->missing += s == CLIP_MISSING;
        st->undecodable += s == CLIP_UNDECODABLE;
    }
    if (write_outputs(a, root, o->out_dir, st, e)) return -1;
    if (st->written == 0) return err_set(e, "%s: no question has its audio; nothing to train on", o->qa_path);
    return 0;
}

int avqa_prepare(const AvqaOptions *o, AvqaStats *st, Err *e) {
    memset(st, 0, sizeof *st);
    json_error_t je;
    json_t *root = json_load_file(o->qa_path, 0, &je);
    if (!root) return err_set(e, "%s:%d:%d: cannot read as JSON: %s", o->qa_path, je.line, je.column, je.text);
    if (!json_is_array(root)) {
        json_decref(root);
        return err_set(e, "%s: not a JSON array of AVQA questions", o->qa_path);
    }
    st->questions = (int64_t)json_array_size(root);
    Avqa a = {0};
    strmap_init(&a.by_name, 1024);
    strmap_init(&a.by_stem, 1024);
    int rc = avqa_run(&a, root, o, st, e);
    avqa_free(&a);
    json_decref(root);
    return rc;
}
