/*
 * recover.c: an operation qbranchd did not finish (it was killed, or QEMU
 * went away during it) is finished or taken back once QEMU is connected,
 * before any client is greeted, from its intent (intent.c) and what QEMU
 * and the disk show:
 *
 * - qbranch's block jobs that QEMU still runs are adopted: waited for,
 *   completed or cancelled as the operation would have, and dismissed;
 * - if the tree file holds the operation's change, or QEMU runs on the
 *   images the operation was moving it to, it rolls forward: the tree
 *   takes the change (from the journal record the intent holds), a move
 *   is finished (cut loose, loaded or reset, run), a merge that ended is
 *   written down, and the files the operation was removing go;
 * - else it rolls back: the images it opened close, the files it made go,
 *   and the VM runs again if it stopped it.
 *
 * Either way the disks are then checked against the tree as on every
 * connect (snap-discover.c). Only files the intent names are removed, and
 * only while nothing in the tree or in QEMU uses them; anything else left
 * is listed by qbranch-query-orphans.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "qbranch.h"

enum {
	RECOVER_JOBS,
	RECOVER_ADOPT,
	RECOVER_DISCOVER,
	RECOVER_DECIDE,
	RECOVER_SAVED,
	RECOVER_OPEN,
	RECOVER_MOVED,
	RECOVER_CLOSE,
	RECOVER_LOOK,
	RECOVER_CLOSED,
	RECOVER_CONT,
	RECOVER_CLEAR,
	RECOVER_DONE,
};

static void	recover_step(struct op *, json_t *);

static json_t *
intent_get(const char *key)
{
	return json_object_get(snap.intent, key);
}

/* Whether every device of map ({device: file}) runs on its file. */
static int
runs_on(struct op *op, json_t *map)
{
	struct disk_info	*d;
	const char		*dev;
	json_t			*file;

	if (json_object_size(map) == 0)
		return 0;
	json_object_foreach(map, dev, file) {
		if ((d = op_disk(op, dev)) == NULL ||
		    strcmp(d->file, json_string_value(file)) != 0)
			return 0;
	}
	return 1;
}

/*
 * The model becomes the tree file form v (taken). A new model has no
 * lines to compare with the file's: the next write is the whole file.
 */
static int
tree_take(json_t *v, char **cause)
{
	struct snap_tree	*t;

	t = snap_tree_from_json(v, cause);
	json_decref(v);
	if (t == NULL)
		return -1;
	snap_tree_free(snap.tree);
	snap.tree = t;
	snap.model_dirty = 1;
	snap.whole_next = 1;
	return 0;
}

/* The tree the operation was committing, from its intent. */
static int
tree_take_intent(char **cause)
{
	json_t		*v;
	const char	*record, *whole;
	char		*text;
	size_t		 good;

	record = json_string_value(intent_get("record"));
	whole = json_string_value(intent_get("tree"));
	if (record == NULL && whole == NULL) {
		*cause = xstrdup("the intent holds no tree");
		return -1;
	}
	text = whole != NULL ? xstrdup(whole) : tree_file_text(&snap.saved);
	v = json_loads(text, 0, NULL);
	free(text);
	if (v == NULL) {
		*cause = xstrdup("the tree does not parse");
		return -1;
	}
	if (whole == NULL && (tree_journal_replay(v, record, strlen(record),
	    &good, cause) == -1 || good != strlen(record))) {
		if (*cause == NULL)
			*cause = xstrdup("the intent's record is cut short");
		json_decref(v);
		return -1;
	}
	return tree_take(v, cause);
}

/* The tree as it was before an operation that found it unwritten. */
static int
tree_take_pre(char **cause)
{
	json_t	*v;

	if ((v = json_loads(json_string_value(intent_get("pre")), 0,
	    NULL)) == NULL) {
		*cause = xstrdup("the intent's tree does not parse");
		return -1;
	}
	return tree_take(v, cause);
}

/*
 * The backing file a qcow2 image's header names, or NULL (none, or not
 * readable). A header read, at start-up only.
 */
