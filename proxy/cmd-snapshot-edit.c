/*
 * cmd-snapshot-edit.c: qbranch-snapshot-edit, a new name or description.
 * Children and branches point at the snapshot itself, not at its name, so a
 * rename keeps the tree intact; file names do not change.
 */
#include <stdlib.h>

#include "qbranch.h"

static void	edit_exec(struct client *, json_t *, const char *, size_t);

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
	struct snapshot	*s;
	const char	*name, *newname, *desc;
	char		*cause = NULL, *oldname, *olddesc;

	if (cmd_check_args(args, edit_args, &cause) == -1)
		goto fail;
	if (snap.broken != NULL) {
		cause = xstrdup(snap.broken);
		goto fail;
	}
	if (snap.op != NULL) {
		cause = xstrdup("another snapshot operation is running; try "
		    "again when it has ended");
		goto fail;
	}
	name = json_string_value(json_object_get(args, "name"));
	newname = json_string_value(json_object_get(args, "new-name"));
	desc = json_string_value(json_object_get(args, "description"));
	if ((s = snap_find(snap.tree, name)) == NULL) {
		xasprintf(&cause, "no snapshot named %s", name);
		goto fail;
	}
	if (newname != NULL && !snap_name_is_valid(newname)) {
		cause = xstrdup("invalid snapshot name: use a letter or digit, "
		    "then letters, digits and . _ + -, at most 64 characters");
		goto fail;
	}
	if (newname != NULL && snap_find(snap.tree, newname) != NULL &&
	    snap_find(snap.tree, newname) != s) {
		xasprintf(&cause, "a snapshot named %s exists already",
		    newname);
		goto fail;
	}
	oldname = s->name;
	olddesc = s->description;
	s->name = xstrdup(newname != NULL ? newname : oldname);
	s->description = xstrdup(desc != NULL ? desc : olddesc);
	if (snap_save(&cause) == -1) {
		/* Not saved: the model goes back to what the file says. */
		free(s->name);
		free(s->description);
		s->name = oldname;
		s->description = olddesc;
		goto fail;
	}
	free(oldname);
	free(olddesc);
	cmd_reply(c, snap_json(snap.tree, s), id, idlen);
	return;
fail:
	cmd_refuse(c, cause, id, idlen);
}
