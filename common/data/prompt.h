// prompt.h: the question text the model sees, byte-exact with the reference Python.
// R1-AQA (training): `{question_text.replace("video", "audio")} Please choose the answer from the
// following options: {str(choices)}. Output the final answer in <answer> </answer>.`; think mode ends
// `Output the thinking process in <think> </think> and final answer in <answer> </answer>.`
// MMAU (evaluation): the same with the question as is (no replacement) and the default last sentence.
// str(choices) is Python's list rendering: "['a', \"it's\"]", each element repr(str). The model was
// trained on exactly these bytes, so repr is reproduced in full (see prompt_py_repr).
// Chat-template wrapping (system prompt, audio tokens) is the tokenizer's job, not this module's.
#pragma once

#include "data/dataset.h"

typedef enum {
    PROMPT_R1AQA = 0,    // training default
    PROMPT_R1AQA_THINK,  // training, <think> variant
    PROMPT_MMAU,         // MMAU evaluation
} PromptStyle;

// Python 3 repr() of a str given as UTF-8 (malloc'd). Quotes: ' unless the text holds ' and no ",
// then ". Escapes \\, the chosen quote, \t \n \r; other C0 controls and 0x7f as \xNN. A non-ASCII
// code point is kept as UTF-8 when Python's str.isprintable() holds for it (general category not
// Cc, Cf, Cs, Co, Cn, Zl, Zp, Zs; categories from utf8proc's Unicode tables), else written \xNN
// (<= 0xff: C1 controls, NBSP, soft hyphen), \uNNNN (<= 0xffff) or \UNNNNNNNN. Bytes that are not
// valid UTF-8 (a Dataset never holds any: jansson validates) are written \xNN.
char *prompt_py_repr(const char *s);
// Python str(list_of_str): "[" + ", ".join(repr(x)) + "]" (malloc'd).
char *prompt_py_list(const char *const *items, int n);
// Python s.replace(from, to): every non-overlapping occurrence, left to right, case-sensitive
// (malloc'd; from must be non-empty).
char *prompt_replace_all(const char *s, const char *from, const char *to);

// The prompt text for a question and its choices (malloc'd).
char *prompt_text(PromptStyle style, const char *question, const char *const *choices, int n_choices);
char *prompt_for_question(const Question *q, PromptStyle style);
// The reference solution "<answer>{choices[answer]}</answer>" (malloc'd).
char *prompt_solution(const Question *q);
