/* The benchmark's reader: open + read to EOF + close, as cheaply as C allows.
 *
 * Compiled by benchmarks/reads.py into a temporary directory at run time.
 *
 *   reader loop PATH T0_NS T1_NS T2_NS
 *       Sleep until CLOCK_MONOTONIC T0 (all readers start together), read PATH in a
 *       tight loop until T2.  Reads that start at or after T1 (the end of the warm-up)
 *       are counted and their latency recorded in a histogram.  Prints
 *       "reads N", "errors N", "bytes N", "cpu_us N" (this process's CPU time, all in
 *       the measured window), "reads_all N" (with the warm-up), then
 *       "hist LOWER_NS COUNT" per non-empty bucket.
 *
 *   reader rounds T0_NS ROUNDS PAUSE_MS PATH...
 *       From T0 on, read every PATH once per round, ROUNDS times, pausing between
 *       rounds (the RSS phase: many cgroups reading every file a few times).  Prints
 *       "reads N" and "errors N".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

/* 100 ns buckets up to 10 ms, then 10 us buckets up to 1 s, then one overflow bucket. */
#define FINE_NS 100
#define FINE_BUCKETS 100000
#define COARSE_NS 10000
#define COARSE_BUCKETS 100000

static uint32_t fine[FINE_BUCKETS];
static uint32_t coarse[COARSE_BUCKETS];
static uint64_t overflow;
static char buffer[1 << 16];

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void record(int64_t ns) {
    if (ns < (int64_t)FINE_NS * FINE_BUCKETS)
        fine[ns / FINE_NS]++;
    else if (ns < (int64_t)COARSE_NS * COARSE_BUCKETS)
        coarse[ns / COARSE_NS]++;
    else
        overflow++;
}

/* One open + read to EOF + close; returns bytes read or -1. */
static long read_once(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    long total = 0;
    ssize_t n;
    while ((n = read(fd, buffer, sizeof buffer)) > 0)
        total += n;
    close(fd);
    return n < 0 ? -1 : total;
}

static void sleep_until(int64_t t);

static int64_t cpu_us(void) {
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    return (int64_t)(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) * 1000000 + usage.ru_utime.tv_usec +
           usage.ru_stime.tv_usec;
}

static int run_loop(const char *path, int64_t t0, int64_t t1, int64_t t2) {
    sleep_until(t0);
    uint64_t reads = 0, errors = 0, bytes = 0, reads_all = 0;
    int64_t cpu_start = -1;
    for (;;) {
        int64_t before = now_ns();
        if (before >= t2)
            break;
        if (cpu_start < 0 && before >= t1) {
            cpu_start = cpu_us();
            before = now_ns();
        }
        long got = read_once(path);
        int64_t after = now_ns();
        reads_all++;
        if (before < t1)
            continue;
        if (got < 0) {
            errors++;
            if (errors > 1000 && reads == 0)
                break; /* nothing works: stop early, the harness reports it */
            continue;
        }
        reads++;
        bytes += (uint64_t)got;
        record(after - before);
    }
    int64_t cpu_window = cpu_start < 0 ? 0 : cpu_us() - cpu_start;
    printf("reads %llu\nerrors %llu\nbytes %llu\ncpu_us %lld\nreads_all %llu\n", (unsigned long long)reads,
           (unsigned long long)errors, (unsigned long long)bytes, (long long)cpu_window,
           (unsigned long long)reads_all);
    for (long i = 0; i < FINE_BUCKETS; i++)
        if (fine[i])
            printf("hist %ld %u\n", i * FINE_NS, fine[i]);
    for (long i = 0; i < COARSE_BUCKETS; i++)
        if (coarse[i])
            printf("hist %ld %u\n", i * COARSE_NS, coarse[i]);
    if (overflow)
        printf("hist %lld %llu\n", (long long)COARSE_NS * COARSE_BUCKETS, (unsigned long long)overflow);
    return 0;
}

static void sleep_until(int64_t t) {
    struct timespec ts = {t / 1000000000, t % 1000000000};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

static int run_rounds(int64_t t0, int rounds, int pause_ms, int npaths, char **paths) {
    sleep_until(t0);
    uint64_t reads = 0, errors = 0;
    struct timespec pause = {pause_ms / 1000, (long)(pause_ms % 1000) * 1000000};
    for (int round = 0; round < rounds; round++) {
        if (round)
            nanosleep(&pause, NULL);
        for (int i = 0; i < npaths; i++) {
            if (read_once(paths[i]) < 0)
                errors++;
            else
                reads++;
        }
    }
    printf("reads %llu\nerrors %llu\n", (unsigned long long)reads, (unsigned long long)errors);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 6 && strcmp(argv[1], "loop") == 0)
        return run_loop(argv[2], atoll(argv[3]), atoll(argv[4]), atoll(argv[5]));
    if (argc >= 6 && strcmp(argv[1], "rounds") == 0)
        return run_rounds(atoll(argv[2]), atoi(argv[3]), atoi(argv[4]), argc - 5, argv + 5);
    fprintf(stderr, "usage: reader loop PATH T0_NS T1_NS T2_NS | reader rounds T0_NS N PAUSE_MS PATH...\n");
    return 2;
}
