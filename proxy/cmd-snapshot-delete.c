/*
 * cmd-snapshot-delete.c: qbranch-snapshot-delete, in libvirt's four modes.
 *
 * merge (the default): the snapshot leaves the tree and its children and
 * branches move to its parent; the tree file says so first. Per disk, its
 * frozen image is then merged with the one image that still sits on it (a
 * live block-stream or block-commit, whichever moves fewer bytes), removed
 * when nothing sits on it, and kept as an unnamed base when several images
 * do. children / children-only: the snapshot's descendants (and the
 * snapshot) go, with the branches growing from them, and every image only
 * they needed. metadata-only: the tree forgets the snapshot; no file is
 * touched. Images qbranch did not create are never written or removed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "qbranch.h"

static void	delete_exec(struct client *, json_t *, const char *, size_t);
static void	delete_step(struct op *, json_t *);
static void	remove_step(struct op *, json_t *);

const struct cmd_entry cmd_snapshot_delete_entry = {
	.name = "qbranch-snapshot-delete",
	.exec = delete_exec,
};

static const struct arg_spec delete_args[] = {
	{ "name", 's', 1 },
	{ "mode", 's', 0 },
	{ NULL, 0, 0 }
};

enum delete_mode {
	DELETE_MERGE,
	DELETE_CHILDREN,
	DELETE_CHILDREN_ONLY,
	DELETE_METADATA,
};

static void
delete_exec(struct client *c, json_t *args, const char *id, size_t idlen)
{
	static const char *const modes[] = {
		"merge", "children", "children-only", "metadata-only", NULL
	};
	struct op	*op;
	const char	*mode;
	char		*cause;
	int		 m = 0;

	if (cmd_check_args(args, delete_args, &cause) == -1) {
		cmd_refuse(c, cause, id, idlen);
		return;
	}
	if ((mode = json_string_value(json_object_get(args, "mode"))) != NULL) {
		for (m = 0; modes[m] != NULL; m++) {
			if (strcmp(modes[m], mode) == 0)
				break;
		}
		if (modes[m] == NULL) {
			xasprintf(&cause, "Parameter 'mode' does not accept "
			    "value '%s' (merge, children, children-only, "
			    "metadata-only)", mode);
			cmd_refuse(c, cause, id, idlen);
			return;
		}
	}
	if ((op = op_new(c, args, id, idlen, delete_step)) == NULL)
		return;
	op->flag = m;
	op->kind = "delete";
	op->doomed = json_array();
	delete_step(op, NULL);
}

/* Refuses, before anything changes, when an export holds a node to close. */
static int
delete_check_exports(struct op *op, json_t *files)
{
	json_t		*f;
	size_t		 i;
	const char	*path, *node;

	json_array_foreach(files, i, f) {
		path = json_is_string(f) ? json_string_value(f) :
		    json_string_value(json_object_get(f, "file"));
		if ((node = op_node_of(op, path)) != NULL &&
		    op_node_exported(op, node)) {
			op_fail(op, "an export holds %s (%s), which this delete "
			    "must close: remove the export first (see "
			    "query-block-exports)", node, path);
			return -1;
		}
	}
	return 0;
}

/* Whether s is x or a descendant of x. */
static int
in_subtree(const struct snapshot *x, const struct snapshot *s)
{
	return s != NULL && snap_is_ancestor(x, s);
}

/*
 * children / children-only: the images to remove, top-down, and the
 * snapshots and branches to forget. Returns -1 when the attached branch
 * would lose what it runs on.
 */
