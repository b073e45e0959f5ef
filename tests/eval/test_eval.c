// Tests of common/eval: MMAU scoring on the real test-mini file with predictions built here (each
// expected count derived from the rule in the comments), the official printout, the JSON round trip,
// bad input, the aqa-eval tool (argv[1]) and the checkpoint sweep on a synthetic run directory.
// The rule: tokens(s) = set of lowercase \b\w+\b; correct iff tokens(pred) is non-empty, contains
// tokens(answer), and meets none of the incorrect tokens = union over choices c with tokens(c) !=
// tokens(answer) of tokens(c) - tokens(answer).
#include <ctype.h>
#include <jansson.h>
#include <sys/stat.h>
#include <unistd.h>

#include "eval/mmau_score.h"
#include "eval/sweep.h"
#include "test.h"
#include "util/fileio.h"

static const char *aqa_eval_exe;
static json_t *mmau;  // the real mmau-test-mini.json: [1000] items

// Counts taken from the file itself, to compare the scorer's denominators with.
static int n_task[MMAU_NUM_TASKS], n_diff[MMAU_NUM_DIFFICULTIES], n_sub;

static const char *field(const json_t *item, const char *key) {
    return json_string_value(json_object_get(item, key));
}

static void count_file(void) {
    const char *seen[64];
    for (size_t i = 0; i < json_array_size(mmau); i++) {
        const json_t *it = json_array_get(mmau, i);
        n_task[mmau_task_index(field(it, "task"))]++;
        n_diff[mmau_difficulty_index(field(it, "difficulty"))]++;
        const char *sub = field(it, "sub-category");
        int k = 0;
        while (k < n_sub && strcmp(seen[k], sub) != 0) k++;
        if (k == n_sub && n_sub < 64) seen[n_sub++] = sub;
    }
}

// A prediction for one item: a malloc'd string, or NULL to leave the item without one.
typedef char *(*PredFn)(const json_t *item, size_t index);

// A copy of the file with `key` ("model_prediction" or "model_output") set by fn (caller decrefs).
static json_t *predict(PredFn fn, const char *key) {
    json_t *d = json_deep_copy(mmau);
    for (size_t i = 0; i < json_array_size(d); i++) {
        json_t *it = json_array_get(d, i);
        char *p = fn(it, i);
        if (p) json_object_set_new(it, key, json_string(p));
        free(p);
    }
    return d;
}

static void score(MmauScore *s, json_t *d) {
    Err e;
    mmau_score_init(s);
    int rc = mmau_score_items(s, d, "test", &e);
    CHECKF(rc == 0, "%s", e.msg);
}

static char *concat(const char *a, const char *b, const char *c) {
    size_t n = strlen(a) + strlen(b) + strlen(c) + 1;
    char *s = mallocCheck(n);
    snprintf(s, n, "%s%s%s", a, b, c);
    return s;
}

static char *pred_exact(const json_t *it, size_t i) { return strdupCheck(field(it, "answer")); }

// "(" + ASCII-uppercased answer + ")!" : lowercasing restores every ASCII letter (and leaves the other
// characters as they were), and "(", ")", "!" are not \w, so tokens(pred) == tokens(answer).
static char *pred_case_punct(const json_t *it, size_t i) {
    char *s = concat("(", field(it, "answer"), ")!");
    for (char *p = s; *p; p++) *p = (char)toupper((unsigned char)*p);
    return s;
}

// Two extra words that appear in no choice of the file (checked in test_extra_words): they are not
// incorrect tokens, so the prediction is right iff the answer alone is.
static char *pred_extra_words(const json_t *it, size_t i) {
    return concat("xyzzy ", field(it, "answer"), " qwfp");
}

// The answer followed by every choice whose text differs from it: tokens(pred) then hold the tokens of
// every choice, so the prediction is right only when the incorrect-token set is empty.
static char *pred_with_wrong(const json_t *it, size_t i) {
    const char *ans = field(it, "answer");
    char *s = strdupCheck(ans);
    const json_t *ch = json_object_get(it, "choices");
    for (size_t c = 0; c < json_array_size(ch); c++) {
        const char *t = json_string_value(json_array_get(ch, c));
        if (strcmp(t, ans) == 0) continue;
        char *n = concat(s, " or ", t);
        free(s);
        s = n;
    }
    return s;
}

static char *pred_empty(const json_t *it, size_t i) { return strdupCheck(i % 2 ? "" : "  ... !? "); }

static int is_task(const json_t *it, const char *task) { return strcmp(field(it, "task"), task) == 0; }

// Sound exact, music answer + wrong choices, speech empty.
static char *pred_by_task(const json_t *it, size_t i) {
    if (is_task(it, "sound")) return pred_exact(it, i);
    if (is_task(it, "music")) return pred_with_wrong(it, i);
    return strdupCheck("");
}

