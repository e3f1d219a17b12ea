/*
 * cmd-query-snapshots.c: qbranch-query-snapshots, every snapshot of the
 * tree and the current one. Read-only, answered from the model.
 */
#include <stdlib.h>

#include "qbranch.h"

static void	query_snapshots_exec(struct client *, json_t *, const char *,
		    size_t);

const struct cmd_entry cmd_query_snapshots_entry = {
	.name = "qbranch-query-snapshots",
	.exec = query_snapshots_exec,
};

static const struct arg_spec no_args[] = {
	{ NULL, 0, 0 }
};

/* Answers a query from the model, or refuses when the tree is unusable. */
int
cmd_query_check(struct client *c, json_t *args, const char *id,
    size_t idlen)
{
	char	*cause;

	if (cmd_check_args(args, no_args, &cause) == -1) {
		cmd_refuse(c, cause, id, idlen);
		return -1;
	}
	if (snap.broken != NULL) {
		client_send_error(c, "GenericError", snap.broken, id, idlen);
		return -1;
	}
	return 0;
}

/* Sends a query's result (stolen). */
void
cmd_reply(struct client *c, json_t *ret, const char *id, size_t idlen)
{
	char	*text;

	text = json_dumps(ret, JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
	client_reply_local(c, qmp_return_reply(text, id, idlen));
	free(text);
	json_decref(ret);
}

static void
query_snapshots_exec(struct client *c, json_t *args, const char *id,
    size_t idlen)
{
	struct snapshot	*s, *cur;
	json_t		*a;

	if (cmd_query_check(c, args, id, idlen) == -1)
		return;
	a = json_array();
	TAILQ_FOREACH(s, &snap.tree->snapshots, entry)
		json_array_append_new(a, snap_json(snap.tree, s));
	cur = snap_current(snap.tree);
	cmd_reply(c, json_pack("{s:o, s:o}", "snapshots", a, "current",
	    cur != NULL ? json_string(cur->name) : json_null()), id, idlen);
}
