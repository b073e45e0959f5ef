// feature_inputs: writes the 16 kHz signals of the feature-parity check (feature_signals.h) as raw
// little-endian float32 files <dir>/<name>.f32 plus <dir>/manifest.json, the input of
// tests/reference/whisper_features.py. Usage: feature_inputs OUT_DIR MMAU_WAV
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "feature_signals.h"
#include "util/fileio.h"

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s OUT_DIR MMAU_WAV\n", argv[0]);
        return 2;
    }
    const char *dir = argv[1];
    Err e;
    if (dir_make(dir, &e) != 0) fatal("%s", e.msg);
    json_t *list = json_array();
    for (int i = 0; i < FEATURE_SIGNALS; i++) {
        int64_t n = 0;
        float *x = feature_signal_make(i, argv[2], &n, &e);  // [n]
        if (!x) fatal("%s", e.msg);
        char file[256], path[4096];
        snprintf(file, sizeof file, "%s.f32", feature_signal_name(i));
        path_join(path, sizeof path, dir, file);
        if (file_write_atomic(path, x, (size_t)n * sizeof(float), &e) != 0) fatal("%s", e.msg);
        json_array_append_new(list, json_pack("{s:s, s:s, s:I}", "name", feature_signal_name(i), "file", file,
                                              "n_samples", (json_int_t)n));
        printf("%-12s %8lld samples -> %s\n", feature_signal_name(i), (long long)n, path);
        free(x);
    }
    json_t *root = json_pack("{s:i, s:o}", "sample_rate", 16000, "signals", list);
    char *text = json_dumps(root, JSON_INDENT(1));
    if (!text) fatal("json_dumps failed");
    char path[4096];
    path_join(path, sizeof path, dir, "manifest.json");
    if (file_write_atomic(path, text, strlen(text), &e) != 0) fatal("%s", e.msg);
    free(text);
    json_decref(root);
    return 0;
}
