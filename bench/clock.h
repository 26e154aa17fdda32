/*
 * Clocks the bench tools share: wall time for latencies, this process's CPU time for the
 * cost of the load generator itself.
 */
#ifndef MTLS_BENCH_CLOCK_H
#define MTLS_BENCH_CLOCK_H

#include <sys/resource.h>
#include <time.h>

/* Monotonic seconds. */
static inline double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* User + system CPU seconds of this process. */
static inline double cpu_seconds(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

#endif
