/*
 * cmd-orphans-delete.c: qbranch-orphans-delete, the removal of orphans
 * (snap-orphans.c) a client asks for: files: [PATH...], or every orphan.
 * It runs as an operation, so nothing else changes the tree or QEMU's
 * block graph meanwhile: QEMU's open files are asked, the orphans found
 * again at that moment, and a path given that is not one of them refuses
 * the whole request with nothing removed. The files go in a thread.
 * Returns {"deleted": [PATH...], "freed": BYTES}.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "qbranch.h"

static void	orphans_delete_exec(struct client *, json_t *, const char *,
		    size_t);
static void	orphans_delete_step(struct op *, json_t *);

const struct cmd_entry cmd_orphans_delete_entry = {
	.name = "qbranch-orphans-delete",
	.exec = orphans_delete_exec,
};

static const struct arg_spec orphans_delete_args[] = {
	{ "files", 'a', 0 },
	{ NULL, 0, 0 }
};

static void
orphans_delete_exec(struct client *c, json_t *args, const char *id,
    size_t idlen)
{
	struct op	*op;
	json_t		*v;
	size_t		 i;
	char		*cause;

	if (cmd_check_args(args, orphans_delete_args, &cause) == -1) {
		cmd_refuse(c, cause, id, idlen);
		return;
	}
	json_array_foreach(json_object_get(args, "files"), i, v) {
		if (!json_is_string(v)) {
			xasprintf(&cause, "Invalid parameter type for "
			    "'files[%zu]', expected: string", i);
			cmd_refuse(c, cause, id, idlen);
			return;
		}
	}
	if ((op = op_new(c, args, id, idlen, orphans_delete_step)) == NULL)
		return;
	orphans_delete_step(op, NULL);
}

static char *
orphans_scan_work(struct op_io *io)
{
	orphan_scan_run(io->data);
	return NULL;
}

/* The orphans now: into op->plan. */
static void
orphans_scan_after(struct op_io *io)
{
	io->op->plan = orphan_scan_list(io->data);
	orphan_scan_free(io->data);
	io->data = NULL;
}

/* The directories are read against what QEMU has open (discovered). */
static void
orphans_scan(struct op *op)
{
	json_t	*inuse = json_object();

	orphan_inuse_nodes(inuse, op->nodes);
	op_io(op, orphans_scan_work, orphans_scan_after,
	    orphan_scan_new(snap.tree, inuse));
	json_decref(inuse);
}

/* Why path is not an orphan, as far as can be told here. */
static const char *
orphans_why_not(struct op *op, const char *path)
{
	json_t		*mem, *f;
	size_t		 i;
	const char	*why = NULL;

	if (snap_tree_image(snap.tree, path) != NULL)
		return "the tree uses it";
	if (op_node_of(op, path) != NULL)
		return "QEMU has it open";
	mem = snap_memory_all(snap.tree);
	json_array_foreach(mem, i, f) {
		if (strcmp(json_string_value(f), path) == 0)
			why = "a snapshot or branch holds it";
	}
	json_decref(mem);
	return why != NULL ? why : "it is not a file qbranch made that "
	    "nothing uses, or it is not there";
}

/*
 * The orphans to remove (new reference), each {file, size}: those asked
 * for, every one without "files"; NULL after failing the operation.
 */
static json_t *
orphans_pick(struct op *op)
{
	json_t		*files, *want, *o = NULL, *v, *w;
	const char	*path;
	size_t		 i, k;

	files = json_object_get(op->args, "files");
	want = json_array();
	if (files == NULL) {
		json_array_foreach(op->plan, i, o)
			json_array_append(want, o);
		return want;
	}
	json_array_foreach(files, i, v) {
		path = json_string_value(v);
		json_array_foreach(op->plan, k, o) {
			if (strcmp(json_string_value(json_object_get(o,
			    "file")), path) == 0)
				break;
		}
		if (k == json_array_size(op->plan)) {
			op_fail(op, "%s is not an orphan (%s): nothing was "
			    "removed", path, orphans_why_not(op, path));
			json_decref(want);
			return NULL;
		}
		/* Named twice: removed once. */
		json_array_foreach(want, k, w) {
			if (w == o)
				break;
		}
		if (k == json_array_size(want))
			json_array_append(want, o);
	}
	return want;
}

