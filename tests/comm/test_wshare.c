// test_wshare.c: the colocated placement's shared weights (comm/wshare.h) on the CPU. The handshake's
// transitions and refusals: nothing read before the first publish, a stale version, a newer one, a read
// while the learner updates (mid-update), an update while a rollout holds the weights, a release of
// something not held. Then the real thing across two processes: the rollout (a forked child) maps the
// learner's segment, reads the published weights in place, is refused a stale read (of version 1 when it
// asks for 2), holds the weights while the learner's update is refused, and cannot write them (read-only
// mapping); once both have it mapped the segment's name is gone (nothing left in /dev/shm).
#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "comm/wshare.h"
#include "test.h"

static void test_protocol(void) {
    WShare s;
    WShareHandle h;
    Err e;
    CHECKF(wshare_create(&s, 64, NULL, "proto", &h, &e) == 0, "%s", e.msg);
    wshare_unlink(&s);
    WShareCtl *ctl = s.ctl;
    int writing, readers;
    CHECK(wshare_version(ctl, &writing, &readers) == -1 && writing && readers == 0);  // loading: mid-update
    // nothing published yet: any read is mid-update
    CHECK(wshare_acquire(ctl, 0, &e) == -1 && strstr(e.msg, "mid-update read refused"));
    CHECK(wshare_publish(ctl, 0, &e) == 0);
    CHECK(wshare_acquire(ctl, 0, &e) == 0 && wshare_acquire(ctl, 0, &e) == 0);  // two readers
    CHECK(wshare_version(ctl, &writing, &readers) == 0 && !writing && readers == 2);
    // the learner must not start an update while the weights are held
    CHECK(wshare_begin_update(ctl, &e) == -1 && strstr(e.msg, "still held by 2 rollout(s)"));
    CHECK(wshare_release(ctl, 0, &e) == 0 && wshare_release(ctl, 0, &e) == 0);
    CHECK(wshare_release(ctl, 0, &e) == -1 && strstr(e.msg, "release of version 0, which is not held"));
    CHECK(wshare_publish(ctl, 1, &e) == -1 && strstr(e.msg, "without an update in progress"));
    // the update: reads refused until version 1 is published
    CHECK(wshare_begin_update(ctl, &e) == 0);
    CHECK(wshare_begin_update(ctl, &e) == -1 && strstr(e.msg, "already in progress"));
    CHECK(wshare_acquire(ctl, 1, &e) == -1 && strstr(e.msg, "version 1 asked for while the learner is updating"));
    CHECK(wshare_acquire(ctl, 0, &e) == -1 && strstr(e.msg, "mid-update read refused"));
    CHECK(wshare_release(ctl, 0, &e) == -1 && strstr(e.msg, "writing"));
    CHECK(wshare_publish(ctl, 1, &e) == 0);
    // a version other than the one asked for: older (stale) or newer than it
    CHECK(wshare_acquire(ctl, 2, &e) == -1 && strstr(e.msg, "version 2 asked for, version 1 is published (stale"));
    CHECK(wshare_acquire(ctl, 0, &e) == -1 && strstr(e.msg, "version 0 asked for, version 1 is published (newer"));
    CHECK(wshare_version(ctl, &writing, &readers) == 1 && !writing && readers == 0);  // refusals changed nothing
    CHECK(wshare_acquire(ctl, 1, &e) == 0 && wshare_release(ctl, 1, &e) == 0);
    CHECK(wshare_publish(ctl, -1, &e) == -1);
    wshare_close(&s);
    // more than /dev/shm holds: refused at creation (not SIGBUS at the first write), nothing left behind
    CHECK(wshare_create(&s, (size_t)1 << 52, NULL, "huge", &h, &e) == -1 && strstr(e.msg, "is it large enough"));
    char name[64];
    snprintf(name, sizeof name, "/aqa-weights-%ld-huge", (long)getpid());  // wshare_create's naming
    errno = 0;
    CHECK(shm_open(name, O_RDONLY, 0) == -1 && errno == ENOENT);
}

