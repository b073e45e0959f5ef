// cli.h: command-line flags shared by reward-server and reward-score (the scoring settings and the
// line limit), so both tools score identically for the same flags.
#pragma once
#include <stddef.h>

#include "reward/protocol.h"
#include "util/check.h"

// Help text for the shared flags.
extern const char REWARD_CLI_SCORING_HELP[];

// If argv[*i] is a shared flag, consumes it (and its value, advancing *i) into opt / *max_line_bytes
// and returns 1; returns 0 for any other argument, -1 with e set on a bad value.
int reward_cli_scoring_flag(int argc, char **argv, int *i, RewardProtoOptions *opt, size_t *max_line_bytes,
                            Err *e);
// Reads a flag's value as a non-negative number; returns -1 with e naming the flag on bad input.
int reward_cli_double(const char *flag, const char *s, double *out, Err *e);
int reward_cli_size(const char *flag, const char *s, size_t *out, Err *e);
