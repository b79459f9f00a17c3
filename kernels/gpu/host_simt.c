/* The SIMT host runner: one thread per work-item, real barriers, LDS poisoned per group.
 * Host only (never part of the GPU build). It runs a kernel of the SIMT build of the sources
 * (onebit_gpu.h with -DONEBIT_SIMT) the way the GPU does, so that what the serial host build
 * cannot see becomes visible: a missing BARRIER() reads poisoned or stale LDS, and under
 * ThreadSanitizer it is a data race.
 *
 * Work-groups run one after another, each on `wg` threads, because the SIMT build's LDS
 * arrays are single statics (one work-group's LDS); a process-wide lock serializes
 * launches for the same reason.
 *
 * Schedules: FREE lets the threads race between pthread barriers (what TSan checks).
 * FORWARD and REVERSE run exactly one work-item at a time, in lane order or reverse lane
 * order, each until its next barrier: deterministic, and any lane that reads what another
 * lane writes in the same phase (or overwrites what another still has to read) sees the
 * wrong value under one of the two orders. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdlib.h>
#include <string.h>

#ifndef ONEBIT_HOST
#define ONEBIT_HOST
#endif
#ifndef ONEBIT_SIMT
#define ONEBIT_SIMT
#endif
#include "onebit_gpu.h"
#include "host_simt.h"

/* Start and end of the SIMT build's LDS arrays (the linker defines these for a section
 * whose name is a C identifier). */
extern char __start_onebit_simt_lds[], __stop_onebit_simt_lds[];

struct launch {
    u32 groups[3], wg, order, skip_barrier;
    onebit_simt_body body;
    void *ctx;
    u32 *trap;
    u32 barriers; /* barriers per group, as position 0 counted them */
    /* FREE: alternate between two barriers. A race checker that keeps one clock per sync
     * object (ThreadSanitizer) would otherwise let a thread that is already past the next
     * barrier order a late thread's reads of this phase, and miss the race. */
    pthread_barrier_t barrier[2];
    sem_t *turn;               /* FORWARD/REVERSE: one per position in the order */
    /* start gate: threads wait here until all exist (or creation failed) */
    pthread_mutex_t gate_mu;
    pthread_cond_t gate_cv;
    int gate; /* 0 closed, 1 go, -1 abort */
};

struct item {
    struct launch *L;
    u32 pos; /* place in the schedule's order */
    u32 episode; /* FREE: group_sync calls so far */
    u32 barriers_seen;
    struct onebit_dispatch d;
};

static pthread_mutex_t launch_lock = PTHREAD_MUTEX_INITIALIZER;

static void wait_sem(sem_t *s) {
    while (sem_wait(s) != 0 && errno == EINTR) {
    }
}

/* Every work-item of the group reaches this point before any goes on. */
static void group_sync(struct item *it) {
    struct launch *L = it->L;
    if (L->order == ONEBIT_SIMT_FREE) {
        pthread_barrier_wait(&L->barrier[it->episode++ % 2]);
    } else {
        /* hand the turn to the next position; the last hands it to position 0, which
         * starts the next round once all have arrived */
        sem_post(&L->turn[(it->pos + 1) % L->wg]);
        wait_sem(&L->turn[it->pos]);
    }
}

void onebit_simt_barrier(const struct onebit_dispatch *d) {
    struct item *it = d->simt;
    if (++it->barriers_seen == it->L->skip_barrier)
        return; /* fault injection: every work-item skips this one barrier */
    group_sync(it);
}

