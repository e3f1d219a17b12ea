/*
 * snap-save.c: the tree in the state directory (tree-file.c has the
 * format): loaded at start-up, written by every operation in two phases
 * around QEMU's irreversible step. Before it, op_tree_prepare() makes sure
 * the write will go through, by reserving room for a journal record or by
 * writing the whole file beside the old one, while nothing has changed
 * yet: a full or read-only state directory fails the operation there.
 * After it, op_commit() writes the record or puts the file in place.
 * The disk work runs in threads (op_io()); op_io_wait() waits for it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "qbranch.h"

#define JOURNAL_FILE	"tree.journal"
/* The journal grows to the whole file's size, at least this, then the whole
 * file is written again: every byte is written at most about twice. */
#define JOURNAL_MIN	(256 * 1024)

/* One write of the tree: a journal record at off, or the whole file. */
struct tree_write {
	struct tree_file	 file;		/* the tree it writes */
	char			*record;	/* NULL: none would do */
	char			*text;		/* NULL: a record will do */
	off_t			 off;
	int			 whole;		/* the whole file is chosen */
	int			 prepared;
	char			**sync_first;	/* files the tree will name */
};

static void
tree_write_free(struct tree_write *tw)
{
	size_t	i;

	if (tw == NULL)
		return;
	tree_file_clear(&tw->file);
	free(tw->record);
	free(tw->text);
	if (tw->sync_first != NULL) {
		for (i = 0; tw->sync_first[i] != NULL; i++)
			free(tw->sync_first[i]);
		free(tw->sync_first);
	}
	free(tw);
}

/*
 * Plans the write of the model's changes since the tree was last written.
 * Returns NULL when there is nothing to write. A record goes to the
 * journal unless the journal is full or out of step with the file; the
 * whole file is written then, with the record as a fallback if the whole
 * file does not fit on the disk.
 */
static struct tree_write *
tree_write_plan(void)
{
	struct tree_write	*tw;
	size_t			 limit;
	int			 whole;

	/* Where the journal ends is known once the last write is done. */
	if (snap.tree_writing)
		fatalx("a tree write was planned while one is under way");
	tw = xcalloc(1, sizeof *tw);
	tw->record = tree_file_change(&snap.saved, snap.tree, &tw->file,
	    &whole);
	if (tw->record == NULL && !whole && !snap.whole_next) {
		tree_write_free(tw);
		return NULL;
	}
	if (tw->record == NULL || snap.whole_next)
		tw->file.seq = snap.saved.seq + 1;
	limit = snap.file_len > JOURNAL_MIN ? snap.file_len : JOURNAL_MIN;
	tw->off = snap.journal_end;
	if (snap.whole_next || tw->record == NULL || (size_t)tw->off +
	    store_record_len(strlen(tw->record)) > limit)
		tw->text = tree_file_text(&tw->file);
	if (snap.whole_next) {
		free(tw->record);
		tw->record = NULL;
	}
	return tw;
}

/* The file the model was loaded from or last written, as its form now. */
static void
tree_written(struct tree_write *tw)
{
	tree_file_clear(&snap.saved);
	snap.saved = tw->file;
	memset(&tw->file, 0, sizeof tw->file);
	snap.model_dirty = 0;
}

/* First phase, in a thread: the whole file beside the old, or room. */
static char *
tree_write_prepare(struct tree_write *tw)
{
	char	*cause = NULL, *error;

	if (tw->text != NULL) {
		if (store_prepare(opts.state_dir, SNAP_TREE_FILE, tw->text,
		    &cause) == 0) {
			tw->whole = 1;
			return NULL;
		}
		if (tw->record == NULL)
			goto fail;
		free(cause);
		cause = NULL;
	}
	if (store_reserve(opts.state_dir, JOURNAL_FILE, tw->off,
	    store_record_len(strlen(tw->record)), &cause) == 0)
		return NULL;
fail:
	xasprintf(&error, "%s; nothing was changed", cause);
	free(cause);
	return error;
}

