/*
 * fault.c: named fault points, for the crash tests (tests/qemu/
 * test-crash.py). Every step of every snapshot operation passes one: before
 * each command it sends QEMU, when each reply comes back, before and after
 * each piece of file work. The points of an operation are numbered in the
 * order it reaches them: "create#7" is the seventh point of a create.
 *
 * QBRANCHD_FAULT=KIND#N makes qbranchd kill itself there (SIGKILL);
 * KIND#N:fail makes that step fail instead; KIND#N:stop stops qbranchd
 * (SIGSTOP) there, for a test to kill QEMU meanwhile. QBRANCHD_FAULT=trace
 * logs every point passed. Only debug builds (--enable-debug) read the variable: a
 * release build ignores it, and its points cost one test of a flag.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "qbranch.h"

static int	 fault_on;		/* QBRANCHD_FAULT was read and set */
static int	 fault_trace;
static char	 fault_kind[32];
static unsigned	 fault_at;
static enum { FAULT_KILL_AT, FAULT_FAIL_AT, FAULT_STOP_AT } fault_action;

/* Reads QBRANCHD_FAULT (debug builds only). */
void
fault_init(void)
{
#ifdef QB_DEBUG
	const char	*v = getenv("QBRANCHD_FAULT"), *hash;
	char		*end;
	size_t		 n;

	if (v == NULL || *v == '\0')
		return;
	fault_on = 1;
	if (strcmp(v, "trace") == 0) {
		fault_trace = 1;
		return;
	}
	if ((hash = strchr(v, '#')) == NULL ||
	    (n = hash - v) >= sizeof fault_kind)
		fatalx("QBRANCHD_FAULT=%s: expected KIND#N[:fail|:stop]", v);
	memcpy(fault_kind, v, n);
	fault_kind[n] = '\0';
	fault_at = strtoul(hash + 1, &end, 10);
	if (fault_at == 0)
		fatalx("QBRANCHD_FAULT=%s: expected KIND#N[:fail|:stop]", v);
	if (strcmp(end, ":fail") == 0)
		fault_action = FAULT_FAIL_AT;
	else if (strcmp(end, ":stop") == 0)
		fault_action = FAULT_STOP_AT;
	else if (*end != '\0')
		fatalx("QBRANCHD_FAULT=%s: expected KIND#N[:fail|:stop]", v);
	log_warnx("fault injection armed at %s#%u", fault_kind, fault_at);
#endif
}

/*
 * A step of op is reached (what and detail say which). Returns -1 when
 * the step is to fail (only where it can: before a command); does not
 * return when qbranchd is to die here.
 */
int
fault_point(struct op *op, const char *what, const char *detail,
    int can_fail)
{
	if (!fault_on || op->kind == NULL)
		return 0;
	op->points++;
	if (fault_trace) {
		log_info("fault point %s#%u: %s %s", op->kind, op->points,
		    what, detail != NULL ? detail : "");
		return 0;
	}
	if (op->points != fault_at || strcmp(op->kind, fault_kind) != 0)
		return 0;
	switch (fault_action) {
	case FAULT_FAIL_AT:
		log_warnx("fault point %s#%u (%s %s): %s", op->kind, op->points,
		    what, detail ? detail : "", can_fail ? "failing the step" :
		    "cannot fail here, passed");
		return can_fail ? -1 : 0;
	case FAULT_STOP_AT:
		log_warnx("fault point %s#%u (%s %s): stopping", op->kind,
		    op->points, what, detail ? detail : "");
		raise(SIGSTOP);
		return 0;
	case FAULT_KILL_AT:
		break;
	}
	log_warnx("fault point %s#%u (%s %s): killing qbranchd", op->kind,
	    op->points, what, detail ? detail : "");
	raise(SIGKILL);
	return 0;
}

/* The error reply a failing step gets instead of QEMU's (new reference). */
json_t *
fault_reply(const char *execute)
{
	return json_pack("{s:{s:s, s:s+}}", "error", "class", "GenericError",
	    "desc", "fault injected before ", execute);
}
