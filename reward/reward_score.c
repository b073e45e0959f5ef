// reward-score: the reward service's scoring as a one-shot filter. Reads request lines (README.md) on
// stdin and writes one response line per request on stdout, in order; bad lines get error responses.
// Usage: reward-score [scoring flags] < requests.jsonl > responses.jsonl
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "util/log.h"

static void usage(FILE *f) {
    fprintf(f, "usage: reward-score [flags] < requests.jsonl > responses.jsonl\n%s", REWARD_CLI_SCORING_HELP);
}

static void write_response(json_t *resp) {
    size_t len;
    char *text = reward_proto_dump(resp, &len);
    json_decref(resp);
    fwriteCheck(text, 1, len, stdout);
    free(text);
}

int main(int argc, char **argv) {
    log_init("reward-score", -1);
    RewardProtoOptions opt;
    reward_proto_options_default(&opt);
    size_t max_line = 1u << 20;
    Err e;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        }
        int r = reward_cli_scoring_flag(argc, argv, &i, &opt, &max_line, &e);
        if (r == 0) err_set(&e, "unknown flag: %s", argv[i]);
        if (r <= 0) {
            fprintf(stderr, "reward-score: %s\n", e.msg);
            usage(stderr);
            return 1;
        }
    }
    // Bounded reads: an oversized line is answered with an error and skipped, never held whole.
    char *buf = mallocCheck(max_line + 2);
    long lineno = 0;
    while (fgets(buf, (int)(max_line + 2 < (size_t)1 << 30 ? max_line + 2 : (size_t)1 << 30), stdin)) {
        lineno++;
        size_t len = strlen(buf);
        int complete = len > 0 && buf[len - 1] == '\n';
        if (!complete && len > max_line) {
            int c;
            while ((c = getchar()) != EOF && c != '\n') {}
            char msg[96];
            snprintf(msg, sizeof msg, "line %ld exceeds %zu bytes", lineno, max_line);
            write_response(reward_proto_error(NULL, msg));
            continue;
        }
        if (complete) buf[--len] = 0;
        if (len && buf[len - 1] == '\r') buf[--len] = 0;
        if (len == 0) continue;
        write_response(reward_proto_answer(&opt, buf, len, NULL, NULL, NULL));
    }
    if (ferror(stdin)) fatal("reading stdin failed");
    free(buf);
    fcloseCheck(stdout);
    return 0;
}