static char *pred_not_speech(const json_t *it, size_t i) {
    return is_task(it, "speech") ? NULL : pred_exact(it, i);
}

static void check_denominators(const MmauScore *s) {
    for (int t = 0; t < MMAU_NUM_TASKS; t++) CHECK_INT(s->task[t].total, n_task[t]);
    for (int d = 0; d < MMAU_NUM_DIFFICULTIES; d++) CHECK_INT(s->difficulty[d].total, n_diff[d]);
    CHECK_INT(s->n_sub, n_sub);
    CHECK_INT(s->all.total, (int)json_array_size(mmau));
}

static void test_file_counts(void) {
    // The denominators the official printout shows for test-mini.
    CHECK_INT(json_array_size(mmau), 1000);
    CHECK_INT(n_task[0], 333);  // sound
    CHECK_INT(n_task[1], 334);  // music
    CHECK_INT(n_task[2], 333);  // speech
    CHECK_INT(n_sub, 27);
}

static void test_exact(void) {
    // tokens(pred) = tokens(answer), and the incorrect tokens exclude tokens(answer) by construction, so
    // an exact answer is right iff it has a token; every answer of the file has an ASCII letter or digit.
    int all_have_word = 1;
    for (size_t i = 0; i < json_array_size(mmau); i++) {
        const char *a = field(json_array_get(mmau, i), "answer"), *p = a;
        while (*p && !isalnum((unsigned char)*p)) p++;
        all_have_word &= *p != 0;
    }
    CHECK(all_have_word);
    json_t *d = predict(pred_exact, "model_prediction");
    MmauScore s;
    score(&s, d);
    check_denominators(&s);
    CHECK_INT(s.all.correct, 1000);
    for (int t = 0; t < MMAU_NUM_TASKS; t++) CHECK_INT(s.task[t].correct, n_task[t]);
    for (int k = 0; k < s.n_sub; k++) CHECK_INT(s.sub[k].correct, s.sub[k].total);
    CHECK_INT(s.no_prediction, 0);
    CHECK_INT(s.audio_errors, 0);
    mmau_score_free(&s);
    json_decref(d);
}

static void test_case_punct(void) {
    json_t *d = predict(pred_case_punct, "model_prediction");
    MmauScore s;
    score(&s, d);
    CHECK_INT(s.all.correct, 1000);  // same tokens as the exact answer (see pred_case_punct)
    mmau_score_free(&s);
    json_decref(d);
}

static void test_extra_words(void) {
    int clean = 1;  // neither extra word occurs in any choice, so neither is an incorrect token
    for (size_t i = 0; i < json_array_size(mmau); i++) {
        const json_t *ch = json_object_get(json_array_get(mmau, i), "choices");
        for (size_t c = 0; c < json_array_size(ch); c++) {
            const char *t = json_string_value(json_array_get(ch, c));
            clean &= !strcasestr(t, "xyzzy") && !strcasestr(t, "qwfp");
        }
    }
    CHECK(clean);
    json_t *d = predict(pred_extra_words, "model_prediction");
    MmauScore s;
    score(&s, d);
    CHECK_INT(s.all.correct, 1000);
    mmau_score_free(&s);
    json_decref(d);
}

static void test_wrong_words(void) {
    // Right only where the incorrect-token set is empty. In test-mini that is item 54 alone (sound,
    // "Temporal Event Reasoning"): its four choices are orderings of the same four words, so every
    // choice has the answer's token set and no token is incorrect. Every other item has a choice with
    // a word the answer lacks (e.g. item 0: "woman"), which the prediction now contains.
    const json_t *it54 = json_array_get(mmau, 54);
    CHECK_STR(field(it54, "id"), "bbabe360-0573-43d4-b2e6-6892150cbdcd");
    json_t *d = predict(pred_with_wrong, "model_prediction");
    MmauScore s;
    score(&s, d);
    check_denominators(&s);
    CHECK_INT(s.all.correct, 1);
    CHECK_INT(s.task[mmau_task_index("sound")].correct, 1);
    for (int k = 0; k < s.n_sub; k++)
        CHECK_INT(s.sub[k].correct, strcmp(s.sub_name[k], "Temporal Event Reasoning") == 0);
    mmau_score_free(&s);
    json_decref(d);
}

static void test_empty(void) {
    // No \w in "" or "  ... !? ": tokens(pred) is empty, so every item is wrong; the key is present,
    // so these are predictions (not "no prediction").
    json_t *d = predict(pred_empty, "model_prediction");
    MmauScore s;
    score(&s, d);
    check_denominators(&s);
    CHECK_INT(s.all.correct, 0);
    CHECK_INT(s.no_prediction, 0);
    mmau_score_free(&s);
    json_decref(d);
}

