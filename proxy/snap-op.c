/*
 * snap-op.c: the engine under every snapshot operation. One operation runs
 * at a time. It sends the proxy's own QMP commands to QEMU one after the
 * other (each step continues in the callback of the previous reply), waits
 * for block jobs through their events and reports their progress, records
 * how to undo each change it made in QEMU or on disk, and on any failure
 * undoes them in reverse order before answering, so that a failed operation
 * leaves QEMU, the files and the tree as they were. The tree file is
 * prepared before QEMU's irreversible step and put in place after it.
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
static void	op_answer(struct op *);
static void	progress_stop(struct op *);

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
 * Starts an operation for a client's request (args borrowed). Returns NULL
 * after answering the client when another one runs or the tree is unusable.
 */
struct op *
op_new(struct client *c, json_t *args, const char *id, size_t idlen,
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
	op->args = json_incref(args);
	op->step = step;
	op->undo = json_array();
	clock_gettime(CLOCK_MONOTONIC, &op->mark);
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
op_finish(struct op *op)
{
	struct client	*c = op->client;
	size_t		 i;

	/* Its intent goes first: until then, it holds clients off. */
	if (op_intent_end(op)) {
		op->finish_deferred = 1;
		return;
	}
	if (!op->answered)
		op_answer(op);
	if (op->io_pending > 0) {
		/* A thread still writes for it: it ends when that is done. */
		op->finish_deferred = 1;
		return;
	}
	snap.op = NULL;
	snap_memory_release();
	op_tree_end(op);
	progress_stop(op);
	if (op->on_end != NULL)
		op->on_end(op);
	if (c != NULL) {
		c->flags &= ~CLIENT_BUSY;
		client_recheck(c);
	}
	disk_info_free(op->disks, op->ndisks);
	json_decref(op->args);
	json_decref(op->nodes);
	json_decref(op->exports);
	json_decref(op->undo);
	json_decref(op->result);
	json_decref(op->plan);
	json_decref(op->opening);
	json_decref(op->closing);
	json_decref(op->replies);
	json_decref(op->sync_first);
	json_decref(op->memdevs);
	json_decref(op->mem_files);
	json_decref(op->intent_before);
	json_decref(op->intent_merge);
	json_decref(op->doomed);
	snap_memory_free(op->mem_load);
	snap_memory_free(op->mem_save);
	free(op->commit_error);
	free(op->run_state);
	free(op->error);
	free(op->job_error);
	free(op->io_error);
	free(op->fail_context);
	free(op->id);
	free(op->s1);
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
	/* A new QEMU came while it ran: its disks are checked now. */
	if (snap.reconcile_due) {
		snap.reconcile_due = 0;
		snap.reconciling = 0;
		if (upstream_connected())
			snap_upstream_ready();
	}
}

/* Ends an operation with its result (stolen) as the reply. */
void
op_done(struct op *op, json_t *ret)
{
	op->answer = json_dumps(ret, JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
	json_decref(ret);
	op_finish(op);
}

/*
 * The client's answer, once the operation's intent is gone: a client may
 * send the next operation as soon as it has it, and that one's intent must
 * not race with this one's removal.
 */
static void
op_answer(struct op *op)
{
	if (op->client != NULL && op->answer != NULL)
		client_reply_local(op->client, qmp_return_reply(op->answer,
		    op->id, op->idlen));
	else if (op->client != NULL && op->error != NULL)
		client_send_error(op->client, "GenericError", op->error, op->id,
		    op->idlen);
	free(op->answer);
	op->answer = NULL;
	op->answered = 1;
}

/*
 * Fails an operation: what it changed is undone in reverse order, then the
 * client gets the error.
 */
void
op_fail(struct op *op, const char *fmt, ...)
{
	va_list	 ap;
	char	*msg, *full;

	if (op->error == NULL) {
		va_start(ap, fmt);
		if (vasprintf(&msg, fmt, ap) == -1)
			fatal("vasprintf");
		va_end(ap);
		if (op->fail_context != NULL) {
			xasprintf(&full, "%s%s", op->fail_context, msg);
			free(msg);
			msg = full;
		}
		op->error = msg;
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

	if (n == 0 && op->save_on_fail) {
		/* QEMU changed for good before the failure: the tree follows. */
		op->save_on_fail = 0;
		op->step = op_undo_next;
		op_tree_save(op);
		op_io_wait(op);
		return;
	}
	if (n == 0) {
		op_finish(op);		/* it answers with op->error */
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
 * File work of an operation (the tree file, new overlays) runs in threads
 * (io-thread.c) while QEMU's part goes on. op_io_wait() holds the step
 * until every piece is done, then continues it with NULL, or fails the
 * operation with the first error of a piece that can fail it.
 */
static void
op_io_work(void *arg)
{
	struct op_io	*io = arg;

	io->error = io->work(io);
}

static void
op_io_done(void *arg)
{
	struct op_io	*io = arg;
	struct op	*op = io->op;

	op->io_pending--;
	fault_point(op, "after", "file work", 0);
	if (io->after != NULL)
		io->after(io);
	else if (io->error != NULL && op->io_error == NULL) {
		op->io_error = io->error;
		io->error = NULL;
	}
	free(io->error);
	free(io->data);
	free(io);
	if (op->io_pending > 0)
		return;
	if (op->finish_deferred) {
		op_finish(op);
		return;
	}
	if (op->io_waiting)
		op_io_wait(op);
}

static char *
unlink_work(struct op_io *io)
{
	char	**paths = io->data;
	size_t	  i;

	for (i = 0; paths[i] != NULL; i++) {
		if (unlink(paths[i]) == -1)
			log_warn("unlink %s", paths[i]);
		free(paths[i]);
	}
	return NULL;
}

/*
 * Removes files (paths, a JSON array, borrowed) in a thread: removing a
 * large file takes milliseconds the event loop does not have. One that
 * cannot be removed is logged. op_io_wait() waits for it.
 */
void
op_unlink(struct op *op, json_t *paths)
{
	char		**v;
	json_t		*p;
	size_t		  i, n = 0;

	v = xcalloc(json_array_size(paths) + 1, sizeof *v);
	json_array_foreach(paths, i, p) {
		if (json_is_string(p))
			v[n++] = xstrdup(json_string_value(p));
	}
	op_io(op, unlink_work, NULL, v);
}

/*
 * Starts work in a thread with data, then after in the event loop; data is
 * freed with free() then, unless after took it (set io->data to NULL).
 */
void
op_io(struct op *op, char *(*work)(struct op_io *),
    void (*after)(struct op_io *), void *data)
{
	struct op_io	*io;

	io = xcalloc(1, sizeof *io);
	io->work = work;
	io->after = after;
	io->data = data;
	io->op = op;
	op->io_pending++;
	fault_point(op, "before", "file work", 0);
	io_run(op_io_work, op_io_done, io);
}

void
op_io_wait(struct op *op)
{
	char	*error;

	if (op->io_pending > 0) {
		op->io_waiting = 1;
		return;
	}
	op->io_waiting = 0;
	if ((error = op->io_error) != NULL) {
		op->io_error = NULL;
		op_fail(op, "%s", error);
		free(error);
		return;
	}
	op->step(op, NULL);
}

/*
 * Logs (-v) how long the operation took since its last mark: where the
 * time of a revert goes, for scripts/bench.
 */
void
op_mark(struct op *op, const char *what)
{
	struct timespec	now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	log_debug("timing: %s %.2f ms", what, (now.tv_sec -
	    op->mark.tv_sec) * 1e3 + (now.tv_nsec - op->mark.tv_nsec) / 1e6);
	op->mark = now;
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
	json_t	*u = json_pack("{s:s}", "execute", execute);

	if (args != NULL)
		json_object_set_new(u, "arguments", args);
	json_array_append_new(op->undo, u);
}

/* Records a file to remove if the operation fails. */
void
op_undo_unlink(struct op *op, const char *path)
{
	json_array_append_new(op->undo, json_pack("{s:s}", "unlink", path));
}

/*
 * Whether a fault point may make the step fail: not while undoing, nor
 * once QEMU changed for good (what fails then is left to a recovery, which
 * the crash tests reach by killing qbranchd there).
 */
static int
op_can_fail(struct op *op)
{
	return !op->undoing && !op->committed;
}

/* Sends a command; the step continues with its "return" (args stolen). */
void
op_call(struct op *op, const char *execute, json_t *args)
{
	json_t	*fake;

	snprintf(op->calling, sizeof op->calling, "%s", execute);
	if (op->qemu_gone) {
		/* Never to a QEMU started since: it is not the one changed. */
		json_decref(args);
		op_reply_cb(NULL, op);
		return;
	}
	if (fault_point(op, "before", execute, op_can_fail(op)) == -1) {
		/* As if QEMU had refused it. */
		json_decref(args);
		fake = fault_reply(execute);
		op_reply_cb(fake, op);
		json_decref(fake);
		return;
	}
	upstream_call(execute, args, op_reply_cb, op);
}

static void
op_reply_cb(json_t *reply, void *arg)
{
	struct op	*op = arg;
	json_t		*err;

	if (reply != NULL)
		fault_point(op, "after", op->calling, 0);
	if (reply == NULL) {
		/* QEMU is gone: nothing can be undone through it now. */
		json_array_clear(op->undo);
		op->intent_keep = 1;
		op->qemu_gone = 1;
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

/*
 * Commands sent together: QEMU answers them in order while the replies of
 * the first are on their way. The step continues with the array of every
 * reply, {"return": ...} or {"error": ...}, once all are in.
 */
struct call_slot {
	struct op	*op;
	size_t		 index;
};

static void
all_continue(struct op *op)
{
	json_t	*replies;

	/* Replies may come back at once (QEMU gone): not while sending. */
	if (op->sending || op->replies_due > 0)
		return;
	fault_point(op, "after", "commands sent together", 0);
	replies = op->replies;
	op->replies = NULL;
	op->step = op->all_resume;
	op->step(op, replies);
	json_decref(replies);
}

static void
all_reply_cb(json_t *reply, void *arg)
{
	struct call_slot	*slot = arg;
	struct op		*op = slot->op;

	if (reply == NULL) {
		/* As op_reply_cb(): nothing goes to a QEMU started since. */
		json_array_clear(op->undo);
		op->intent_keep = 1;
		op->qemu_gone = 1;
		reply = json_pack("{s:{s:s, s:s}}", "error", "class",
		    "GenericError", "desc", "QEMU went away during the "
		    "operation");
	} else
		json_incref(reply);
	json_array_set_new(op->replies, slot->index, reply);
	free(slot);
	op->replies_due--;
	all_continue(op);
}

/* Sends every call of calls ([{execute, arguments?}], stolen) at once. */
void
op_call_all(struct op *op, json_t *calls)
{
	struct call_slot	*slot;
	json_t			*c;
	size_t			 i;
	int			 refuse;

	refuse = fault_point(op, "before", "commands sent together",
	    op_can_fail(op)) == -1;
	op->all_resume = op->step;
	op->replies = json_array();
	op->sending = 1;
	json_array_foreach(calls, i, c) {
		if (op->qemu_gone) {
			json_array_append_new(op->replies, json_pack(
			    "{s:{s:s, s:s}}", "error", "class", "GenericError",
			    "desc", "QEMU went away during the operation"));
			continue;
		}
		if (refuse) {
			/* As if QEMU had refused each. */
			json_array_append_new(op->replies, fault_reply(
			    json_string_value(json_object_get(c, "execute"))));
			continue;
		}
		json_array_append_new(op->replies, json_null());
		slot = xcalloc(1, sizeof *slot);
		slot->op = op;
		slot->index = i;
		op->replies_due++;
		upstream_call(json_string_value(json_object_get(c, "execute")),
		    json_incref(json_object_get(c, "arguments")), all_reply_cb,
		    slot);
	}
	json_decref(calls);
	op->sending = 0;
	all_continue(op);
}

/* The first error's text among replies from op_call_all(), or NULL. */
const char *
op_first_error(json_t *replies)
{
	json_t	*r, *err;
	size_t	 i;

	json_array_foreach(replies, i, r) {
		if ((err = json_object_get(r, "error")) != NULL)
			return json_string_value(json_object_get(err, "desc"));
	}
	return NULL;
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
static void	job_conclude(struct op *);
static void	job_complete_cb(json_t *, void *);
static void	job_cancel_cb(json_t *, void *);

void
op_job(struct op *op, const char *execute, json_t *args)
{
	static unsigned	 serial;

	/* Unique beyond this process: QEMU may keep a job it left. */
	snprintf(op->job, sizeof op->job, "qbranch-job-%d-%u", (int)getpid(),
	    ++serial);
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

/*
 * A job of qbranch's that QEMU ran on while qbranchd was away, in status:
 * the step waits for it as for its own (its error goes to op->job_error),
 * completing it once ready if complete says, else cancelling it.
 */
void
op_job_adopt(struct op *op, const char *id, const char *status, int complete)
{
	snprintf(op->job, sizeof op->job, "%s", id);
	op->job_concluded = 0;
	op->job_started = 1;
	op->job_tolerate = 1;
	op->job_complete = complete;
	op->job_resume = op->step;
	op->step = job_queried;
	if (strcmp(status, "concluded") == 0) {
		op->job_concluded = 1;
		job_conclude(op);
		return;
	}
	if (strcmp(status, "ready") == 0) {
		op->job_complete = 0;
		upstream_call(complete ? "job-complete" : "job-cancel",
		    json_pack("{s:s}", "id", id), complete ? job_complete_cb :
		    job_cancel_cb, NULL);
	}
	/* Else its conclusion comes as an event. */
}

static void
job_started(struct op *op, json_t *ret)
{
	op->job_started = 1;
	op->step = job_queried;
	if (op->job_concluded)
		job_conclude(op);
}

/* Its error read and the job dismissed, both asked at once. */
static void
job_conclude(struct op *op)
{
	op_call_all(op, json_pack("[{s:s}, {s:s, s:{s:s}}]", "execute",
	    "query-jobs", "execute", "job-dismiss", "arguments", "id",
	    op->job));
}

/*
 * job-complete refused: the job stays ready and the operation would wait
 * for ever, so it is cancelled; its error then fails the operation.
 */
static void
job_cancel_cb(json_t *reply, void *arg)
{
	/* Its conclusion comes as an event. */
}

static void
job_complete_cb(json_t *reply, void *arg)
{
	json_t	*err;

	if (reply == NULL || (err = json_object_get(reply, "error")) == NULL)
		return;
	log_warnx("job-complete: %s", json_string_value(json_object_get(err,
	    "desc")));
	if (snap.op != NULL && snap.op->job[0] != '\0')
		upstream_call("job-cancel", json_pack("{s:s}", "id",
		    snap.op->job), job_cancel_cb, NULL);
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
		if (id != NULL && status != NULL && op->job_complete &&
		    strcmp(status, "ready") == 0 && strcmp(id, op->job) == 0) {
			/* A commit into the active layer: pivot now. */
			op->job_complete = 0;
			upstream_call("job-complete", json_pack("{s:s}", "id",
			    id), job_complete_cb, NULL);
			return;
		}
		if (id == NULL || status == NULL ||
		    strcmp(status, "concluded") != 0)
			return;
		if (strcmp(id, op->job) != 0 || op->job_concluded)
			return;
		op->job_concluded = 1;
		if (op->job_started)
			job_conclude(op);
	}
}

static void
job_queried(struct op *op, json_t *replies)
{
	json_t		*ret, *j;
	size_t		 i;
	const char	*error = NULL, *dismiss;
	char		*job_error;

	ret = json_object_get(json_array_get(replies, 0), "return");
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
	if ((dismiss = op_first_error(replies)) != NULL)
		log_warnx("job %s: %s", op->job, dismiss);
	job_error = error != NULL ? xstrdup(error) : NULL;
	op->job_started = 0;
	op->job[0] = '\0';
	op->step = op->job_resume;
	if (job_error != NULL && op->job_tolerate) {
		/* The step reads it from op->job_error. */
		op->job_tolerate = 0;
		free(op->job_error);
		op->job_error = job_error;
		op->step(op, NULL);
		return;
	}
	op->job_tolerate = 0;
	if (job_error != NULL) {
		op_fail(op, "%s", job_error);
		free(job_error);
		return;
	}
	op->step(op, NULL);
}
