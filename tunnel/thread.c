#include <errno.h>
#include <signal.h>
#include <stdlib.h>

#include "log.h"
#include "thread.h"

struct start {
	void *(*run)(void *);
	void *arg;
	const char *tag;
};

static void *trampoline(void *p)
{
	struct start s = *(struct start *)p;

	free(p);
	log_tag_set(s.tag);
	return s.run(s.arg);
}

int thread_start(pthread_t *thread, void *(*run)(void *), void *arg)
{
	struct start *s = malloc(sizeof(*s));
	sigset_t all, old;
	int rc;

	if (s == NULL)
		return ENOMEM;
	*s = (struct start){.run = run, .arg = arg, .tag = log_tag()};
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	rc = pthread_create(thread, NULL, trampoline, s);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0)
		free(s);
	return rc;
}
