// Tests of common/data/dataset: both readers on good and bad records (every rejection path, with its
// file:line message), path resolution, the bad-record limit, and the real MMAU test-mini file.
#include "data/dataset.h"
#include "data/prompt.h"
#include "test.h"
#include "util/fileio.h"

#include <unistd.h>

static void write_text(const char *path, const char *text) {
    Err e;
    if (file_write_atomic(path, text, strlen(text), &e)) fatal("%s", e.msg);
}

// The expected message "<path>:<line>: <reason>" (or the MMAU form when item >= 0).
static const char *msg_at(const char *path, int item, int line, const char *reason) {
    static char buf[4][8192];
    static int k;
    char *out = buf[k++ & 3];
    if (item >= 0) snprintf(out, sizeof buf[0], "%s: item %d (line %d): %s", path, item, line, reason);
    else snprintf(out, sizeof buf[0], "%s:%d: %s", path, line, reason);
    return out;
}

#define GOOD_TAIL "\"multi_choice\": [\"a\", \"b\"], \"answer\": 1, \"audio_path\": \"wav/a.wav\"}"

static const char *JSONL_BAD =
    "{\"id\": 1, \"question_text\": \"Q1 in the video?\", " GOOD_TAIL "\n"                        // 1 good
    "\n"                                                                                          // 2 blank
    "{\"id\": 2, \"question_text\": \n"                                                          // 3
    "[1, 2]\n"                                                                                    // 4
    "{\"id\": 5, " GOOD_TAIL "\n"                                                                 // 5
    "{\"id\": 6, \"question_text\": 5, " GOOD_TAIL "\n"                                           // 6
    "{\"id\": 7, \"question_text\": \"Q\", \"multi_choice\": [], \"answer\": 0, \"audio_path\": \"a.wav\"}\n"
    "{\"id\": 8, \"question_text\": \"Q\", \"multi_choice\": [\"a\"], \"answer\": 0, \"audio_path\": \"a.wav\"}\n"
    "{\"id\": 9, \"question_text\": \"Q\", \"multi_choice\": \"a\", \"answer\": 0, \"audio_path\": \"a.wav\"}\n"
    "{\"id\": 10, \"question_text\": \"Q\", \"multi_choice\": [\"a\", 3], \"answer\": 0, \"audio_path\": \"a.wav\"}\n"
    "{\"id\": 11, \"question_text\": \"Q\", \"multi_choice\": [\"a\", \"b\"], \"answer\": 2, \"audio_path\": \"a.wav\"}\n"
    "{\"id\": 12, \"question_text\": \"Q\", \"multi_choice\": [\"a\", \"b\"], \"answer\": -1, \"audio_path\": \"a.wav\"}\n"
    "{\"id\": 13, \"question_text\": \"Q\", \"multi_choice\": [\"a\", \"b\"], \"answer\": \"1\", \"audio_path\": \"a.wav\"}\n"
    "{\"id\": 14, \"question_text\": \"Q\", \"multi_choice\": [\"a\", \"b\"], \"answer\": 1.0, \"audio_path\": \"a.wav\"}\n"
    "{\"id\": 15, \"question_text\": \"Q\", \"multi_choice\": [\"a\", \"b\"], \"audio_path\": \"a.wav\"}\n"
    "{\"question_text\": \"Q\", " GOOD_TAIL "\n"                                                  // 16
    "{\"id\": 1.5, \"question_text\": \"Q\", " GOOD_TAIL "\n"                                     // 17
    "{\"id\": 18, \"question_text\": \"Q\", \"multi_choice\": [\"a\", \"b\"], \"answer\": 1}\n"
    "{\"id\": 19, \"question_text\": \"Q\", \"multi_choice\": [\"a\", \"b\"], \"answer\": 1, \"audio_path\": \"\"}\n"
    "{\"id\": 20, \"question_text\": \"Q\", \"task\": 3, " GOOD_TAIL "\n"                         // 20
    "   \t\r\n"                                                                                   // 21 blank
    "{\"id\": \"abc\", \"question_text\": \"Q2\", \"multi_choice\": [\"x\", \"y\", \"z\"], \"answer\": 2, "
    "\"audio_path\": \"/abs/b.wav\", \"dataset_name\": \"AVQA\", \"question_type\": \"Happening\"}\n"  // 22 good
    "{\"id\": 3, \"question_text\": \"Q3\", \"multi_choice\": [\"a\", \"b\"], \"answer\": 0, "
    "\"audio_path\": \"./wav/c.wav\", \"difficulty\": \"hard\", \"sub-category\": \"beeps\", \"split\": null}\n"
    "{\"id\": 4, \"question_text\": \"Q\", \"multi_choice\": [\"a\", \"b\"], \"answer\": 0, \"audio_path\": 7}";  // 24, no final newline