/* Second phase, in a thread: the prepared write is done, durably. */
static char *
tree_write_commit(struct tree_write *tw)
{
	char	*cause = NULL;
	size_t	 i;

	/* The saved VM states it names are on the disk first. */
	for (i = 0; tw->sync_first != NULL && tw->sync_first[i] != NULL; i++) {
		if ((cause = file_sync(tw->sync_first[i])) != NULL)
			return cause;
	}
	if (!tw->whole) {
		store_append(opts.state_dir, JOURNAL_FILE, tw->off, tw->record,
		    &cause);
		return cause;
	}
	if (store_commit(opts.state_dir, SNAP_TREE_FILE, &cause) == -1)
		return cause;
	/* A crash before this leaves records the file holds: skipped. */
	if (store_truncate(opts.state_dir, JOURNAL_FILE, 0, &cause) == -1)
		log_warnx("%s", cause);
	free(cause);
	return NULL;
}

/* Both phases at once, for a tree known only after QEMU changed. */
static char *
tree_write_now(struct tree_write *tw)
{
	char	*error;

	if ((error = tree_write_prepare(tw)) != NULL)
		return error;
	return tree_write_commit(tw);
}

static char *
tree_prepare_work(struct op_io *io)
{
	return tree_write_prepare(io->data);
}

static char *
tree_commit_work(struct op_io *io)
{
	return tree_write_commit(io->data);
}

static char *
tree_save_work(struct op_io *io)
{
	return tree_write_now(io->data);
}

/*
 * After a write, in the event loop: where the journal ends now. A failed
 * write leaves the journal out of step: the next write is the whole file.
 */
static void
tree_write_done(struct op_io *io)
{
	struct op		*op = io->op;
	struct tree_write	*tw = io->data;

	io->data = NULL;
	snap.tree_writing = 0;
	if (io->error != NULL) {
		snap.whole_next = 1;
		log_warnx("%s", io->error);
		if (op->error == NULL && op->commit_error == NULL) {
			op->commit_error = io->error;
			io->error = NULL;
		}
	} else if (tw->whole) {
		snap.journal_end = 0;
		snap.file_len = strlen(tw->text);
		snap.whole_next = 0;
	} else
		snap.journal_end = tw->off + store_record_len(
		    strlen(tw->record));
	tree_write_free(tw);
}

/*
 * Before the model changes: what to go back to if the operation fails. It
 * is the tree as written, unless the model changed without being written
 * (a first branch made on connect, an operation that failed late).
 */
void
op_tree_begin(struct op *op)
{
	free(op->tree_backup);
	op->tree_backup = snap.model_dirty ? snap_tree_text(snap.tree) : NULL;
	op->tree_began = 1;
	op_intent_begin(op);
}

static void
tree_prepared(struct op_io *io)
{
	struct op		*op = io->op;
	struct tree_write	*tw = io->data;

	io->data = NULL;
	if (io->error != NULL) {
		if (op->io_error == NULL) {
			op->io_error = io->error;
			io->error = NULL;
		}
		tree_write_free(tw);
		return;
	}
	if (op->undoing) {
		/* The operation failed meanwhile: the tree stays as it was. */
		if (tw->whole)
			store_abort(opts.state_dir, SNAP_TREE_FILE);
		tree_write_free(tw);
		return;
	}
	tw->prepared = 1;
	op->tree_write = tw;
	op->tree_prepared = 1;
}

void
op_tree_prepare(struct op *op)
{
	struct tree_write	*tw;

	tree_write_free(op->tree_write);
	op->tree_write = NULL;
	op->tree_prepared = 1;
	if ((tw = tree_write_plan()) == NULL)
		return;
	if (opts.state_dir == NULL) {
		/* No file: the model's form is kept, for the next change. */
		tw->prepared = 1;
		op->tree_write = tw;
		return;
	}
	op->tree_prepared = 0;
	op_io(op, tree_prepare_work, tree_prepared, tw);
}

/*
 * For operations whose new tree is known only at their end: checks that
 * the state directory takes a write now, before anything changes.
 */