static int
delete_subtree_plan(struct op *op, struct snapshot *x, int keep_x)
{
	struct snapshot	*s;
	struct branch	*b;
	size_t		 i;
	json_t		*gone = json_array(), *files = json_array();

	b = branch_attached(snap.tree);
	if (in_subtree(x, b->base) && !(keep_x && b->base == x)) {
		op_fail(op, "the attached branch %s grows from %s: switch to "
		    "another branch or revert first", b->name, b->base->name);
		json_decref(gone);
		json_decref(files);
		return -1;
	}
	/* Branches first, then snapshots from the newest: top-down. */
	TAILQ_FOREACH(b, &snap.tree->branches, entry) {
		if (b->base != NULL && in_subtree(x, b->base) &&
		    !(keep_x && b->base == x)) {
			json_array_append_new(gone, json_pack("{s:s}", "branch",
			    b->name));
			for (i = 0; i < b->ndisks; i++)
				json_array_append_new(files, json_pack(
				    "{s:s, s:b}", "file", b->disks[i].file,
				    "owned", b->disks[i].owned));
		}
	}
	TAILQ_FOREACH_REVERSE(s, &snap.tree->snapshots, snap_list, entry) {
		if (!in_subtree(x, s) || (keep_x && s == x))
			continue;
		json_array_append_new(gone, json_pack("{s:s}", "snapshot",
		    s->name));
		for (i = 0; i < s->ndisks; i++)
			json_array_append_new(files, json_pack("{s:s, s:b}",
			    "file", s->disks[i].file, "owned",
			    s->disks[i].owned));
	}
	op->result = json_pack("{s:o, s:o}", "gone", gone, "files", files);
	return 0;
}

/* Forgets what the plan says is gone, keeping images others sit on. */
static void
delete_subtree_forget(struct op *op)
{
	json_t		*g;
	size_t		 i, k;
	struct snapshot	*s;
	struct branch	*b;
	struct snap_file *dep;
	const char	*name;

	json_array_foreach(json_object_get(op->result, "gone"), i, g) {
		if ((name = json_string_value(json_object_get(g, "branch"))) !=
		    NULL) {
			b = branch_find(snap.tree, name);
			branch_remove(snap.tree, b);
			continue;
		}
		s = snap_find(snap.tree, json_string_value(json_object_get(g,
		    "snapshot")));
		for (k = 0; k < s->ndisks; k++) {
			if (snap_tree_dependants(snap.tree, s->disks[k].file,
			    &dep) > 0)
				snap_tree_keep_base(snap.tree, &s->disks[k]);
		}
		snap_remove(snap.tree, s);
	}
}

/*
 * The images a merge-delete of s merges away: its own, and any unnamed
 * base a merge left before (one that failed, or a base shared by several
 * images until the others went). Each is merged when qbranch made it and
 * exactly one image sits on it, as merge_choose() says.
 */
static json_t *
merge_plan(const struct snapshot *s)
{
	json_t	*plan = json_array();
	size_t	 n;

	for (n = 0; n < s->ndisks; n++)
		json_array_append_new(plan, json_pack("{s:s}", "file",
		    s->disks[n].file));
	for (n = 0; n < snap.tree->nbases; n++)
		json_array_append_new(plan, json_pack("{s:s}", "file",
		    snap.tree->bases[n].file));
	return plan;
}

/*
 * How plan entry m merges, now that the merges before it are done: into
 * the one image that sits on it, pulling its data up (block-stream) or
 * pushing that image's data down (block-commit, the branch then runs on
 * the merged image), whichever moves fewer bytes. Commit is only for a
 * branch's overlay, the top of its chain: an image others sit on would
 * need their headers changed too. Returns 0 when m is not to be merged.
 */
static int
merge_choose(json_t *m)
{
	const char		*path = json_string_value(json_object_get(m,
				    "file"));
	const struct snap_file	*f = snap_tree_image(snap.tree, path);
	struct snap_file	*dep;

	if (f == NULL || !f->owned ||
	    snap_tree_dependants(snap.tree, path, &dep) != 1)
		return 0;
	json_object_set_new(m, "into", json_string(dep->file));
	json_object_set_new(m, "method", json_string(
	    branch_of_overlay(snap.tree, dep->file) != NULL &&
	    file_allocated(dep->file) < file_allocated(path) ?
	    "commit" : "stream"));
	return 1;
}

static int
merge_is_commit(json_t *m)
{
	return strcmp(json_string_value(json_object_get(m, "method")),
	    "commit") == 0;
}

/*
 * A merge of file into the one image that sat on it has ended: the tree
 * says so. After a commit the branch runs on file, and into goes; after
 * a stream into sits on what file sat on, and file goes once nothing else
 * sits on it. The file that goes, if qbranch made it, is added to gone.
 */
