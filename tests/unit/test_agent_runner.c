/*
 * mtls agent's hook runner (cli/agent_runner.c), the process that runs the hook for the
 * sandboxed agent: the hook runs with the runner's own file paths and only the checked values
 * of a request (a compromised agent can neither point MTLS_CERT elsewhere nor smuggle
 * LD_PRELOAD or shell syntax in), a stop ends the running command, and the runner exits when
 * the agent closes the channel.
 */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "agent_runner.h"

static char dir[PATH_MAX];

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "%s/mtls-agent-runner.XXXXXX",
		 getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp");
	return mkdtemp(dir) != NULL ? 0 : -1;
}

static int teardown(void **state)
{
	char cmd[PATH_MAX + 16];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static char *slurp(const char *path)
{
	static char buf[16384];
	FILE *f = fopen(path, "r");
	size_t n;

	if (f == NULL)
		return NULL;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

static bool never(void *arg)
{
	(void)arg;
	return false;
}

static bool stop_now(void *arg)
{
	char c;

	return read(*(int *)arg, &c, 1) == 1;
}

static void test_env_is_the_runners(void **state)
{
	char cmd[PATH_MAX + 64], out[PATH_MAX + 16], err[4096];
	struct agent_hook h = {.exec = cmd, .timeout_ms = 10000};
	const char *fixed[] = {"MTLS_CERT=/srv/cert.pem", "MTLS_KEY=/srv/key.pem"};
	const char *env[] = {"MTLS_CERT=/etc/shadow",
			     "LD_PRELOAD=/tmp/evil.so",
			     "MTLS_SERIAL=0A1B2C",
			     "MTLS_EVENT=renewed,files",
			     "MTLS_OLD_SERIAL=$(touch /tmp/pwned)",
			     "MTLS_NOT_AFTER=2026-12-02T20:54:03Z"};
	struct agent_hook_result res;
	struct agent_runner *r;
	char *text;

	(void)state;
	snprintf(out, sizeof(out), "%s/env", dir);
	snprintf(cmd, sizeof(cmd), "env > '%s'", out);
	r = agent_runner_start(&h, fixed, 2, err, sizeof(err));
	assert_non_null(r);
	assert_int_equal(agent_runner_run(r, env, 6, -1, never, NULL, &res, err, sizeof(err)), 0);
	assert_true(res.ran);
	assert_int_equal(res.exit_status, 0);
	text = slurp(out);
	assert_non_null(text);
	assert_non_null(strstr(text, "MTLS_CERT=/srv/cert.pem\n"));
	assert_non_null(strstr(text, "MTLS_KEY=/srv/key.pem\n"));
	assert_null(strstr(text, "/etc/shadow"));
	assert_null(strstr(text, "LD_PRELOAD"));
	assert_null(strstr(text, "pwned"));
	assert_non_null(strstr(text, "MTLS_SERIAL=0A1B2C\n"));
	assert_non_null(strstr(text, "MTLS_EVENT=renewed,files\n"));
	assert_non_null(strstr(text, "MTLS_NOT_AFTER=2026-12-02T20:54:03Z\n"));
	/* the runner serves the next request too */
	assert_int_equal(agent_runner_run(r, env, 3, -1, never, NULL, &res, err, sizeof(err)), 0);
	agent_runner_free(r);
}

static void test_failure_and_stop(void **state)
{
	char err[4096];
	struct agent_hook h = {.exec = "echo broken; exit 3", .timeout_ms = 10000};
	struct agent_hook_result res;
	struct agent_runner *r;
	int p[2];

	(void)state;
	r = agent_runner_start(&h, NULL, 0, err, sizeof(err));
	assert_non_null(r);
	assert_int_equal(agent_runner_run(r, NULL, 0, -1, never, NULL, &res, err, sizeof(err)), -1);
	assert_int_equal(res.exit_status, 3);
	assert_non_null(strstr(res.output, "broken"));
	assert_non_null(strstr(err, "status 3"));
	agent_runner_free(r);

	/* a stop (the agent's SIGTERM) ends a command that would run for minutes */
	h.exec = "sleep 300";
	r = agent_runner_start(&h, NULL, 0, err, sizeof(err));
	assert_non_null(r);
	assert_int_equal(pipe(p), 0);
	assert_int_equal(write(p[1], "x", 1), 1);
	assert_int_equal(
		agent_runner_run(r, NULL, 0, p[0], stop_now, &p[0], &res, err, sizeof(err)), -1);
	assert_true(res.stopped);
	agent_runner_free(r);
	close(p[0]);
	close(p[1]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_env_is_the_runners),
		cmocka_unit_test(test_failure_and_stop),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
