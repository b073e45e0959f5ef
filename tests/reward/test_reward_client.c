// Tests of the reward-service client against reward-server children on loopback.
// Usage: test_reward_client REWARD_SERVER. Covers: results equal in-process scoring; a server killed and
// restarted mid-batch (the client reconnects, resends only what is unanswered, and every item gets
// exactly its answer); giving up after max_failures (dead server, a server that never answers);
// a request the server rejects; bad options.
#include <pthread.h>
#include <sys/socket.h>

#include "reward/client.h"
#include "server_proc.h"
#include "test.h"

static const char *server_bin;

// Item i of a synthetic batch: answer or think mode, right or wrong, some with an MMAU answer.
typedef struct {
    char completion[96], solution[48], answer[16];
    const char *choices[2];
} ItemText;

static void make_items(ItemText *t, RewardRequest *rq, int n) {
    static const char *const CHOICES[] = {"dog", "cat"};
    for (int i = 0; i < n; i++) {
        int think = i % 4 == 1;
        snprintf(t[i].completion, sizeof t[i].completion, "%s<answer>%s %d</answer>%s",
                 think ? "<think>hmm</think>\n" : "", i % 3 ? "dog" : "cat", i, i % 5 == 0 ? " tail" : "");
        snprintf(t[i].solution, sizeof t[i].solution, "<answer>dog %d</answer>", i);
        snprintf(t[i].answer, sizeof t[i].answer, "dog");
        t[i].choices[0] = CHOICES[0];
        t[i].choices[1] = CHOICES[1];
        rq[i] = (RewardRequest){.completion = t[i].completion, .solution = t[i].solution,
                                .mode = think ? REWARD_MODE_THINK : REWARD_MODE_ANSWER,
                                .answer = i % 7 == 0 ? t[i].answer : NULL, .choices = t[i].choices,
                                .n_choices = 2};
    }
}

// Counts results equal to in-process scoring.
static int count_correct(const RewardRequest *rq, const RewardResult *out, int n) {
    RewardOptions opt;
    reward_options_default(&opt);
    int ok = 0;
    for (int i = 0; i < n; i++) {
        RewardResult want;
        opt.mode = rq[i].mode;
        reward_score(&opt, rq[i].completion, rq[i].solution, &want);
        if (rq[i].answer) {
            char *pred = reward_extract_answer(rq[i].completion);
            want.mmau_correct = mmau_is_correct(pred, rq[i].answer, rq[i].choices, rq[i].n_choices);
            free(pred);
        }
        ok += out[i].accuracy == want.accuracy && out[i].format == want.format && out[i].total == want.total &&
              out[i].mmau_correct == want.mmau_correct;
    }
    return ok;
}

static RewardClientOptions fast_options(int max_failures) {
    RewardClientOptions o;
    reward_client_options_default(&o);
    o.max_failures = max_failures;
    o.backoff_initial_s = 0.01;
    o.backoff_max_s = 0.1;
    o.request_timeout_s = 5;
    o.max_in_flight = 32;
    return o;
}

static void test_client_matches_in_process(void) {
    ServerProc s;
    CHECK(server_start(&s, server_bin, 0, NULL) == 0);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", s.port);
    Err e;
    RewardClientOptions o = fast_options(3);
    RewardClient *c = reward_client_open(addr, &o, &e);
    CHECK(c != NULL);
    int n = 500;
    ItemText *t = mallocCheck((size_t)n * sizeof *t);
    RewardRequest *rq = mallocCheck((size_t)n * sizeof *rq);
    RewardResult *out = mallocCheck((size_t)n * sizeof *out);
    make_items(t, rq, n);
    for (int round = 0; round < 2; round++) {  // the second batch reuses the connection
        memset(out, 0xff, (size_t)n * sizeof *out);
        CHECK(reward_client_score_batch(c, rq, n, out, &e) == 0);
        CHECK_INT(count_correct(rq, out, n), n);
    }
    CHECK(reward_client_score_batch(c, rq, 0, out, &e) == 0);
    CHECK_INT(stats_int(s.port, "items"), 2 * n);  // nothing was sent twice
    CHECK_INT(stats_int(s.port, "connections_total"), 1 + 2);  // the client's one + these stats
    reward_client_close(c);
    CHECK_INT(server_stop(&s, SIGTERM, 5), 0);
    free(t);
    free(rq);
    free(out);
}

