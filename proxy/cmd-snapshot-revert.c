/*
 * cmd-snapshot-revert.c: qbranch-snapshot-revert. The attached branch is
 * detached and kept (or discarded when asked); a new branch grows from the
 * snapshot on fresh overlays over its frozen images, live. A snapshot with
 * memory is loaded, and the guest goes on from that moment; else it is
 * reset so that it boots from the snapshot's disks. The branch left can
 * keep its memory (save-memory). Frozen images are never written, so the
 * snapshot's children stay valid.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "qbranch.h"

static void	revert_exec(struct client *, json_t *, const char *, size_t);
static void	revert_step(struct op *, json_t *);

const struct cmd_entry cmd_snapshot_revert_entry = {
	.name = "qbranch-snapshot-revert",
	.exec = revert_exec,
};

static const struct arg_spec revert_args[] = {
	{ "name", 's', 1 },
	{ "branch", 's', 0 },
	{ "state", 's', 0 },
	{ "disks", 'a', 0 },
	{ "discard", 'b', 0 },
	{ "save-memory", 'b', 0 },
	{ NULL, 0, 0 }
};

/*
 * The run state wanted at the end: "state" if given ("current" keeps the
 * one before), else the recorded one. Returns -1 with *cause when it is
 * not a known one.
 */
int
cmd_run_state(json_t *args, int *run, int recorded, int current,
    char **cause)
{
	const char	*state;

	state = json_string_value(json_object_get(args, "state"));
	if (state == NULL)
		*run = recorded;
	else if (strcmp(state, "current") == 0)
		*run = current;
	else if (strcmp(state, "running") == 0)
		*run = 1;
	else if (strcmp(state, "paused") == 0)
		*run = 0;
	else {
		xasprintf(cause, "Parameter 'state' does not accept value "
		    "'%s' (running, paused or current)", state);
		return -1;
	}
	return 0;
}

static void
revert_exec(struct client *c, json_t *args, const char *id, size_t idlen)
{
	struct op	*op;
	const char	*branch;
	char		*cause;
	int		 run;

	if (cmd_check_args(args, revert_args, &cause) == -1 ||
	    cmd_run_state(args, &run, 0, 0, &cause) == -1 ||
	    cmd_check_state_dir(args, "save-memory", &cause) == -1) {
		cmd_refuse(c, cause, id, idlen);
		return;
	}
	branch = json_string_value(json_object_get(args, "branch"));
	if (branch != NULL && !snap_name_is_valid(branch)) {
		client_send_error(c, "GenericError", "invalid branch name: use "
		    "a letter or digit, then letters, digits and . _ + -, at "
		    "most 64 characters", id, idlen);
		return;
	}
	if (json_is_true(json_object_get(args, "save-memory")) &&
	    json_is_true(json_object_get(args, "discard"))) {
		client_send_error(c, "GenericError", "'save-memory' keeps the "
		    "memory of the branch being left and 'discard' removes "
		    "that branch: choose one", id, idlen);
		return;
	}
	if ((op = op_new(c, args, id, idlen, revert_step)) == NULL)
		return;
	op->kind = "revert";
	revert_step(op, NULL);
}

/* The file named for device in "disks", or NULL. */
static const char *
revert_named_file(json_t *args, const char *device)
{
	json_t	*d;
	size_t	 i;

	json_array_foreach(json_object_get(args, "disks"), i, d) {
		if (json_is_string(json_object_get(d, "device")) &&
		    strcmp(json_string_value(json_object_get(d, "device")),
		    device) == 0)
			return json_string_value(json_object_get(d, "file"));
	}
	return NULL;
}

/*
 * Picks the new branch's name and overlay paths: the first N for which
 * <name>-<N> and every <stem>.<name>-<N> are free, unless named.
 */
