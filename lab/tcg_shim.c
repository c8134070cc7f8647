/* colo-compare lab: LD_PRELOAD work-around for a QEMU 7.2 deadlock with COLO under TCG.
 * Built by the lab with the machine's cc into its cache; never used with KVM.
 *
 * At the end of a checkpoint QEMU's COLO thread saves the live state without holding the big
 * QEMU lock (BQL). Under TCG, the dirty-log sync then runs work on the vCPU and waits with
 * qemu_cond_wait(&qemu_work_cond, &qemu_global_mutex) on a mutex the thread does not own; glibc
 * hands the mutex to it on wake-up, and the thread later blocks on a lock it unknowingly holds:
 * STOP, and never RESUME. (The fix belongs in QEMU: take the BQL around that call.)
 *
 * Here a pthread_cond_wait whose caller does not own the mutex takes the mutex first, wakes the
 * other conditions that owners of this mutex sleep on (the vCPU's kick may have been lost while
 * the mutex was free), waits at most 2 ms and returns. Returning early is a spurious wake-up,
 * which QEMU's wait loops already handle by testing their condition again.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define MAX_PAIRS 64

struct pair {
    pthread_cond_t *cond;
    pthread_mutex_t *mutex;
};

static struct pair pairs[MAX_PAIRS];
static int pair_count;
static int (*next_wait)(pthread_cond_t *, pthread_mutex_t *);

/* Record (cond, mutex); the caller owns mutex, so pairs of one mutex are added one at a time. */
static void note_pair(pthread_cond_t *cond, pthread_mutex_t *mutex)
{
    int n = __atomic_load_n(&pair_count, __ATOMIC_ACQUIRE);
    for (int i = 0; i < n; i++) {
        if (pairs[i].cond == cond && pairs[i].mutex == mutex) {
            return;
        }
    }
    if (n < MAX_PAIRS) {
        pairs[n].cond = cond;
        pairs[n].mutex = mutex;
        __atomic_store_n(&pair_count, n + 1, __ATOMIC_RELEASE);
    }
}

static int owned_by_me(pthread_mutex_t *mutex)
{
    return mutex->__data.__owner == (int)syscall(SYS_gettid);
}

int pthread_cond_wait(pthread_cond_t *cond, pthread_mutex_t *mutex)
{
    if (next_wait == NULL) {
        next_wait = dlvsym(RTLD_NEXT, "pthread_cond_wait", "GLIBC_2.3.2");
    }
    if (owned_by_me(mutex)) {
        note_pair(cond, mutex);
        return next_wait(cond, mutex);
    }
    pthread_mutex_lock(mutex);
    int n = __atomic_load_n(&pair_count, __ATOMIC_ACQUIRE);
    for (int i = 0; i < n; i++) {
        if (pairs[i].mutex == mutex && pairs[i].cond != cond) {
            pthread_cond_broadcast(pairs[i].cond);
        }
    }
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_nsec += 2 * 1000 * 1000;
    if (until.tv_nsec >= 1000 * 1000 * 1000) {
        until.tv_sec += 1;
        until.tv_nsec -= 1000 * 1000 * 1000;
    }
    pthread_cond_clockwait(cond, mutex, CLOCK_MONOTONIC, &until);
    pthread_mutex_unlock(mutex);
    return 0;
}
