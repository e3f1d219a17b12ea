/*
 * snap-image.c: the images an operation makes or opens in QEMU: new qcow2
 * overlays made in QEMU without a fork, frozen images opened read-only and
 * bottom-up so none is opened twice, and the rules for where new images may
 * go and what they are called.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "qbranch.h"

static int
path_in_dir(const char *path, const char *dir)
{
	size_t	len = strlen(dir);

	return strncmp(path, dir, len) == 0 && path[len] == '/' &&
	    strchr(path + len + 1, '/') == NULL;
}

static int
path_near_file(const char *path, const char *file)
{
	char	*dir = xstrdup(file);
	int	 ok;

	*strrchr(dir, '/') = '\0';
	ok = path_in_dir(path, dir);
	free(dir);
	return ok;
}

/*
 * Whether a path a caller names is allowed: directly inside --image-dir, an
 * --allow-dir, or the directory of an image of the tree; no "..".
 */
int
op_path_is_allowed(const char *path, const struct snap_tree *t)
{
	const struct snapshot	*s;
	const struct branch	*b;
	size_t			 i;

	if (path[0] != '/' || strstr(path, "/../") != NULL ||
	    strstr(path, "/./") != NULL || strstr(path, "//") != NULL)
		return 0;
	if (opts.image_dir != NULL && path_in_dir(path, opts.image_dir))
		return 1;
	for (i = 0; i < opts.nallow; i++) {
		if (path_in_dir(path, opts.allow[i]))
			return 1;
	}
	TAILQ_FOREACH(s, &t->snapshots, entry) {
		for (i = 0; i < s->ndisks; i++) {
			if (path_near_file(path, s->disks[i].file))
				return 1;
		}
	}
	TAILQ_FOREACH(b, &t->branches, entry) {
		for (i = 0; i < b->ndisks; i++) {
			if (path_near_file(path, b->disks[i].file))
				return 1;
		}
	}
	return 0;
}

/*
 * The path of a new image derived from the device's original: in
 * --image-dir or beside the original, <stem>.<suffix>.
 */
char *
op_image_path(const struct snap_tree *t, const char *device,
    const char *suffix)
{
	const struct snapshot	*s;
	const struct branch	*b;
	const struct snap_file	*f = NULL;
	const char		*slash;
	char			*stem, *path;

	/* The original: the root snapshot's image, or main's before. */
	TAILQ_FOREACH(s, &t->snapshots, entry) {
		if (s->parent == NULL &&
		    (f = snap_file_find(s->disks, s->ndisks, device)) != NULL &&
		    !f->owned)
			break;
		f = NULL;
	}
	if (f == NULL) {
		TAILQ_FOREACH(b, &t->branches, entry) {
			if ((f = snap_file_find(b->disks, b->ndisks, device)) !=
			    NULL && !f->owned)
				break;
			f = NULL;
		}
	}
	if (f == NULL) {
		/* Originals gone from the tree: any image of the device. */
		b = branch_attached(t);
		f = snap_file_find(b->disks, b->ndisks, device);
	}
	stem = snap_stem(f->file);
	if (opts.image_dir != NULL) {
		slash = strrchr(stem, '/');
		xasprintf(&path, "%s/%s.%s", opts.image_dir, slash + 1, suffix);
	} else
		xasprintf(&path, "%s.%s", stem, suffix);
	free(stem);
	return path;
}

/* Notes a node the operation opened, for op_node_of(). */
static void
op_note_node(struct op *op, const char *node, const char *format,
    const char *path)
{
	json_array_append_new(op->nodes, json_pack("{s:s, s:s, s:s}",
	    "node-name", node, "drv", format, "file", path));
}

/*
 * Opening an image of the tree that is not open yet: read-only, over a file
 * node that may become writable for a block job, bottom-up so that every
 * image sits on the node of the one below and none is opened twice. The
 * step continues with NULL.
 */
static void	open_next(struct op *, json_t *);

