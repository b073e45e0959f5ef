// signals.h: a graceful stop on SIGTERM (what SLURM and mpirun send before a kill). The handler only
// records the signal; the training loop asks at a step boundary and stops there, after a checkpoint
// (learner.c), so a preempted job ends with exit 0 and resumes where it stopped. SIGXFSZ is ignored,
// so a write beyond RLIMIT_FSIZE fails with EFBIG (a named error) instead of killing the process.
#pragma once

// Installs the SIGTERM handler (SA_RESTART) and ignores SIGXFSZ. Call once, early in main.
void signals_install(void);
// The stop signal received so far (SIGTERM), or 0.
int signals_stop_requested(void);