static void *work_item(void *arg) {
    struct item *it = arg;
    struct launch *L = it->L;
    pthread_mutex_lock(&L->gate_mu);
    while (L->gate == 0)
        pthread_cond_wait(&L->gate_cv, &L->gate_mu);
    int go = L->gate == 1;
    pthread_mutex_unlock(&L->gate_mu);
    if (!go)
        return NULL;
    if (L->order != ONEBIT_SIMT_FREE)
        wait_sem(&L->turn[it->pos]);
    for (u32 z = 0; z < L->groups[2]; z++)
        for (u32 y = 0; y < L->groups[1]; y++)
            for (u32 x = 0; x < L->groups[0]; x++) {
                group_sync(it); /* the previous group is done with LDS */
                if (it->pos == 0)
                    memset(__start_onebit_simt_lds, 0xFF,
                           (size_t)(__stop_onebit_simt_lds - __start_onebit_simt_lds));
                if (L->order == ONEBIT_SIMT_FREE)
                    group_sync(it); /* nobody reads LDS before it is poisoned */
                it->d.group_id[0] = x;
                it->d.group_id[1] = y;
                it->d.group_id[2] = z;
                it->barriers_seen = 0;
                L->body(&it->d, L->ctx);
                if (it->pos == 0)
                    L->barriers = it->barriers_seen;
            }
    if (L->order != ONEBIT_SIMT_FREE)
        sem_post(&L->turn[(it->pos + 1) % L->wg]); /* done: pass the turn on */
    return NULL;
}

static void open_gate(struct launch *L, int how) {
    pthread_mutex_lock(&L->gate_mu);
    L->gate = how;
    pthread_cond_broadcast(&L->gate_cv);
    pthread_mutex_unlock(&L->gate_mu);
}

size_t onebit_simt_lds_bytes(void) {
    return (size_t)(__stop_onebit_simt_lds - __start_onebit_simt_lds);
}

int onebit_simt_launch(const u32 groups[3], u32 wg, u32 order, u32 skip_barrier, onebit_simt_body body,
                       void *ctx, u32 *trap, u32 *barriers) {
    if (wg == 0 || wg > 1024 || order > ONEBIT_SIMT_REVERSE)
        return EINVAL;
    struct launch L = {
        .groups = {groups[0], groups[1], groups[2]},
        .wg = wg,
        .order = order,
        .skip_barrier = skip_barrier,
        .body = body,
        .ctx = ctx,
        .trap = trap,
        .gate = 0,
    };
    struct item *items = calloc(wg, sizeof *items);
    pthread_t *threads = calloc(wg, sizeof *threads);
    if (order != ONEBIT_SIMT_FREE)
        L.turn = calloc(wg, sizeof *L.turn);
    int err = 0;
    if (!items || !threads || (order != ONEBIT_SIMT_FREE && !L.turn)) {
        free(items);
        free(threads);
        free(L.turn);
        return ENOMEM;
    }
    pthread_mutex_lock(&launch_lock);
    pthread_mutex_init(&L.gate_mu, NULL);
    pthread_cond_init(&L.gate_cv, NULL);
    if (order == ONEBIT_SIMT_FREE) {
        pthread_barrier_init(&L.barrier[0], NULL, wg);
        pthread_barrier_init(&L.barrier[1], NULL, wg);
    } else
        for (u32 p = 0; p < wg; p++)
            sem_init(&L.turn[p], 0, 0);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    u32 started = 0;
    for (; started < wg; started++) {
        struct item *it = &items[started];
        u32 lane = order == ONEBIT_SIMT_REVERSE ? wg - 1 - started : started;
        it->L = &L;
        it->pos = started;
        it->d.num_groups[0] = groups[0];
        it->d.num_groups[1] = groups[1];
        it->d.num_groups[2] = groups[2];
        it->d.workgroup_size = wg;
        it->d.local_id = lane;
        it->d.trap = trap;
        it->d.simt = it;
        err = pthread_create(&threads[started], &attr, work_item, it);
        if (err)
            break;
    }
    pthread_attr_destroy(&attr);
    if (err) {
        open_gate(&L, -1);
    } else {
        open_gate(&L, 1);
        if (order != ONEBIT_SIMT_FREE)
            sem_post(&L.turn[0]);
    }
    for (u32 i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
    if (order == ONEBIT_SIMT_FREE) {
        pthread_barrier_destroy(&L.barrier[0]);
        pthread_barrier_destroy(&L.barrier[1]);
    } else
        for (u32 p = 0; p < wg; p++)
            sem_destroy(&L.turn[p]);
    pthread_cond_destroy(&L.gate_cv);
    pthread_mutex_destroy(&L.gate_mu);
    pthread_mutex_unlock(&launch_lock);
    free(items);
    free(threads);
    free(L.turn);
    if (barriers)
        *barriers = L.barriers;
    return err;
}
