// aqa-tokenize: encodes UTF-8 lines from stdin to token ids, or decodes id lines to text.
//   aqa-tokenize --tokenizer PATH [--decode [--skip-special]] [--jsonl]
// Encode: each line (without its '\n') -> its ids separated by single spaces; special tokens written in
// the text are recognised. --jsonl: each input line is a JSON string (so a text may hold newlines).
// Decode: each line of space-separated ids -> the text (with --jsonl, as a JSON string).
// Bad input (invalid UTF-8, a non-integer id, a malformed JSON line) stops with "stdin:LINE: ..." and
// exit status 1.
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text/tokenizer.h"
#include "util/check.h"

static void usage(void) {
    fprintf(stderr, "usage: aqa-tokenize --tokenizer PATH [--decode [--skip-special]] [--jsonl]\n");
    exit(2);
}

// Parses space-separated ids; returns -1 with e set at the first bad field.
static int parse_ids(const char *line, TokenIds *ids, Err *e) {
    const char *p = line;
    while (*p) {
        while (*p == ' ') p++;
        if (!*p) break;
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || (*end && *end != ' ') || v < 0 || v > 0x7fffffff)
            return err_set(e, "column %ld: expected a non-negative token id", (long)(p - line) + 1);
        token_ids_push(ids, (int32_t)v);
        p = end;
    }
    return 0;
}

int main(int argc, char **argv) {
    const char *path = NULL;
    int decode = 0, skip_special = 0, jsonl = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--tokenizer") && i + 1 < argc) path = argv[++i];
        else if (!strcmp(argv[i], "--decode")) decode = 1;
        else if (!strcmp(argv[i], "--skip-special")) skip_special = 1;
        else if (!strcmp(argv[i], "--jsonl")) jsonl = 1;
        else usage();
    }
    if (!path) usage();
    Err e;
    Tokenizer *tok = tokenizer_load(path, &e);
    if (!tok) {
        fprintf(stderr, "aqa-tokenize: %s\n", e.msg);
        return 1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    long line_no = 0;
    int rc = 0;
    TokenIds ids = {0};
    while ((n = getline(&line, &cap, stdin)) >= 0) {
        line_no++;
        if (n > 0 && line[n - 1] == '\n') line[--n] = 0;
        ids.n = 0;
        if (decode) {
            if (parse_ids(line, &ids, &e)) {
                rc = 1;
                break;
            }
            char *text = tokenizer_decode(tok, ids.ids, ids.n, skip_special);
            if (jsonl) {
                json_t *js = json_string(text);
                if (!js) fatal("decoded text is not valid UTF-8");  // decode always yields valid UTF-8
                json_dumpf(js, stdout, JSON_ENCODE_ANY);
                json_decref(js);
                fputc('\n', stdout);
            } else {
                printf("%s\n", text);
            }
            free(text);
            continue;
        }
        const char *text = line;
        size_t len = (size_t)n;
        json_t *js = NULL;
        if (jsonl) {
            json_error_t je;
            js = json_loadb(line, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
            if (!json_is_string(js)) {
                err_set(&e, "expected a JSON string%s%s", js ? "" : ": ", js ? "" : je.text);
                json_decref(js);
                rc = 1;
                break;
            }
            text = json_string_value(js);
            len = json_string_length(js);
        }
        int bad = tokenizer_encode(tok, text, len, &ids, &e);
        json_decref(js);
        if (bad) {
            rc = 1;
            break;
        }
        for (int k = 0; k < ids.n; k++) printf(k ? " %d" : "%d", ids.ids[k]);
        fputc('\n', stdout);
    }
    if (rc) fprintf(stderr, "aqa-tokenize: stdin:%ld: %s\n", line_no, e.msg);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "aqa-tokenize: writing stdout failed\n");
        rc = 1;
    }
    free(line);
    token_ids_free(&ids);
    tokenizer_free(tok);
    return rc;
}