void
op_open_image(struct op *op, const char *path)
{
	const struct snap_file	*f;
	const char		*p = path;

	json_decref(op->opening);
	op->opening = json_array();
	/* Collect what is missing, top-down. */
	while (op_node_of(op, p) == NULL) {
		if ((f = snap_tree_image(snap.tree, p)) == NULL ||
		    f->backing == NULL) {
			op_fail(op, "cannot open %s: the image below it is not "
			    "open in QEMU", p);
			return;
		}
		json_array_insert_new(op->opening, 0, json_string(p));
		p = f->backing;
	}
	op->open_resume = op->step;
	op->step = open_next;
	open_next(op, NULL);
}

static void
open_next(struct op *op, json_t *ret)
{
	const struct snap_file	*f;
	const char		*path, *below;
	char			 node[40], fnode[40];

	if (ret != NULL || op->open_pending) {
		/* The previous add is done: note it and undo it on failure. */
		path = json_string_value(json_array_get(op->opening, 0));
		f = snap_tree_image(snap.tree, path);
		op_node_name(path, node, sizeof node);
		op_note_node(op, node, f->format, path);
		op_undo_call(op, "blockdev-del", json_pack("{s:s}", "node-name",
		    node));
		json_array_remove(op->opening, 0);
		op->open_pending = 0;
	}
	if (json_array_size(op->opening) == 0) {
		op->step = op->open_resume;
		op->step(op, NULL);
		return;
	}
	path = json_string_value(json_array_get(op->opening, 0));
	f = snap_tree_image(snap.tree, path);
	below = op_node_of(op, f->backing);
	op_node_name(path, node, sizeof node);
	op_file_node_name(path, fnode, sizeof fnode);
	op->open_pending = 1;
	op_call(op, "blockdev-add", json_pack("{s:s, s:s, s:b, s:{s:s, s:s, "
	    "s:s, s:b, s:b}, s:s}", "driver", f->format, "node-name", node,
	    "read-only", 1, "file", "driver", "file", "node-name", fnode,
	    "filename", path, "read-only", 0, "auto-read-only", 1, "backing",
	    below));
}

/* Whether path lies under a top the VM runs on now, by the tree. */
static int
on_attached_chain(const char *path)
{
	const struct branch	*b = branch_attached(snap.tree);
	const struct snap_file	*f;
	const char		*p;
	size_t			 i;

	for (i = 0; b != NULL && i < b->ndisks; i++) {
		for (p = b->disks[i].file; p != NULL;
		    p = f != NULL ? f->backing : NULL) {
			if (strcmp(p, path) == 0)
				return 1;
			f = snap_tree_image(snap.tree, p);
		}
	}
	return 0;
}

/*
 * How many images of the tree lie below path: closing goes top-down. An
 * image the tree no longer knows is a discarded branch's top.
 */
static size_t
chain_height(const char *path)
{
	const struct snap_file	*f;
	size_t			 n = 0;

	if (snap_tree_image(snap.tree, path) == NULL)
		return SIZE_MAX;
	while ((f = snap_tree_image(snap.tree, path)) != NULL &&
	    f->backing != NULL) {
		path = f->backing;
		n++;
	}
	return n;
}

static int
height_cmp(const void *a, const void *b)
{
	size_t	ha = chain_height(json_string_value(*(json_t *const *)a));
	size_t	hb = chain_height(json_string_value(*(json_t *const *)b));

	return ha < hb ? 1 : ha > hb ? -1 : 0;
}

/*
 * Closes every image qbranch opened that no device runs on any more, so
 * QEMU holds only the chains in use (a node and a file each, per image).
 * Top-down, each node then its file node; a node something else still
 * uses (an export, say) stays. The step continues with NULL.
 */
static void	close_next(struct op *, json_t *);

void
op_close_unused(struct op *op)
{
	json_t		*n, **v;
	const char	*name, *drv, *file;
	size_t		 i, k;

	json_decref(op->closing);
	op->closing = json_array();
	json_array_foreach(op->nodes, i, n) {
		name = json_string_value(json_object_get(n, "node-name"));
		drv = json_string_value(json_object_get(n, "drv"));
		file = json_string_value(json_object_get(n, "file"));
		if (name == NULL || drv == NULL || file == NULL ||
		    strncmp(name, "qb", 2) != 0 || strcmp(drv, "file") == 0 ||
		    on_attached_chain(file))
			continue;
		json_array_append_new(op->closing, json_string(file));
	}
	k = json_array_size(op->closing);
	v = xcalloc(k + 1, sizeof *v);
	for (i = 0; i < k; i++)
		v[i] = json_incref(json_array_get(op->closing, i));
	qsort(v, k, sizeof *v, height_cmp);
	json_array_clear(op->closing);
	for (i = 0; i < k; i++)
		json_array_append_new(op->closing, v[i]);
	free(v);
	op->close_resume = op->step;
	op->step = close_next;
	op->closing_half = 0;
	close_next(op, NULL);
}

