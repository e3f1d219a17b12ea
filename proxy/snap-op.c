/*
 * snap-op.c: the engine under every snapshot operation. One operation runs
 * at a time. It sends the proxy's own QMP commands to QEMU one after the
 * other (each step continues in the callback of the previous reply), waits
 * for block jobs through their events, records how to undo each change it
 * made in QEMU or on disk, and on any failure undoes them in reverse order
 * before answering, so that a failed operation leaves QEMU, the files and
 * the tree as they were. The tree is changed and saved only once QEMU's
 * graph has changed.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "qbranch.h"

struct snap_state	 snap;

static void	op_reply_cb(json_t *, void *);
static void	op_undo_next(struct op *, json_t *);
static void	op_finish(struct op *);
static void	progress_stop(struct op *);
static void	op_tree_rollback(struct op *);

/* Loads the tree from the state directory at start-up. */
void
snap_init(void)
{
	json_t	*v;
	char	*cause = NULL;

	snap.tree = NULL;
	if (opts.state_dir == NULL) {
		log_info("no --state-dir: the snapshot tree lives in memory "
		    "only and is lost at exit");
		snap.tree = snap_tree_new();
		return;
	}
	v = store_read(opts.state_dir, SNAP_TREE_FILE, &cause);
	if (v == NULL && cause == NULL) {
		snap.tree = snap_tree_new();
		return;
	}
	if (v != NULL && (snap.tree = snap_tree_from_json(v, &cause)) != NULL) {
		json_decref(v);
		log_info("snapshot tree loaded from %s/%s", opts.state_dir,
		    SNAP_TREE_FILE);
		return;
	}
	json_decref(v);
	xasprintf(&snap.broken, "the tree file %s/%s is unusable (%s); "
	    "snapshot commands are refused until it is repaired or removed",
	    opts.state_dir, SNAP_TREE_FILE, cause);
	log_warnx("%s", snap.broken);
	free(cause);
}

/* Frees the model at exit. */
void
snap_shutdown(void)
{
	snap_tree_free(snap.tree);
	snap.tree = NULL;
	free(snap.broken);
	snap.broken = NULL;
}

/* Saves the tree. Returns -1 with *cause when it cannot. */
int
snap_save(char **cause)
{
	json_t	*v;
	int	 ret;

	if (opts.state_dir == NULL)
		return 0;
	v = snap_tree_to_json(snap.tree);
	ret = store_write(opts.state_dir, SNAP_TREE_FILE, v, cause);
	json_decref(v);
	return ret;
}

/* Whether an operation runs (and QEMU's events must be looked at). */
int
snap_op_wants_events(void)
{
	return snap.op != NULL;
}

/* Whether a client's command must wait for the running operation. */
int
snap_op_blocks(const char *name)
{
	static const char *const changing[] = {
		"stop", "cont", "system_reset", "system_wakeup", "quit",
		"transaction", "human-monitor-command", "device_add",
		"device_del", "blockdev-add", "blockdev-del", "blockdev-reopen",
		"blockdev-create", "blockdev-snapshot", "blockdev-snapshot-sync",
		"block-commit", "block-stream", "blockdev-mirror",
		"drive-mirror", "drive-backup", "blockdev-backup",
		"block-export-add", "block-export-del", "nbd-server-add",
		"change-backing-file", "blockdev-change-medium", "eject",
		"snapshot-save", "snapshot-load", "snapshot-delete",
		"job-dismiss", "job-finalize", "job-complete", "job-cancel",
		"block-job-cancel", "block-job-complete", "migrate",
		"migrate-incoming", "query-named-block-nodes", NULL,
	};
	size_t	i;

	if (snap.op == NULL)
		return 0;
	for (i = 0; changing[i] != NULL; i++) {
		if (strcmp(changing[i], name) == 0)
			return 1;
	}
	return 0;
}

/* A client is going away: its operation goes on, unanswered. */
void
snap_client_gone(struct client *c)
{
	if (snap.op != NULL && snap.op->client == c)
		snap.op->client = NULL;
}

/*
 * Starts an operation for a client's request. Returns NULL after answering
 * the client when another one runs or the tree is unusable.
 */
