// reward.h: the R1-AQA reward functions, computed exactly as the Python reference does (re + str.strip).
// accuracy: the first `<answer>(.*?)</answer>` (no DOTALL) of completion and solution, stripped, else the
// whole text stripped; 1 iff equal (optionally also 1 iff both parse as the same number).
// format: the completion fully matches `<answer>.*?</answer>` (DOTALL); in think mode
// `<think>.*?</think>\s*<answer>.*?</answer>` (DOTALL). The total is the weighted sum of the two.
// mmau_is_correct: the official MMAU string-match rule used in evaluation.
// The tag rules run in linear time (no regex backtracking); the MMAU tokenizer is a PCRE2 Unicode class
// compiled once. Every function is thread-safe. Input text that is not valid
// UTF-8 is first repaired as Python's bytes.decode(errors="replace") does (a detokenized completion
// can end inside a multi-byte character).
#pragma once
#include <stddef.h>

#include "util/check.h"

typedef enum { REWARD_MODE_ANSWER = 0, REWARD_MODE_THINK = 1 } RewardMode;

typedef struct {
    RewardMode mode;         // which format pattern: answer-only or think + answer
    double accuracy_weight;  // total = accuracy_weight * accuracy + format_weight * format
    double format_weight;
    int numeric_equivalence;  // also accept "2" == "2.0" (both strings parse fully as numbers)
} RewardOptions;

typedef struct {
    double accuracy;  // 0 or 1
    double format;    // 0 or 1 (think-format in think mode)
    double total;     // weighted sum
    int mmau_correct;  // MMAU rule: 1 / 0, or -1 when no MMAU answer was asked for
} RewardResult;

// Defaults: answer mode, weights 1, exact string accuracy.
void reward_options_default(RewardOptions *opt);
// "answer" | "think" -> mode; -1 on anything else.
int reward_mode_parse(const char *s, RewardMode *out);
const char *reward_mode_name(RewardMode mode);

// Scores one completion against its solution (both NUL-terminated UTF-8). out->mmau_correct = -1.
void reward_score(const RewardOptions *opt, const char *completion, const char *solution,
                  RewardResult *out);
// The answer as accuracy sees it: the first `<answer>(.*?)</answer>` group (no newline inside), else the
// whole text; Python-stripped. Returns a malloc'd string (caller frees).
char *reward_extract_answer(const char *text);
// The official MMAU rule on a prediction (already extracted) and the answer text; choices may be NULL
// when n_choices is 0. Returns 1 (correct) or 0.
int mmau_is_correct(const char *prediction, const char *answer, const char *const *choices,
                    int n_choices);

// Helpers exposed for the protocol and the tests.
// Returns a malloc'd copy with each ill-formed UTF-8 subpart replaced by U+FFFD (Python's "replace").
char *reward_utf8_sanitize(const char *s, size_t len);
// 1 iff code point c is whitespace for Python's str.isspace() / re's \s.
int reward_is_py_space(unsigned c);
// Python str.strip() of s[0..len): sets *start, returns the stripped length.
size_t reward_py_strip(const char *s, size_t len, size_t *start);