static void
close_next(struct op *op, json_t *ret)
{
	const char	*path;
	char		 node[40];

	if (json_array_size(op->closing) == 0) {
		op->step = op->close_resume;
		op->step(op, NULL);
		return;
	}
	path = json_string_value(json_array_get(op->closing, 0));
	if (op->closing_half == 0) {
		op_node_name(path, node, sizeof node);
		op->closing_half = 1;
	} else {
		/* An inline file node went with its parent: may fail. */
		op_file_node_name(path, node, sizeof node);
		op_forget_node(op, path);
		json_array_remove(op->closing, 0);
		op->closing_half = 0;
	}
	op->tolerate = 1;
	op_call(op, "blockdev-del", json_pack("{s:s}", "node-name", node));
}

/*
 * Overlay creation, in QEMU without a fork, for every disk at once: a file
 * (blockdev-create job), its file node, the qcow2 format over the backing
 * (blockdev-create job), and the qcow2 node with no backing yet, as
 * blockdev-snapshot wants. Each step is sent for all disks together and
 * QEMU runs their jobs side by side, so an operation waits three times
 * whatever the number of disks. Each part made is recorded for undo.
 * op->paths[i] goes over op->backings[i], sized as disk op->devs[i]. The
 * step continues with NULL.
 */
static void	batch_call(struct op *, const char *, json_t *);
static void	batch_job(struct op *, const char *, json_t *);
static void	batch_phase(struct op *);

void
op_make_overlays(struct op *op)
{
	size_t	i;

	for (i = 0; i < op->npaths; i++) {
		if (access(op->paths[i], F_OK) == 0) {
			op_fail(op, "%s exists already: qbranch never "
			    "overwrites a file", op->paths[i]);
			return;
		}
	}
	op->batch_resume = op->step;
	op->batch_stage = 0;
	json_decref(op->batch_jobs);
	op->batch_jobs = json_object();
	json_decref(op->batch_done);
	op->batch_done = json_object();
	batch_phase(op);
}

static void
batch_reply_cb(json_t *reply, void *arg)
{
	struct op	*op = arg;
	json_t		*err, *j, *ret;
	const char	*id, *e;
	size_t		 i;

	op->batch_pending--;
	if (reply == NULL && op->batch_error == NULL)
		op->batch_error = xstrdup("QEMU went away during the operation");
	else if ((err = json_object_get(reply, "error")) != NULL &&
	    op->batch_error == NULL)
		op->batch_error = xstrdup(json_string_value(json_object_get(err,
		    "desc")));
	else if (json_is_array(ret = json_object_get(reply, "return"))) {
		/* query-jobs: the errors of the jobs just concluded. */
		json_array_foreach(ret, i, j) {
			id = json_string_value(json_object_get(j, "id"));
			e = json_string_value(json_object_get(j, "error"));
			if (id != NULL && e != NULL && op->batch_error == NULL &&
			    json_object_get(op->batch_done, id) != NULL)
				op->batch_error = xstrdup(e);
		}
	}
	batch_phase(op);
}

static void
batch_call(struct op *op, const char *execute, json_t *args)
{
	op->batch_pending++;
	upstream_call(execute, args, batch_reply_cb, op);
}

/* The start of one job of a batch: it never runs if QEMU refused it. */
struct batch_start {
	struct op	*op;
	char		 id[40];
};

static void
batch_job_cb(json_t *reply, void *arg)
{
	struct batch_start	*bs = arg;
	struct op		*op = bs->op;

	if (reply == NULL || json_object_get(reply, "error") != NULL)
		op_batch_concluded(op, bs->id);
	free(bs);
	batch_reply_cb(reply, op);
}

