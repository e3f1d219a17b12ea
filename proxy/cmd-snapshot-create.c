/*
 * cmd-snapshot-create.c: qbranch-snapshot-create. The attached branch's
 * overlays become the new snapshot's frozen images: a fresh overlay per
 * disk is made first, then one transaction of blockdev-snapshot actions
 * moves every disk onto its overlay at once, with the VM running. With
 * memory, the VM stops first, its RAM and device state are saved
 * (snap-memory.c), and it runs again once the disks have moved.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "qbranch.h"

static void	create_exec(struct client *, json_t *, const char *, size_t);
static void	create_step(struct op *, json_t *);

const struct cmd_entry cmd_snapshot_create_entry = {
	.name = "qbranch-snapshot-create",
	.exec = create_exec,
};

static const struct arg_spec create_args[] = {
	{ "name", 's', 0 },
	{ "description", 's', 0 },
	{ "disks", 'a', 0 },
	{ "memory", 'b', 0 },
	{ NULL, 0, 0 }
};

static void
create_exec(struct client *c, json_t *args, const char *id, size_t idlen)
{
	struct op	*op;
	const char	*name;
	char		*cause;

	if (cmd_check_args(args, create_args, &cause) == -1 ||
	    cmd_check_state_dir(args, "memory", &cause) == -1) {
		cmd_refuse(c, cause, id, idlen);
		return;
	}
	name = json_string_value(json_object_get(args, "name"));
	if (name != NULL && !snap_name_is_valid(name)) {
		client_send_error(c, "GenericError", "invalid snapshot name: "
		    "use a letter or digit, then letters, digits and . _ + -, "
		    "at most 64 characters", id, idlen);
		return;
	}
	if ((op = op_new(c, args, id, idlen, create_step)) == NULL)
		return;
	op->kind = "create";
	create_step(op, NULL);
}

/* The overlay path for each disk: named in "disks", or <stem>.<name>. */
static int
create_paths(struct op *op, struct branch *b)
{
	json_t		*disks = json_object_get(op->args, "disks"), *d;
	const char	*dev, *file;
	char		*cause;
	size_t		 i, k;

	json_array_foreach(disks, i, d) {
		dev = json_string_value(json_object_get(d, "device"));
		if (dev == NULL ||
		    snap_file_find(b->disks, b->ndisks, dev) == NULL) {
			op_fail(op, "disks[%zu]: no managed disk %s", i,
			    dev != NULL ? dev : "(device missing)");
			return -1;
		}
		if (json_object_get(d, "exclude") != NULL &&
		    !json_is_boolean(json_object_get(d, "exclude"))) {
			op_fail(op, "disks[%zu]: 'exclude' must be a boolean",
			    i);
			return -1;
		}
		if (json_is_true(json_object_get(d, "exclude")) &&
		    json_object_get(d, "file") != NULL) {
			op_fail(op, "disks[%zu]: an excluded disk gets no file",
			    i);
			return -1;
		}
	}
	/* Left out for good: see branch_exclude_disk(). */
	json_array_foreach(disks, i, d) {
		if (!json_is_true(json_object_get(d, "exclude")))
			continue;
		dev = json_string_value(json_object_get(d, "device"));
		if (branch_exclude_disk(snap.tree, b, dev, &cause) == -1) {
			op_fail(op, "disks[%zu]: %s", i, cause);
			free(cause);
			return -1;
		}
	}
	if (b->ndisks == 0) {
		op_fail(op, "every disk is excluded: nothing to snapshot");
		return -1;
	}
	op_paths_alloc(op, b->ndisks);
	for (i = 0; i < b->ndisks; i++) {
		op->devs[i] = xstrdup(b->disks[i].device);
		op->backings[i] = xstrdup(b->disks[i].file);
		file = NULL;
		json_array_foreach(disks, k, d) {
			if (strcmp(json_string_value(json_object_get(d,
			    "device")), b->disks[i].device) == 0)
				file = json_string_value(json_object_get(d,
				    "file"));
		}
		if (file != NULL) {
			if (snap_tree_image(snap.tree, file) != NULL) {
				op_fail(op, "%s exists already: qbranch never "
				    "overwrites a file", file);
				return -1;
			}
			if (!op_path_is_allowed(file, snap.tree)) {
				op_fail(op, "%s is outside the directories "
				    "qbranch may use (--image-dir, --allow-dir, "
				    "the disks' own)", file);
				return -1;
			}
			op->paths[i] = xstrdup(file);
		} else
			op->paths[i] = op_image_path(snap.tree,
			    b->disks[i].device, op->name);
	}
	return 0;
}

/* The snapshot in the model: the attached branch's overlays freeze. */
static struct snapshot *
create_apply(struct op *op, struct branch *b)
{
	struct snapshot	*s;
	const char	*desc;
	size_t		 i;

	s = snap_add(snap.tree, op->name, b->base);
	s->created = time(NULL);
	free(s->vm_state);
	s->vm_state = xstrdup(op->run_state);
	if ((desc = json_string_value(json_object_get(op->args,
	    "description"))) != NULL) {
		free(s->description);
		s->description = xstrdup(desc);
	}
	snap_files_set(&s->disks, &s->ndisks, b->disks, b->ndisks);
	s->memory = snap_memory_dup(op->mem_save);
	for (i = 0; i < b->ndisks; i++) {
		free(b->disks[i].backing);
		b->disks[i].backing = xstrdup(b->disks[i].file);
		free(b->disks[i].file);
		b->disks[i].file = xstrdup(op->paths[i]);
		free(b->disks[i].format);
		b->disks[i].format = xstrdup("qcow2");
		b->disks[i].owned = 1;
	}
	b->base = s;
	branch_touch(b);
	return s;
}