static char *
qcow2_backing(const char *path)
{
	unsigned char	 h[ORPHAN_QCOW2_HEAD];
	uint64_t	 off;
	uint32_t	 len;
	char		*name = NULL;
	int		 fd;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1)
		return NULL;
	if (pread(fd, h, sizeof h, 0) == sizeof h &&
	    orphan_qcow2_backing(h, sizeof h, &off, &len) == 1 && len > 0) {
		name = xcalloc(1, len + 1);
		if (pread(fd, name, len, off) != (ssize_t)len) {
			free(name);
			name = NULL;
		}
	}
	close(fd);
	return name;
}

/*
 * A merge the operation was running: if it ended in QEMU, the tree takes
 * it as the delete would have (merge_apply()). Returns 1 if it did.
 */
static int
merge_recover(struct op *op, json_t *m)
{
	const char		*file, *into, *method;
	const struct snap_file	*f, *dep;
	struct disk_info	*d;
	struct branch		*b;
	char			*backing;
	int			 commit, done = 0;
	size_t			 i;

	if (json_unpack(m, "{s:s, s:s, s:s}", "file", &file, "into", &into,
	    "method", &method) == -1)
		return 0;
	commit = strcmp(method, "commit") == 0;
	f = snap_tree_image(snap.tree, file);
	dep = snap_tree_image(snap.tree, into);
	if (f == NULL || dep == NULL || (!commit && (dep->backing == NULL ||
	    strcmp(dep->backing, file) != 0))) {
		/* Written down already: the file that went may be left. */
		json_array_append_new(op->doomed, json_string(commit ? into :
		    file));
		return 0;
	}
	if (commit) {
		/* The branch's device runs on the image merged into. */
		b = branch_of_overlay(snap.tree, into);
		for (i = 0; b != NULL && b->attached && i < b->ndisks; i++) {
			if (strcmp(b->disks[i].file, into) == 0 &&
			    (d = op_disk(op, b->disks[i].device)) != NULL &&
			    strcmp(d->file, file) == 0)
				done = 1;
		}
	} else {
		/* The image pulled up no longer sits on it. */
		backing = qcow2_backing(into);
		done = backing != NULL ? strcmp(backing, file) != 0 :
		    access(into, F_OK) == 0 && f->backing == NULL;
		free(backing);
	}
	if (!done)
		return 0;
	log_info("recovery: the merge of %s into %s had ended", file, into);
	merge_apply(file, into, commit, op->doomed);
	return 1;
}

/* Whether the tree, a saved state in it, or QEMU uses path. */
static int
in_use(struct op *op, json_t *memory, const char *path)
{
	json_t	*p;
	size_t	 i;

	if (snap_tree_image(snap.tree, path) != NULL ||
	    op_node_of(op, path) != NULL)
		return 1;
	for (i = 0; i < op->ndisks; i++) {
		if (strcmp(op->disks[i].file, path) == 0)
			return 1;
	}
	json_array_foreach(memory, i, p) {
		if (strcmp(json_string_value(p), path) == 0)
			return 1;
	}
	return 0;
}

/* The files the intent lets go (list), that nothing uses: new reference. */
static json_t *
removable(struct op *op, json_t *list)
{
	json_t		*out = json_array(), *memory, *p;
	const char	*path;
	size_t		 i;

	memory = snap_memory_all(snap.tree);
	json_array_foreach(list, i, p) {
		if ((path = json_string_value(p)) == NULL || path[0] != '/' ||
		    in_use(op, memory, path) || access(path, F_OK) == -1)
			continue;
		log_info("recovery: removing %s", path);
		json_array_append(out, p);
	}
	json_decref(memory);
	return out;
}