static void
batch_job(struct op *op, const char *execute, json_t *args)
{
	static unsigned		 serial;
	struct batch_start	*bs;

	bs = xcalloc(1, sizeof *bs);
	bs->op = op;
	snprintf(bs->id, sizeof bs->id, "qbranch-mk-%u", ++serial);
	json_object_set_new(args, "job-id", json_string(bs->id));
	json_object_set_new(op->batch_jobs, bs->id, json_false());
	op->batch_waiting++;
	op->batch_pending++;
	upstream_call(execute, args, batch_job_cb, bs);
}

/* A job of the batch concluded (from snap_op_event). */
int
op_batch_concluded(struct op *op, const char *id)
{
	json_t	*v;

	if (op->batch_jobs == NULL ||
	    (v = json_object_get(op->batch_jobs, id)) == NULL ||
	    json_is_true(v))
		return 0;
	json_object_set_new(op->batch_jobs, id, json_true());
	op->batch_waiting--;
	batch_phase(op);
	return 1;
}

/* Dismisses the batch's concluded jobs, after reading their errors. */
static void
batch_dismiss(struct op *op)
{
	const char	*id;
	json_t		*v;
	void		*tmp;

	json_decref(op->batch_done);
	op->batch_done = op->batch_jobs;
	op->batch_jobs = json_object();
	batch_call(op, "query-jobs", NULL);
	json_object_foreach_safe(op->batch_done, tmp, id, v)
		batch_call(op, "job-dismiss", json_pack("{s:s}", "id", id));
}

static void
batch_phase(struct op *op)
{
	struct disk_info	*d;
	char			 node[40], fnode[40], *error;
	size_t			 i;

	/* Replies may come back at once (QEMU gone): not while sending. */
	if (op->batch_sending || op->batch_pending > 0 ||
	    op->batch_waiting > 0)
		return;
	if (op->batch_error != NULL) {
		if (json_object_size(op->batch_jobs) > 0) {
			/* Dismiss what ran before failing. */
			op->batch_sending = 1;
			batch_dismiss(op);
			op->batch_sending = 0;
			batch_phase(op);
			return;
		}
		error = op->batch_error;
		op->batch_error = NULL;
		op->step = op->batch_resume;
		op_fail(op, "%s", error);
		free(error);
		return;
	}
	op->batch_sending = 1;
	switch (op->batch_stage++) {
	case 0:
		for (i = 0; i < op->npaths; i++) {
			op_undo_unlink(op, op->paths[i]);
			batch_job(op, "blockdev-create", json_pack("{s:{s:s, "
			    "s:s, s:i}}", "options", "driver", "file",
			    "filename", op->paths[i], "size", 0));
		}
		break;
	case 1:
		batch_dismiss(op);
		for (i = 0; i < op->npaths; i++) {
			d = op_disk(op, op->devs[i]);
			op_file_node_name(op->paths[i], fnode, sizeof fnode);
			op_undo_call(op, "blockdev-del", json_pack("{s:s}",
			    "node-name", fnode));
			batch_call(op, "blockdev-add", json_pack("{s:s, s:s, "
			    "s:s}", "driver", "file", "node-name", fnode,
			    "filename", op->paths[i]));
			batch_job(op, "blockdev-create", json_pack("{s:{s:s, "
			    "s:s, s:I, s:s, s:s}}", "options", "driver", "qcow2",
			    "file", fnode, "size", (json_int_t)d->size,
			    "backing-file", op->backings[i], "backing-fmt",
			    op_backing_format(op, i)));
		}
		break;
	case 2:
		batch_dismiss(op);
		for (i = 0; i < op->npaths; i++) {
			op_node_name(op->paths[i], node, sizeof node);
			op_file_node_name(op->paths[i], fnode, sizeof fnode);
			op_undo_call(op, "blockdev-del", json_pack("{s:s}",
			    "node-name", node));
			batch_call(op, "blockdev-add", json_pack("{s:s, s:s, s:s, "
			    "s:n}", "driver", "qcow2", "node-name", node, "file",
			    fnode, "backing"));
		}
		break;
	default:
		op->batch_sending = 0;
		json_decref(op->batch_jobs);
		op->batch_jobs = NULL;
		op->step = op->batch_resume;
		op->step(op, NULL);
		return;
	}
	op->batch_sending = 0;
	batch_phase(op);
}