static void test_by_task(void) {
    // Sound exact (all right), music with wrong words (item 54 is sound, so none right), speech empty
    // (none right): total 333 / 1000 = 33.30%, and per difficulty the sound items of that difficulty.
    int sound_by_diff[MMAU_NUM_DIFFICULTIES] = {0};
    for (size_t i = 0; i < json_array_size(mmau); i++) {
        const json_t *it = json_array_get(mmau, i);
        if (is_task(it, "sound")) sound_by_diff[mmau_difficulty_index(field(it, "difficulty"))]++;
    }
    json_t *d = predict(pred_by_task, "model_prediction");
    MmauScore s;
    score(&s, d);
    check_denominators(&s);
    CHECK_INT(s.task[0].correct, 333);
    CHECK_INT(s.task[1].correct, 0);
    CHECK_INT(s.task[2].correct, 0);
    for (int k = 0; k < MMAU_NUM_DIFFICULTIES; k++) CHECK_INT(s.difficulty[k].correct, sound_by_diff[k]);
    CHECK_NEAR(mmau_accuracy(s.all), 33.3, 1e-9);
    char *text;
    size_t len;
    FILE *f = open_memstream(&text, &len);
    mmau_score_print(&s, f);
    fclose(f);
    // The official layout, line for line.
    const char *head =
        "******************************\nTask-wise Accuracy:\n"
        "sound : 100.00% over 333 samples\nmusic : 0.00% over 334 samples\n"
        "speech : 0.00% over 333 samples\n******************************\n"
        "Difficulty-wise Accuracy:\neasy : ";
    CHECKF(strncmp(text, head, strlen(head)) == 0, "%s", text);
    CHECK(strstr(text,
                 "******************************\nSub-category-wise Accuracy:\n"
                 "Acoustic Source Inference : 100.00% over 48 samples\n") != NULL);
    const char *tail =
        "******************************\nTotal Accuracy: 33.30% over 1000 samples\n"
        "******************************\nNo prediction count: 0\n";
    CHECK(len >= strlen(tail) && strcmp(text + len - strlen(tail), tail) == 0);
    int lines = 0;
    for (char *p = text; *p; p++) lines += *p == '\n';
    CHECK_INT(lines, 5 + 5 + (2 + 27) + 4);  // rule + header + 3 tasks, same for difficulties, 27 subs, total
    free(text);
    mmau_score_free(&s);
    json_decref(d);
}

static void test_missing_prediction(void) {
    // Speech items have no prediction key: scored wrong and counted, never dropped. 667 / 1000 right.
    json_t *d = predict(pred_not_speech, "model_prediction");
    MmauScore s;
    score(&s, d);
    check_denominators(&s);
    CHECK_INT(s.no_prediction, 333);
    CHECK_INT(s.all.correct, 667);
    CHECK_INT(s.task[2].correct, 0);
    mmau_score_free(&s);
    json_decref(d);
}

static void test_model_output(void) {
    // Only model_output (R1-AQA's key): used as the prediction, exact answers -> 100%.
    json_t *d = predict(pred_exact, "model_output");
    MmauScore s;
    score(&s, d);
    CHECK_INT(s.all.correct, 1000);
    CHECK_INT(s.no_prediction, 0);
    mmau_score_free(&s);
    // With model_prediction also present, model_prediction is the prediction: "" everywhere -> 0.
    for (size_t i = 0; i < json_array_size(d); i++)
        json_object_set_new(json_array_get(d, i), "model_prediction", json_string(""));
    score(&s, d);
    CHECK_INT(s.all.correct, 0);
    mmau_score_free(&s);
    json_decref(d);
}

static void test_audio_error(void) {
    // Ten items (every 100th) flagged unreadable, with otherwise exact predictions: they count as wrong,
    // stay in every denominator, and the printout says so.
    json_t *d = predict(pred_exact, "model_prediction");
    for (size_t i = 0; i < json_array_size(d); i += 100)
        json_object_set_new(json_array_get(d, i), "audio_error", json_string("cannot open wav"));
    json_object_set_new(json_array_get(d, 1), "audio_error", json_null());  // null: no error
    MmauScore s;
    score(&s, d);
    check_denominators(&s);
    CHECK_INT(s.audio_errors, 10);
    CHECK_INT(s.all.correct, 990);
    char *text;
    size_t len;
    FILE *f = open_memstream(&text, &len);
    mmau_score_print(&s, f);
    fclose(f);
    CHECK(strstr(text, "Total Accuracy: 99.00% over 1000 samples\n") != NULL);
    CHECK(strstr(text, "\n10 items had unreadable audio and were scored wrong\n") != NULL);
    free(text);
    mmau_score_free(&s);
    json_decref(d);
}

