/*
 * intent.c: what a snapshot operation is about to do, in intent.json in
 * the state directory, so that a qbranchd killed halfway can finish or take
 * back the operation when it starts again (recover.c). An operation writes
 * its intent before its first change (the files it will make, the disks as
 * they are, whether it stops the VM), again just before QEMU's irreversible
 * step (the tree it is about to commit, as a journal record, and where the
 * disks will be), and before each merge; the file goes when the operation
 * has ended cleanly.
 *
 * It guards against qbranchd dying while QEMU lives on, so it is replaced
 * with rename() but not synced: a crash of the whole machine takes QEMU's
 * running state with it, and what is left then (files the tree does not
 * name) is listed by qbranch-query-orphans.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "qbranch.h"

#define INTENT_FILE	"intent.json"

/* The attached branch's image per device, as {device: file}. */
static json_t *
intent_attached(void)
{
	const struct branch	*b = branch_attached(snap.tree);
	json_t			*m = json_object();
	size_t			 i;

	for (i = 0; b != NULL && i < b->ndisks; i++)
		json_object_set_new(m, b->disks[i].device,
		    json_string(b->disks[i].file));
	return m;
}

/* Before the model changes (op_tree_begin()): where things stand. */
void
op_intent_begin(struct op *op)
{
	op->intent_seq = snap.saved.seq;
	json_decref(op->intent_before);
	op->intent_before = intent_attached();
}

static json_t *
string_array(char **v, size_t n)
{
	json_t	*a = json_array();
	size_t	 i;

	for (i = 0; i < n; i++)
		json_array_append_new(a, json_string(v[i] ? v[i] : ""));
	return a;
}

/* The intent as it stands at step. */
static json_t *
intent_json(struct op *op, const char *step)
{
	json_t		*o, *created;
	const char	*record, *whole;

	o = json_pack("{s:s, s:s, s:I, s:O, s:b}", "op", op->kind, "step",
	    step, "seq", (json_int_t)op->intent_seq, "before",
	    op->intent_before ? op->intent_before : json_null(), "resume",
	    op->stops_vm && op->was_running);
	if (op->tree_backup != NULL)
		json_object_set_new(o, "pre", json_string(op->tree_backup));
	created = json_array();
	if (op->new_overlays) {
		json_decref(created);
		created = string_array(op->paths, op->npaths);
	}
	snap_memory_files(op->mem_save, created);
	json_object_set_new(o, "created", created);
	if (op->doomed != NULL)
		json_object_set_new(o, "doomed", json_deep_copy(op->doomed));
	if (strcmp(step, "switch") == 0) {
		json_object_set_new(o, "after", intent_attached());
		if (op_tree_record(op, &record, &whole) == 0) {
			if (record != NULL)
				json_object_set_new(o, "record",
				    json_string(record));
			else if (whole != NULL)
				json_object_set_new(o, "tree",
				    json_string(whole));
		}
	}
	if (op->astage > 0 || op->attach_resume != NULL)
		json_object_set_new(o, "attach", json_pack("{s:o, s:o, s:o, "
		    "s:b, s:b, s:o}", "paths", string_array(op->paths,
		    op->npaths), "backings", string_array(op->backings,
		    op->npaths), "devices", string_array(op->devs, op->npaths),
		    "run", op->run_after, "no-reset", op->no_reset, "load",
		    snap_memory_json(op->mem_load)));
	if (op->intent_merge != NULL)
		json_object_set_new(o, "merge", json_deep_copy(
		    op->intent_merge));
	return o;
}

static char *
intent_write_work(struct op_io *io)
{
	char	*text = io->data, *path, *tmp, *error = NULL;
	size_t	 len = strlen(text), off = 0;
	ssize_t	 n;
	int	 fd;

	xasprintf(&path, "%s/%s", opts.state_dir, INTENT_FILE);
	xasprintf(&tmp, "%s/.%s.tmp", opts.state_dir, INTENT_FILE);
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
	    0600)) == -1)
		goto fail;
	while (off < len) {
		if ((n = write(fd, text + off, len - off)) == -1) {
			if (errno == EINTR)
				continue;
			close(fd);
			goto fail;
		}
		off += n;
	}
	if (close(fd) == -1 || rename(tmp, path) == -1)
		goto fail;
	goto out;
fail:
	xasprintf(&error, "cannot write %s: %s; nothing was changed", tmp,
	    strerror(errno));
	unlink(tmp);
out:
	free(path);
	free(tmp);
	return error;
}

/*
 * Records the operation's intent at step, in a thread: the caller waits
 * (op_io_wait()) before the change it announces. A failure to write fails
 * the operation there, before that change.
 */
void
op_intent(struct op *op, const char *step)
{
	json_t	*o;

	if (op->kind == NULL || strcmp(op->kind, "recover") == 0)
		return;
	o = intent_json(op, step);
	json_decref(snap.intent);
	snap.intent = o;
	op->intent_written = 1;
	if (opts.state_dir == NULL)
		return;
	op_io(op, intent_write_work, NULL, json_dumps(o, JSON_COMPACT));
}

static char *
intent_remove_work(struct op_io *io)
{
	char	*path;

	xasprintf(&path, "%s/%s", opts.state_dir, INTENT_FILE);
	if (unlink(path) == -1 && errno != ENOENT)
		log_warn("unlink %s", path);
	free(path);
	return NULL;
}

/*
 * At the end of an operation: its intent goes unless it must outlive it,
 * when QEMU went away or the tree file could not follow QEMU. Returns 1
 * when the operation must wait for the file to go.
 */
int
op_intent_end(struct op *op)
{
	if (!op->intent_written)
		return 0;
	op->intent_written = 0;
	if (op->intent_keep || (op->commit_error != NULL && op->error == NULL))
		return 0;
	json_decref(snap.intent);
	snap.intent = NULL;
	if (opts.state_dir == NULL)
		return 0;
	op_io(op, intent_remove_work, NULL, NULL);
	return 1;
}

/* At start-up: an intent left by a qbranchd that died. */
void
intent_load(void)
{
	json_error_t	 err;
	char		*text, *cause = NULL;
	size_t		 len;

	json_decref(snap.intent);
	snap.intent = NULL;
	if (opts.state_dir == NULL)
		return;
	text = store_read_text(opts.state_dir, INTENT_FILE, &len, &cause);
	if (text == NULL) {
		if (cause != NULL) {
			xasprintf(&snap.broken, "%s: snapshot commands are "
			    "refused until it can be read", cause);
			free(cause);
		}
		return;
	}
	snap.intent = json_loadb(text, len, 0, &err);
	if (snap.intent == NULL || !json_is_string(json_object_get(
	    snap.intent, "op"))) {
		xasprintf(&snap.broken, "%s/%s is unreadable (%s): an "
		    "operation was cut short and cannot be recovered; "
		    "snapshot commands are refused until the file is removed",
		    opts.state_dir, INTENT_FILE, snap.intent ? "no \"op\"" :
		    err.text);
		json_decref(snap.intent);
		snap.intent = NULL;
	} else
		log_warnx("%s/%s: a %s operation was cut short at its %s "
		    "step; it is recovered once QEMU is connected",
		    opts.state_dir, INTENT_FILE, json_string_value(
		    json_object_get(snap.intent, "op")), json_string_value(
		    json_object_get(snap.intent, "step")));
	free(text);
}

/* After a recovery: the intent is dealt with. */
void
intent_clear(struct op *op)
{
	json_decref(snap.intent);
	snap.intent = NULL;
	if (opts.state_dir != NULL)
		op_io(op, intent_remove_work, NULL, NULL);
}