typedef struct {
    RewardClient *c;
    const RewardRequest *rq;
    RewardResult *out;
    int n, rc;
    Err e;
} BatchRun;

static void *batch_thread(void *arg) {
    BatchRun *b = arg;
    b->rc = reward_client_score_batch(b->c, b->rq, b->n, b->out, &b->e);
    return NULL;
}

static void test_client_survives_restart(void) {
    ServerProc s;
    CHECK(server_start(&s, server_bin, 0, NULL) == 0);
    int port = s.port;
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    Err e;
    RewardClientOptions o = fast_options(60);
    RewardClient *c = reward_client_open(addr, &o, &e);
    CHECK(c != NULL);
    int n = 50000;
    ItemText *t = mallocCheck((size_t)n * sizeof *t);
    RewardRequest *rq = mallocCheck((size_t)n * sizeof *rq);
    RewardResult *out = mallocCheck((size_t)n * sizeof *out);
    make_items(t, rq, n);
    memset(out, 0xff, (size_t)n * sizeof *out);
    BatchRun b = {.c = c, .rq = rq, .out = out, .n = n};
    pthread_t th;
    pthread_create(&th, NULL, batch_thread, &b);
    // Once the first server has answered part of the batch, freeze it (so the batch cannot finish),
    // kill it, and start a new one on the same port.
    long long first = 0;
    for (int i = 0; i < 1000 && (first = stats_int(port, "items")) < 2000; i++) sp_sleep(0.005);
    kill(s.pid, SIGSTOP);
    CHECKF(first >= 2000 && first < n, "first server answered %lld", first);
    server_stop(&s, SIGKILL, 5);
    sp_sleep(0.1);
    ServerProc s2;
    CHECK(server_start(&s2, server_bin, port, NULL) == 0);
    pthread_join(th, NULL);
    CHECKF(b.rc == 0, "batch failed: %s", b.e.msg);
    CHECK_INT(count_correct(rq, out, n), n);
    long long second = stats_int(port, "items");
    CHECKF(second > 0 && second <= n - first + o.max_in_flight, "second server answered %lld", second);
    fprintf(stderr, "     first server answered %lld, the restarted one %lld, of %d\n", first, second, n);
    reward_client_close(c);
    CHECK_INT(server_stop(&s2, SIGTERM, 5), 0);
    free(t);
    free(rq);
    free(out);
}

static void test_client_gives_up(void) {
    ServerProc s;
    CHECK(server_start(&s, server_bin, 0, NULL) == 0);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", s.port);
    Err e;
    RewardClientOptions o = fast_options(4);
    RewardClient *c = reward_client_open(addr, &o, &e);
    CHECK(c != NULL);
    server_stop(&s, SIGKILL, 5);
    ItemText t[4];
    RewardRequest rq[4];
    RewardResult out[4];
    make_items(t, rq, 4);
    double t0 = sp_now();
    CHECK(reward_client_score_batch(c, rq, 4, out, &e) == -1);
    CHECKF(strstr(e.msg, "4 consecutive failures") && strstr(e.msg, addr), "%s", e.msg);
    CHECK(sp_now() - t0 < 3);
    reward_client_close(c);
    // Opening fails the same way when nothing listens, after max_failures attempts.
    CHECK(reward_client_open(addr, &o, &e) == NULL);
    CHECKF(strstr(e.msg, "not answering") && strstr(e.msg, "(4 attempts)") && strstr(e.msg, "connect") &&
               strstr(e.msg, addr),
           "%s", e.msg);
    // With an open wait (a service still starting) it goes on trying that long, and no longer: the
    // bound is 1.5 s, the test allows 1.5 s of scheduling on top.
    o.open_wait_s = 1.5;
    t0 = sp_now();
    CHECK(reward_client_open(addr, &o, &e) == NULL);
    double waited = sp_now() - t0;
    CHECKF(waited >= 1.5 && waited < 3, "waited %.2f s", waited);
    CHECKF(strstr(e.msg, "not answering after") && strstr(e.msg, addr), "%s", e.msg);
}

