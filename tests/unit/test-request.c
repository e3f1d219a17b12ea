/*
 * test-request.c: the shape checks QEMU makes of a command, table-driven,
 * with QEMU's own error texts.
 */
#include <stdlib.h>
#include <string.h>

#include "qbranch.h"
#include "tap.h"

static const struct {
	const char	*in;
	int		 oob;
	const char	*want;		/* name, "!error text", or "#id" check */
} cases[] = {
	{ "{\"execute\":\"query-status\"}", 0, "query-status" },
	{ "{\"execute\":\"stop\",\"arguments\":{},\"id\":1}", 0, "stop" },
	{ "{'execute':'cont'}", 0, "cont" },
	{ "[1]", 0, "!QMP input must be a JSON object" },
	{ "\"execute\"", 0, "!QMP input must be a JSON object" },
	{ "{}", 0, "!QMP input lacks member 'execute'" },
	{ "{\"id\":1}", 0, "!QMP input lacks member 'execute'" },
	{ "{\"execute\":true}", 0,
	  "!QMP input member 'execute' must be a string" },
	{ "{\"execute\":\"x\",\"arguments\":[]}", 0,
	  "!QMP input member 'arguments' must be an object" },
	{ "{\"execute\":\"x\",\"extra\":true}", 0,
	  "!QMP input member 'extra' is unexpected" },
	{ "{\"exec-oob\":\"x\"}", 0,
	  "!QMP input member 'exec-oob' is unexpected" },
	{ "{\"exec-oob\":\"migrate-pause\"}", 1, "migrate-pause" },
	{ "{\"exec-oob\":\"x\",\"execute\":\"y\"}", 1,
	  "!QMP input member 'execute' clashes with 'exec-oob'" },
	{ "{\"control\":{},\"execute\":\"y\"}", 0,
	  "!QMP input member 'control' is unexpected" },
};

int
main(void)
{
	struct qmp_framer	*fr;
	const struct qmp_msg	*m;
	struct qmp_request	 req;
	char			*cause;
	size_t			 i;
	int			 r;

	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		fr = qmp_framer_new(1 << 20);
		qmp_framer_feed(fr, cases[i].in, strlen(cases[i].in), &m);
		if (m == NULL)	/* a bare number waits for its end */
			qmp_framer_feed(fr, " ", 1, &m);
		r = request_parse(m, cases[i].oob, &req, &cause);
		if (cases[i].want[0] == '!')
			ok(r == -1 && strcmp(cause, cases[i].want + 1) == 0,
			    "%s: %s", cases[i].in, r == -1 ? cause : "accepted");
		else
			ok(r == 0 && strcmp(req.name, cases[i].want) == 0 &&
			    req.oob == (strncmp(cases[i].in, "{\"exec-oob", 10) ==
			    0), "%s", cases[i].in);
		free(cause);
		qmp_framer_free(fr);
	}

	fr = qmp_framer_new(1 << 20);
	qmp_framer_feed(fr, "{\"execute\":\"x\",\"bad\":1,\"id\":[5]}", 33, &m);
	r = request_parse(m, 0, &req, &cause);
	ok(r == -1 && req.id != NULL && req.id->val_end - req.id->val_off == 3,
	    "the id is found even when the shape is wrong");
	free(cause);
	qmp_framer_free(fr);
	return tap_done();
}