/* The files in a thread: each removed, or why not. */
struct orphans_removal {
	size_t		 n;
	char		**paths;
	uint64_t	*sizes;
	int		*errs;		/* 0: removed, -1: gone already */
};

static char *
orphans_remove_work(struct op_io *io)
{
	struct orphans_removal	*r = io->data;
	size_t			 i;

	for (i = 0; i < r->n; i++) {
		/* Gone already is as good as removed, but frees nothing. */
		if (unlink(r->paths[i]) == -1)
			r->errs[i] = errno == ENOENT ? -1 : errno;
	}
	return NULL;
}

static void
orphans_remove_after(struct op_io *io)
{
	struct orphans_removal	*r = io->data;
	struct op		*op = io->op;
	json_t			*deleted;
	char			*msg;
	uint64_t		 freed = 0;
	size_t			 i, failed = 0;

	deleted = json_array();
	for (i = 0; i < r->n; i++) {
		if (r->errs[i] == -1)
			r->sizes[i] = 0;
		else if (r->errs[i] != 0) {
			log_warnx("orphan %s: cannot remove it: %s",
			    r->paths[i], strerror(r->errs[i]));
			if (failed++ == 0 && op->io_error == NULL)
				xasprintf(&op->io_error, "cannot remove %s: %s",
				    r->paths[i], strerror(r->errs[i]));
			continue;
		}
		log_info("orphan %s removed (%" PRIu64 " bytes)", r->paths[i],
		    r->sizes[i]);
		json_array_append_new(deleted, json_string(r->paths[i]));
		freed += r->sizes[i];
	}
	if (failed > 0 && op->io_error != NULL) {
		/* The reply is an error: say what was removed all the same. */
		xasprintf(&msg, "%s (%zu of %zu removed)", op->io_error,
		    r->n - failed, r->n);
		free(op->io_error);
		op->io_error = msg;
	}
	json_decref(op->result);
	op->result = json_pack("{s:o, s:I}", "deleted", deleted, "freed",
	    (json_int_t)freed);
	for (i = 0; i < r->n; i++)
		free(r->paths[i]);
	free(r->paths);
	free(r->sizes);
	free(r->errs);
	free(r);
	io->data = NULL;
}

static void
orphans_remove(struct op *op, json_t *want)
{
	struct orphans_removal	*r;
	json_t			*o;
	size_t			 i;

	r = xcalloc(1, sizeof *r);
	r->n = json_array_size(want);
	r->paths = xcalloc(r->n + 1, sizeof *r->paths);
	r->sizes = xcalloc(r->n + 1, sizeof *r->sizes);
	r->errs = xcalloc(r->n + 1, sizeof *r->errs);
	json_array_foreach(want, i, o) {
		r->paths[i] = xstrdup(json_string_value(json_object_get(o,
		    "file")));
		r->sizes[i] = (uint64_t)json_integer_value(json_object_get(o,
		    "size"));
	}
	op_io(op, orphans_remove_work, orphans_remove_after, r);
}

static void
orphans_delete_step(struct op *op, json_t *ret)
{
	json_t	*want, *result;

	switch (op->stage++) {
	case 0:
		op_discover(op, DISCOVER_ALL);
		return;
	case 1:
		orphans_scan(op);
		op_io_wait(op);
		return;
	case 2:
		if ((want = orphans_pick(op)) == NULL)
			return;
		orphans_remove(op, want);
		json_decref(want);
		op_io_wait(op);
		return;
	case 3:
		result = op->result;
		op->result = NULL;
		op_done(op, result);
		return;
	}
}
