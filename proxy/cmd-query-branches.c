/*
 * cmd-query-branches.c: qbranch-query-branches, every branch with its base
 * snapshot, whether the VM runs on it, its overlay per disk and the bytes
 * they take.
 */
#include "qbranch.h"

static void	query_branches_exec(struct client *, json_t *, const char *,
		    size_t);

const struct cmd_entry cmd_query_branches_entry = {
	.name = "qbranch-query-branches",
	.exec = query_branches_exec,
};

static void
query_branches_exec(struct client *c, json_t *args, const char *id,
    size_t idlen)
{
	struct branch	*b;
	json_t		*a;

	if (cmd_query_check(c, args, id, idlen) == -1)
		return;
	a = json_array();
	TAILQ_FOREACH(b, &snap.tree->branches, entry)
		json_array_append_new(a, branch_json(b));
	cmd_reply(c, a, id, idlen);
}
