// pipeline_fixture.h: what tests of the pipeline and the rollout share: a small synthetic data set
// (common/data/synth) and the Qwen2-Audio tokenizer (tests/text/text_fixture.h), both built into $AQA_TMP.
#pragma once
#include "data/dataset.h"
#include "data/synth.h"
#include "test.h"
#include "text/text_fixture.h"

// Writes n synthetic questions (all in the train split) into TMP/<name> and loads train.jsonl into ds.
// Returns the directory, or NULL after printing why.
static inline const char *fixture_synth_dataset(const char *name, int64_t n, uint64_t seed, Dataset *ds) {
    static char dir[4096];
    snprintf(dir, sizeof dir, "%s", TMP_PATH(name));
    SynthOptions o = {.out_dir = dir, .n = n, .seed = seed, .test_frac = 0};
    char path[4200];
    snprintf(path, sizeof path, "%s/train.jsonl", dir);
    Err e;
    if (synth_generate(&o, NULL, &e) || dataset_load(ds, path, NULL, &e)) {
        fprintf(stderr, "FAIL: synthetic data in %s: %s\n", dir, e.msg);
        return NULL;
    }
    return dir;
}