// One item of the file with a given prediction, through mmau_score_add.
static int judge(size_t index, const char *prediction) {
    const json_t *it = json_array_get(mmau, index);
    const json_t *ch = json_object_get(it, "choices");
    const char *choices[16];
    int n = (int)json_array_size(ch);
    for (int c = 0; c < n; c++) choices[c] = json_string_value(json_array_get(ch, c));
    MmauItem item = {field(it, "answer"),       choices,    n,   field(it, "task"), field(it, "difficulty"),
                     field(it, "sub-category"), prediction, NULL};
    MmauScore s;
    Err e;
    mmau_score_init(&s);
    int ok = mmau_score_add(&s, &item, &e);
    CHECK_INT(s.all.total, 1);
    CHECK_INT(s.all.correct, ok);
    mmau_score_free(&s);
    return ok;
}

static void test_hand_items(void) {
    // Item 0: answer "Man", choices Man / Woman / Child / Robot; incorrect tokens {woman, child, robot}.
    CHECK_STR(field(json_array_get(mmau, 0), "answer"), "Man");
    CHECK_INT(judge(0, "I think it is a man speaking"), 1);  // {man} inside, no incorrect token
    CHECK_INT(judge(0, "a man, not a woman"), 0);            // "woman" is incorrect
    CHECK_INT(judge(0, "MAN."), 1);                          // lowercased, "." is not \w
    CHECK_INT(judge(0, "Men"), 0);                           // "men" != "man"
    CHECK_INT(judge(0, "manly"), 0);                         // \b\w+\b gives "manly", not "man"
    CHECK_INT(judge(0, "<answer>Man</answer>"), 1);          // {answer, man}; "answer" is no choice's word
    CHECK_INT(judge(0, ""), 0);                              // no token
    // Item 266: answer "Her mom", choices Her mom / Her sister / Her friend / Her birth mom; incorrect
    // tokens {sister, friend, birth} ("her", "mom" belong to the answer).
    CHECK_STR(field(json_array_get(mmau, 266), "answer"), "Her mom");
    CHECK_INT(judge(266, "her mom"), 1);
    CHECK_INT(judge(266, "Her birth mom"), 0);  // "birth" is incorrect
    CHECK_INT(judge(266, "mom"), 0);            // answer token "her" missing
    // Item 190: answer "thirteen", choices thirteen / twenty / thirteen / five: the duplicate has the
    // answer's token set and adds nothing; incorrect tokens {twenty, five}.
    CHECK_STR(field(json_array_get(mmau, 190), "answer"), "thirteen");
    CHECK_INT(judge(190, "Thirteen!"), 1);
    CHECK_INT(judge(190, "thirteen or twenty"), 0);
    // Unknown task / difficulty: an error, nothing tallied.
    const char *ch[] = {"a", "b"};
    MmauItem bad = {"a", ch, 2, "video", "easy", NULL, "a", NULL};
    MmauScore s;
    Err e;
    mmau_score_init(&s);
    CHECK_INT(mmau_score_add(&s, &bad, &e), -1);
    CHECK(strstr(e.msg, "\"video\"") != NULL);
    bad.task = "sound";
    bad.difficulty = "trivial";
    CHECK_INT(mmau_score_add(&s, &bad, &e), -1);
    CHECK(strstr(e.msg, "\"trivial\"") != NULL);
    CHECK_INT(s.all.total, 0);
    mmau_score_free(&s);
}

static void test_json_roundtrip(void) {
    json_t *d = predict(pred_by_task, "model_prediction");
    for (size_t i = 0; i < json_array_size(d); i += 250)
        json_object_set_new(json_array_get(d, i), "audio_error", json_string("bad header"));
    json_object_del(json_array_get(d, 7), "model_prediction");
    MmauScore s, r;
    score(&s, d);
    Err e;
    const char *path = TMP_PATH("eval_score.json");
    CHECKF(mmau_score_write_json(&s, path, &e) == 0, "%s", e.msg);
    mmau_score_init(&r);
    CHECKF(mmau_score_read_json(&r, path, &e) == 0, "%s", e.msg);
    CHECK(memcmp(&r.all, &s.all, sizeof s.all) == 0);
    CHECK(memcmp(r.task, s.task, sizeof s.task) == 0);
    CHECK(memcmp(r.difficulty, s.difficulty, sizeof s.difficulty) == 0);
    CHECK_INT(r.n_sub, s.n_sub);
    for (int k = 0; k < s.n_sub && k < r.n_sub; k++) {
        CHECK_STR(r.sub_name[k], s.sub_name[k]);  // same (first-seen) order
        CHECK(memcmp(&r.sub[k], &s.sub[k], sizeof s.sub[k]) == 0);
    }
    CHECK_INT(r.no_prediction, 1);
    CHECK_INT(r.audio_errors, 4);
    mmau_score_free(&r);
    // Bad result files name the file and the key.
    const struct {
        const char *text, *want;
    } bad[] = {
        {"[1]", "not a JSON object"},
        {"{\"total\": {\"correct\": 1, \"total\": 2}}", "\"task\""},
        {"{\"total\": {\"correct\": 3, \"total\": 2}}", "correct 3 > total 2"},
        {"{\"total\": {\"correct\": -1, \"total\": 2}}", "\"correct\" is not a non-negative integer"},
        {"{\"total\": 5", "eval_bad.json:1:"},
    };
    const char *bp = TMP_PATH("eval_bad.json");
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        CHECK(file_write_atomic(bp, bad[k].text, strlen(bad[k].text), &e) == 0);
        mmau_score_init(&r);
        CHECK_INT(mmau_score_read_json(&r, bp, &e), -1);
        CHECKF(strstr(e.msg, bad[k].want) && strstr(e.msg, "eval_bad.json"), "%s", e.msg);
        mmau_score_free(&r);
    }
    mmau_score_free(&s);
    json_decref(d);
}

