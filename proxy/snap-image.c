/*
 * snap-image.c: the images an operation makes or opens in QEMU: new qcow2
 * overlays made in QEMU without a fork, frozen images opened read-only and
 * bottom-up so none is opened twice, and the rules for where new images may
 * go and what they are called.
 */
#include <errno.h>
#include <fcntl.h>
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

/*
 * The images the VM runs on now, by the tree: every path under the
 * attached branch's tops, as a set (json object) to look paths up in.
 */
static json_t *
attached_chains(void)
{
	const struct branch	*b = branch_attached(snap.tree);
	const struct snap_file	*f;
	const char		*p;
	json_t			*set = json_object();
	size_t			 i;

	for (i = 0; b != NULL && i < b->ndisks; i++) {
		for (p = b->disks[i].file; p != NULL;
		    p = f != NULL ? f->backing : NULL) {
			json_object_set_new(set, p, json_true());
			f = snap_tree_image(snap.tree, p);
		}
	}
	return set;
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

	if ((f = snap_tree_image(snap.tree, path)) == NULL)
		return SIZE_MAX;
	for (; f != NULL && f->backing != NULL;
	    f = snap_tree_image(snap.tree, f->backing))
		n++;
	return n;
}

/* An image to close, with its height computed once: lookups cost O(tree). */
struct closing {
	json_t	*path;
	size_t	 height;
};