static void test_jsonl_bad_records(void) {
    const char *path = TMP_PATH("data_bad.jsonl");
    write_text(path, JSONL_BAD);
    Dataset ds;
    Err e;
    CHECK(dataset_load(&ds, path, NULL, &e) == 0);
    CHECK(ds.format == DATA_FORMAT_R1AQA);
    CHECK_INT(ds.n, 3);
    CHECK_INT(ds.n_bad, 19);
    if (ds.n_bad != 19 || ds.n != 3) {
        dataset_free(&ds);
        return;
    }
    CHECK(strncmp(ds.bad[0], msg_at(path, -1, 3, "bad JSON: "), strlen(msg_at(path, -1, 3, "bad JSON: "))) == 0);
    const char *want[] = {
        NULL,
        msg_at(path, -1, 4, "not a JSON object"),
        msg_at(path, -1, 5, "missing field \"question_text\""),
        msg_at(path, -1, 6, "field \"question_text\" is not a string"),
    };
    for (int i = 1; i < 4; i++) CHECK_STR(ds.bad[i], want[i]);
    CHECK_STR(ds.bad[4], msg_at(path, -1, 7, "field \"multi_choice\" has 0 choices, need at least 2"));
    CHECK_STR(ds.bad[5], msg_at(path, -1, 8, "field \"multi_choice\" has 1 choice, need at least 2"));
    CHECK_STR(ds.bad[6], msg_at(path, -1, 9, "field \"multi_choice\" is not an array"));
    CHECK_STR(ds.bad[7], msg_at(path, -1, 10, "multi_choice[1] is not a string"));
    CHECK_STR(ds.bad[8], msg_at(path, -1, 11, "answer 2 out of range [0, 2)"));
    CHECK_STR(ds.bad[9], msg_at(path, -1, 12, "answer -1 out of range [0, 2)"));
    CHECK_STR(ds.bad[10], msg_at(path, -1, 13, "field \"answer\" is not an integer"));
    CHECK_STR(ds.bad[11], msg_at(path, -1, 14, "field \"answer\" is not an integer"));
    CHECK_STR(ds.bad[12], msg_at(path, -1, 15, "missing field \"answer\""));
    CHECK_STR(ds.bad[13], msg_at(path, -1, 16, "missing field \"id\""));
    CHECK_STR(ds.bad[14], msg_at(path, -1, 17, "field \"id\" is not an integer or a string"));
    CHECK_STR(ds.bad[15], msg_at(path, -1, 18, "missing field \"audio_path\""));
    CHECK_STR(ds.bad[16], msg_at(path, -1, 19, "field \"audio_path\" is empty"));
    CHECK_STR(ds.bad[17], msg_at(path, -1, 20, "field \"task\" is not a string or a list of strings"));
    CHECK_STR(ds.bad[18], msg_at(path, -1, 24, "field \"audio_path\" is not a string"));

    // The good records, in file order, with global indices and resolved paths.
    const Question *q = &ds.q[0];
    CHECK_INT(q->index, 0);
    CHECK_INT(q->line, 1);
    CHECK_STR(q->id, "1");
    CHECK_STR(q->question, "Q1 in the video?");  // stored as in the file; prompts do the rewrite
    CHECK_INT(q->n_choices, 2);
    CHECK_INT(q->answer, 1);
    CHECK_STR(q->answer_text, "b");
    CHECK_STR(q->audio_path, TMP_PATH("wav/a.wav"));
    CHECK(q->task == NULL && q->dataset == NULL && q->sub_category == NULL);
    q = &ds.q[1];
    CHECK_INT(q->index, 1);
    CHECK_INT(q->line, 22);
    CHECK_STR(q->id, "abc");
    CHECK_STR(q->audio_path, "/abs/b.wav");
    CHECK_STR(q->answer_text, "z");
    CHECK_STR(q->dataset, "AVQA");
    q = &ds.q[2];
    CHECK_INT(q->index, 2);
    CHECK_STR(q->id, "3");
    CHECK_STR(q->difficulty, "hard");
    CHECK_STR(q->sub_category, "beeps");
    CHECK(q->split == NULL);  // null metadata counts as absent
    CHECK_STR(q->audio_path, TMP_PATH("wav/c.wav"));  // leading "./" dropped
    dataset_free(&ds);
    CHECK(ds.n == 0 && ds.q == NULL);
}