void
merge_apply(const char *file, const char *into, int commit, json_t *gone)
{
	struct snap_file	*f, *dep, *other;

	f = snap_tree_image(snap.tree, file);
	dep = snap_tree_image(snap.tree, into);
	if (f == NULL || dep == NULL)
		return;
	if (commit) {
		if (dep->owned)
			json_array_append_new(gone, json_string(into));
		snap_file_take(dep, f);
		snap_tree_touch_file(snap.tree, dep);
		snap_tree_drop_base(snap.tree, file);
		return;
	}
	free(dep->backing);
	dep->backing = f->backing ? xstrdup(f->backing) : NULL;
	snap_tree_touch_file(snap.tree, dep);
	if (snap_tree_dependants(snap.tree, file, &other) == 0) {
		if (f->owned)
			json_array_append_new(gone, json_string(file));
		snap_tree_drop_base(snap.tree, file);
	}
}

/*
 * The intent (the files to go once the tree says so), then the tree
 * prepared: stage 2 commits it.
 */
static void
delete_intent(struct op *op)
{
	json_t	*g, *f, *files;
	size_t	 i;

	json_array_foreach(json_object_get(op->result, "files"), i, g) {
		if (json_is_true(json_object_get(g, "owned")))
			json_array_append(op->doomed, json_object_get(g,
			    "file"));
	}
	files = snap_memory_gone(snap.tree, op->mem_files);
	json_array_foreach(files, i, f)
		json_array_append(op->doomed, f);
	json_decref(files);
	op_intent(op, "commit");
	op_tree_prepare(op);
	json_array_clear(op->doomed);
	op->stage = 2;
	op_io_wait(op);
}

/*
 * Removes the files the tree file no longer names, once it says so; the
 * stage runs again after. Returns 0 when there is nothing to remove, and
 * leaves them (belonging to nothing) when the tree could not be written.
 */
static int
unlink_doomed(struct op *op)
{
	if (json_array_size(op->doomed) == 0 || op->commit_error != NULL)
		return 0;
	op_unlink(op, op->doomed);
	json_array_clear(op->doomed);
	op->stage--;
	op_io_wait(op);
	return 1;
}