struct op *
op_new(struct client *c, const char *id, size_t idlen,
    void (*step)(struct op *, json_t *))
{
	struct op	*op;

	if (snap.broken != NULL) {
		client_send_error(c, "GenericError", snap.broken, id, idlen);
		return NULL;
	}
	if (snap.op != NULL) {
		client_send_error(c, "GenericError", "another snapshot "
		    "operation is running; try again when it has ended", id,
		    idlen);
		return NULL;
	}
	op = xcalloc(1, sizeof *op);
	op->client = c;
	if (id != NULL) {
		op->id = xmemdup(id, idlen);
		op->idlen = idlen;
	}
	op->step = step;
	op->undo = json_array();
	snap.op = op;
	c->flags |= CLIENT_BUSY;
	client_recheck(c);
	return op;
}

/* Starts an operation of the proxy's own, with no client to answer. */
struct op *
op_new_internal(void (*step)(struct op *, json_t *))
{
	struct op	*op;

	op = xcalloc(1, sizeof *op);
	op->step = step;
	op->undo = json_array();
	snap.op = op;
	return op;
}

static void
disks_free(struct disk_info *d, size_t n)
{
	size_t	i;

	for (i = 0; i < n; i++) {
		free(d[i].device);
		free(d[i].node);
		free(d[i].file);
		free(d[i].format);
	}
	free(d);
}

static void
op_finish(struct op *op)
{
	struct client	*c = op->client;
	size_t		 i;

	snap.op = NULL;
	progress_stop(op);
	if (op->on_end != NULL)
		op->on_end(op);
	if (c != NULL) {
		c->flags &= ~CLIENT_BUSY;
		client_recheck(c);
	}
	disks_free(op->disks, op->ndisks);
	json_decref(op->args);
	json_decref(op->nodes);
	json_decref(op->exports);
	json_decref(op->undo);
	json_decref(op->result);
	json_decref(op->opening);
	json_decref(op->tree_backup);
	free(op->commit_error);
	free(op->run_state);
	free(op->error);
	free(op->job_error);
	free(op->id);
	free(op->s1);
	free(op->s2);
	free(op->name);
	for (i = 0; i < op->npaths; i++) {
		free(op->paths[i]);
		if (op->backings != NULL)
			free(op->backings[i]);
		if (op->devs != NULL)
			free(op->devs[i]);
	}
	free(op->paths);
	free(op->backings);
	free(op->devs);
	free(op);
}