static void test_audio_dir(void) {
    const char *path = TMP_PATH("data_dir.jsonl");
    write_text(path, "{\"id\": 1, \"question_text\": \"Q\", " GOOD_TAIL "\n"
                     "{\"id\": 2, \"question_text\": \"Q\", \"multi_choice\": [\"a\", \"b\"], \"answer\": 0, "
                     "\"audio_path\": \"/abs/x.wav\"}\n");
    DataOptions o = data_options_default();
    o.audio_dir = "/data/avqa";
    Dataset ds;
    Err e;
    CHECK(dataset_load(&ds, path, &o, &e) == 0);
    CHECK_INT(ds.n, 2);
    if (ds.n == 2) {
        CHECK_STR(ds.q[0].audio_path, "/data/avqa/wav/a.wav");
        CHECK_STR(ds.q[1].audio_path, "/abs/x.wav");
    }
    dataset_free(&ds);
    // A relative data path in the current directory: relative audio paths stay relative.
    CHECK(chdir(TMP_PATH("")) == 0);
    CHECK(dataset_load(&ds, "data_dir.jsonl", NULL, &e) == 0);
    if (ds.n == 2) CHECK_STR(ds.q[0].audio_path, "wav/a.wav");
    dataset_free(&ds);
}

// An audio path of any length is data, not a reason to end the process (tests/fuzz/fuzz_dataset).
static void test_long_audio_path(void) {
    size_t n = 9000;
    char *line = mallocCheck(n + 200);
    int k = snprintf(line, n + 200, "{\"id\": 1, \"question_text\": \"q\", \"multi_choice\": [\"a\", \"b\"], "
                                   "\"answer\": 0, \"audio_path\": \"");
    memset(line + k, 'a', n);
    snprintf(line + k + n, 200 - (size_t)k, "\"}\n");
    Dataset ds;
    Err e;
    CHECKF(dataset_parse(&ds, "dir/x.jsonl", line, strlen(line), NULL, &e) == 0, "%s", e.msg);
    CHECK(ds.n == 1 && strlen(ds.q[0].audio_path) == n + 4 && strncmp(ds.q[0].audio_path, "dir/aaa", 7) == 0);
    dataset_free(&ds);
    free(line);
}

static void test_limits(void) {
    const char *path = TMP_PATH("data_bad.jsonl");
    write_text(path, JSONL_BAD);
    Dataset ds;
    Err e;
    DataOptions o = data_options_default();
    o.max_bad = 3;
    CHECK(dataset_load(&ds, path, &o, &e) == -1);
    CHECKF(strstr(e.msg, "4 bad records, more than max_bad 3") != NULL, "%s", e.msg);
    CHECK(strstr(e.msg, msg_at(path, -1, 6, "field \"question_text\" is not a string")) != NULL);  // the 4th
    CHECK(ds.n == 0 && ds.q == NULL && ds.bad == NULL);
    o.max_bad = 0;
    CHECK(dataset_load(&ds, path, &o, &e) == -1);
    CHECK(strstr(e.msg, "1 bad records, more than max_bad 0") != NULL);
    o.max_bad = 19;  // exactly at the limit is fine
    CHECK(dataset_load(&ds, path, &o, &e) == 0);
    CHECK_INT(ds.n_bad, 19);
    dataset_free(&ds);

    const char *empty = TMP_PATH("data_empty.jsonl");
    write_text(empty, "\n  \n");
    CHECK(dataset_load(&ds, empty, NULL, &e) == -1);
    CHECK(strstr(e.msg, "data_empty.jsonl: no valid questions (0 bad records)") != NULL);
    const char *allbad = TMP_PATH("data_allbad.jsonl");
    write_text(allbad, "[1]\n");
    CHECK(dataset_load(&ds, allbad, NULL, &e) == -1);
    CHECK(strstr(e.msg, "no valid questions (1 bad records)") != NULL);
    CHECK(dataset_load(&ds, TMP_PATH("no_such_data.jsonl"), NULL, &e) == -1);
    CHECK(strstr(e.msg, "no_such_data.jsonl: cannot open") != NULL);
}