/* Sets up the rest of a move the transaction of which QEMU did. */
static int
move_setup(struct op *op, json_t *a)
{
	json_t		*paths, *backings, *devs, *load;
	char		*cause = NULL;
	size_t		 i, n;

	paths = json_object_get(a, "paths");
	backings = json_object_get(a, "backings");
	devs = json_object_get(a, "devices");
	n = json_array_size(paths);
	if (n == 0 || json_array_size(backings) != n ||
	    json_array_size(devs) != n)
		return -1;
	op_paths_alloc(op, n);
	for (i = 0; i < n; i++) {
		op->paths[i] = xstrdup(json_string_value(json_array_get(paths,
		    i)));
		op->backings[i] = xstrdup(json_string_value(json_array_get(
		    backings, i)));
		op->devs[i] = xstrdup(json_string_value(json_array_get(devs,
		    i)));
	}
	op->no_reset = json_is_true(json_object_get(a, "no-reset"));
	load = json_object_get(a, "load");
	if (json_is_object(load)) {
		op->mem_load = snap_memory_from_json(load, &cause);
		free(cause);
		/*
		 * Its image is open from before the transaction until the
		 * load closes it: once closed, the guest was loaded already.
		 */
		if (op->mem_load != NULL &&
		    op_node_of(op, op->mem_load->state) == NULL) {
			log_info("recovery: the saved state was loaded "
			    "already");
			snap_memory_free(op->mem_load);
			op->mem_load = NULL;
			op->no_reset = 1;
		}
	}
	return 0;
}