static int
revert_names(struct op *op, struct snapshot *s, struct branch *b)
{
	const char		*bname, *file;
	const struct snap_file	*f;
	char			*suffix;
	size_t			 i;
	int			 n, free_;

	bname = json_string_value(json_object_get(op->args, "branch"));
	if (bname != NULL && branch_find(snap.tree, bname) != NULL) {
		op_fail(op, "a branch named %s exists already", bname);
		return -1;
	}
	op_paths_alloc(op, b->ndisks);
	for (i = 0; i < b->ndisks; i++) {
		op->devs[i] = xstrdup(b->disks[i].device);
		if ((f = snap_file_find(s->disks, s->ndisks,
		    b->disks[i].device)) == NULL) {
			op_fail(op, "snapshot %s has no image of %s", s->name,
			    b->disks[i].device);
			return -1;
		}
		op->backings[i] = xstrdup(f->file);
	}
	/*
	 * From where the last revert to s stopped, or lower where a branch
	 * removed since freed a name (branch_remove()): a test rig reverting
	 * to one snapshot a thousand times must not look through a thousand
	 * taken names each time.
	 */
	for (n = s->revert_next > 0 ? s->revert_next : 1;; n++) {
		xasprintf(&suffix, "%s-%d", s->name, n);
		free_ = bname != NULL || branch_find(snap.tree, suffix) == NULL;
		for (i = 0; i < b->ndisks; i++) {
			free(op->paths[i]);
			file = revert_named_file(op->args, b->disks[i].device);
			op->paths[i] = file != NULL ? xstrdup(file) :
			    op_image_path(snap.tree, b->disks[i].device,
			    suffix);
			if (file == NULL && (access(op->paths[i], F_OK) == 0 ||
			    snap_tree_image(snap.tree, op->paths[i]) != NULL))
				free_ = 0;
		}
		if (free_)
			break;
		free(suffix);
	}
	if (bname == NULL)
		s->revert_next = n + 1;
	op->name = xstrdup(bname != NULL ? bname : suffix);
	free(suffix);
	for (i = 0; i < b->ndisks; i++) {
		if (revert_named_file(op->args, b->disks[i].device) == NULL)
			continue;
		if (!op_path_is_allowed(op->paths[i], snap.tree)) {
			op_fail(op, "%s is outside the directories qbranch may "
			    "use (--image-dir, --allow-dir, the disks' own)",
			    op->paths[i]);
			return -1;
		}
		if (access(op->paths[i], F_OK) == 0 ||
		    snap_tree_image(snap.tree, op->paths[i]) != NULL) {
			op_fail(op, "%s exists already: qbranch never "
			    "overwrites a file", op->paths[i]);
			return -1;
		}
	}
	return 0;
}

/* The new branch in the model; a discarded one leaves it (files later). */
static struct branch *
revert_apply(struct op *op, struct snapshot *s)
{
	struct branch	*old, *nb;
	size_t		 i;

	old = branch_attached(snap.tree);
	old->attached = 0;
	if (op->mem_save != NULL) {
		snap_memory_free(old->memory);
		old->memory = snap_memory_dup(op->mem_save);
	}
	branch_touch(old);
	nb = branch_add(snap.tree, op->name, s);
	nb->attached = 1;
	nb->ndisks = op->npaths;
	nb->disks = xcalloc(op->npaths, sizeof *nb->disks);
	for (i = 0; i < op->npaths; i++) {
		nb->disks[i].device = xstrdup(op->devs[i]);
		nb->disks[i].file = xstrdup(op->paths[i]);
		nb->disks[i].format = xstrdup("qcow2");
		nb->disks[i].backing = xstrdup(op->backings[i]);
		nb->disks[i].owned = 1;
	}
	op->result = json_array();
	if (json_is_true(json_object_get(op->args, "discard"))) {
		for (i = 0; i < old->ndisks; i++) {
			if (old->disks[i].owned)
				json_array_append_new(op->result,
				    json_string(old->disks[i].file));
		}
		snap_memory_files(old->memory, op->result);
		branch_remove(snap.tree, old);
	}
	return nb;
}

enum {
	REVERT_DISCOVER,
	REVERT_PROBE,
	REVERT_ATTACH,
	REVERT_UNLINK,
	REVERT_DONE,
};

static void
revert_step(struct op *op, json_t *ret)
{
	struct snapshot	*s;
	struct branch	*nb;
	int		 run;

	switch (op->stage) {
	case REVERT_DISCOVER:
		op->stage = REVERT_PROBE;
		op_discover(op, DISCOVER_ALL);
		return;
	case REVERT_PROBE:
		s = snap_find(snap.tree, json_string_value(json_object_get(
		    op->args, "name")));
		if (s == NULL) {
			op_fail(op, "no snapshot named %s", json_string_value(
			    json_object_get(op->args, "name")));
			return;
		}
		op->subject = s;
		op->stage = REVERT_ATTACH;
		op_memory_begin(op, s->memory);
		return;
	case REVERT_ATTACH:
		op->stage = REVERT_UNLINK;
		s = op->subject;
		if (revert_names(op, s, branch_attached(snap.tree)) == -1 ||
		    op_memory_plan(op, s->memory, &run) == -1)
			return;
		/* The tree first (a full state directory stops us here). */
		op_tree_begin(op);
		op->subject2 = revert_apply(op, s);
		op->doomed = json_incref(op->result);
		op_tree_prepare(op);
		op_attach(op, 0, run);
		return;
	case REVERT_UNLINK:
		/* The discarded branch's files go once QEMU has left them. */
		op->stage = REVERT_DONE;
		op_unlink(op, op->result);
		op_io_wait(op);
		return;
	case REVERT_DONE:
		s = op->subject;
		nb = op->subject2;
		if (op->commit_error != NULL) {
			op_fail(op, "reverted to %s, but %s", s->name,
			    op->commit_error);
			return;
		}
		log_info("reverted to %s on branch %s%s", s->name, nb->name,
		    op->mem_load != NULL ? ", its memory loaded" : "");
		op_done(op, branch_json(nb));
		return;
	}
}
