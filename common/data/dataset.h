// dataset.h: questions for training and evaluation, read from the two formats the recipe uses.
// R1-AQA JSON lines: one object per line with id (int or string), question_text, multi_choice,
// answer (0-based index) and audio_path. MMAU JSON: one array of objects with id, audio_id, question,
// choices and answer (the text of one choice), plus metadata (task, category, sub-category, ...).
// A bad record (bad JSON, missing or mistyped field, < 2 choices, answer not a choice) is reported as
// "file:line: reason" (MMAU: "file: item N (line L): reason", N 0-based), skipped and counted; once
// more than max_bad records are bad the load fails. Relative audio paths are resolved against
// opts.audio_dir if given, else against the data file's directory.
#pragma once
#include <stdint.h>

#include "util/check.h"

typedef struct {
    int64_t index;            // position in the Dataset: the global question index
    int line;                 // 1-based line of the record in its file (for messages)
    char *id;                 // "183" (R1-AQA int ids are printed in decimal) or "3fe64f3d-..."
    char *audio_path;         // resolved path of the audio file
    char *question;           // question text as in the file (no "video" -> "audio" rewrite)
    char **choices;           // [n_choices], n_choices >= 2
    int n_choices;
    int answer;               // 0-based index into choices
    const char *answer_text;  // choices[answer]
    // Metadata, NULL when absent (MMAU keys; R1-AQA lines may carry the same keys, and their
    // "dataset_name" fills dataset). A list of strings in the file is joined with ", ".
    char *task, *category, *sub_category, *difficulty, *dataset, *split;
} Question;

typedef enum {
    DATA_FORMAT_AUTO = 0,  // by the first non-blank character: '[' MMAU, otherwise R1-AQA lines
    DATA_FORMAT_R1AQA,
    DATA_FORMAT_MMAU,
} DataFormat;

typedef struct {
    const char *audio_dir;  // base of relative audio paths; NULL: the data file's directory
    int max_bad;            // most bad records tolerated before the load fails (0: none)
    DataFormat format;
} DataOptions;

enum { DATA_DEFAULT_MAX_BAD = 100 };

typedef struct {
    Question *q;  // [n]
    int64_t n;
    DataFormat format;  // the format actually read
    int64_t n_bad;      // records skipped
    char **bad;         // [n_bad] messages of the skipped records, "file:line: reason"
} Dataset;

// Default options: audio_dir NULL, max_bad DATA_DEFAULT_MAX_BAD, format AUTO.
DataOptions data_options_default(void);
// Loads path into ds (opts NULL: defaults). Skipped records are logged as warnings and kept in
// ds->bad. Returns -1 with e set (and ds empty) when the file cannot be read, its structure is
// broken (MMAU: not an array), more than max_bad records are bad, or no valid record remains.
int dataset_load(Dataset *ds, const char *path, const DataOptions *opts, Err *e);
// The same for the file's text[0..size) already in memory (need not be NUL-terminated); path names it
// in messages and gives the directory of relative audio paths.
int dataset_parse(Dataset *ds, const char *path, const char *text, size_t size, const DataOptions *opts,
                  Err *e);
void dataset_free(Dataset *ds);
const char *data_format_name(DataFormat f);
