// comm.h: the MPI layer between roles. One MPMD job (`mpirun -np L learner : -np R rollout`); every
// process calls comm_init with its role, which splits MPI_COMM_WORLD by role and learns where the other
// role's ranks are. Work is routed by global slot (step * questions_per_step + s, data/order.h): slot g
// is produced by rollout g % R and trained by learner g % L (a question may fill several slots over the
// epochs: the slot decides, not the question). Weights go from the learner root to every rollout as a versioned, bucketed
// broadcast. Failure policy: MPI calls return errors (MPI_ERRORS_RETURN) and MPI_CHECK turns one into
// comm_abort, which prints the rank, role and reason, then MPI_Abort's the whole job, so one dead rank
// never leaves the others waiting.
#pragma once
#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

#include "comm/traj.h"
#include "util/check.h"

typedef enum { ROLE_LEARNER = 0, ROLE_ROLLOUT = 1 } Role;

typedef struct {
    Role role;
    int world_rank, world_size;
    int role_rank, role_size;  // within this process's role
    MPI_Comm world;            // private duplicate of MPI_COMM_WORLD (our tags never meet a library's)
    MPI_Comm role_comm;        // the ranks of this role
    int n_learners, n_rollouts;
    int *learner_ranks;        // [n_learners] world rank of learner role rank i
    int *rollout_ranks;        // [n_rollouts] world rank of rollout role rank i
    MPI_Comm bcast_comm;       // learner root (rank 0) + all rollouts; MPI_COMM_NULL on other learners
    size_t bucket_elems;       // weight broadcast bucket (elements), set by comm_init, may be changed
    int node_learners;         // learner ranks on this rank's node
    int node_index;            // this rank's index among the ranks of its role on its node
    int node_id;               // the lowest world rank on this rank's node: equal on one node only
} Comm;

#define COMM_TAG_GROUP 101    // tag of GROUP messages on Comm.world
#define COMM_TAG_WEIGHTS 102  // tag of the colocated pair's weight handshake (comm/weights.c)
#define COMM_DEFAULT_BUCKET_ELEMS ((size_t)1 << 24)  // 64 MiB of fp32

const char *role_name(Role r);

// MPI_Init (unless already initialised, e.g. by a test that needed its rank first), errors returned
// rather than fatal, split by role. Aborts the job if there is no learner.
Comm comm_init(int *argc, char ***argv, Role role);
// Frees the communicators and calls MPI_Finalize.
void comm_finalize(Comm *c);

// Prints "fatal: <role> rank <r> (world <w>): file:line: message" and MPI_Abort's the job.
void comm_abort_at(const char *file, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4), noreturn));
#define comm_abort(...) comm_abort_at(__FILE__, __LINE__, __VA_ARGS__)
// Formats "what: <MPI_Error_string(rc)>" into e; returns -1.
int comm_mpi_err(int rc, const char *what, Err *e);
#define MPI_CHECK(call)                                           \
    do {                                                          \
        int mpi_rc_ = (call);                                     \
        if (mpi_rc_ != MPI_SUCCESS) {                             \
            Err mpi_e_;                                           \
            comm_mpi_err(mpi_rc_, #call, &mpi_e_);                \
            comm_abort_at(__FILE__, __LINE__, "%s", mpi_e_.msg);  \
        }                                                         \
    } while (0)

// This rank's GPU among its node's GPU ranks (one GPU each, in world rank order): the node's learners
// take the first GPUs when learners_on_gpu (model.backend=cuda), the rollouts the ones after them.
int comm_node_gpu_index(const Comm *c, int learners_on_gpu);
// The same for train.placement=colocated: rollout k takes the GPU of learner k (its pair on the node).
int comm_node_pair_gpu_index(const Comm *c);

// Role rank of the learner that trains global slot g, and of the rollout that produces it.
int comm_learner_of(const Comm *c, int64_t slot);
int comm_rollout_of(const Comm *c, int64_t slot);

// Rollout -> learner of g->slot (failed groups too). Invalid groups are refused (Err) before anything is sent.
int comm_send_group(const Comm *c, const TrajGroup *g, Err *e);
// Learner: receives the next group from any rollout into g (traj_group_free it). *src_rollout: the
// sender's rollout role rank (may be NULL). A corrupt message or a slot routed to another learner
// -> -1 with Err naming the sender.
int comm_recv_group(const Comm *c, TrajGroup *g, int *src_rollout, Err *e);

// Broadcast of the flat weights w [n] from the learner root to every rollout, in buckets of
// c->bucket_elems (the root's value is announced). The root sends `version`; each rollout requires
// exactly `version` and n elements: on a mismatch it still drains the broadcast (so the job stays in
// step), leaves w untouched, and returns -1 with Err. Learners other than the root return 0 at once.
int comm_bcast_weights(const Comm *c, float *w, size_t n, int64_t version, Err *e);

// Step control from the learner root to every rollout, before each step's weights: the root sends k,
// the step to produce next, or COMM_STOP when the job ends early (a SIGTERM: the learners checkpointed
// and leave). Rollouts return the root's value, the root returns k, other learners return k at once.
// The root decides, so rollouts follow whatever step the learners resumed from.
#define COMM_STOP ((int64_t)-1)
int64_t comm_next_step(const Comm *c, int64_t k);

// The two halves of every weight broadcast (MPI or NCCL payload): the root announces version, size and
// bucket size on c->bcast_comm (a bad announcement aborts the job); returns whether this rank takes the
// payload (the root always; a rollout when version and size are the ones it expects). A rollout that
// does not must still drain every bucket, then report comm_weights_refused (-1 with Err).
int comm_weights_announce(const Comm *c, size_t n, int64_t version, WeightsInfo *info);
int comm_weights_refused(const WeightsInfo *info, size_t n, int64_t version, Err *e);

// Sums buf [n] over the ranks of this role in place (gradients, statistics).
void comm_role_allreduce_sum_f32(const Comm *c, float *buf, size_t n);
void comm_role_allreduce_sum_f64(const Comm *c, double *buf, size_t n);
