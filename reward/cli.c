#include "cli.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

const char REWARD_CLI_SCORING_HELP[] =
    "  --accuracy-weight X     weight of the accuracy reward in the total (default 1)\n"
    "  --format-weight X       weight of the format reward in the total (default 1)\n"
    "  --numeric-equivalence   accuracy also accepts equal numbers (\"2\" vs \"2.0\")\n"
    "  --max-line-bytes N      longest request line; longer ones get an error (default 1048576)\n"
    "  --max-batch-items N     most items in one batch request (default 4096)\n";

int reward_cli_double(const char *flag, const char *s, double *out, Err *e) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (!s[0] || *end || errno || !isfinite(v) || v < 0)
        return err_set(e, "%s: expected a non-negative number, got \"%s\"", flag, s);
    *out = v;
    return 0;
}

int reward_cli_size(const char *flag, const char *s, size_t *out, Err *e) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (!s[0] || *end || errno || s[0] == '-' || v == 0)
        return err_set(e, "%s: expected a positive integer, got \"%s\"", flag, s);
    *out = (size_t)v;
    return 0;
}

int reward_cli_scoring_flag(int argc, char **argv, int *i, RewardProtoOptions *opt, size_t *max_line_bytes,
                            Err *e) {
    const char *a = argv[*i];
    if (strcmp(a, "--numeric-equivalence") == 0) {
        opt->scoring.numeric_equivalence = 1;
        return 1;
    }
    int is_value = strcmp(a, "--accuracy-weight") == 0 || strcmp(a, "--format-weight") == 0 ||
                   strcmp(a, "--max-line-bytes") == 0 || strcmp(a, "--max-batch-items") == 0;
    if (!is_value) return 0;
    if (*i + 1 >= argc) return err_set(e, "%s: missing value", a);
    const char *v = argv[++*i];
    size_t n = 0;
    if (strcmp(a, "--accuracy-weight") == 0) return reward_cli_double(a, v, &opt->scoring.accuracy_weight, e) ? -1 : 1;
    if (strcmp(a, "--format-weight") == 0) return reward_cli_double(a, v, &opt->scoring.format_weight, e) ? -1 : 1;
    if (strcmp(a, "--max-line-bytes") == 0) return reward_cli_size(a, v, max_line_bytes, e) ? -1 : 1;
    if (reward_cli_size(a, v, &n, e) != 0) return -1;
    if (n > INT_MAX) return err_set(e, "%s: %zu is too large", a, n);
    opt->max_batch_items = (int)n;
    return 1;
}