// Scores `text` written to a file; returns the rc and leaves the message in e.
static int score_text(const char *text, Err *e) {
    const char *path = TMP_PATH("eval_input.json");
    if (file_write_atomic(path, text, strlen(text), e)) return -2;
    MmauScore s;
    mmau_score_init(&s);
    int rc = mmau_score_file(&s, path, e);
    mmau_score_free(&s);
    return rc;
}

static void test_bad_input(void) {
    const char *good =
        "\"answer\": \"a\", \"choices\": [\"a\", \"b\"], \"task\": \"sound\", "
        "\"difficulty\": \"easy\"";
    char buf[1024];
    Err e;
    CHECK_INT(score_text("not json", &e), -1);
    CHECKF(strstr(e.msg, "eval_input.json:1:") && strstr(e.msg, "not valid JSON"), "%s", e.msg);
    CHECK_INT(score_text("{\"a\": 1}", &e), -1);
    CHECKF(strstr(e.msg, "eval_input.json: not a JSON array"), "%s", e.msg);
    CHECK_INT(score_text("[]", &e), -1);
    CHECKF(strstr(e.msg, "no items"), "%s", e.msg);
    snprintf(buf, sizeof buf, "[{%s, \"model_prediction\": \"a\"}, 3]", good);
    CHECK_INT(score_text(buf, &e), -1);
    CHECKF(strstr(e.msg, "eval_input.json: item 1: not a JSON object"), "%s", e.msg);
    const struct {
        const char *item, *want;
    } bad[] = {
        {"{\"id\": \"x1\", \"choices\": [\"a\"], \"task\": \"sound\", \"difficulty\": \"easy\"}",
         "item 0 (id x1): missing \"answer\""},
        {"{\"answer\": \"a\", \"task\": \"sound\", \"difficulty\": \"easy\"}", "item 0: missing \"choices\""},
        {"{\"answer\": \"a\", \"choices\": \"a\", \"task\": \"sound\", \"difficulty\": \"easy\"}",
         "\"choices\" is not a non-empty array"},
        {"{\"answer\": \"a\", \"choices\": [\"a\", 2], \"task\": \"sound\", \"difficulty\": \"easy\"}",
         "choice 1 is not a string"},
        {"{\"answer\": \"a\", \"choices\": [\"a\"], \"difficulty\": \"easy\"}", "missing \"task\""},
        {"{\"answer\": \"a\", \"choices\": [\"a\"], \"task\": \"video\", \"difficulty\": \"easy\"}",
         "task \"video\""},
        {"{\"answer\": \"a\", \"choices\": [\"a\"], \"task\": \"sound\", \"difficulty\": \"?\"}",
         "difficulty \"?\""},
        {"{\"answer\": 1, \"choices\": [\"a\"], \"task\": \"sound\", \"difficulty\": \"easy\"}",
         "\"answer\" is not a string"},
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        snprintf(buf, sizeof buf, "[%s]", bad[k].item);
        CHECK_INT(score_text(buf, &e), -1);
        CHECKF(strstr(e.msg, bad[k].want) && strstr(e.msg, "eval_input.json"), "%s", e.msg);
    }
    const struct {
        const char *extra, *want;
    } badfield[] = {
        {"\"model_prediction\": 5", "\"model_prediction\" is not a string"},
        {"\"model_output\": [\"a\"]", "\"model_output\" is not a string"},
        {"\"audio_error\": true", "\"audio_error\" is not a string"},
        {"\"sub-category\": 2", "\"sub-category\" is not a string"},
    };
    for (size_t k = 0; k < sizeof badfield / sizeof badfield[0]; k++) {
        snprintf(buf, sizeof buf, "[{%s, \"model_prediction\": \"a\"}, {%s, %s}]", good, good,
                 badfield[k].extra);
        CHECK_INT(score_text(buf, &e), -1);
        CHECKF(strstr(e.msg, "item 1: ") && strstr(e.msg, badfield[k].want), "%s", e.msg);
    }
    MmauScore s;
    mmau_score_init(&s);
    CHECK_INT(mmau_score_file(&s, TMP_PATH("no/such/pred.json"), &e), -1);
    CHECK(strstr(e.msg, "no/such/pred.json") != NULL);
    mmau_score_free(&s);
}

