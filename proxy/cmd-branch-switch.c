/*
 * cmd-branch-switch.c: qbranch-branch-switch. A detached branch's overlays
 * are attached again as they were left (libvirt's --follow); the branch
 * being left is kept, with its memory if asked (save-memory). A branch left
 * with its memory goes on where it was, like a suspended machine, and its
 * saved state is used up; else the guest is reset.
 */
#include <stdlib.h>
#include <string.h>

#include "qbranch.h"

static void	switch_exec(struct client *, json_t *, const char *, size_t);
static void	switch_step(struct op *, json_t *);

const struct cmd_entry cmd_branch_switch_entry = {
	.name = "qbranch-branch-switch",
	.exec = switch_exec,
};

static const struct arg_spec switch_args[] = {
	{ "branch", 's', 1 },
	{ "state", 's', 0 },
	{ "save-memory", 'b', 0 },
	{ NULL, 0, 0 }
};

static void
switch_exec(struct client *c, json_t *args, const char *id, size_t idlen)
{
	struct op	*op;
	char		*cause;
	int		 run;

	if (cmd_check_args(args, switch_args, &cause) == -1 ||
	    cmd_run_state(args, &run, 0, 0, &cause) == -1 ||
	    cmd_check_state_dir(args, "save-memory", &cause) == -1) {
		cmd_refuse(c, cause, id, idlen);
		return;
	}
	if ((op = op_new(c, args, id, idlen, switch_step)) == NULL)
		return;
	op->kind = "switch";
	switch_step(op, NULL);
}

enum {
	SWITCH_DISCOVER,
	SWITCH_PROBE,
	SWITCH_ATTACH,
	SWITCH_UNLINK,
	SWITCH_DONE,
};

static void
switch_step(struct op *op, json_t *ret)
{
	struct branch		*b, *old;
	const struct snap_file	*f;
	const char		*name;
	size_t			 i;
	int			 run;

	switch (op->stage) {
	case SWITCH_DISCOVER:
		op->stage = SWITCH_PROBE;
		op_discover(op, DISCOVER_ALL);
		return;
	case SWITCH_PROBE:
		name = json_string_value(json_object_get(op->args, "branch"));
		if ((b = branch_find(snap.tree, name)) == NULL) {
			op_fail(op, "no branch named %s", name);
			return;
		}
		if (b->attached) {
			op_fail(op, "branch %s is attached already", name);
			return;
		}
		op->subject = b;
		op->stage = SWITCH_ATTACH;
		op_memory_begin(op, b->memory);
		return;
	case SWITCH_ATTACH:
		op->stage = SWITCH_UNLINK;
		b = op->subject;
		old = branch_attached(snap.tree);
		op_paths_alloc(op, old->ndisks);
		for (i = 0; i < old->ndisks; i++) {
			op->devs[i] = xstrdup(old->disks[i].device);
			f = snap_file_find(b->disks, b->ndisks,
			    old->disks[i].device);
			if (f == NULL || f->backing == NULL) {
				op_fail(op, "branch %s has no overlay of %s",
				    b->name, old->disks[i].device);
				return;
			}
			op->paths[i] = xstrdup(f->file);
			op->backings[i] = xstrdup(f->backing);
		}
		if (op_memory_plan(op, b->memory, &run) == -1)
			return;
		/* The tree first (a full state directory stops us here). */
		op_tree_begin(op);
		old->attached = 0;
		b->attached = 1;
		if (op->mem_save != NULL)
			old->memory = snap_memory_dup(op->mem_save);
		/* A saved state is loaded once: the branch goes on from it. */
		snap_memory_free(b->memory);
		b->memory = NULL;
		branch_touch(old);
		branch_touch(b);
		op->doomed = json_array();
		snap_memory_files(op->mem_load, op->doomed);
		op_tree_prepare(op);
		op_attach(op, 1, run);
		return;
	case SWITCH_UNLINK:
		op->stage = SWITCH_DONE;
		op->result = json_array();
		snap_memory_files(op->mem_load, op->result);
		op_unlink(op, op->result);
		op_io_wait(op);
		return;
	case SWITCH_DONE:
		b = op->subject;
		if (op->commit_error != NULL) {
			op_fail(op, "switched to %s, but %s", b->name,
			    op->commit_error);
			return;
		}
		log_info("switched to branch %s%s", b->name, op->mem_load !=
		    NULL ? ", its memory loaded" : "");
		op_done(op, branch_json(b));
		return;
	}
}