static void
delete_step(struct op *op, json_t *ret)
{
	struct snapshot		*s;
	struct snap_file	*f, *dep;
	struct branch		*b;
	const char		*name, *path, *into, *gone;
	const char		*dnode, *bnode;
	json_t			*files, *m;
	size_t			 n;

	switch (op->stage++) {
	case 0:
		op_discover(op, DISCOVER_ALL);
		return;
	case 1:
		name = json_string_value(json_object_get(op->args, "name"));
		if ((s = snap_find(snap.tree, name)) == NULL) {
			op_fail(op, "no snapshot named %s", name);
			return;
		}
		op->subject = s;
		if (op->mem_files == NULL)
			op->mem_files = snap_memory_all(snap.tree);
		if (op->name == NULL) {
			op->name = xstrdup(name);
			if (op->flag == DELETE_METADATA) {
				/*
				 * It writes the tree at its end: first the
				 * state directory must take a tree file. This
				 * stage runs again once that is known.
				 */
				op->stage = 1;
				op_tree_preflight(op);
				op_io_wait(op);
				return;
			}
		}
		switch (op->flag) {
		case DELETE_METADATA:
			/* Images others sit on stay known, as unnamed bases. */
			for (n = 0; n < s->ndisks; n++) {
				if (snap_tree_dependants(snap.tree,
				    s->disks[n].file, &dep) > 0)
					snap_tree_keep_base(snap.tree,
					    &s->disks[n]);
			}
			snap_remove(snap.tree, s);
			op->stage = 10;
			delete_step(op, NULL);
			return;	/* nothing in QEMU to close either */
		case DELETE_CHILDREN:
		case DELETE_CHILDREN_ONLY:
			if (delete_subtree_plan(op, s,
			    op->flag == DELETE_CHILDREN_ONLY) == -1 ||
			    delete_check_exports(op, json_object_get(op->result,
			    "files")) == -1)
				return;
			/*
			 * The tree forgets them first, and says so, then
			 * their images go: a crash between leaves files that
			 * belong to nothing, never a tree naming lost files.
			 */
			op_tree_begin(op);
			delete_subtree_forget(op);
			delete_intent(op);
			return;
		}
		files = json_array();
		for (n = 0; n < s->ndisks; n++)
			json_array_append_new(files,
			    json_string(s->disks[n].file));
		n = delete_check_exports(op, files);
		json_decref(files);
		if (n != 0)
			return;
		/*
		 * The snapshot leaves the tree first: its images become
		 * unnamed bases, and the file says so before any data moves.
		 * A merge that fails later leaves a consistent tree behind.
		 */
		op->plan = merge_plan(s);
		op_tree_begin(op);
		for (n = 0; n < s->ndisks; n++)
			snap_tree_keep_base(snap.tree, &s->disks[n]);
		snap_remove(snap.tree, s);
		op->subject = NULL;
		delete_intent(op);
		return;
	case 2:
		op_commit(op);
		op_io_wait(op);
		return;
	case 3:
		if (op->commit_error != NULL) {
			op_fail(op, "%s", op->commit_error);
			return;
		}
		if (op->flag != DELETE_MERGE) {
			op->stage = 9;
			op->step = remove_step;
			remove_step(op, NULL);
			return;
		}
		xasprintf(&op->fail_context, "snapshot %s was deleted, but "
		    "merging its images failed (they stay as unnamed bases): ",
		    op->name);
		op->save_on_fail = 1;
		op->i = 0;
		/* FALLTHROUGH */
	case 4:
		if (unlink_doomed(op))
			return;
		/* The next merge: open the image that sits on it. */
		while (op->i < json_array_size(op->plan) &&
		    !merge_choose(json_array_get(op->plan, op->i)))
			op->i++;
		if (op->i >= json_array_size(op->plan)) {
			op->stage = 9;
			delete_step(op, NULL);
			return;
		}
		m = json_array_get(op->plan, op->i);
		op->stage = 5;
		op_open_image(op, json_string_value(json_object_get(m,
		    "into")));
		return;
	case 5:
		m = json_array_get(op->plan, op->i);
		path = json_string_value(json_object_get(m, "file"));
		into = json_string_value(json_object_get(m, "into"));
		f = snap_tree_image(snap.tree, path);
		dnode = op_node_of(op, into);
		bnode = op_node_of(op, merge_is_commit(m) ? path : f->backing);
		if (dnode == NULL || bnode == NULL) {
			op_fail(op, "cannot merge %s: %s is not open", path,
			    dnode == NULL ? into : f->backing);
			return;
		}
		if (op->intent_merge != m) {
			/* Which merge runs, for a recovery to see it through. */
			json_decref(op->intent_merge);
			op->intent_merge = json_incref(m);
			op_intent(op, "merge");
			op->stage = 5;
			op_io_wait(op);
			return;
		}
		op->progress = "delete";
		log_info("merging %s into %s (%s)", path, into, merge_is_commit(m) ?
		    "block-commit" : "block-stream");
		if (merge_is_commit(m)) {
			/* into is the top of its chain: an active commit. */
			op->job_complete = 1;
			op_job(op, "block-commit", json_pack("{s:s, s:s, s:b}",
			    "device", dnode, "base-node", bnode, "auto-dismiss",
			    0));
		} else
			op_job(op, "block-stream", json_pack("{s:s, s:s, s:b}",
			    "device", dnode, "base-node", bnode, "auto-dismiss",
			    0));
		return;
	case 6:
		m = json_array_get(op->plan, op->i);
		path = json_string_value(json_object_get(m, "file"));
		into = json_string_value(json_object_get(m, "into"));
		f = snap_tree_image(snap.tree, path);
		dep = snap_tree_image(snap.tree, into);
		/* The file that goes: the one whose data moved. */
		gone = merge_is_commit(m) ? into : path;
		op->result = json_pack("{s:[{s:s, s:b}], s:[]}", "files",
		    "file", gone, "owned", merge_is_commit(m) ? dep->owned :
		    f->owned, "gone");
		merge_apply(path, into, merge_is_commit(m), NULL);
		if (!merge_is_commit(m)) {
			if ((b = branch_of_overlay(snap.tree, into)) != NULL &&
			    !b->attached &&
			    (dnode = op_node_of(op, into)) != NULL) {
				/* A detached branch is opened again by a switch. */
				op_call(op, "blockdev-del", json_pack("{s:s}",
				    "node-name", dnode));
				op_forget_node(op, into);
				return;
			}
		}
		/* FALLTHROUGH */
	case 7:
		op->stage = 8;
		op->resume = delete_step;
		op->step = remove_step;
		remove_step(op, NULL);
		return;
	case 8:
		/* That merge is done: the tree file says so before the next. */
		op->stage = 4;
		if (++op->i < json_array_size(op->plan)) {
			op_tree_save(op);
			op_io_wait(op);
			return;
		}
		delete_step(op, NULL);
		return;
	case 9:
		/* Done: unnamed bases nothing sits on any more go too. */
		for (n = 0; n < snap.tree->nbases; n++) {
			f = &snap.tree->bases[n];
			if (snap_tree_dependants(snap.tree, f->file, &dep) == 0) {
				op->result = json_pack("{s:[{s:s, s:b}], s:[]}",
				    "files", "file", f->file, "owned", f->owned,
				    "gone");
				op->stage = 9;
				op->resume = delete_step;
				op->step = remove_step;
				remove_step(op, NULL);
				return;
			}
		}
		/* Images opened for the merges and used by no device close. */
		op->stage = 10;
		op_close_unused(op);
		return;
	case 10:
		op_tree_save(op);
		op_io_wait(op);
		return;
	case 11:
		if (op->commit_error != NULL) {
			op_fail(op, "snapshot %s was deleted, but %s", op->name,
			    op->commit_error);
			return;
		}
		/* The saved VM states of what left the tree go too. */
		files = snap_memory_gone(snap.tree, op->mem_files);
		json_array_extend(op->doomed, files);
		json_decref(files);
		op_unlink(op, op->doomed);
		json_array_clear(op->doomed);
		op_io_wait(op);
		return;
	case 12:
		log_info("snapshot %s deleted", op->name);
		op_done(op, json_object());
		return;
	}
}