static void test_cli_score(void) {
    // aqa-eval --score-only prints exactly mmau_score_print and the version line, and writes the same JSON.
    json_t *d = predict(pred_by_task, "model_prediction");
    const char *pred = TMP_PATH("eval_cli_pred.json"), *outj = TMP_PATH("eval_cli_out.json");
    CHECK(json_dump_file(d, pred, 0) == 0);
    MmauScore s;
    score(&s, d);
    char *want;
    size_t len;
    FILE *f = open_memstream(&want, &len);
    mmau_score_print(&s, f);
    mmau_version_print(&s.version, f);
    fclose(f);
    static char out[65536], cmd[8192];
    unlink(outj);
    snprintf(cmd, sizeof cmd, "'%s' --score-only '%s' --out-json '%s' --set grpo.beta=0.02 2>&1",
             aqa_eval_exe, pred, outj);
    CHECK_INT(test_run_cmd(cmd, out, sizeof out), 0);
    CHECK_STR(out, want);
    size_t n;
    char *got = file_read_all(outj, &n, NULL), *json = mmau_score_to_json(&s);
    CHECK(got && strcmp(got, json) == 0);
    free(got);
    free(json);
    free(want);
    // Bad use and bad input: exit 1 with a message.
    const struct {
        const char *args, *want;
    } bad[] = {
        {"", "exactly one of --model, --score-only and --sweep"},
        {"--score-only a --sweep b", "exactly one of"},
        {"--score-only", "--score-only needs a value"},
        {"--bogus x", "unknown argument --bogus"},
        {"--sweep d --out-json x", "--out-json goes with --model or --score-only"},
        {"--set grpo.beta=-1 --score-only x", "grpo.beta"},
        {"--score-only /no/such/file.json", "/no/such/file.json"},
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        snprintf(cmd, sizeof cmd, "'%s' %s 2>&1", aqa_eval_exe, bad[k].args);
        CHECK_INT(test_run_cmd(cmd, out, sizeof out), 1);
        CHECKF(strstr(out, bad[k].want) != NULL, "%s -> %s", bad[k].args, out);
    }
    mmau_score_free(&s);
    json_decref(d);
}

// ---- sweep ----

static void make_dir(const char *path) {
    Err e;
    CHECKF(dir_make(path, &e) == 0, "%s", e.msg);
}

// A checkpoint directory of the synthetic run; correct >= 0 writes an eval result with that many of
// 300 right (100 per task, the correct ones split as evenly as possible).
static void make_ckpt(const char *run, const char *name, int complete, int correct) {
    char dir[4096], path[4200];
    snprintf(dir, sizeof dir, "%s/checkpoints/%s", run, name);
    make_dir(dir);
    if (complete) {
        snprintf(path, sizeof path, "%s/%s", dir, SWEEP_COMPLETE_MARKER);
        Err e;
        CHECK(file_write_atomic(path, "", 0, &e) == 0);
    }
    if (correct < 0) return;
    MmauScore s;
    mmau_score_init(&s);
    for (int t = 0; t < MMAU_NUM_TASKS; t++) s.task[t] = (MmauTally){correct / 3 + (t < correct % 3), 100};
    s.all = (MmauTally){correct, 300};
    Err e;
    snprintf(path, sizeof path, "%s/%s", dir, MMAU_RESULT_NAME);
    CHECKF(mmau_score_write_json(&s, path, &e) == 0, "%s", e.msg);
}