static const char *MMAU_BAD =
    "[\n"                                                                                                  // 1
    "  {\"id\": \"g1\", \"audio_id\": \"./aud/g1.wav\", \"question\": \"Q1\", \"choices\": [\"A\", \"B\"], "
    "\"answer\": \"B\", \"task\": \"music\", \"sub-category\": \"Genre\", \"difficulty\": \"easy\", "
    "\"category\": [\"Reasoning\", \"Perception\"]},\n"                                                     // 2
    "  {\"id\": \"b1\", \"audio_id\": \"x.wav\", \"question\": \"Q\", \"choices\": [\"A\", \"B\"], \"answer\": \"C\"},\n"
    "  {\"id\": \"b2\", \"audio_id\": \"x.wav\",\n"                                                       // 4
    "   \"question\": , \"choices\": [\"A\", \"B\"], \"answer\": \"A\"},\n"                               // 5
    "  ,\n"                                                                                                // 6
    "  5,\n"                                                                                               // 7
    "  {\"id\": \"b3\", \"audio_id\": \"x.wav\", \"question\": \"Q\", \"choices\": [\"A\"], \"answer\": \"A\"},\n"
    "  {\"id\": \"b4\", \"audio_id\": \"x.wav\", \"question\": \"Q\", \"choices\": [\"A\", \"B\"], \"answer\": \"A\", "
    "\"sub-category\": 7},\n"                                                                              // 9
    "  {\"id\": 7, \"audio_id\": \"/abs/g2.wav\", \"question\": \"Q2 {\", \"choices\": [\"x, y\", \"z]\\\"\"], "
    "\"answer\": \"z]\\\"\"},\n"                                                                           // 10
    "  {\"id\": \"b5\", \"audio_id\": \"x.wav\", \"question\": \"Q\", \"answer\": \"A\"},\n"             // 11
    "  {\"id\": \"b6\", \"audio_id\": \"x.wav\", \"question\": \"Q\", \"choices\": [\"A\", \"B\"], \"answer\": 0},\n"
    "  {\"id\": \"b7\", \"audio_id\": \"x.wav\", \"question\": \"Q\", \"choices\": [\"A\", \"B\"], \"answer\": \"A\", "
    "\"category\": [\"A\", 1]},\n"                                                                           // 13
    "  {\"id\": \"b8\", \"audio_id\": \"x.wav\", \"question\": \"Q\", \"choices\": [\"A\", \"B\"], \"answer\": \"A\", "
    "\"category\": []}\n"                                                                                      // 14
    "]\n";