// A segment whose learner died before its rollout mapped it (the name is still in /dev/shm) is removed by
// the next wshare_create on the node; one whose owner lives is kept.
static void test_reap_dead(void) {
    pid_t child = fork();
    if (child == 0) _exit(0);
    CHECK(child > 0 && waitpid(child, NULL, 0) == child);  // reaped: the pid no longer exists
    char dead[64], live[64];
    snprintf(dead, sizeof dead, "/aqa-weights-%ld-left", (long)child);  // wshare_create's naming
    snprintf(live, sizeof live, "/aqa-weights-%ld-kept", (long)getpid());
    int fd1 = shm_open(dead, O_CREAT | O_EXCL | O_RDWR, 0600), fd2 = shm_open(live, O_CREAT | O_EXCL | O_RDWR, 0600);
    CHECK(fd1 >= 0 && fd2 >= 0);
    close(fd1);
    close(fd2);
    WShare s;
    WShareHandle h;
    Err e = {0};
    CHECKF(wshare_create(&s, 64, NULL, "reap", &h, &e) == 0, "%s", e.msg);
    wshare_close(&s);
    errno = 0;
    CHECK(shm_open(dead, O_RDONLY, 0) == -1 && errno == ENOENT);
    int fd = shm_open(live, O_RDONLY, 0);
    CHECK(fd >= 0);
    if (fd >= 0) close(fd);
    shm_unlink(live);
    shm_unlink(dead);
}

// One byte over a pipe between the two processes.
static void send_byte(int fd, char c) { CHECK(write(fd, &c, 1) == 1); }
static char recv_byte(int fd) {
    char c = 0;
    CHECK(read(fd, &c, 1) == 1);
    return c;
}

// Child (rollout): 0 when everything it checks holds; the first failed check's number otherwise.
static int rollout_child(const WShareHandle *h, int to_parent, int from_parent) {
    WShare s;
    Err e;
    if (wshare_open(&s, h, &e)) return 10;
    const float *w = s.params;  // [16]
    if (wshare_acquire(s.ctl, 2, &e) != -1 || !strstr(e.msg, "stale")) return 11;  // version 1 is published
    if (wshare_acquire(s.ctl, 1, &e)) return 12;
    for (int i = 0; i < 16; i++)
        if (w[i] != 1.0f + (float)i) return 13;  // version 1's weights, in place
    // Read-only: the kernel refuses to write into it (EFAULT from read(2), where a store would be
    // SIGSEGV; no signal, so the check works under the sanitizers' handlers too).
    int zero = open("/dev/zero", O_RDONLY);
    errno = 0;
    ssize_t got = zero >= 0 ? read(zero, s.params, sizeof(float)) : 0;
    int err = errno;
    if (zero >= 0) close(zero);
    if (got != -1 || err != EFAULT || w[0] != 1.0f) return 14;
    send_byte(to_parent, 'h');  // holding version 1
    if (recv_byte(from_parent) != 'r') return 15;
    if (wshare_release(s.ctl, 1, &e)) return 16;
    send_byte(to_parent, 'd');
    if (recv_byte(from_parent) != 'u') return 17;  // the learner is mid-update now
    if (wshare_acquire(s.ctl, 1, &e) != -1 || !strstr(e.msg, "mid-update")) return 18;
    wshare_close(&s);
    return 0;
}

static void test_two_processes(void) {
    WShare s;
    WShareHandle h;
    Err e;
    CHECKF(wshare_create(&s, 16 * sizeof(float), NULL, "two", &h, &e) == 0, "%s", e.msg);
    float *w = s.params;
    for (int i = 0; i < 16; i++) w[i] = (float)i;  // version 0
    CHECK(wshare_publish(s.ctl, 0, &e) == 0 && wshare_begin_update(s.ctl, &e) == 0);
    for (int i = 0; i < 16; i++) w[i] += 1.0f;  // the update to version 1
    CHECK(wshare_publish(s.ctl, 1, &e) == 0);
    int up[2], down[2];
    CHECK(pipe(up) == 0 && pipe(down) == 0);
    fflush(stdout);
    pid_t child = fork();
    if (child == 0) _exit(rollout_child(&h, up[1], down[0]));
    close(up[1]);  // a child that stops early closes the pipe: the parent's read ends instead of hanging
    close(down[0]);
    CHECK(recv_byte(up[0]) == 'h');
    CHECK(wshare_begin_update(s.ctl, &e) == -1 && strstr(e.msg, "still held by 1 rollout(s)"));
    send_byte(down[1], 'r');
    CHECK(recv_byte(up[0]) == 'd');
    CHECKF(wshare_begin_update(s.ctl, &e) == 0, "%s", e.msg);
    send_byte(down[1], 'u');
    int st;
    CHECK(waitpid(child, &st, 0) == child);
    CHECKF(WIFEXITED(st) && WEXITSTATUS(st) == 0, "rollout child: status %d", st);
    // both mapped it: the name goes, the mapping stays
    wshare_unlink(&s);
    errno = 0;
    CHECK(shm_open(h.name, O_RDONLY, 0) == -1 && errno == ENOENT);
    CHECK(w[3] == 4.0f);
    wshare_close(&s);
    close(up[0]);
    close(down[1]);
}

int main(void) {
    RUN(test_protocol);
    RUN(test_two_processes);
    RUN(test_reap_dead);
    return test_summary("wshare");
}