static void test_sweep(void) {
    char run[4096], cmd[8192];
    snprintf(run, sizeof run, "%s", TMP_PATH("eval_run"));
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", run);
    CHECK(system(cmd) == 0);
    Sweep sw;
    Err e;
    CHECK_INT(sweep_scan(&sw, run, &e), -1);  // no checkpoints folder
    CHECK(strstr(e.msg, "eval_run/checkpoints") != NULL);
    sweep_free(&sw);
    make_ckpt(run, "step-000100", 1, 150);         // total 50%
    make_ckpt(run, "step-000200", 1, 210);         // 70%: best
    make_ckpt(run, "step-000300", 1, 150);         // 50%: ties step 100, ranks after it
    make_ckpt(run, "step-000400", 1, -1);          // complete, not evaluated
    make_ckpt(run, "step-000500", 0, 300);         // no marker: ignored even with a result
    make_ckpt(run, "step-000050", 1, 30);          // 10%: worst; listed first by step
    make_ckpt(run, "step-000600.tmp.42", 1, 300);  // a temporary name: not a checkpoint
    char path[4200];
    snprintf(path, sizeof path, "%s/checkpoints/step-000700", run);  // a file, not a directory
    CHECK(file_write_atomic(path, "x", 1, &e) == 0);
    CHECKF(sweep_scan(&sw, run, &e) == 0, "%s", e.msg);
    CHECK_INT(sw.n, 6);
    long steps[] = {50, 100, 200, 300, 400, 500};
    int complete[] = {1, 1, 1, 1, 1, 0}, result[] = {1, 1, 1, 1, 0, 0};
    for (int i = 0; i < sw.n && i < 6; i++) {
        CHECK_INT(sw.entry[i].step, steps[i]);
        CHECK_INT(sw.entry[i].complete, complete[i]);
        CHECK_INT(sw.entry[i].has_result, result[i]);
    }
    int *order;
    int n = sweep_ranking(&sw, &order);
    CHECK_INT(n, 4);
    long want_rank[] = {200, 100, 300, 50};
    for (int r = 0; r < n && r < 4; r++) CHECK_INT(sw.entry[order[r]].step, want_rank[r]);
    free(order);
    char *text;
    size_t len;
    FILE *f = open_memstream(&text, &len);
    sweep_print(&sw, f);
    fclose(f);
    CHECKF(strstr(text, "6 checkpoints, 5 complete, 4 evaluated\n"), "%s", text);
    CHECKF(strstr(text,
                  "1 complete checkpoint(s) without eval-mmau.json (not evaluated yet):\n"
                  "  step 400: "),
           "%s", text);
    CHECKF(strstr(text, "1 checkpoint(s) without a .complete marker"), "%s", text);
    // step 200: sound 70/100 (210 = 70 * 3), music 70, speech 70, total 210/300.
    const char *table =
        "      step   sound   music  speech   total\n"
        "       200   70.00   70.00   70.00   70.00\n"
        "       100   50.00   50.00   50.00   50.00\n"
        "       300   50.00   50.00   50.00   50.00\n"
        "        50   10.00   10.00   10.00   10.00\n";
    CHECKF(len >= strlen(table) && strcmp(text + len - strlen(table), table) == 0, "%s", text);
    free(text);
    // The plot: a PNG when gnuplot is installed; skipped (with the reason) when it is not on PATH.
    const char *png = TMP_PATH("eval_run/sweep.png");
    char *old_path = strdupCheck(getenv("PATH") ? getenv("PATH") : "");
    int rc = sweep_plot(&sw, png, &e);
    if (rc == 0) {
        size_t n_png;
        char *img = file_read_all(png, &n_png, &e);
        CHECK(img && n_png > 8 && memcmp(img, "\x89PNG", 4) == 0);
        free(img);
    } else {
        CHECKF(rc == SWEEP_PLOT_SKIPPED && strstr(e.msg, "gnuplot is not installed"), "%s", e.msg);
    }
    setenv("PATH", "/nonexistent", 1);
    CHECK_INT(sweep_plot(&sw, TMP_PATH("eval_run/none.png"), &e), SWEEP_PLOT_SKIPPED);
    CHECK(strstr(e.msg, "gnuplot is not installed") != NULL);
    CHECK(!path_exists(TMP_PATH("eval_run/none.png")));
    setenv("PATH", old_path, 1);
    free(old_path);
    sweep_free(&sw);
    // The tool prints the same report and notes the plot.
    static char out[65536];
    snprintf(cmd, sizeof cmd, "'%s' --sweep '%s' --plot '%s' 2>&1", aqa_eval_exe, run, png);
    CHECK_INT(test_run_cmd(cmd, out, sizeof out), 0);
    CHECKF(strstr(out, table) && (strstr(out, "plot: ") || strstr(out, "plot skipped: ")), "%s", out);
    // No results at all: the plot is skipped, not an error.
    Sweep none = {0};
    CHECK_INT(sweep_plot(&none, png, &e), SWEEP_PLOT_SKIPPED);
    // A corrupt result file stops the scan, naming it.
    snprintf(path, sizeof path, "%s/checkpoints/step-000400/%s", run, MMAU_RESULT_NAME);
    CHECK(file_write_atomic(path, "{", 1, &e) == 0);
    CHECK_INT(sweep_scan(&sw, run, &e), -1);
    CHECK(strstr(e.msg, "step-000400/eval-mmau.json") != NULL);
    sweep_free(&sw);
}