static int
height_cmp(const void *a, const void *b)
{
	size_t	ha = ((const struct closing *)a)->height;
	size_t	hb = ((const struct closing *)b)->height;

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
	struct closing	*v;
	json_t		*n, *inuse;
	const char	*name, *drv, *file;
	size_t		 i, k = 0;

	inuse = attached_chains();
	v = xcalloc(json_array_size(op->nodes) + 1, sizeof *v);
	json_array_foreach(op->nodes, i, n) {
		name = json_string_value(json_object_get(n, "node-name"));
		drv = json_string_value(json_object_get(n, "drv"));
		file = json_string_value(json_object_get(n, "file"));
		if (name == NULL || drv == NULL || file == NULL ||
		    strncmp(name, "qb", 2) != 0 || strcmp(drv, "file") == 0 ||
		    json_object_get(inuse, file) != NULL)
			continue;
		v[k].path = json_string(file);
		v[k++].height = chain_height(file);
	}
	json_decref(inuse);
	qsort(v, k, sizeof *v, height_cmp);
	json_decref(op->closing);
	op->closing = json_array();
	for (i = 0; i < k; i++)
		json_array_append_new(op->closing, v[i].path);
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
 * Overlay creation, for every disk at once. The files are written by the
 * proxy (qcow2-overlay.c) in a thread, each created exclusively (an
 * existing file is never overwritten), then synced with their
 * directories: op->paths[i] goes over op->backings[i], sized as disk
 * op->devs[i]. op_io_wait() waits for them. The files made are removed
 * if the operation fails.
 */
struct overlay_batch {
	size_t		 n;		/* to write */
	size_t		 nheads;	/* built */
	char		**paths;	/* borrowed from the op */
	unsigned char	**heads;
	size_t		*lens;
	uint64_t	*file_lens;
	int		*fds;
};

#define PAGE	4096

/* Writes one overlay into its open file: only the pages that hold data. */
static int
overlay_fill(int fd, const unsigned char *head, size_t len,
    uint64_t file_len)
{
	static const unsigned char zero[PAGE];
	size_t	off = 0, n;
	ssize_t	w;

	while (off < len) {
		n = len - off < PAGE ? len - off : PAGE;
		if (memcmp(head + off, zero, n) == 0) {
			off += n;
			continue;
		}
		if ((w = pwrite(fd, head + off, n, off)) == -1) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		off += w;
	}
	return ftruncate(fd, file_len);
}

/* Syncs the directory of path: the new name must survive a crash too. */
static int
sync_dir_of(const char *path)
{
	char	*dir = xstrdup(path), *slash = strrchr(dir, '/');
	int	 fd, ret = -1;

	slash[slash == dir ? 1 : 0] = '\0';
	if ((fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) != -1) {
		ret = fsync(fd);
		close(fd);
	}
	free(dir);
	return ret;
}

/*
 * All files first, then the syncs: the first sync commits every new file
 * to the journal at once, the others find little left to do.
 */
static char *
overlays_work(struct op_io *io)
{
	struct overlay_batch	*ob = io->data;
	char			*error = NULL;
	size_t			 i, k;

	for (i = 0; i < ob->n; i++)
		ob->fds[i] = -1;
	for (i = 0; i < ob->n && error == NULL; i++) {
		ob->fds[i] = open(ob->paths[i], O_WRONLY | O_CREAT | O_EXCL |
		    O_CLOEXEC, 0644);
		if (ob->fds[i] == -1 && errno == EEXIST)
			xasprintf(&error, "%s exists already: qbranch never "
			    "overwrites a file", ob->paths[i]);
		else if (ob->fds[i] == -1)
			xasprintf(&error, "cannot create %s: %s", ob->paths[i],
			    strerror(errno));
		else if (overlay_fill(ob->fds[i], ob->heads[i], ob->lens[i],
		    ob->file_lens[i]) == -1)
			xasprintf(&error, "cannot write %s: %s", ob->paths[i],
			    strerror(errno));
	}
	for (i = 0; i < ob->n && error == NULL; i++) {
		if (fdatasync(ob->fds[i]) == -1)
			xasprintf(&error, "cannot write %s: %s", ob->paths[i],
			    strerror(errno));
	}
	for (i = 0; i < ob->n && error == NULL; i++) {
		for (k = 0; k < i; k++) {
			if (strcmp(ob->paths[k], ob->paths[i]) == 0)
				break;
		}
		if (k == i && sync_dir_of(ob->paths[i]) == -1)
			xasprintf(&error, "cannot sync the directory of %s: %s",
			    ob->paths[i], strerror(errno));
	}
	for (i = 0; i < ob->n; i++) {
		if (ob->fds[i] == -1)
			continue;
		close(ob->fds[i]);
		if (error != NULL)
			unlink(ob->paths[i]);
	}
	return error;
}

/* The files made: removed again if the operation fails. */
static void
overlays_written(struct op_io *io)
{
	struct overlay_batch	*ob = io->data;
	struct op		*op = io->op;
	size_t			 i;

	if (io->error == NULL) {
		for (i = 0; i < ob->n; i++)
			op_undo_unlink(op, ob->paths[i]);
	} else if (op->io_error == NULL) {
		op->io_error = io->error;
		io->error = NULL;
	}
	for (i = 0; i < ob->nheads; i++)
		free(ob->heads[i]);
	free(ob->heads);
	free(ob->lens);
	free(ob->file_lens);
	free(ob->fds);
	free(ob);
	io->data = NULL;
}

void
op_write_overlays(struct op *op)
{
	struct overlay_batch	*ob;
	struct disk_info	*d;
	size_t			 i;
	char			*cause;

	ob = xcalloc(1, sizeof *ob);
	ob->n = op->npaths;
	ob->paths = op->paths;
	ob->heads = xcalloc(ob->n, sizeof *ob->heads);
	ob->lens = xcalloc(ob->n, sizeof *ob->lens);
	ob->file_lens = xcalloc(ob->n, sizeof *ob->file_lens);
	ob->fds = xcalloc(ob->n, sizeof *ob->fds);
	ob->nheads = ob->n;
	for (i = 0; i < ob->n; i++) {
		d = op_disk(op, op->devs[i]);
		if (qcow2_overlay_build(d->size, op->backings[i],
		    op_backing_format(op, i), &ob->heads[i], &ob->lens[i],
		    &ob->file_lens[i], &cause) == -1) {
			if (op->io_error == NULL)
				xasprintf(&op->io_error, "%s: %s",
				    op->paths[i], cause);
			free(cause);
			ob->n = 0;	/* nothing is written */
			break;
		}
	}
	op_io(op, overlays_work, overlays_written, ob);
}

/*
 * Opens the new overlays in QEMU, all disks together: each a qcow2 node
 * over its file node, with no backing yet, as blockdev-snapshot wants.
 * The step continues with NULL once all are open.
 */
static void	overlays_added(struct op *, json_t *);

void
op_add_overlays(struct op *op)
{
	json_t	*calls;
	char	 node[40], fnode[40];
	size_t	 i;

	calls = json_array();
	for (i = 0; i < op->npaths; i++) {
		op_node_name(op->paths[i], node, sizeof node);
		op_file_node_name(op->paths[i], fnode, sizeof fnode);
		json_array_append_new(calls, json_pack("{s:s, s:{s:s, s:s, "
		    "s:{s:s, s:s, s:s}, s:n}}", "execute", "blockdev-add",
		    "arguments", "driver", "qcow2", "node-name", node, "file",
		    "driver", "file", "node-name", fnode, "filename",
		    op->paths[i], "backing"));
	}
	op_memory_open_calls(op, calls);
	op->resume = op->step;
	op->step = overlays_added;
	op_call_all(op, calls);
}

static void
overlays_added(struct op *op, json_t *replies)
{
	const char	*error;
	char		 node[40];
	size_t		 i;

	for (i = 0; i < op->npaths; i++) {
		if (json_object_get(json_array_get(replies, i), "return") ==
		    NULL)
			continue;
		op_node_name(op->paths[i], node, sizeof node);
		op_undo_call(op, "blockdev-del", json_pack("{s:s}",
		    "node-name", node));
	}
	op_memory_opened(op, replies, op->npaths);
	op->step = op->resume;
	if ((error = op_first_error(replies)) != NULL) {
		op_fail(op, "%s", error);
		return;
	}
	op->step(op, NULL);
}