/*
 * Removes the images listed in op->result "files", in order: close the node
 * if QEMU has it open (format, then file), then the file, if qbranch made
 * it and nothing in the tree sits on it. Continues with op->resume.
 */
static void
remove_step(struct op *op, json_t *ret)
{
	json_t			*files = json_object_get(op->result, "files");
	struct snap_file	*f, *dep;
	const char		*path, *node;
	char			 fnode[40];
	int			 owned;

	while (json_array_size(files) > 0) {
		path = json_string_value(json_object_get(json_array_get(files,
		    0), "file"));
		owned = json_is_true(json_object_get(json_array_get(files, 0),
		    "owned"));
		f = snap_tree_image(snap.tree, path);
		if (f != NULL && snap_tree_dependants(snap.tree, path, &dep) >
		    0) {
			/* Something still sits on it: keep it. */
			json_array_remove(files, 0);
			continue;
		}
		node = op_node_of(op, path);
		if (node != NULL && strncmp(node, "qb", 2) == 0 &&
		    op->removing == 0) {
			op->removing = 1;
			op_call(op, "blockdev-del", json_pack("{s:s}",
			    "node-name", node));
			return;
		}
		if (op->removing == 1) {
			/* An inline file node went with its parent. */
			op->removing = 2;
			op_file_node_name(path, fnode, sizeof fnode);
			op->tolerate = 1;
			op_call(op, "blockdev-del", json_pack("{s:s}",
			    "node-name", fnode));
			return;
		}
		op->removing = 0;
		if (node != NULL)
			op_forget_node(op, path);
		snap_tree_drop_base(snap.tree, path);
		/*
		 * Only what qbranch made is ever removed, and only once the
		 * tree file no longer names it (unlink_doomed()).
		 */
		if (owned)
			json_array_append_new(op->doomed, json_string(path));
		json_array_remove(files, 0);
	}
	json_decref(op->result);
	op->result = NULL;
	op->step = op->resume != NULL ? op->resume : delete_step;
	op->step(op, NULL);
}