static void test_mmau_bad_items(void) {
    const char *path = TMP_PATH("data_bad_mmau.json");
    write_text(path, MMAU_BAD);
    Dataset ds;
    Err e;
    CHECK(dataset_load(&ds, path, NULL, &e) == 0);
    CHECK(ds.format == DATA_FORMAT_MMAU);
    CHECK_INT(ds.n, 2);
    CHECK_INT(ds.n_bad, 10);
    if (ds.n != 2 || ds.n_bad != 10) {
        dataset_free(&ds);
        return;
    }
    CHECK_STR(ds.bad[0], msg_at(path, 1, 3, "answer \"C\" is not among the choices"));
    const char *bad_json = msg_at(path, 2, 4, "bad JSON at line 5: ");
    CHECKF(strncmp(ds.bad[1], bad_json, strlen(bad_json)) == 0, "%s", ds.bad[1]);
    CHECK_STR(ds.bad[2], msg_at(path, 3, 6, "empty item"));
    CHECK_STR(ds.bad[3], msg_at(path, 4, 7, "not a JSON object"));
    CHECK_STR(ds.bad[4], msg_at(path, 5, 8, "field \"choices\" has 1 choice, need at least 2"));
    CHECK_STR(ds.bad[5], msg_at(path, 6, 9, "field \"sub-category\" is not a string or a list of strings"));
    CHECK_STR(ds.bad[6], msg_at(path, 8, 11, "missing field \"choices\""));
    CHECK_STR(ds.bad[7], msg_at(path, 9, 12, "field \"answer\" is not a string"));
    CHECK_STR(ds.bad[8], msg_at(path, 10, 13, "category[1] is not a string"));
    CHECK_STR(ds.bad[9], msg_at(path, 11, 14, "field \"category\" is not a string or a list of strings"));

    const Question *q = &ds.q[0];
    CHECK_STR(q->id, "g1");
    CHECK_INT(q->line, 2);
    CHECK_STR(q->audio_path, TMP_PATH("aud/g1.wav"));
    CHECK_INT(q->answer, 1);
    CHECK_STR(q->task, "music");
    CHECK_STR(q->sub_category, "Genre");
    CHECK_STR(q->difficulty, "easy");
    CHECK_STR(q->category, "Reasoning, Perception");
    q = &ds.q[1];
    CHECK_INT(q->index, 1);
    CHECK_INT(q->line, 10);
    CHECK_STR(q->id, "7");
    CHECK_STR(q->audio_path, "/abs/g2.wav");
    CHECK_STR(q->question, "Q2 {");
    CHECK_STR(q->choices[0], "x, y");
    CHECK_INT(q->answer, 1);
    CHECK_STR(q->answer_text, "z]\"");
    dataset_free(&ds);
}

static void test_mmau_structure(void) {
    Dataset ds;
    Err e;
    DataOptions o = data_options_default();
    o.format = DATA_FORMAT_MMAU;
    const char *path = TMP_PATH("data_struct.json");
    write_text(path, "\n{\"id\": 1}\n");
    CHECK(dataset_load(&ds, path, &o, &e) == -1);
    CHECK_STR(e.msg, msg_at(path, -1, 2, "expected a JSON array of questions"));
    write_text(path, "[\n {\"id\": \"a\", \"question\": \"unterminated");
    CHECK(dataset_load(&ds, path, NULL, &e) == -1);
    CHECK_STR(e.msg, msg_at(path, 0, 2, "unbalanced brackets or unterminated array"));
    write_text(path, "[{\"id\": \"a\", \"audio_id\": \"x.wav\", \"question\": \"Q\", \"choices\": [\"A\", \"B\"], "
                     "\"answer\": \"A\"}]\n x");
    CHECK(dataset_load(&ds, path, NULL, &e) == -1);
    CHECK_STR(e.msg, msg_at(path, -1, 2, "unexpected text after the array"));
    write_text(path, "[\n {\"id\": \"a\"}}\n]");
    CHECK(dataset_load(&ds, path, NULL, &e) == -1);
    CHECK_STR(e.msg, msg_at(path, 0, 2, "unbalanced brackets or unterminated array"));
    write_text(path, "[] x");
    CHECK(dataset_load(&ds, path, NULL, &e) == -1);
    CHECK_STR(e.msg, msg_at(path, -1, 1, "unexpected text after the array"));
    write_text(path, " [ ] ");
    CHECK(dataset_load(&ds, path, NULL, &e) == -1);
    CHECK(strstr(e.msg, "no valid questions (0 bad records)") != NULL);
    write_text(path, "[{\"id\": \"a\", \"audio_id\": \"x.wav\", \"question\": \"Q\", \"choices\": [\"A\", \"B\"], "
                     "\"answer\": \"A\"},]");  // trailing comma: an empty last item
    CHECK(dataset_load(&ds, path, NULL, &e) == 0);
    CHECK_INT(ds.n, 1);
    CHECK_INT(ds.n_bad, 1);
    if (ds.n_bad == 1) CHECK_STR(ds.bad[0], msg_at(path, 1, 1, "empty item"));
    dataset_free(&ds);
    // Format forced to R1-AQA on an MMAU file: the array is one bad line per line.
    o.format = DATA_FORMAT_R1AQA;
    o.max_bad = 0;
    CHECK(dataset_load(&ds, path, &o, &e) == -1);
    CHECK(strstr(e.msg, "more than max_bad 0") != NULL);
    CHECK_STR(data_format_name(DATA_FORMAT_MMAU), "mmau");
    CHECK_STR(data_format_name(DATA_FORMAT_R1AQA), "r1aqa");
}