static char *
tree_preflight_work(struct op_io *io)
{
	char	*cause = NULL, *error;

	if (store_reserve(opts.state_dir, JOURNAL_FILE, *(off_t *)io->data,
	    STORE_PAGE, &cause) == 0)
		return NULL;
	xasprintf(&error, "%s; nothing was changed", cause);
	free(cause);
	return error;
}

void
op_tree_preflight(struct op *op)
{
	off_t	*end;

	if (opts.state_dir == NULL)
		return;
	end = xmalloc(sizeof *end);
	*end = snap.journal_end;
	op_io(op, tree_preflight_work, NULL, end);
}

/*
 * The prepared write of op, for its intent: the journal record, else the
 * whole file. Returns -1 when there is none.
 */
int
op_tree_record(struct op *op, const char **record, const char **whole)
{
	struct tree_write	*tw = op->tree_write;

	if (tw == NULL)
		return -1;
	*record = tw->record;
	*whole = tw->text;
	return 0;
}

/* Brings the model back to what it was at op_tree_begin(). */
void
op_tree_rollback(struct op *op)
{
	struct snap_tree	*t;
	struct tree_write	*tw = op->tree_write;
	json_t			*v;
	char			*cause = NULL, *text;

	if (!op->tree_began)
		return;
	text = op->tree_backup != NULL ? op->tree_backup :
	    tree_file_text(&snap.saved);
	v = json_loads(text, 0, NULL);
	if (v == NULL || (t = snap_tree_from_json(v, &cause)) == NULL)
		fatalx("tree copy unreadable: %s", cause);
	json_decref(v);
	snap_tree_free(snap.tree);
	snap.tree = t;
	if (op->tree_backup == NULL) {
		/* Same tree, new entries: matched to the file's again. */
		free(text);
		tree_file_set(&snap.saved, t);
	}
	if (tw != NULL && tw->whole && opts.state_dir != NULL)
		store_abort(opts.state_dir, SNAP_TREE_FILE);
	tree_write_free(tw);
	op->tree_write = NULL;
	op->tree_prepared = 0;
	op->tree_began = 0;
	free(op->tree_backup);
	op->tree_backup = NULL;
}

/* The model is written as tw says: in a thread, one write at a time. */
static void
tree_write_start(struct op *op, struct tree_write *tw,
    char *(*work)(struct op_io *))
{
	tree_written(tw);
	if (opts.state_dir == NULL) {
		tree_write_free(tw);
		return;
	}
	snap.tree_writing = 1;
	op_io(op, work, tree_write_done, tw);
}

/*
 * QEMU has changed for good: nothing will be undone any more, and the
 * prepared write is done (in a thread: see op_io_wait(); a failure is
 * op->commit_error).
 */
void
op_commit(struct op *op)
{
	struct tree_write	*tw = op->tree_write;
	json_t			*p;
	size_t			 i;

	json_array_clear(op->undo);
	op->committed = 1;
	if (!op->tree_prepared)
		return;
	if (tw != NULL && json_array_size(op->sync_first) > 0) {
		tw->sync_first = xcalloc(json_array_size(op->sync_first) + 1,
		    sizeof *tw->sync_first);
		json_array_foreach(op->sync_first, i, p)
			tw->sync_first[i] = xstrdup(json_string_value(p));
	}
	op->tree_prepared = 0;
	op->tree_began = 0;
	free(op->tree_backup);
	op->tree_backup = NULL;
	op->tree_write = NULL;
	if (tw != NULL)
		tree_write_start(op, tw, tree_commit_work);
}

/*
 * Writes the tree as it is now, for operations that change QEMU before
 * their tree is known (after op_tree_preflight()): a failure is
 * op->commit_error once op_io_wait() continues.
 */
void
op_tree_save(struct op *op)
{
	struct tree_write	*tw;

	if ((tw = tree_write_plan()) != NULL)
		tree_write_start(op, tw, tree_save_work);
}