enum {
	CREATE_DISCOVER,
	CREATE_PROBE,
	CREATE_PREPARE,
	CREATE_WRITE,
	CREATE_OPEN,
	CREATE_STOP,
	CREATE_SAVE,
	CREATE_SWITCH,
	CREATE_SEND,
	CREATE_COMMIT,
	CREATE_WAIT,
	CREATE_DONE,
};

static void
create_step(struct op *op, json_t *ret)
{
	struct branch		*b;
	struct snapshot		*s;
	struct disk_info	*d;
	json_t			*actions;
	char			 node[40];
	size_t			 i;
	const char		*name;
	int			 memory;

	memory = json_is_true(json_object_get(op->args, "memory"));
	switch (op->stage) {
	case CREATE_DISCOVER:
		/* It opens only new overlays: no need for the open nodes. */
		op->stage = CREATE_PROBE;
		op_discover(op, DISCOVER_DISKS);
		return;
	case CREATE_PROBE:
		op->stage = CREATE_PREPARE;
		if (memory) {
			op_memory_probe(op, 1);
			return;
		}
		/* FALLTHROUGH */
	case CREATE_PREPARE:
		op->stage = CREATE_WRITE;
		op_tree_init(op);
		b = branch_attached(snap.tree);
		if (b == NULL || b->ndisks == 0) {
			op_fail(op, "the VM has no writable disk to snapshot");
			return;
		}
		name = json_string_value(json_object_get(op->args, "name"));
		if (name != NULL && snap_find(snap.tree, name) != NULL) {
			op_fail(op, "a snapshot named %s exists already", name);
			return;
		}
		op->name = name != NULL ? xstrdup(name) :
		    snap_default_name(snap.tree, time(NULL));
		/* Excluding a disk changes the model: keep it to undo. */
		op_tree_begin(op);
		if (create_paths(op, b) == -1)
			return;
		for (i = 0; i < b->ndisks; i++) {
			/* The exporter would find its live disk frozen. */
			d = op_disk(op, b->disks[i].device);
			if (op_node_exported(op, d->node)) {
				op_fail(op, "an export holds %s, the node of %s "
				    "that would become the snapshot: remove the "
				    "export first (see query-block-exports)",
				    d->node, d->device);
				return;
			}
		}
		if (memory)
			op->mem_save = snap_memory_new("snapshot", op->name,
			    op->run_state);
		/*
		 * The model first, and the intent (recover.c); then every
		 * file it names and the tree file are written together.
		 */
		op->subject = create_apply(op, b);
		op->new_overlays = 1;
		op->stops_vm = memory;
		op_intent(op, "begin");
		op_io_wait(op);
		return;
	case CREATE_WRITE:
		op->stage = CREATE_OPEN;
		if (memory)
			op_memory_files(op, op->mem_save);
		op_write_overlays(op);
		op_tree_prepare(op);
		op_io_wait(op);
		return;
	case CREATE_OPEN:
		op->stage = CREATE_STOP;
		op_add_overlays(op);
		return;
	case CREATE_STOP:
		op->stage = CREATE_SAVE;
		if (memory && op->was_running) {
			op_undo_call(op, "cont", NULL);
			op_call(op, "stop", NULL);
			return;
		}
		/* FALLTHROUGH */
	case CREATE_SAVE:
		op->stage = CREATE_SWITCH;
		if (memory) {
			op_memory_save(op, op->mem_save);
			return;
		}
		/* FALLTHROUGH */
	case CREATE_SWITCH:
		/* The tree it commits, for a recovery to finish it. */
		op->stage = CREATE_SEND;
		op_intent(op, "switch");
		op_io_wait(op);
		return;
	case CREATE_SEND:
		op->stage = CREATE_COMMIT;
		b = branch_attached(snap.tree);
		actions = json_array();
		for (i = 0; i < b->ndisks; i++) {
			d = op_disk(op, b->disks[i].device);
			op_node_name(op->paths[i], node, sizeof node);
			json_array_append_new(actions, json_pack("{s:s, s:{s:s, "
			    "s:s}}", "type", "blockdev-snapshot", "data",
			    "node", d->node, "overlay", node));
		}
		op_call(op, "transaction", json_pack("{s:o}", "actions",
		    actions));
		return;
	case CREATE_COMMIT:
		/* QEMU runs on the new overlays: the tree file follows. */
		op->stage = CREATE_WAIT;
		op_commit(op);
		if (memory && op->was_running) {
			op->tolerate = 1;
			op_call(op, "cont", NULL);
			return;
		}
		/* FALLTHROUGH */
	case CREATE_WAIT:
		op->stage = CREATE_DONE;
		op_io_wait(op);
		return;
	case CREATE_DONE:
		s = op->subject;
		if (op->commit_error != NULL) {
			op_fail(op, "snapshot %s was taken, but %s", op->name,
			    op->commit_error);
			return;
		}
		log_info("snapshot %s created%s", op->name, memory ?
		    " with memory" : "");
		op_done(op, snap_json(snap.tree, s));
		return;
	}
}