static void test_real_mmau(void) {
    const char *path = SHARED_PATH("data/mmau/mmau-test-mini.json");
    Dataset ds;
    Err e;
    if (!path_exists(path)) {
        CHECKF(0, "missing %s", path);
        return;
    }
    DataOptions o = data_options_default();
    o.max_bad = 0;
    CHECKF(dataset_load(&ds, path, &o, &e) == 0, "%s", e.msg);
    CHECK_INT(ds.n, 1000);
    CHECK_INT(ds.n_bad, 0);
    if (ds.n != 1000) return;
    const Question *q = &ds.q[0];
    CHECK_STR(q->id, "3fe64f3d-282c-4bc8-a753-68f8f6c35652");
    CHECK_STR(q->question, "Based on the given audio, identify the source of the speaking voice.");
    CHECK_INT(q->n_choices, 4);
    CHECK_INT(q->answer, 0);
    CHECK_STR(q->answer_text, "Man");
    CHECK_STR(q->choices[3], "Robot");
    CHECK_STR(q->sub_category, "Acoustic Source Inference");
    CHECK_STR(q->category, "Reasoning");
    CHECK_STR(q->task, "sound");
    CHECK_STR(q->difficulty, "medium");
    CHECK_STR(q->dataset, "AudioSet");
    CHECK_STR(q->split, "test-mini");
    CHECK_INT(q->line, 2);
    // audio_id "./test-mini-audios/<id>.wav" resolves beside the JSON file; that clip is shipped.
    CHECK(path_exists(q->audio_path));
    CHECK(strstr(q->audio_path, "data/mmau/test-mini-audios/3fe64f3d-282c-4bc8-a753-68f8f6c35652.wav") != NULL);
    int tasks[3] = {0, 0, 0}, hard = 0, n_choice_5 = 0;
    for (int64_t i = 0; i < ds.n; i++) {
        tasks[0] += strcmp(ds.q[i].task, "sound") == 0;
        tasks[1] += strcmp(ds.q[i].task, "music") == 0;
        tasks[2] += strcmp(ds.q[i].task, "speech") == 0;
        hard += strcmp(ds.q[i].difficulty, "hard") == 0;
        n_choice_5 += ds.q[i].n_choices == 5;
    }
    CHECK(tasks[0] == 333 && tasks[1] == 334 && tasks[2] == 333);
    CHECK_INT(hard, 236);
    CHECK_INT(n_choice_5, 24);
    CHECK_STR(ds.q[50].category, "Reasoning");  // ["Reasoning"] in the file
    // Item 999 repeats a choice; the answer is the first exact match.
    q = &ds.q[999];
    CHECK_INT(q->answer, 3);
    CHECK_STR(q->answer_text, "one");
    // Item 18's choices hold an apostrophe: the evaluation prompt renders it with double quotes.
    char *p = prompt_for_question(&ds.q[18], PROMPT_MMAU);
    CHECK(strstr(p, "options: ['A classroom during a lecture', \"A men's locker room post-exercise\", "
                    "'A formal office meeting', 'A radio news broadcast']. Output the final answer in "
                    "<answer> </answer>.") != NULL);
    free(p);
    dataset_free(&ds);
}

int main(void) {
    RUN(test_jsonl_bad_records);
    RUN(test_limits);
    RUN(test_long_audio_path);
    RUN(test_mmau_bad_items);
    RUN(test_mmau_structure);
    RUN(test_real_mmau);
    RUN(test_audio_dir);  // changes the working directory: last
    return test_summary("test_dataset");
}