static void
recover_step(struct op *op, json_t *ret)
{
	json_t		*j, *list;
	const char	*id, *status, *kind, *step, *method;
	char		*cause = NULL;
	size_t		 i;
	int		 committed, forward;

	if (op->name == NULL)		/* the intent goes before the end */
		xasprintf(&op->name, "%s", json_string_value(intent_get("op")));
	kind = op->name;
	step = json_string_value(intent_get("step"));
	switch (op->stage) {
	case RECOVER_JOBS:
		op->stage = RECOVER_ADOPT;
		op_call(op, "query-jobs", NULL);
		return;
	case RECOVER_ADOPT:
		if (ret != NULL) {
			json_decref(op->result);
			op->result = json_array();
			json_array_foreach(ret, i, j) {
				id = json_string_value(json_object_get(j, "id"));
				if (id != NULL && strncmp(id, "qbranch-job-",
				    12) == 0)
					json_array_append(op->result, j);
			}
		}
		if (op->job_error != NULL) {
			log_warnx("recovery: the job ended with: %s",
			    op->job_error);
			free(op->job_error);
			op->job_error = NULL;
		}
		if (json_array_size(op->result) > 0) {
			j = json_array_get(op->result, 0);
			id = json_string_value(json_object_get(j, "id"));
			status = json_string_value(json_object_get(j,
			    "status"));
			log_info("recovery: adopting QEMU's job %s (%s)", id,
			    status != NULL ? status : "?");
			j = json_incref(j);
			json_array_remove(op->result, 0);
			method = json_string_value(json_object_get(
			    intent_get("merge"), "method"));
			op_job_adopt(op, id, status != NULL ? status : "",
			    method != NULL && strcmp(method, "commit") == 0);
			json_decref(j);
			return;
		}
		op->stage = RECOVER_DISCOVER;
		/* FALLTHROUGH */
	case RECOVER_DISCOVER:
		op->stage = RECOVER_DECIDE;
		op_discover(op, DISCOVER_ALL);
		return;
	case RECOVER_DECIDE:
		committed = (json_int_t)snap.saved.seq > json_integer_value(
		    intent_get("seq"));
		forward = committed || (runs_on(op, intent_get("after")) &&
		    !runs_on(op, intent_get("before")));
		op->flag = forward;
		log_warnx("recovering the %s cut short at its %s step: %s", kind,
		    step, forward ? "finishing it" : "taking it back");
		op->stage = RECOVER_SAVED;
		if (forward && !committed) {
			if (tree_take_intent(&cause) == -1) {
				op_fail(op, "%s", cause);
				free(cause);
				return;
			}
			op_tree_save(op);
		} else if (!forward && json_is_string(intent_get("pre"))) {
			if (tree_take_pre(&cause) == -1) {
				op_fail(op, "%s", cause);
				free(cause);
				return;
			}
			op_tree_save(op);
		}
		op_io_wait(op);
		return;
	case RECOVER_SAVED:
		if (op->commit_error != NULL) {
			op_fail(op, "%s", op->commit_error);
			return;
		}
		op->doomed = json_array();
		if (!op->flag) {
			op->stage = RECOVER_CLOSE;
			recover_step(op, NULL);
			return;
		}
		json_array_extend(op->doomed, intent_get("doomed"));
		if (intent_get("merge") != NULL &&
		    merge_recover(op, intent_get("merge"))) {
			op->stage = RECOVER_CLOSE;
			op_tree_save(op);
			op_io_wait(op);
			return;
		}
		/* A move QEMU made and qbranchd did not see through. */
		if (json_is_object(intent_get("attach")) &&
		    runs_on(op, intent_get("after")) &&
		    strcmp(op->run_state, "running") != 0 &&
		    move_setup(op, intent_get("attach")) == 0) {
			op->i = 0;
			op->stage = RECOVER_OPEN;
			if (op->mem_load != NULL && op->mem_load->nram > 0) {
				op_memory_probe(op, 0);
				return;
			}
			recover_step(op, NULL);
			return;
		}
		op->stage = RECOVER_CLOSE;
		recover_step(op, NULL);
		return;
	case RECOVER_OPEN:
		/* What each new top is cut loose onto must be open. */
		if (op->i < op->npaths) {
			op_open_image(op, op->backings[op->i++]);
			return;
		}
		op->stage = RECOVER_MOVED;
		op_attach_switched(op, json_is_true(json_object_get(
		    intent_get("attach"), "run")));
		return;
	case RECOVER_MOVED:
		if (op->commit_error != NULL)
			log_warnx("recovery: %s", op->commit_error);
		op->stage = RECOVER_CLEAR;
		list = removable(op, op->doomed);
		op_unlink(op, list);
		json_decref(list);
		op_io_wait(op);
		return;
	case RECOVER_CLOSE:
		/* Images opened for it that nothing uses now, new or not. */
		op->stage = RECOVER_LOOK;
		op_close_unused(op);
		return;
	case RECOVER_LOOK:
		/* What QEMU still has open: no file of that is removed. */
		op->stage = RECOVER_CLOSED;
		op_discover(op, DISCOVER_ALL);
		return;
	case RECOVER_CLOSED:
		op->stage = RECOVER_CONT;
		list = removable(op, op->flag ? op->doomed :
		    intent_get("created"));
		op_unlink(op, list);
		json_decref(list);
		op_io_wait(op);
		return;
	case RECOVER_CONT:
		op->stage = RECOVER_CLEAR;
		/*
		 * It stopped the VM and did not get to run it again (a move
		 * that went through has run it as asked already).
		 */
		if (json_is_true(intent_get("resume")) &&
		    strcmp(op->run_state, "paused") == 0 &&
		    !(op->flag && json_is_object(intent_get("attach")))) {
			log_info("recovery: running the VM again");
			op->tolerate = 1;
			op_call(op, "cont", NULL);
			return;
		}
		/* FALLTHROUGH */
	case RECOVER_CLEAR:
		op->stage = RECOVER_DONE;
		intent_clear(op);
		op_io_wait(op);
		return;
	case RECOVER_DONE:
		log_warnx("recovered the %s: %s", kind, op->flag ? "it happened" :
		    "it did not happen");
		op_done(op, json_object());
		return;
	}
}

static void
recover_end(struct op *op)
{
	if (!upstream_connected()) {
		/* QEMU went away: tried again on the next connect. */
		snap.reconciling = 0;
		return;
	}
	if (op->error != NULL && snap.broken == NULL) {
		xasprintf(&snap.broken, "the %s operation cut short could not "
		    "be recovered (%s); snapshot commands are refused until an "
		    "operator has looked (%s/intent.json)", op->name, op->error,
		    opts.state_dir ?
		    opts.state_dir : "-");
		log_warnx("%s", snap.broken);
	}
	snap_upstream_ready();
}

/*
 * On connect: starts the recovery of an operation cut short, if there is
 * one. Returns 1 if it runs; snap_upstream_ready() is called again then.
 */
int
snap_recover(void)
{
	struct op	*op;

	if (snap.intent == NULL || snap.broken != NULL || snap.tree == NULL)
		return 0;
	op = op_new_internal(recover_step);
	op->kind = "recover";
	op->reconcile = 1;
	op->on_end = recover_end;
	recover_step(op, NULL);
	return 1;
}
