/*
 * cmd-branch-delete.c: qbranch-branch-delete. A detached branch and the
 * overlays qbranch made for it go; no image depends on a branch's overlay.
 * The attached branch cannot be deleted.
 */
#include <stdlib.h>
#include <unistd.h>

#include "qbranch.h"

static void	branch_delete_exec(struct client *, json_t *, const char *,
		    size_t);
static void	branch_delete_step(struct op *, json_t *);

const struct cmd_entry cmd_branch_delete_entry = {
	.name = "qbranch-branch-delete",
	.exec = branch_delete_exec,
};

static const struct arg_spec branch_delete_args[] = {
	{ "branch", 's', 1 },
	{ NULL, 0, 0 }
};

static void
branch_delete_exec(struct client *c, json_t *args, const char *id,
    size_t idlen)
{
	struct op	*op;
	char		*cause;

	if (cmd_check_args(args, branch_delete_args, &cause) == -1) {
		cmd_refuse(c, cause, id, idlen);
		return;
	}
	if ((op = op_new(c, args, id, idlen, branch_delete_step)) == NULL)
		return;
	branch_delete_step(op, NULL);
}

static void
branch_delete_step(struct op *op, json_t *ret)
{
	struct branch	*b;
	const char	*name;
	size_t		 i;

	switch (op->stage++) {
	case 0:
		op_discover(op, DISCOVER_ALL);
		return;
	case 1:
		name = json_string_value(json_object_get(op->args, "branch"));
		if ((b = branch_find(snap.tree, name)) == NULL) {
			op_fail(op, "no branch named %s", name);
			return;
		}
		if (b->attached) {
			op_fail(op, "branch %s is attached: the VM runs on it; "
			    "switch to another branch or revert first", name);
			return;
		}
		for (i = 0; i < b->ndisks; i++) {
			if (op_node_of(op, b->disks[i].file) != NULL) {
				op_fail(op, "%s is open in QEMU",
				    b->disks[i].file);
				return;
			}
		}
		/* The tree first; the files once the new tree is written. */
		op->result = json_array();
		for (i = 0; i < b->ndisks; i++) {
			if (b->disks[i].owned)
				json_array_append_new(op->result,
				    json_string(b->disks[i].file));
		}
		snap_memory_files(b->memory, op->result);
		op_tree_begin(op);
		branch_remove(snap.tree, b);
		op_tree_prepare(op);
		op_io_wait(op);
		return;
	case 2:
		op_commit(op);
		op_io_wait(op);
		return;
	case 3:
		name = json_string_value(json_object_get(op->args, "branch"));
		if (op->commit_error != NULL) {
			op_fail(op, "%s", op->commit_error);
			return;
		}
		op_unlink(op, op->result);
		op_io_wait(op);
		return;
	case 4:
		name = json_string_value(json_object_get(op->args, "branch"));
		log_info("branch %s deleted", name);
		op_done(op, json_object());
		return;
	}
}
