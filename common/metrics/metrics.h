// metrics.h: per-step scalars of a run, written to two files in the run directory:
//   metrics.jsonl  one JSON object per step, {"step": k, "time": unix_s, "name": value, ...}
//                  (non-finite values are written as null);
//   metrics.h5     HDF5, one extendable, chunked 1-D float64 dataset per name plus "step" (int64) and
//                  "time"; row i of every dataset belongs to step[i]. A name first logged at a later
//                  step reads NaN for earlier rows, and a name left out of a step reads NaN there.
// Both files are flushed after every step, so a run that dies leaves readable files up to its last
// completed step. Resuming from step k drops rows with step > k (a run that got past its last
// checkpoint) so the resumed run appends without duplicates.
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "util/check.h"

typedef struct Metrics Metrics;

enum { METRICS_FRESH = -1 };

// Opens the metric files in run_dir (created if missing). resume_step = METRICS_FRESH starts new files
// (replacing old ones); resume_step = k >= 0 keeps the rows with step <= k (the JSONL file is rewritten
// atomically) and appends after them; a missing file is then started new. Returns NULL with e set when
// the run dir cannot be made or an existing file cannot be read back.
Metrics *metrics_open(const char *run_dir, bool jsonl, bool hdf5, int64_t resume_step, Err *e);
// Logs n scalars of one step. Steps must increase; names are [A-Za-z0-9_.-]+ (not starting with '.',
// not "step" or "time", no repeats within a call).
int metrics_log(Metrics *m, int64_t step, const char *const *names, const double *values, int n, Err *e);
void metrics_close(Metrics *m);
