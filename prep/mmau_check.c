#include "mmau_check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audio/audio.h"
#include "audio/audio_len.h"
#include "data/dataset.h"
#include "eval/mmau_score.h"
#include "pool.h"
#include "util/fileio.h"
#include "util/log.h"

typedef enum { ITEM_OK, ITEM_MISSING, ITEM_UNDECODABLE } ItemStatus;

typedef struct {
    const Dataset *ds;
    ItemStatus *status;  // [n]
    double *seconds;     // [n]
    char (*reason)[1024];
} CheckJob;

static void check_item(void *ctx, int64_t i) {
    CheckJob *j = ctx;
    const Question *q = &j->ds->q[i];
    if (!path_exists(q->audio_path)) {
        j->status[i] = ITEM_MISSING;
        snprintf(j->reason[i], sizeof j->reason[i], "%s: no such file", q->audio_path);
        return;
    }
    Audio a;
    Err e;
    if (audio_load(q->audio_path, AUDIO_MONO_FIRST, &a, &e)) {
        j->status[i] = ITEM_UNDECODABLE;
        snprintf(j->reason[i], sizeof j->reason[i], "%s", e.msg);
        return;
    }
    j->status[i] = ITEM_OK;
    j->seconds[i] = (double)a.n / AUDIO_SAMPLE_RATE;
    audio_free(&a);
}

int mmau_check(const char *json_path, const char *audio_dir, int threads, MmauCheck *c, Err *e) {
    memset(c, 0, sizeof *c);
    DataOptions o = data_options_default();
    o.audio_dir = audio_dir;
    o.format = DATA_FORMAT_MMAU;
    o.max_bad = 1 << 30;  // a check reports every bad record rather than stopping
    Dataset ds;
    if (dataset_load(&ds, json_path, &o, e)) return -1;
    c->items = ds.n;
    c->bad_records = ds.n_bad;
    CheckJob j = {.ds = &ds,
                  .status = callocCheck((size_t)ds.n, sizeof(ItemStatus)),
                  .seconds = callocCheck((size_t)ds.n, sizeof(double)),
                  .reason = callocCheck((size_t)ds.n, sizeof *j.reason)};
    pool_run(ds.n, threads, "audio files", check_item, &j);
    for (int64_t i = 0; i < ds.n; i++) {
        const Question *q = &ds.q[i];
        int t = q->task ? mmau_task_index(q->task) : -1;
        mmau_version_add(&c->version, q->id, q->answer_text);
        if (t >= 0) c->task_items[t]++;
        if (j.status[i] != ITEM_OK) {
            log_warn("%s: item %lld (id %s): %s", json_path, (long long)q->index, q->id, j.reason[i]);
            c->missing += j.status[i] == ITEM_MISSING;
            c->undecodable += j.status[i] == ITEM_UNDECODABLE;
            continue;
        }
        if (t >= 0) c->task_ok[t]++;
        double s = j.seconds[i];
        c->seconds_min = c->ok == 0 || s < c->seconds_min ? s : c->seconds_min;
        c->seconds_max = s > c->seconds_max ? s : c->seconds_max;
        c->seconds_sum += s;
        c->ok++;
    }
    free(j.status);
    free(j.seconds);
    free(j.reason);
    dataset_free(&ds);
    return 0;
}

void mmau_check_print(const MmauCheck *c, FILE *f) {
    fprintf(f, "items: %lld (malformed, left out: %lld)\n", (long long)c->items, (long long)c->bad_records);
    fprintf(f, "audio: %lld ok, %lld missing, %lld undecodable\n", (long long)c->ok, (long long)c->missing,
            (long long)c->undecodable);
    for (int t = 0; t < MMAU_NUM_TASKS; t++)
        fprintf(f, "  %-6s %lld items, %lld with audio\n", mmau_task_names[t], (long long)c->task_items[t],
                (long long)c->task_ok[t]);
    if (c->ok > 0)
        fprintf(f, "durations: %.2f s min, %.2f s mean, %.2f s max\n", c->seconds_min, c->seconds_sum / (double)c->ok,
                c->seconds_max);
    mmau_version_print(&c->version, f);
}
