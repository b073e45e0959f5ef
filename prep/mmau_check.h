// mmau_check.h: an MMAU file and its audio folder, checked before an evaluation: every item's audio
// exists and decodes (through common/audio, the loader the evaluation itself uses), counts per task,
// and which MMAU test-mini version the file is (eval/mmau_version.h).
#pragma once
#include <stdint.h>

#include "eval/mmau_version.h"
#include "util/check.h"

typedef struct {
    int64_t items;        // well-formed items
    int64_t bad_records;  // malformed items (dataset.h's checks)
    int64_t ok, missing, undecodable;
    int64_t task_items[3], task_ok[3];  // by mmau_task_names
    double seconds_min, seconds_max, seconds_sum;  // audio durations of the ok items
    MmauVersionEvidence version;
} MmauCheck;

// Checks every item; problems are logged one per item ("id: reason"). Returns -1 with e set when the file
// cannot be read as MMAU JSON.
int mmau_check(const char *json_path, const char *audio_dir, int threads, MmauCheck *c, Err *e);
// The counts, durations and the version line.
void mmau_check_print(const MmauCheck *c, FILE *f);