/* After an operation: a failed one may have left the model unwritten. */
void
op_tree_end(struct op *op)
{
	if (op->error != NULL || op->commit_error != NULL)
		snap.model_dirty = 1;
	tree_write_free(op->tree_write);
	op->tree_write = NULL;
	free(op->tree_backup);
	op->tree_backup = NULL;
}

/*
 * Loads the tree at start-up: the whole file, then the journal's records
 * on it. A record cut short by a crash (never acknowledged) is dropped.
 * A journal without a tree file belongs to a tree removed by hand: it goes.
 */
void
snap_init(void)
{
	json_error_t	 err;
	json_t		*v = NULL;
	char		*text, *journal = NULL, *cause = NULL, *nul;
	size_t		 len, jlen = 0, good = 0;

	memset(&snap.saved, 0, sizeof snap.saved);
	snap.tree = NULL;
	snap.model_dirty = 1;
	if (opts.state_dir == NULL) {
		log_info("no --state-dir: the snapshot tree lives in memory "
		    "only and is lost at exit");
		snap.tree = snap_tree_new();
		return;
	}
	text = store_read_text(opts.state_dir, SNAP_TREE_FILE, &len, &cause);
	if (text == NULL && cause == NULL) {
		if (store_truncate(opts.state_dir, JOURNAL_FILE, 0,
		    &cause) == -1)
			goto broken;
		snap.tree = snap_tree_new();
		snap.whole_next = 1;
		return;
	}
	if (text == NULL)
		goto broken;
	snap.file_len = len;
	/* jansson reads a NUL byte as the end of the file and says so. */
	if (len == 0)
		cause = xstrdup("it is empty");
	else if ((nul = memchr(text, '\0', len)) != NULL)
		xasprintf(&cause, "a NUL byte at offset %zu", (size_t)(nul -
		    text));
	if (cause != NULL)
		goto broken;
	if ((v = json_loadb(text, len, JSON_REJECT_DUPLICATES, &err)) ==
	    NULL) {
		xasprintf(&cause, "line %d, column %d: %s", err.line,
		    err.column, err.text);
		goto broken;
	}
	journal = store_read_text(opts.state_dir, JOURNAL_FILE, &jlen,
	    &cause);
	if (journal == NULL && cause != NULL)
		goto broken;
	if (journal != NULL && tree_journal_replay(v, journal, jlen, &good,
	    &cause) == -1)
		goto broken;
	if (good < jlen) {
		log_warnx("%s/%s: dropping a record cut short at byte %zu",
		    opts.state_dir, JOURNAL_FILE, good);
		if (store_truncate(opts.state_dir, JOURNAL_FILE, good,
		    &cause) == -1)
			goto broken;
	}
	if ((snap.tree = snap_tree_from_json(v, &cause)) == NULL)
		goto broken;
	tree_file_set(&snap.saved, snap.tree);
	snap.saved.seq = json_integer_value(json_object_get(v, "seq"));
	snap.journal_end = good;
	snap.model_dirty = 0;
	/* An older qbranchd would not see a journal: it refuses version 2. */
	snap.whole_next = json_integer_value(json_object_get(v, "version")) <
	    SNAP_TREE_VERSION;
	log_info("snapshot tree loaded from %s/%s", opts.state_dir,
	    SNAP_TREE_FILE);
	goto out;
broken:
	xasprintf(&snap.broken, "the tree file %s/%s is unusable (%s); "
	    "snapshot commands are refused until it is repaired or removed",
	    opts.state_dir, SNAP_TREE_FILE, cause);
	log_warnx("%s", snap.broken);
	free(cause);
out:
	json_decref(v);
	free(text);
	free(journal);
}

/* Frees the model at exit. */
void
snap_shutdown(void)
{
	snap_tree_free(snap.tree);
	snap.tree = NULL;
	tree_file_clear(&snap.saved);
	free(snap.broken);
	snap.broken = NULL;
	json_decref(snap.intent);
	snap.intent = NULL;
	snap_memory_shutdown();
}