// The evidence of a JSON array of MMAU items.
static MmauVersionEvidence version_of(const json_t *items) {
    MmauVersionEvidence v = {0};
    for (size_t i = 0; i < json_array_size(items); i++) {
        const json_t *it = json_array_get(items, i);
        mmau_version_add(&v, json_string_value(json_object_get(it, "id")),
                         json_string_value(json_object_get(it, "answer")));
    }
    return v;
}

// Real items of both test-mini versions (fixtures: 3 items only one version has, the same 3 items with
// the original's and the revision's answer, 2 items both share unchanged) and the shared full copy (the
// revision as last updated) are told apart; unmarked items leave the version unknown.
static void test_mmau_version(void) {
    static const struct {
        const char *file;
        MmauVersion want;
        int orig_ids, rev_ids, orig_ans, rev_ans;
    } cases[] = {
        {"tests/fixtures/mmau/test-mini-original-8.json", MMAU_VERSION_ORIGINAL, 3, 0, 3, 0},
        {"tests/fixtures/mmau/test-mini-v05.15.25-8.json", MMAU_VERSION_REVISED, 0, 3, 0, 3},
    };
    json_error_t je;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        json_t *items = json_load_file(SRC_PATH(cases[c].file), 0, &je);
        CHECKF(json_array_size(items) == 8, "%s: %s", cases[c].file, je.text);
        if (json_array_size(items) != 8) continue;
        MmauVersionEvidence v = version_of(items);
        CHECK_INT(mmau_version_decide(&v), cases[c].want);
        CHECK_INT(v.items, 8);
        CHECK_INT(v.original_ids, cases[c].orig_ids);
        CHECK_INT(v.revised_ids, cases[c].rev_ids);
        CHECK_INT(v.original_answers, cases[c].orig_ans);
        CHECK_INT(v.revised_answers, cases[c].rev_ans);
        // Without the replaced items the changed answers alone decide.
        json_t *kept = json_array();
        for (size_t i = 3; i < 6; i++) json_array_append(kept, json_array_get(items, i));
        v = version_of(kept);
        CHECK_INT(mmau_version_decide(&v), cases[c].want);
        // Items both versions share unchanged carry no evidence.
        json_array_clear(kept);
        for (size_t i = 6; i < 8; i++) json_array_append(kept, json_array_get(items, i));
        v = version_of(kept);
        CHECK_INT(mmau_version_decide(&v), MMAU_VERSION_UNKNOWN);
        json_decref(kept);
        // Scoring fills the same evidence.
        for (size_t i = 0; i < json_array_size(items); i++) {
            json_t *it = json_array_get(items, i);
            json_object_set(it, "model_prediction", json_object_get(it, "answer"));
        }
        MmauScore s;
        score(&s, items);
        CHECK_INT(s.all.correct, 8);
        CHECK_INT(mmau_version_decide(&s.version), cases[c].want);
        mmau_score_free(&s);
        json_decref(items);
    }
    MmauVersionEvidence v = version_of(mmau);
    CHECK_INT(mmau_version_decide(&v), MMAU_VERSION_REVISED);
    CHECK_INT(v.revised_ids, 106);
    CHECK_INT(v.original_ids, 0);
    // The shared copy is the revision as last updated: every changed answer is the revised one.
    CHECK_INT(v.revised_answers, 210);
    CHECK_INT(v.original_answers, 0);
    char *line;
    size_t len;
    FILE *f = open_memstream(&line, &len);
    mmau_version_print(&v, f);
    fclose(f);
    CHECKF(strstr(line, "MMAU version: MMAU-v05.15.25") == line, "%s", line);
    free(line);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_eval PATH/TO/aqa-eval\n");
        return 2;
    }
    aqa_eval_exe = argv[1];
    json_error_t je;
    mmau = json_load_file(SHARED_PATH("data/mmau/mmau-test-mini.json"), 0, &je);
    if (!mmau) {
        fprintf(stderr, "cannot load mmau-test-mini.json: %s\n", je.text);
        return 1;
    }
    count_file();
    RUN(test_file_counts);
    RUN(test_exact);
    RUN(test_case_punct);
    RUN(test_extra_words);
    RUN(test_wrong_words);
    RUN(test_empty);
    RUN(test_by_task);
    RUN(test_missing_prediction);
    RUN(test_model_output);
    RUN(test_audio_error);
    RUN(test_hand_items);
    RUN(test_json_roundtrip);
    RUN(test_bad_input);
    RUN(test_cli_score);
    RUN(test_sweep);
    RUN(test_mmau_version);
    json_decref(mmau);
    return test_summary("test_eval");
}
