// Tests of common/data/prompt: Python repr/str(list) rules, the three prompt styles, the solution
// string. Expected strings are written out by hand from Python 3's unicode_repr rules.
#include "data/prompt.h"
#include "test.h"

static void check_repr(const char *in, const char *want) {
    char *got = prompt_py_repr(in);
    CHECK_STR(got, want);
    free(got);
}

static void test_repr_quotes(void) {
    check_repr("abc", "'abc'");
    check_repr("", "''");
    check_repr("It's", "\"It's\"");                 // ' and no " -> double quotes, nothing escaped
    check_repr("say \"hi\"", "'say \"hi\"'");         // " only -> single quotes
    check_repr("it's \"x\"", "'it\\'s \"x\"'");       // both -> single quotes, ' escaped
    check_repr("'", "\"'\"");
    check_repr("\"", "'\"'");
    check_repr("'\"", "'\\'\"'");
}

static void test_repr_escapes(void) {
    check_repr("a\\b", "'a\\\\b'");                   // backslash doubled
    check_repr("a'b\\c", "\"a'b\\\\c\"");             // double-quoted, backslash still doubled
    check_repr("a\nb\tc\rd", "'a\\nb\\tc\\rd'");
    check_repr("\x01\x1f\x7f", "'\\x01\\x1f\\x7f'");
    check_repr("\x1b[0m", "'\\x1b[0m'");
    check_repr("~ !", "'~ !'");                       // printable ASCII incl. space kept
}

static void test_repr_unicode(void) {
    check_repr("caf\xc3\xa9", "'caf\xc3\xa9'");                         // é kept as UTF-8
    check_repr("\xe4\xb8\xad\xe6\x96\x87", "'\xe4\xb8\xad\xe6\x96\x87'"); // 中文
    check_repr("\xf0\x9f\x98\x80", "'\xf0\x9f\x98\x80'");               // U+1F600 emoji (So)
    check_repr("e\xcc\x81", "'e\xcc\x81'");                             // combining acute (Mn) kept
    check_repr("\xc2\x85\xc2\xa0\xc2\xad", "'\\x85\\xa0\\xad'");         // C1 control, NBSP (Zs), soft hyphen (Cf)
    check_repr("\xe2\x80\x8b\xe2\x80\xa8\xe3\x80\x80\xee\x80\x80",
               "'\\u200b\\u2028\\u3000\\ue000'");                       // ZWSP, LSEP, ideographic space, private use
    check_repr("\xf3\xb0\x80\x80", "'\\U000f0000'");                    // plane-15 private use
    check_repr("\xcd\xb8", "'\\u0378'");                                // unassigned (Cn)
    check_repr("a\xffz", "'a\\xffz'");                                  // invalid UTF-8 byte (documented)
}

static void test_list(void) {
    const char *avqa[] = {"motorboat", "Yacht consignment", "Sailboat set sail", "Consignment car"};
    char *s = prompt_py_list(avqa, 4);
    CHECK_STR(s, "['motorboat', 'Yacht consignment', 'Sailboat set sail', 'Consignment car']");
    free(s);
    const char *mixed[] = {"A men's room", "plain", "say \"x\""};
    s = prompt_py_list(mixed, 3);
    CHECK_STR(s, "[\"A men's room\", 'plain', 'say \"x\"']");
    free(s);
    s = prompt_py_list(mixed, 0);
    CHECK_STR(s, "[]");
    free(s);
}

static void test_replace(void) {
    char *s = prompt_replace_all("Video video videovideo vvideoo", "video", "audio");
    CHECK_STR(s, "Video audio audioaudio vaudioo");  // case-sensitive, all, non-overlapping
    free(s);
    s = prompt_replace_all("no match", "video", "audio");
    CHECK_STR(s, "no match");
    free(s);
    s = prompt_replace_all("", "video", "audio");
    CHECK_STR(s, "");
    free(s);
}

static void test_prompts(void) {
    const char *ch[] = {"motorboat", "Yacht consignment", "Sailboat set sail", "Consignment car"};
    const char *q = "What happened in the video?";
    char *s = prompt_text(PROMPT_R1AQA, q, ch, 4);
    CHECK_STR(s, "What happened in the audio? Please choose the answer from the following options: "
                 "['motorboat', 'Yacht consignment', 'Sailboat set sail', 'Consignment car']. "
                 "Output the final answer in <answer> </answer>.");
    free(s);
    s = prompt_text(PROMPT_R1AQA_THINK, q, ch, 4);
    CHECK_STR(s, "What happened in the audio? Please choose the answer from the following options: "
                 "['motorboat', 'Yacht consignment', 'Sailboat set sail', 'Consignment car']. "
                 "Output the thinking process in <think> </think> and final answer in <answer> </answer>.");
    free(s);
    s = prompt_text(PROMPT_MMAU, q, ch, 4);  // evaluation: question kept as is
    CHECK_STR(s, "What happened in the video? Please choose the answer from the following options: "
                 "['motorboat', 'Yacht consignment', 'Sailboat set sail', 'Consignment car']. "
                 "Output the final answer in <answer> </answer>.");
    free(s);

    char *choices[] = {"It's", "b"};
    Question qq = {.question = "Q?", .choices = choices, .n_choices = 2, .answer = 0, .answer_text = "It's"};
    s = prompt_for_question(&qq, PROMPT_R1AQA);
    CHECK_STR(s, "Q? Please choose the answer from the following options: [\"It's\", 'b']. "
                 "Output the final answer in <answer> </answer>.");
    free(s);
    s = prompt_solution(&qq);
    CHECK_STR(s, "<answer>It's</answer>");
    free(s);
}

int main(void) {
    RUN(test_repr_quotes);
    RUN(test_repr_escapes);
    RUN(test_repr_unicode);
    RUN(test_list);
    RUN(test_replace);
    RUN(test_prompts);
    return test_summary("test_prompt");
}
