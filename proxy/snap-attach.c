/*
 * snap-attach.c: moving the running VM onto another set of top images, the
 * part revert and switch share. For each disk the new top image is either
 * made (revert: a fresh overlay over a snapshot's frozen image) or opened as
 * it was left (switch: a detached branch's overlay). Then, with the VM
 * stopped: one transaction of blockdev-snapshot puts each new top over the
 * current one, blockdev-reopen cuts it loose onto its real backing, the
 * guest is reset, the tops left behind are closed, and the VM runs again if
 * asked. With op->mem_save, the RAM and device state being left are saved
 * before the disks move; with op->mem_load, a saved state is loaded instead
 * of the reset. Nothing in the tree changes here.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qbranch.h"

static void	attach_step(struct op *, json_t *);

/*
 * Starts the move: op->paths[i] is the new top for device op->devs[i],
 * made over op->backings[i] (open_existing 0) or a detached
 * branch's overlay that sits on it (1). run says the state wanted at the
 * end (1 running, 0 paused).
 */
void
op_attach(struct op *op, int open_existing, int run)
{
	struct disk_info	*d;
	size_t			 i;

	for (i = 0; i < op->npaths; i++) {
		d = op_disk(op, op->devs[i]);
		if (op_node_exported(op, d->node)) {
			op_fail(op, "an export holds %s, the node of %s that "
			    "must close: remove the export first (see "
			    "query-block-exports)", d->node, d->device);
			return;
		}
	}
	op->run_after = run;
	op->attach_open = open_existing;
	op->attach_resume = op->step;
	op->astage = 0;
	op->i = 0;
	op->step = attach_step;
	/* What it will do, for a recovery (recover.c), before any of it. */
	op->new_overlays = !open_existing;
	op->stops_vm = 1;
	op_intent(op, "begin");
	op_io_wait(op);
}

/*
 * Goes on with a move whose transaction QEMU has done (recover.c): the new
 * tops are cut loose, the guest loaded or reset, what is left closed, and
 * the VM run if run says.
 */
void
op_attach_switched(struct op *op, int run)
{
	op->run_after = run;
	op->attach_resume = op->step;
	op->astage = 5;
	op->late = 0;
	op->step = attach_step;
	attach_step(op, NULL);
}

static void
attach_step(struct op *op, json_t *ret)
{
	struct disk_info	*d;
	const char		*below;
	json_t			*actions, *opts_;
	char			 node[40], fnode[40];
	size_t			 i;

	switch (op->astage) {
	case 0:
		/* The intent is written: the saved state's files can be made. */
		if (op->i == 0 && op->mem_save != NULL && !op->mem_made) {
			op->mem_made = 1;
			op_memory_files(op, op->mem_save);
		}
		/* The image below each new top must be open. */
		if (op->i < op->npaths && !op->chain_after) {
			below = op->backings[op->i++];
			op_open_image(op, below);
			return;
		}
		op->astage = 1;
		op->i = 0;
		/* FALLTHROUGH */
	case 1:
		op->astage = 2;
		if (!op->attach_open) {
			/* Fresh overlays over the snapshot's images. */
			op_write_overlays(op);
		} else {
			/* A branch's overlays, opened as they were left. */
			for (i = 0; i < op->npaths; i++) {
				if (op_node_of(op, op->paths[i]) != NULL) {
					op_fail(op, "%s is open in QEMU already",
					    op->paths[i]);
					return;
				}
			}
		}
		/* And the tree file, prepared: all written before a change. */
		op_io_wait(op);
		return;
	case 2:
		op->astage = 3;
		op_add_overlays(op);
		return;
	case 3:
		op->astage = 4;
		op_mark(op, "prepare");
		if (op->was_running) {
			op_undo_call(op, "cont", NULL);
			op_call(op, "stop", NULL);
			return;
		}
		/* FALLTHROUGH */
	case 4:
		op->astage = 10;
		op_mark(op, "stop");
		if (op->mem_save != NULL) {
			op_memory_save(op, op->mem_save);
			return;
		}
		/* FALLTHROUGH */
	case 10:
		if (op->mem_save != NULL)
			op_mark(op, "save");
		/* The tree it commits, for a recovery to finish the move. */
		op->astage = 12;
		op_intent(op, "switch");
		op_io_wait(op);
		return;
	case 12:
		actions = json_array();
		for (i = 0; i < op->npaths; i++) {
			d = op_disk(op, op->devs[i]);
			op_node_name(op->paths[i], node, sizeof node);
			json_array_append_new(actions, json_pack("{s:s, s:{s:s, "
			    "s:s}}", "type", "blockdev-snapshot", "data", "node",
			    d->node, "overlay", node));
		}
		op->astage = 5;
		op_call(op, "transaction", json_pack("{s:o}", "actions",
		    actions));
		return;
	case 5:
		/* The devices run on the new tops: cut them loose. */
		op_commit(op);
		if (op->chain_after && op->late < op->npaths) {
			below = op->backings[op->late++];
			op_open_image(op, below);
			return;
		}
		opts_ = json_array();
		for (i = 0; i < op->npaths; i++) {
			op_node_name(op->paths[i], node, sizeof node);
			op_file_node_name(op->paths[i], fnode, sizeof fnode);
			json_array_append_new(opts_, json_pack("{s:s, s:s, s:s, "
			    "s:s}", "driver", "qcow2", "node-name", node, "file",
			    fnode, "backing", op_node_of(op,
			    op->backings[i])));
		}
		op->astage = 6;
		op_call(op, "blockdev-reopen", json_pack("{s:o}", "options",
		    opts_));
		return;
	case 6:
		op->astage = 11;
		op->i = 0;
		op_mark(op, "switch");
		if (op->mem_load != NULL) {
			op_memory_load(op, op->mem_load);
			return;
		}
		/* FALLTHROUGH */
	case 11:
		op->astage = 7;
		if (op->mem_load != NULL)
			op_mark(op, "state-closed");
		if (op->mem_load != NULL && op->job_error != NULL &&
		    op->commit_error == NULL)
			xasprintf(&op->commit_error, "its memory could not be "
			    "loaded (%s): the guest was reset", op->job_error);
		if (!op->no_reset && (op->mem_load == NULL ||
		    op->job_error != NULL)) {
			op_call(op, "system_reset", NULL);
			return;
		}
		/* FALLTHROUGH */
	case 7:
		/* The tops left behind, and what only they used, close. */
		op->astage = 8;
		op_mark(op, "reset");
		op_close_unused(op);
		return;
	case 8:
		op->astage = 9;
		op_mark(op, "close");
		if (op->run_after) {
			op_call(op, "cont", NULL);
			return;
		}
		/* FALLTHROUGH */
	case 9:
		op_mark(op, "cont");
		/* Once the tree file is in place. */
		op->step = op->attach_resume;
		op_io_wait(op);
		return;
	}
}

/* The format of what a new overlay on disk i goes over. */
const char *
op_backing_format(struct op *op, size_t i)
{
	const struct snap_file	*f;

	f = snap_tree_image(snap.tree, op->backings[i]);
	return f != NULL ? f->format : "qcow2";
}
