/*
 * cmd-snapshot-edit.c: qbranch-snapshot-edit, a new name or description.
 * Children and branches point at the snapshot itself, not at its name, so a
 * rename keeps the tree intact; file names do not change.
 */
#include <stdlib.h>

#include "qbranch.h"

static void	edit_exec(struct client *, json_t *, const char *, size_t);
static void	edit_step(struct op *, json_t *);

const struct cmd_entry cmd_snapshot_edit_entry = {
	.name = "qbranch-snapshot-edit",
	.exec = edit_exec,
};

static const struct arg_spec edit_args[] = {
	{ "name", 's', 1 },
	{ "new-name", 's', 0 },
	{ "description", 's', 0 },
	{ NULL, 0, 0 }
};

static void
edit_exec(struct client *c, json_t *args, const char *id, size_t idlen)
{
	struct op	*op;
	char		*cause = NULL;

	if (cmd_check_args(args, edit_args, &cause) == -1) {
		cmd_refuse(c, cause, id, idlen);
		return;
	}
	if ((op = op_new(c, args, id, idlen, edit_step)) == NULL)
		return;
	edit_step(op, NULL);
}

/* No QEMU in it: the model changes and the tree file is written. */
static void
edit_step(struct op *op, json_t *ret)
{
	struct snapshot	*s;
	const char	*name, *newname, *desc;

	name = json_string_value(json_object_get(op->args, "name"));
	switch (op->stage++) {
	case 0:
		newname = json_string_value(json_object_get(op->args,
		    "new-name"));
		desc = json_string_value(json_object_get(op->args,
		    "description"));
		if ((s = snap_find(snap.tree, name)) == NULL) {
			op_fail(op, "no snapshot named %s", name);
			return;
		}
		if (newname != NULL && !snap_name_is_valid(newname)) {
			op_fail(op, "invalid snapshot name: use a letter or "
			    "digit, then letters, digits and . _ + -, at most "
			    "64 characters");
			return;
		}
		if (newname != NULL && snap_find(snap.tree, newname) != NULL &&
		    snap_find(snap.tree, newname) != s) {
			op_fail(op, "a snapshot named %s exists already",
			    newname);
			return;
		}
		op_tree_begin(op);
		if (newname != NULL) {
			free(s->name);
			s->name = xstrdup(newname);
			s->revert_next = 0;	/* new names, from 1 */
			snap_touch_name(snap.tree, s);
		}
		if (desc != NULL) {
			free(s->description);
			s->description = xstrdup(desc);
			snap_touch(s);
		}
		op->subject = s;
		op_tree_prepare(op);
		op_io_wait(op);
		return;
	case 1:
		op_commit(op);
		op_io_wait(op);
		return;
	case 2:
		if (op->commit_error != NULL) {
			op_fail(op, "%s", op->commit_error);
			return;
		}
		op_done(op, snap_json(snap.tree, op->subject));
		return;
	}
}
