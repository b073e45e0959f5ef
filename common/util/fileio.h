// fileio.h: whole-file reads, directory creation and atomic writes.
// An atomic write goes to "<path>.tmp.<pid>" and is renamed over <path> only after fsync, so a crash
// never leaves a half-written file under the final name.
#pragma once
#include <stddef.h>
#include <stdio.h>

#include "util/check.h"

// Reads a whole file into a NUL-terminated buffer (caller frees). Returns NULL and sets e on failure.
char *file_read_all(const char *path, size_t *size, Err *e);
// mkdir -p. Returns -1 and sets e on failure.
int dir_make(const char *path, Err *e);
int path_exists(const char *path);
// Joins a directory and a file name into out (returns out; dies if it does not fit).
char *path_join(char *out, size_t cap, const char *dir, const char *name);

typedef struct {
    FILE *f;
    char path[4096];
    char tmp[4200];
} AtomicFile;

// Opens the temporary file; returns -1 and sets e on failure.
int atomic_open(AtomicFile *af, const char *path, Err *e);
// Flushes, fsyncs, closes and renames into place. Returns -1 (and removes the temp) on failure.
int atomic_commit(AtomicFile *af, Err *e);
// Closes and removes the temporary file (an aborted write leaves nothing behind).
void atomic_abort(AtomicFile *af);
// Writes a whole buffer atomically.
int file_write_atomic(const char *path, const void *data, size_t size, Err *e);
