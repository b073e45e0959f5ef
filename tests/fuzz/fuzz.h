// fuzz.h: helpers shared by the libFuzzer harnesses of tests/fuzz: quiet logging, NUL-terminated copies
// of the input, a per-process scratch directory for parsers that take a path, and a check that aborts
// (libFuzzer reports an abort as a crash and keeps the input).
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/check.h"
#include "util/fileio.h"
#include "util/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

// An invariant of the parser under test does not hold: report it as a crash.
#define FUZZ_CHECK(cond, ...)                                                             \
    do {                                                                                  \
        if (!(cond)) {                                                                    \
            fprintf(stderr, "fuzz check failed: %s (%s:%d): ", #cond, __FILE__, __LINE__); \
            fprintf(stderr, __VA_ARGS__);                                                 \
            fprintf(stderr, "\n");                                                        \
            abort();                                                                      \
        }                                                                                 \
    } while (0)

// Bad input is the normal case here: only errors would be logged, and they are not.
static inline void fuzz_quiet(void) {
    log_set_level(LOG_ERROR);
}

// data[0..size) as a malloc'd NUL-terminated string (embedded NULs stay: the parser sees a prefix).
static inline char *fuzz_cstr(const uint8_t *data, size_t size) {
    char *s = mallocCheck(size + 1);
    if (size) memcpy(s, data, size);
    s[size] = 0;
    return s;
}

// This process's scratch directory (created once, removed at exit with what fuzz_write_file put there).
static char fuzz_dir_path[64];
static char fuzz_files[8][128];
static int fuzz_n_files;

static inline void fuzz_dir_cleanup(void) {
    for (int i = 0; i < fuzz_n_files; i++) unlink(fuzz_files[i]);
    if (fuzz_dir_path[0]) rmdir(fuzz_dir_path);
}

static inline const char *fuzz_dir(void) {
    if (!fuzz_dir_path[0]) {
        snprintf(fuzz_dir_path, sizeof fuzz_dir_path, "/tmp/aqa-fuzz.XXXXXX");
        if (!mkdtemp(fuzz_dir_path)) fatal("mkdtemp %s failed", fuzz_dir_path);
        atexit(fuzz_dir_cleanup);
    }
    return fuzz_dir_path;
}

// Writes data to <scratch>/name (plain write: the parsers under test read whole files) and returns its path.
static inline const char *fuzz_write_file(const char *name, const uint8_t *data, size_t size) {
    int slot = -1;
    char path[128];
    snprintf(path, sizeof path, "%s/%s", fuzz_dir(), name);
    for (int i = 0; i < fuzz_n_files; i++)
        if (strcmp(fuzz_files[i], path) == 0) slot = i;
    if (slot < 0) {
        if (fuzz_n_files == 8) fatal("fuzz_write_file: too many names");
        slot = fuzz_n_files++;
        snprintf(fuzz_files[slot], sizeof fuzz_files[slot], "%s", path);
    }
    FILE *f = fopenCheck(fuzz_files[slot], "wb");
    if (size) fwriteCheck(data, 1, size, f);
    fcloseCheck(f);
    return fuzz_files[slot];
}
