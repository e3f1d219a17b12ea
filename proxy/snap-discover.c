/*
 * snap-discover.c: QEMU's block graph as the operations see it: the
 * writable disks (query-block), the open nodes (query-named-block-nodes,
 * always flat) and the exports, the node names qbranch gives the images it
 * opens, and the check of the disks against the tree on every connect.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qbranch.h"

/* Frees a list of discovered disks. */
void
disk_info_free(struct disk_info *d, size_t n)
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
	const char	*drv, *file, *bare = NULL;

	json_array_foreach(op->nodes, i, n) {
		drv = json_string_value(json_object_get(n, "drv"));
		file = json_string_value(json_object_get(n, "file"));
		if (drv == NULL || file == NULL || strcmp(file, path) != 0)
			continue;
		if (strcmp(drv, "qcow2") == 0 || strcmp(drv, "raw") == 0)
			return json_string_value(json_object_get(n,
			    "node-name"));
		if (strcmp(drv, "file") == 0 || strcmp(drv, "host_device") == 0)
			bare = json_string_value(json_object_get(n,
			    "node-name"));
	}
	/* No format node over it: a device uses the file node itself. */
	return bare;
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
	json_t		*e;
	size_t		 i;
	const char	*node;

	json_array_foreach(op->exports, i, e) {
		node = json_string_value(json_object_get(e, "node-name"));
		if (node != NULL && strcmp(node, name) == 0)
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

/*
 * The name the tree gives the device of a query-block entry, or NULL: the
 * qdev id (/machine/peripheral/<id>/...), else the drive id, else, for a
 * board's own device on a -blockdev node such as the UEFI variable store,
 * its path below /machine (system.flash1).
 */
char *
disk_device_name(json_t *info)
{
	const char	*qdev, *drive, *p = "/machine/peripheral/", *end;

	qdev = json_string_value(json_object_get(info, "qdev"));
	drive = json_string_value(json_object_get(info, "device"));
	if (qdev != NULL && strncmp(qdev, p, strlen(p)) == 0) {
		qdev += strlen(p);
		if ((end = strchr(qdev, '/')) == NULL)
			end = qdev + strlen(qdev);
		if (end > qdev)
			return xstrndup(qdev, end - qdev);
	}
	if (drive != NULL && *drive != '\0')
		return xstrdup(drive);
	if (qdev != NULL && strncmp(qdev, "/machine/", 9) == 0 &&
	    qdev[9] != '\0')
		return xstrdup(qdev + 9);
	return NULL;
}

/*
 * Discovery: run state, writable disks, exports and, unless DISCOVER_DISKS
 * says the operation opens and closes nothing, the open nodes, asked
 * together; then the step continues with NULL. The disks must match the
 * tree's attached branch.
 */
static void	discover_done(struct op *, json_t *);

void
op_discover(struct op *op, int what)
{
	json_t	*calls;

	calls = json_pack("[{s:s}, {s:s}, {s:s}]", "execute", "query-status",
	    "execute", "query-block", "execute", "query-block-exports");
	if (what == DISCOVER_ALL)
		json_array_append_new(calls, json_pack("{s:s, s:{s:b}}",
		    "execute", "query-named-block-nodes", "arguments", "flat",
		    1));
	op->resume = op->step;
	op->step = discover_done;
	op_call_all(op, calls);
}

/*
 * The file of an image as QEMU names it. An image opened on a backing other
 * than its header's (an overlay between a snapshot and its reopen) is
 * named by its options, "json:{..., "file": {"filename": ...}}".
 */
static char *
file_of_filename(const char *name)
{
	json_t		*o;
	const char	*file;
	char		*path;

	if (name == NULL)
		return xstrdup("");
	if (strncmp(name, "json:", 5) != 0 ||
	    (o = json_loads(name + 5, 0, NULL)) == NULL)
		return xstrdup(name);
	file = json_string_value(json_object_get(json_object_get(o, "file"),
	    "filename"));
	path = xstrdup(file != NULL ? file : name);
	json_decref(o);
	return path;
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
		if ((dev = disk_device_name(b)) == NULL)
			continue;
		file = json_string_value(json_object_get(img, "filename"));
		d = &disks[(*n)++];
		d->device = dev;
		d->node = xstrdup(json_string_value(json_object_get(ins,
		    "node-name")));
		d->file = file_of_filename(file);
		/* A device on a bare file node reads it as raw would. */
		name = json_string_value(json_object_get(img, "format"));
		d->format = xstrdup(name != NULL && (strcmp(name, "file") ==
		    0 || strcmp(name, "host_device") == 0) ? "raw" : name);
		d->size = json_integer_value(json_object_get(img,
		    "virtual-size"));
	}
	return disks;
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
	snap.model_dirty = 1;		/* written with the first change */
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
		op_discover(op, DISCOVER_ALL);
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
	if (snap.tree != NULL && snap.op != NULL) {
		/*
		 * The operation the last QEMU cut short ends first: its tree
		 * write may still be under way, and the disks are checked
		 * against that tree. Clients wait meanwhile (op_finish()).
		 */
		snap.reconciling = 1;
		snap.reconcile_due = 1;
		return;
	}
	if (snap.tree == NULL) {
		client_upstream_ready();
		return;
	}
	snap.reconciling = 1;
	/* An operation cut short is dealt with first; this runs again then. */
	if (snap_recover())
		return;
	op = op_new_internal(reconcile_step);
	op->reconcile = 1;
	op->on_end = reconcile_end;
	reconcile_step(op, NULL);
}

static void
discover_done(struct op *op, json_t *replies)
{
	struct branch		*b;
	struct disk_info	*d;
	const char		*error, *status;
	json_t			*ret, *n;
	char			*file;
	size_t			 i;

	if ((error = op_first_error(replies)) != NULL) {
		op_fail(op, "%s", error);
		return;
	}
	ret = json_object_get(json_array_get(replies, 0), "return");
	status = json_string_value(json_object_get(ret, "status"));
	free(op->run_state);
	op->run_state = xstrdup(status != NULL ? status : "unknown");
	op->was_running = json_is_true(json_object_get(ret, "running"));
	disk_info_free(op->disks, op->ndisks);
	op->disks = disks_parse(json_object_get(json_array_get(replies, 1),
	    "return"), &op->ndisks);
	json_decref(op->exports);
	op->exports = json_incref(json_object_get(json_array_get(replies, 2),
	    "return"));
	json_decref(op->nodes);
	op->nodes = json_deep_copy(json_object_get(json_array_get(replies, 3),
	    "return"));
	if (op->nodes == NULL)
		op->nodes = json_array();
	json_array_foreach(op->nodes, i, n) {
		file = file_of_filename(json_string_value(json_object_get(n,
		    "file")));
		json_object_set_new(n, "file", json_string(file));
		free(file);
	}
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
