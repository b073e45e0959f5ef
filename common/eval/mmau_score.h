// mmau_score.h: MMAU test-mini scoring, as the benchmark's official evaluation.py does it.
// Each item's prediction is judged by the official string-match rule (mmau_is_correct, common/reward),
// and tallied per task (sound, music, speech), per difficulty, per sub-category and in total.
// Unlike the official script nothing is dropped: an item without a prediction, or whose audio could not
// be read (the generator sets "audio_error"), is scored wrong and counted. The printout is the official
// one line for line (plus one line about unreadable audio when there was any); the same numbers are
// written as JSON (eval-mmau.json in a checkpoint directory) and read back by the checkpoint sweep.
#pragma once
#include <jansson.h>
#include <stdio.h>

#include "eval/mmau_version.h"
#include "util/check.h"

// The name a checkpoint's evaluation result has inside the checkpoint directory.
#define MMAU_RESULT_NAME "eval-mmau.json"

enum { MMAU_NUM_TASKS = 3, MMAU_NUM_DIFFICULTIES = 3 };
// In the official script's print order (its dicts' insertion order): sound, music, speech and
// easy, hard, medium.
extern const char *const mmau_task_names[MMAU_NUM_TASKS];
extern const char *const mmau_difficulty_names[MMAU_NUM_DIFFICULTIES];

typedef struct {
    int correct, total;
} MmauTally;

typedef struct {
    MmauTally task[MMAU_NUM_TASKS];               // indexed as mmau_task_names
    MmauTally difficulty[MMAU_NUM_DIFFICULTIES];  // indexed as mmau_difficulty_names
    char **sub_name;                              // [n_sub] sub-category names, first-seen order
    MmauTally *sub;                               // [n_sub]
    int n_sub, cap_sub;
    MmauTally all;
    int no_prediction;  // items with no prediction at all (scored wrong)
    int audio_errors;   // items whose audio was unreadable (scored wrong)
    MmauVersionEvidence version;  // which test-mini the items are (mmau_score_items fills it)
} MmauScore;

// One item to score. Strings are NUL-terminated UTF-8.
typedef struct {
    const char *answer;
    const char *const *choices;  // [n_choices]
    int n_choices;
    const char *task;          // one of mmau_task_names
    const char *difficulty;    // one of mmau_difficulty_names
    const char *sub_category;  // NULL: not tallied per sub-category (as the official script)
    const char *prediction;    // NULL: the item has no prediction
    const char *audio_error;   // non-NULL: the audio was unreadable; the item is wrong whatever it says
} MmauItem;

void mmau_score_init(MmauScore *s);
void mmau_score_free(MmauScore *s);
// Index into mmau_task_names / mmau_difficulty_names, or -1.
int mmau_task_index(const char *task);
int mmau_difficulty_index(const char *difficulty);
// Percent correct, computed as Python's (correct / total) * 100 so the printed digits agree; 0 if empty.
double mmau_accuracy(MmauTally t);

// Judges and tallies one item. Returns 1 (correct), 0 (wrong) or -1 with e set (unknown task or
// difficulty; nothing is tallied then).
int mmau_score_add(MmauScore *s, const MmauItem *it, Err *e);
// Scores a JSON array of MMAU items, each with "model_prediction" (or "model_output" when that is the
// only one; used as it is, as the official script does) and optionally "audio_error" (a string, or
// null for none). `source` names the input in errors ("preds.json: item 12: ..."). An empty array,
// a non-object item, a missing or mistyped field is an error; s then holds the items before it.
int mmau_score_items(MmauScore *s, const json_t *items, const char *source, Err *e);
// Reads a prediction file and scores it (mmau_score_items).
int mmau_score_file(MmauScore *s, const char *path, Err *e);

// The official printout (asterisk rules, "sound : 69.37% over 333 samples", ..., "Total Accuracy:
// 64.50% over 1000 samples", "No prediction count: 0"), then "N items had unreadable audio and were
// scored wrong" when N > 0.
void mmau_score_print(const MmauScore *s, FILE *f);
// The score as JSON: counts and accuracies per task, difficulty, sub-category and in total (caller
// frees). mmau_score_read_json reads it back exactly.
char *mmau_score_to_json(const MmauScore *s);
int mmau_score_write_json(const MmauScore *s, const char *path, Err *e);
// Reads a file written by mmau_score_write_json into an initialised s (counts only; accuracies are
// recomputed). Errors name the file and the key.
int mmau_score_read_json(MmauScore *s, const char *path, Err *e);