static void test_client_refused_by_full_server(void) {
    // The server's only slot is taken: the client is told so on each attempt and gives up with that
    // message.
    ServerProc s;
    const char *args[] = {"--max-connections", "1", NULL};
    CHECK(server_start(&s, server_bin, 0, args) == 0);
    int hog = tcp_connect(s.port, 0);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", s.port);
    Err e;
    RewardClientOptions o = fast_options(3);
    RewardClient *c = reward_client_open(addr, &o, &e);
    CHECK(c != NULL);
    ItemText t[2];
    RewardRequest rq[2];
    RewardResult out[2];
    make_items(t, rq, 2);
    CHECK(reward_client_score_batch(c, rq, 2, out, &e) == -1);
    CHECKF(strstr(e.msg, "3 consecutive failures") && strstr(e.msg, "too many connections (limit 1)"), "%s", e.msg);
    // Once the slot is free, the same client succeeds.
    close(hog);
    sp_sleep(0.1);
    CHECK(reward_client_score_batch(c, rq, 2, out, &e) == 0);
    CHECK_INT(count_correct(rq, out, 2), 2);
    reward_client_close(c);
    CHECK_INT(server_stop(&s, SIGTERM, 5), 0);
}

static void test_client_timeout(void) {
    // A peer that accepts connections (backlog) but never answers: every request times out.
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    CHECK(bind(lfd, (struct sockaddr *)&a, sizeof a) == 0 && listen(lfd, 16) == 0);
    getsockname(lfd, (struct sockaddr *)&a, &len);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", ntohs(a.sin_port));
    Err e;
    RewardClientOptions o = fast_options(3);
    o.request_timeout_s = 0.2;
    RewardClient *c = reward_client_open(addr, &o, &e);
    CHECK(c != NULL);
    ItemText t[2];
    RewardRequest rq[2];
    RewardResult out[2];
    make_items(t, rq, 2);
    double t0 = sp_now();
    CHECK(reward_client_score_batch(c, rq, 2, out, &e) == -1);
    CHECKF(strstr(e.msg, "3 consecutive failures") && strstr(e.msg, "timed out"), "%s", e.msg);
    CHECK(sp_now() - t0 < 3);
    reward_client_close(c);
    close(lfd);
}

static void test_client_rejected_request(void) {
    ServerProc s;
    const char *args[] = {"--max-line-bytes", "300", NULL};
    CHECK(server_start(&s, server_bin, 0, args) == 0);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", s.port);
    Err e;
    RewardClientOptions o = fast_options(3);
    RewardClient *c = reward_client_open(addr, &o, &e);
    ItemText t[3];
    RewardRequest rq[3];
    RewardResult out[3];
    make_items(t, rq, 3);
    char big[1000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = 0;
    rq[1].completion = big;
    CHECK(reward_client_score_batch(c, rq, 3, out, &e) == -1);
    CHECKF(strstr(e.msg, "item 1") && strstr(e.msg, "line exceeds 300 bytes"), "%s", e.msg);
    // Not retried, and the client stays usable.
    rq[1].completion = t[1].completion;
    CHECK(reward_client_score_batch(c, rq, 3, out, &e) == 0);
    CHECK_INT(count_correct(rq, out, 3), 3);
    reward_client_close(c);
    CHECK_INT(server_stop(&s, SIGTERM, 5), 0);
}

static void test_client_bad_options(void) {
    Err e;
    RewardClientOptions o = fast_options(0);
    CHECK(reward_client_open("127.0.0.1:1", &o, &e) == NULL);
    CHECK(strstr(e.msg, "max_failures") != NULL);
    CHECK(reward_client_open("no-port", NULL, &e) == NULL);
    CHECK(strstr(e.msg, "no-port") != NULL);
    o = fast_options(1);
    CHECK(reward_client_open("no-such-host.invalid:80", &o, &e) == NULL);
    CHECKF(strstr(e.msg, "resolving no-such-host.invalid") != NULL, "%s", e.msg);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: test_reward_client REWARD_SERVER\n");
        return 2;
    }
    server_bin = argv[1];
    signal(SIGPIPE, SIG_IGN);
    RUN(test_client_matches_in_process);
    RUN(test_client_survives_restart);
    RUN(test_client_gives_up);
    RUN(test_client_refused_by_full_server);
    RUN(test_client_timeout);
    RUN(test_client_rejected_request);
    RUN(test_client_bad_options);
    return test_summary("reward_client");
}