/* Ends an operation with its result (stolen) as the reply. */
void
op_done(struct op *op, json_t *ret)
{
	char	*text;

	if (op->client != NULL) {
		text = json_dumps(ret, JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
		client_reply_local(op->client, qmp_return_reply(text, op->id,
		    op->idlen));
		free(text);
	}
	json_decref(ret);
	op_finish(op);
}

/*
 * Fails an operation: what it changed is undone in reverse order, then the
 * client gets the error.
 */
void
op_fail(struct op *op, const char *fmt, ...)
{
	va_list	ap;

	if (op->error == NULL) {
		va_start(ap, fmt);
		if (vasprintf(&op->error, fmt, ap) == -1)
			fatal("vasprintf");
		va_end(ap);
		log_warnx("snapshot operation failed: %s", op->error);
	}
	op->undoing = 1;
	op_tree_rollback(op);
	op_undo_next(op, NULL);
}

static void
op_undo_next(struct op *op, json_t *ret)
{
	json_t		*u;
	size_t		 n = json_array_size(op->undo);
	const char	*path;

	if (n == 0) {
		if (op->client != NULL)
			client_send_error(op->client, "GenericError",
			    op->error, op->id, op->idlen);
		op_finish(op);
		return;
	}
	u = json_incref(json_array_get(op->undo, n - 1));
	json_array_remove(op->undo, n - 1);
	op->step = op_undo_next;
	if ((path = json_string_value(json_object_get(u, "unlink"))) != NULL) {
		if (unlink(path) == -1 && errno != ENOENT)
			log_warn("undo: unlink %s", path);
		json_decref(u);
		op_undo_next(op, NULL);
		return;
	}
	op_call(op, json_string_value(json_object_get(u, "execute")),
	    json_incref(json_object_get(u, "arguments")));
	json_decref(u);
}

/*
 * The tree changes in two phases around QEMU's irreversible step. Before
 * it, op_tree_begin() keeps a copy, the model is changed, and
 * op_tree_prepare() writes it to a prepared file: a full or read-only state
 * directory fails there, while nothing has changed yet. op_commit() then
 * puts the file in place; a failure before that brings the model back.
 */
void
op_tree_begin(struct op *op)
{
	json_decref(op->tree_backup);
	op->tree_backup = snap_tree_to_json(snap.tree);
}

int
op_tree_prepare(struct op *op)
{
	json_t	*v;
	char	*cause = NULL;
	int	 ret = 0;

	if (opts.state_dir == NULL) {
		op->tree_prepared = 1;
		return 0;
	}
	v = snap_tree_to_json(snap.tree);
	if (store_prepare(opts.state_dir, SNAP_TREE_FILE, v, &cause) == -1) {
		op_fail(op, "%s; nothing was changed", cause);
		free(cause);
		ret = -1;
	} else
		op->tree_prepared = 1;
	json_decref(v);
	return ret;
}

/*
 * For operations whose new tree is known only at their end: checks that
 * the state directory takes a tree file now, before anything changes.
 */
int
op_tree_preflight(struct op *op)
{
	json_t	*v;
	char	*cause = NULL;
	int	 ret = 0;

	if (opts.state_dir == NULL)
		return 0;
	v = snap_tree_to_json(snap.tree);
	if (store_prepare(opts.state_dir, SNAP_TREE_FILE, v, &cause) == -1) {
		op_fail(op, "%s; nothing was changed", cause);
		free(cause);
		ret = -1;
	} else
		store_abort(opts.state_dir, SNAP_TREE_FILE);
	json_decref(v);
	return ret;
}

/* Brings the model back to what it was at op_tree_begin(). */
static void
op_tree_rollback(struct op *op)
{
	struct snap_tree	*t;
	char			*cause = NULL;

	if (op->tree_backup == NULL)
		return;
	t = snap_tree_from_json(op->tree_backup, &cause);
	if (t == NULL)
		fatalx("tree copy unreadable: %s", cause);
	snap_tree_free(snap.tree);
	snap.tree = t;
	if (op->tree_prepared && opts.state_dir != NULL)
		store_abort(opts.state_dir, SNAP_TREE_FILE);
	op->tree_prepared = 0;
	json_decref(op->tree_backup);
	op->tree_backup = NULL;
}

/* Makes room for n new images: paths, backings and devices. */
void
op_paths_alloc(struct op *op, size_t n)
{
	op->npaths = n;
	op->paths = xcalloc(n, sizeof *op->paths);
	op->backings = xcalloc(n, sizeof *op->backings);
	op->devs = xcalloc(n, sizeof *op->devs);
}

/* Records a QMP command that undoes what was just done (args stolen). */
void
op_undo_call(struct op *op, const char *execute, json_t *args)
{
	json_array_append_new(op->undo, json_pack("{s:s, s:o}", "execute",
	    execute, "arguments", args));
}

/* Records a file to remove if the operation fails. */
void
op_undo_unlink(struct op *op, const char *path)
{
	json_array_append_new(op->undo, json_pack("{s:s}", "unlink", path));
}

/*
 * QEMU has changed for good: nothing will be undone any more, and the
 * prepared tree file takes the place of the old one.
 */
void
op_commit(struct op *op)
{
	char	*cause = NULL;

	json_array_clear(op->undo);
	if (op->tree_prepared) {
		op->tree_prepared = 0;
		json_decref(op->tree_backup);
		op->tree_backup = NULL;
		if (opts.state_dir != NULL && store_commit(opts.state_dir,
		    SNAP_TREE_FILE, &cause) == -1) {
			log_warnx("%s", cause);
			if (op->error == NULL)
				op->commit_error = cause;
			else
				free(cause);
		}
	}
}

/* Sends a command; the step continues with its "return" (args stolen). */
void
op_call(struct op *op, const char *execute, json_t *args)
{
	upstream_call(execute, args, op_reply_cb, op);
}

static void
op_reply_cb(json_t *reply, void *arg)
{
	struct op	*op = arg;
	json_t		*err;

	if (reply == NULL) {
		/* QEMU is gone: nothing can be undone through it now. */
		json_array_clear(op->undo);
		op_fail(op, "QEMU went away during the operation");
		return;
	}
	if ((err = json_object_get(reply, "error")) != NULL) {
		if (op->undoing || op->tolerate) {
			op->tolerate = 0;
			log_warnx("undo step failed: %s", json_string_value(
			    json_object_get(err, "desc")));
			op->step(op, NULL);
			return;
		}
		op_fail(op, "%s", json_string_value(json_object_get(err,
		    "desc")));
		return;
	}
	op->tolerate = 0;
	op->step(op, json_object_get(reply, "return"));
}

/* The node name qbranch gives an image it opens: stable for a path. */
void
op_node_name(const char *path, char *buf, size_t len)
{
	uint64_t	h = 1469598103934665603ull;

	for (; *path != '\0'; path++)
		h = (h ^ (unsigned char)*path) * 1099511628211ull;
	snprintf(buf, len, "qb%016" PRIx64, h);
}

/* The name of the file node under it. */
void
op_file_node_name(const char *path, char *buf, size_t len)
{
	size_t	n;

	op_node_name(path, buf, len);
	if ((n = strlen(buf)) + 1 < len) {
		buf[n] = 'f';
		buf[n + 1] = '\0';
	}
}

/* The format node that has path open, from query-named-block-nodes. */
const char *
op_node_of(struct op *op, const char *path)
{
	json_t		*n;
	size_t		 i;
	const char	*drv, *file;

	json_array_foreach(op->nodes, i, n) {
		drv = json_string_value(json_object_get(n, "drv"));
		file = json_string_value(json_object_get(n, "file"));
		if (drv == NULL || file == NULL || strcmp(file, path) != 0)
			continue;
		if (strcmp(drv, "qcow2") == 0 || strcmp(drv, "raw") == 0)
			return json_string_value(json_object_get(n,
			    "node-name"));
	}
	return NULL;
}

/* Whether a node of that name is open. */
int
op_node_exists(struct op *op, const char *name)
{
	json_t	*n;
	size_t	 i;

	json_array_foreach(op->nodes, i, n) {
		if (strcmp(json_string_value(json_object_get(n, "node-name")),
		    name) == 0)
			return 1;
	}
	return 0;
}

/* Forgets the open nodes of an image QEMU has just closed. */
void
op_forget_node(struct op *op, const char *path)
{
	json_t		*n;
	size_t		 i;
	const char	*file;

	for (i = json_array_size(op->nodes); i-- > 0;) {
		n = json_array_get(op->nodes, i);
		file = json_string_value(json_object_get(n, "file"));
		if (file != NULL && strcmp(file, path) == 0)
			json_array_remove(op->nodes, i);
	}
}

/* Whether a block export holds the node. */
int
op_node_exported(struct op *op, const char *name)
{
	json_t	*e;
	size_t	 i;

	json_array_foreach(op->exports, i, e) {
		if (strcmp(json_string_value(json_object_get(e, "node-name")),
		    name) == 0)
			return 1;
	}
	return 0;
}

/* The disk called device in the discovered list, or NULL. */
struct disk_info *
op_disk(struct op *op, const char *device)
{
	size_t	i;

	for (i = 0; i < op->ndisks; i++) {
		if (strcmp(op->disks[i].device, device) == 0)
			return &op->disks[i];
	}
	return NULL;
}

/* The qdev id from a qdev path /machine/peripheral/<id>/..., or NULL. */
static char *
qdev_id(const char *qdev)
{
	const char	*p = "/machine/peripheral/", *end;

	if (qdev == NULL || strncmp(qdev, p, strlen(p)) != 0)
		return NULL;
	qdev += strlen(p);
	if ((end = strchr(qdev, '/')) == NULL)
		end = qdev + strlen(qdev);
	return end > qdev ? xstrndup(qdev, end - qdev) : NULL;
}

/*
 * Discovery: run state, writable disks, open nodes and exports; then the
 * step continues with NULL. The disks must match the tree's attached branch.
 */
static void	discover_block(struct op *, json_t *);
static void	discover_nodes(struct op *, json_t *);
static void	discover_exports(struct op *, json_t *);
static void	discover_done(struct op *, json_t *);

void
op_discover(struct op *op)
{
	op->resume = op->step;
	op->step = discover_block;
	op_call(op, "query-status", NULL);
}

static void
discover_block(struct op *op, json_t *ret)
{
	const char	*status = json_string_value(json_object_get(ret,
	    "status"));

	free(op->run_state);
	op->run_state = xstrdup(status != NULL ? status : "unknown");
	op->was_running = json_is_true(json_object_get(ret, "running"));
	op->step = discover_nodes;
	op_call(op, "query-block", NULL);
}

/* The writable disks in a query-block reply, as an array of n. */
static struct disk_info *
disks_parse(json_t *ret, size_t *n)
{
	json_t		*b, *ins, *img;
	struct disk_info *disks, *d;
	size_t		 i;
	char		*dev;
	const char	*file, *name;

	disks = xcalloc(json_array_size(ret) + 1, sizeof *disks);
	*n = 0;
	json_array_foreach(ret, i, b) {
		ins = json_object_get(b, "inserted");
		img = json_object_get(ins, "image");
		if (ins == NULL || img == NULL ||
		    json_is_true(json_object_get(ins, "ro")))
			continue;
		dev = qdev_id(json_string_value(json_object_get(b, "qdev")));
		if (dev == NULL) {
			name = json_string_value(json_object_get(b, "device"));
			if (name == NULL || *name == '\0')
				continue;
			dev = xstrdup(name);
		}
		file = json_string_value(json_object_get(img, "filename"));
		d = &disks[(*n)++];
		d->device = dev;
		d->node = xstrdup(json_string_value(json_object_get(ins,
		    "node-name")));
		d->file = xstrdup(file != NULL ? file : "");
		d->format = xstrdup(json_string_value(json_object_get(img,
		    "format")));
		d->size = json_integer_value(json_object_get(img,
		    "virtual-size"));
	}
	return disks;
}

static void
discover_nodes(struct op *op, json_t *ret)
{
	disks_free(op->disks, op->ndisks);
	op->disks = disks_parse(ret, &op->ndisks);
	op->step = discover_exports;
	op_call(op, "query-named-block-nodes", json_pack("{s:b}", "flat", 1));
}

/* The tree before any snapshot: branch "main" on the VM's own disks. */
static void
tree_init(struct disk_info *disks, size_t n)
{
	struct branch	*b;
	size_t		 i;

	if (snap.tree == NULL || branch_attached(snap.tree) != NULL || n == 0)
		return;
	b = branch_add(snap.tree, "main", NULL);
	b->attached = 1;
	b->disks = xcalloc(n, sizeof *b->disks);
	b->ndisks = n;
	for (i = 0; i < n; i++) {
		b->disks[i].device = xstrdup(disks[i].device);
		b->disks[i].file = xstrdup(disks[i].file);
		b->disks[i].format = xstrdup(disks[i].format);
		b->disks[i].owned = 0;
	}
}

/*
 * On every connect to QEMU: a device found on an image below its branch's
 * overlay (QEMU was started again on its original command line) is put
 * back on the branch before any client is greeted, so nothing can run the
 * guest on a frozen image. If the guest ran on it already, the VM is
 * stopped and snapshot commands are refused until an operator decides.
 */
static void	reconcile_step(struct op *, json_t *);

static void
reconcile_end(struct op *op)
{
	snap.reconciling = 0;
	if (!upstream_is_ready())
		return;		/* QEMU went away: checked again next time */
	if (op->error != NULL && snap.broken == NULL) {
		xasprintf(&snap.broken, "the VM's disks could not be put back "
		    "on branch %s: %s", branch_attached(snap.tree) ?
		    branch_attached(snap.tree)->name : "?", op->error);
		snap.broken_by_vm = 1;
	}
	client_upstream_ready();
}

/* Whether path is in the chain under the image at top. */
static int
in_chain(const char *top, const char *path)
{
	const struct snap_file	*f;

	while (top != NULL) {
		if (strcmp(top, path) == 0)
			return 1;
		f = snap_tree_image(snap.tree, top);
		top = f != NULL ? f->backing : NULL;
	}
	return 0;
}

static void
reconcile_step(struct op *op, json_t *ret)
{
	struct branch		*b;
	struct disk_info	*d;
	const struct snap_file	*f;
	size_t			 i, moved = 0;

	switch (op->stage++) {
	case 0:
		op_discover(op);
		return;
	case 1:
		if ((b = branch_attached(snap.tree)) == NULL) {
			op_tree_init(op);
			op_done(op, json_object());
			return;
		}
		op_paths_alloc(op, b->ndisks);
		for (i = 0; i < b->ndisks; i++) {
			f = &b->disks[i];
			op->devs[i] = xstrdup(f->device);
			d = op_disk(op, f->device);
			if (d == NULL) {
				op_fail(op, "device %s is not in the VM",
				    f->device);
				return;
			}
			op->paths[i] = xstrdup(f->file);
			op->backings[i] = xstrdup(f->backing ? f->backing : "");
			if (strcmp(d->file, f->file) == 0)
				continue;
			if (f->backing == NULL || !in_chain(f->backing,
			    d->file)) {
				op_fail(op, "device %s runs on %s, which is not "
				    "under the branch's overlay %s", f->device,
				    d->file, f->file);
				return;
			}
			moved++;
		}
		if (moved == 0) {
			op_done(op, json_object());
			return;
		}
		if (moved != b->ndisks) {
			op_fail(op, "only some disks run on their branch");
			return;
		}
		if (strcmp(op->run_state, "prelaunch") != 0) {
			xasprintf(&snap.broken, "the guest ran on the frozen "
			    "image %s of branch %s (QEMU was started without "
			    "-S): the VM is stopped and snapshot commands are "
			    "refused; restart QEMU with -S, or remove %s/%s to "
			    "start a new tree", op->disks[0].file, b->name,
			    opts.state_dir ? opts.state_dir : "(state dir)",
			    SNAP_TREE_FILE);
			log_warnx("%s", snap.broken);
			snap.broken_by_vm = 1;
			op_call(op, "stop", NULL);
			op->stage = 3;
			return;
		}
		log_info("QEMU runs on frozen images: putting the disks back on "
		    "branch %s", b->name);
		/*
		 * The original is the devices' top now and also the bottom of
		 * the chains to open, and a node that backs another cannot be
		 * snapshotted: move first, open the chains after.
		 */
		op->no_reset = 1;
		op->chain_after = 1;
		op_attach(op, 1, 0);
		return;
	case 2:
		log_info("disks back on branch %s",
		    branch_attached(snap.tree)->name);
		/* FALLTHROUGH */
	case 3:
		op_done(op, json_object());
		return;
	}
}

/* Whether clients must wait for the disks to be checked. */
int
snap_reconciling(void)
{
	return snap.reconciling;
}

/* QEMU is connected: check its disks against the tree, then greet. */
void
snap_upstream_ready(void)
{
	struct op	*op;

	if (snap.broken_by_vm) {
		/* A new QEMU: what was wrong with the last one is checked anew. */
		free(snap.broken);
		snap.broken = NULL;
		snap.broken_by_vm = 0;
	}
	if (snap.tree == NULL || snap.op != NULL) {
		client_upstream_ready();
		return;
	}
	snap.reconciling = 1;
	op = op_new_internal(reconcile_step);
	op->reconcile = 1;
	op->on_end = reconcile_end;
	reconcile_step(op, NULL);
}

static void
discover_exports(struct op *op, json_t *ret)
{
	json_decref(op->nodes);
	op->nodes = json_incref(ret);
	op->step = discover_done;
	op_call(op, "query-block-exports", NULL);
}

static void
discover_done(struct op *op, json_t *ret)
{
	struct branch		*b;
	struct disk_info	*d;
	size_t			 i;

	json_decref(op->exports);
	op->exports = json_incref(ret);
	/* The tree's attached branch must be what QEMU runs. */
	if ((b = branch_attached(snap.tree)) != NULL && !op->reconcile) {
		for (i = 0; i < b->ndisks; i++) {
			d = op_disk(op, b->disks[i].device);
			if (d == NULL) {
				op_fail(op, "device %s of branch %s is not in "
				    "the VM", b->disks[i].device, b->name);
				return;
			}
			if (strcmp(d->file, b->disks[i].file) != 0) {
				op_fail(op, "device %s runs on %s, but branch "
				    "%s has it on %s: the VM and the tree "
				    "disagree", d->device, d->file, b->name,
				    b->disks[i].file);
				return;
			}
		}
	}
	op->step = op->resume;
	op->step(op, NULL);
}

/*
 * Makes the tree's first branch, "main", from the discovered disks: the VM
 * runs on the original images, which qbranch will never remove.
 */
void
op_tree_init(struct op *op)
{
	tree_init(op->disks, op->ndisks);
}

#define PROGRESS_INTERVAL_MS	200

/* Reports a long job's progress to every client. */
static void
progress_emit(struct op *op, json_t *job)
{
	json_t	*data;

	data = json_pack("{s:s, s:s, s:I, s:I}", "operation", op->progress,
	    "job", op->job, "current", json_integer_value(json_object_get(job,
	    "current-progress")), "total", json_integer_value(
	    json_object_get(job, "total-progress")));
	client_broadcast_event("QBRANCH_PROGRESS", data);
	json_decref(data);
}

static void
progress_cb(json_t *reply, void *arg)
{
	json_t	*j;
	size_t	 i;

	if (reply == NULL || snap.op == NULL || snap.op->progress == NULL)
		return;
	json_array_foreach(json_object_get(reply, "return"), i, j) {
		if (strcmp(json_string_value(json_object_get(j, "id")),
		    snap.op->job) == 0 && strcmp(json_string_value(
		    json_object_get(j, "status")), "running") == 0)
			progress_emit(snap.op, j);
	}
}

static void
progress_timer_cb(int fd, short what, void *arg)
{
	/* Not through op_call: the operation's own chain goes on. */
	upstream_call("query-jobs", NULL, progress_cb, NULL);
}

static void
progress_stop(struct op *op)
{
	if (op->progress_timer != NULL)
		event_free(op->progress_timer);
	op->progress_timer = NULL;
}

/*
 * Job commands: the command is sent, then the step waits for the job to
 * conclude (JOB_STATUS_CHANGE), reads its error from query-jobs, dismisses
 * it and continues with NULL, or fails with the job's error.
 */
static void	job_started(struct op *, json_t *);
static void	job_queried(struct op *, json_t *);
static void	job_dismissed(struct op *, json_t *);

void
op_job(struct op *op, const char *execute, json_t *args)
{
	static unsigned	 serial;

	snprintf(op->job, sizeof op->job, "qbranch-job-%u", ++serial);
	op->job_concluded = 0;
	json_object_set_new(args, "job-id", json_string(op->job));
	op->job_resume = op->step;
	op->step = job_started;
	if (op->progress != NULL && op->progress_timer == NULL) {
		struct timeval	tv = { 0, PROGRESS_INTERVAL_MS * 1000 };

		op->progress_timer = event_new(base, -1, EV_PERSIST,
		    progress_timer_cb, NULL);
		evtimer_add(op->progress_timer, &tv);
	}
	op_call(op, execute, args);
}

static void
job_started(struct op *op, json_t *ret)
{
	op->job_started = 1;
	if (op->job_concluded)
		op_call(op, "query-jobs", NULL);
	op->step = job_queried;
}

/* QEMU's events, seen while an operation runs. */
void
snap_op_event(json_t *ev)
{
	struct op	*op = snap.op;
	const char	*name, *id, *status;
	json_t		*data;

	name = json_string_value(json_object_get(ev, "event"));
	data = json_object_get(ev, "data");
	if (op == NULL || name == NULL)
		return;
	if (strcmp(name, "JOB_STATUS_CHANGE") == 0) {
		id = json_string_value(json_object_get(data, "id"));
		status = json_string_value(json_object_get(data, "status"));
		if (id == NULL || status == NULL || strcmp(id, op->job) != 0 ||
		    strcmp(status, "concluded") != 0 || op->job_concluded)
			return;
		op->job_concluded = 1;
		if (op->job_started)
			op_call(op, "query-jobs", NULL);
	}
}

static void
job_queried(struct op *op, json_t *ret)
{
	json_t		*j;
	size_t		 i;
	const char	*error = NULL;

	json_array_foreach(ret, i, j) {
		if (strcmp(json_string_value(json_object_get(j, "id")),
		    op->job) != 0)
			continue;
		error = json_string_value(json_object_get(j, "error"));
		if (op->progress != NULL) {
			progress_stop(op);
			progress_emit(op, j);
		}
	}
	free(op->job_error);
	op->job_error = error != NULL ? xstrdup(error) : NULL;
	op->step = job_dismissed;
	op->job_started = 0;
	op_call(op, "job-dismiss", json_pack("{s:s}", "id", op->job));
}

static void
job_dismissed(struct op *op, json_t *ret)
{
	char	*error = op->job_error;

	op->job[0] = '\0';
	op->step = op->job_resume;
	if (error != NULL) {
		op->job_error = NULL;
		op_fail(op, "%s", error);
		free(error);
		return;
	}
	op->step(op, NULL);
}

/*
 * Overlay creation, in QEMU without a fork: a new qcow2 file at path over
 * backing, opened as node (and node "f" for its file) with no backing yet,
 * as blockdev-snapshot wants. Each part made is recorded for undo. The step
 * continues with NULL.
 */
static void	overlay_file_made(struct op *, json_t *);
static void	overlay_file_added(struct op *, json_t *);
static void	overlay_qcow2_made(struct op *, json_t *);
static void	overlay_added(struct op *, json_t *);

void
op_make_overlay(struct op *op, const char *path, const char *backing,
    const char *backing_fmt, int64_t size)
{
	if (access(path, F_OK) == 0) {
		op_fail(op, "%s exists already: qbranch never overwrites a "
		    "file", path);
		return;
	}
	free(op->s1);
	free(op->s2);
	op->s1 = xstrdup(path);
	op->s2 = xstrdup(backing);
	op->s2fmt = backing_fmt;
	op->size = size;
	op->overlay_resume = op->step;
	op->step = overlay_file_made;
	op_job(op, "blockdev-create", json_pack("{s:{s:s, s:s, s:i}}",
	    "options", "driver", "file", "filename", path, "size", 0));
}

static void
overlay_file_made(struct op *op, json_t *ret)
{
	char	node[40];

	op_undo_unlink(op, op->s1);
	op_file_node_name(op->s1, node, sizeof node);
	op->step = overlay_file_added;
	op_call(op, "blockdev-add", json_pack("{s:s, s:s, s:s}", "driver",
	    "file", "node-name", node, "filename", op->s1));
}

static void
overlay_file_added(struct op *op, json_t *ret)
{
	char	node[40];

	op_file_node_name(op->s1, node, sizeof node);
	op_undo_call(op, "blockdev-del", json_pack("{s:s}", "node-name",
	    node));
	op->step = overlay_qcow2_made;
	op_job(op, "blockdev-create", json_pack("{s:{s:s, s:s, s:I, s:s, "
	    "s:s}}", "options", "driver", "qcow2", "file", node, "size",
	    (json_int_t)op->size, "backing-file", op->s2, "backing-fmt",
	    op->s2fmt));
}

static void
overlay_qcow2_made(struct op *op, json_t *ret)
{
	char	node[40], fnode[40];

	op_node_name(op->s1, node, sizeof node);
	op_file_node_name(op->s1, fnode, sizeof fnode);
	op->step = overlay_added;
	op_call(op, "blockdev-add", json_pack("{s:s, s:s, s:s, s:n}",
	    "driver", "qcow2", "node-name", node, "file", fnode, "backing"));
}

static void
overlay_added(struct op *op, json_t *ret)
{
	char	node[40];

	op_node_name(op->s1, node, sizeof node);
	op_undo_call(op, "blockdev-del", json_pack("{s:s}", "node-name",
	    node));
	op->step = op->overlay_resume;
	op->step(op, NULL);
}

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
