/*
 * snap-job.c: QEMU's snapshot-save, snapshot-load and snapshot-delete jobs,
 * emulated over the tree for a translate rule. A client that waits on
 * JOB_STATUS_CHANGE events, reads query-jobs and sends job-dismiss works
 * unchanged: the command answers {} at once, the job goes created,
 * running, then waiting, pending, concluded (or aborting, concluded with
 * its error), and stays listed until dismissed, as QEMU's do. The work is
 * the proxy's own operation, detached from the client that asked.
 */
#include <stdlib.h>
#include <string.h>

#include "qbranch.h"

struct snap_job {
	char			*id;
	const char		*type;		/* snapshot-save, ... */
	const char		*status;
	char			*error;
	struct reply_hook	 hook;		/* a reply before the work */
	TAILQ_ENTRY(snap_job)	 entry;
};

static TAILQ_HEAD(, snap_job) snap_jobs = TAILQ_HEAD_INITIALIZER(snap_jobs);

int
snap_jobs_exist(void)
{
	return !TAILQ_EMPTY(&snap_jobs);
}

static struct snap_job *
snap_job_find(const char *id)
{
	struct snap_job	*j;

	TAILQ_FOREACH(j, &snap_jobs, entry) {
		if (strcmp(j->id, id) == 0)
			return j;
	}
	return NULL;
}

static void
snap_job_status(struct snap_job *j, const char *status)
{
	json_t	*data;

	j->status = status;
	data = json_pack("{s:s, s:s}", "status", status, "id", j->id);
	client_broadcast_event("JOB_STATUS_CHANGE", data);	/* borrows */
	json_decref(data);
}

static void
snap_job_conclude(struct snap_job *j, const char *error)
{
	if (error != NULL) {
		j->error = xstrdup(error);
		log_info("job %s (%s) failed: %s", j->id, j->type, error);
		snap_job_status(j, "aborting");
	} else {
		snap_job_status(j, "waiting");
		snap_job_status(j, "pending");
	}
	snap_job_status(j, "concluded");
}

static void
snap_job_free(struct snap_job *j)
{
	free(j->id);
	free(j->error);
	free(j);
}

/* The command answered before any work began: mostly a refusal. */
static void
snap_job_take(struct client *c, char *reply, struct reply_hook *hook)
{
	struct snap_job	*j = (struct snap_job *)((char *)hook -
			    offsetof(struct snap_job, hook));
	json_t		*r;
	const char	*desc;

	r = json_loads(reply, 0, NULL);
	free(reply);
	desc = json_string_value(json_object_get(json_object_get(r, "error"),
	    "desc"));
	snap_job_conclude(j, desc);
	json_decref(r);
}

static void
snap_job_hook_free(struct reply_hook *hook)
{
}

static void
snap_job_op_end(struct op *op)
{
	snap_job_conclude(op->on_end_arg, op->error);
}

/*
 * A new job, listed newest first as QEMU lists its own; the command's {}
 * is answered.
 */
static struct snap_job *
snap_job_new(struct client *c, const char *id, size_t idlen,
    const char *job_id, const char *type)
{
	struct snap_job	*j;

	j = xcalloc(1, sizeof *j);
	j->id = xstrdup(job_id);
	j->type = type;
	j->hook.take = snap_job_take;
	j->hook.free = snap_job_hook_free;
	TAILQ_INSERT_HEAD(&snap_jobs, j, entry);
	snap_job_status(j, "created");
	snap_job_status(j, "running");
	client_reply_local(c, qmp_return_reply("{}", id, idlen));
	return j;
}

/*
 * Starts a job running the proxy's command name with args (taken), for
 * a request already checked.
 */
static void
snap_job_start(struct client *c, const char *id, size_t idlen,
    const char *job_id, const char *type, const char *name, json_t *args)
{
	struct snap_job	*j;
	struct op	*before = snap.op;

	j = snap_job_new(c, id, idlen, job_id, type);
	c->hook = &j->hook;
	cmd_run(c, name, args);
	json_decref(args);
	if (c->hook == &j->hook)
		c->hook = NULL;
	if (snap.op != NULL && snap.op != before && snap.op->client == c) {
		/*
		 * The operation goes on alone; the client is free. Its reading
		 * resumes once this request is consumed (client_process()
		 * rechecks then): resuming it here would handle the next
		 * requests before this one has left the input.
		 */
		snap.op->client = NULL;
		snap.op->on_end = snap_job_op_end;
		snap.op->on_end_arg = j;
		c->flags &= ~CLIENT_BUSY;
	}
}

/*
 * A job that ends as soon as it starts, with error (NULL: success), where
 * QEMU's job would end so with nothing done: its message, not the tree's.
 */
static void
snap_job_at_once(struct client *c, const char *id, size_t idlen,
    const char *job_id, const char *type, const char *error)
{
	snap_job_conclude(snap_job_new(c, id, idlen, job_id, type), error);
}

/* Whether the tree has a snapshot named tag. */
static int
snap_job_tag_exists(const char *tag)
{
	return snap.tree != NULL && snap_find(snap.tree, tag) != NULL;
}

/*
 * Checks a job command's arguments as QEMU does. Returns -1 after
 * answering.
 */
static int
snap_job_check(struct client *c, json_t *args, const struct arg_spec *spec,
    const char *id, size_t idlen)
{
	const char	*job_id;
	char		*cause;
	json_t		*v;
	size_t		 i;

	if (cmd_check_args(args, spec, &cause) == -1) {
		cmd_refuse(c, cause, id, idlen);
		return -1;
	}
	json_array_foreach(json_object_get(args, "devices"), i, v) {
		if (!json_is_string(v)) {
			xasprintf(&cause, "Invalid parameter type for "
			    "'devices[%zu]', expected: string", i);
			client_send_error(c, "GenericError", cause, id, idlen);
			free(cause);
			return -1;
		}
	}
	job_id = json_string_value(json_object_get(args, "job-id"));
	if (snap_job_find(job_id) != NULL) {
		xasprintf(&cause, "Job ID '%s' already in use", job_id);
		cmd_refuse(c, cause, id, idlen);
		return -1;
	}
	return 0;
}

static const struct arg_spec save_load_args[] = {
	{ "job-id", 's', 1 },
	{ "tag", 's', 1 },
	{ "vmstate", 's', 1 },
	{ "devices", 'a', 1 },
	{ NULL, 0, 0 }
};

static const struct arg_spec delete_args[] = {
	{ "job-id", 's', 1 },
	{ "tag", 's', 1 },
	{ "devices", 'a', 1 },
	{ NULL, 0, 0 }
};

/* The arguments' tag. */
static const char *
tag_of(json_t *args)
{
	return json_string_value(json_object_get(args, "tag"));
}

static const char *
job_id_of(json_t *args)
{
	return json_string_value(json_object_get(args, "job-id"));
}

/* snapshot-save: a snapshot with memory (the tree says where it goes). */
int
snap_job_save(struct client *c, json_t *args, json_t *options,
    const char *id, size_t idlen)
{
	char	*error;

	if (snap_job_check(c, args, save_load_args, id, idlen) == -1)
		return 0;
	if (snap_job_tag_exists(tag_of(args))) {
		/* QEMU refuses a tag it has, where savevm would replace it. */
		xasprintf(&error, "Snapshot '%s' already exists in one or more "
		    "devices", tag_of(args));
		snap_job_at_once(c, id, idlen, job_id_of(args),
		    "snapshot-save", error);
		free(error);
		return 0;
	}
	snap_job_start(c, id, idlen, job_id_of(args), "snapshot-save",
	    "qbranch-snapshot-create", translate_args(json_pack("{s:s, s:b}",
	    "name", tag_of(args), "memory", 1), options));
	return 0;
}

/* snapshot-load: a revert that leaves the run state as it was. */
int
snap_job_load(struct client *c, json_t *args, json_t *options,
    const char *id, size_t idlen)
{
	char	*error;

	if (snap_job_check(c, args, save_load_args, id, idlen) == -1)
		return 0;
	if (!snap_job_tag_exists(tag_of(args))) {
		xasprintf(&error, "Snapshot '%s' does not exist in one or more "
		    "devices", tag_of(args));
		snap_job_at_once(c, id, idlen, job_id_of(args),
		    "snapshot-load", error);
		free(error);
		return 0;
	}
	snap_job_start(c, id, idlen, job_id_of(args), "snapshot-load",
	    "qbranch-snapshot-revert", translate_args(json_pack("{s:s, s:s}",
	    "name", tag_of(args), "state", "current"), options));
	return 0;
}

int
snap_job_delete(struct client *c, json_t *args, json_t *options,
    const char *id, size_t idlen)
{
	if (snap_job_check(c, args, delete_args, id, idlen) == -1)
		return 0;
	/* QEMU's job succeeds on a tag it does not have, as delvm does. */
	if (!snap_job_tag_exists(tag_of(args))) {
		snap_job_at_once(c, id, idlen, job_id_of(args),
		    "snapshot-delete", NULL);
		return 0;
	}
	snap_job_start(c, id, idlen, job_id_of(args), "snapshot-delete",
	    "qbranch-snapshot-delete", translate_args(json_pack("{s:s}",
	    "name", tag_of(args)), options));
	return 0;
}

/* Our jobs as query-jobs entries, comma-separated (allocated). */
char *
snap_jobs_json(void)
{
	struct snap_job	*j;
	struct buf	 b = { NULL, 0, 0 };
	json_t		*o;
	char		*text;

	buf_addstr(&b, "");
	TAILQ_FOREACH(j, &snap_jobs, entry) {
		o = json_pack("{s:i, s:s, s:i, s:s, s:s}", "current-progress",
		    strcmp(j->status, "concluded") == 0, "status", j->status,
		    "total-progress", 1, "type", j->type, "id", j->id);
		if (j->error != NULL)
			json_object_set_new(o, "error", json_string(j->error));
		text = json_dumps(o, JSON_PRESERVE_ORDER);
		buf_addstr(&b, b.len > 0 ? ", " : "");
		buf_addstr(&b, text);
		free(text);
		json_decref(o);
	}
	return b.data;
}

/*
 * The job-* commands on one of our jobs, answered here. Returns 1 when
 * the request was about one of ours (and consumed).
 */
int
snap_job_command(struct client *c, const struct qmp_msg *msg,
    const struct qmp_request *req)
{
	static const char *const verbs[] = {
		"dismiss", "cancel", "finalize", "complete", "pause", "resume",
		NULL
	};
	struct snap_job	*j;
	json_t		*args;
	char		*id = NULL, *desc;
	size_t		 idlen = 0;
	int		 v;

	if (strncmp(req->name, "job-", 4) != 0)
		return 0;
	for (v = 0; verbs[v] != NULL; v++) {
		if (strcmp(req->name + 4, verbs[v]) == 0)
			break;
	}
	if (verbs[v] == NULL || (args = cmd_arguments(c, msg, req)) == NULL)
		return 0;
	j = json_is_string(json_object_get(args, "id")) ?
	    snap_job_find(json_string_value(json_object_get(args, "id"))) :
	    NULL;
	json_decref(args);
	if (j == NULL)
		return 0;
	if (req->id != NULL)
		id = client_copy_id(c, msg, req->id, &idlen);
	if (v == 0 && strcmp(j->status, "concluded") == 0) {
		snap_job_status(j, "null");
		TAILQ_REMOVE(&snap_jobs, j, entry);
		snap_job_free(j);
		client_reply_local(c, qmp_return_reply("{}", id, idlen));
	} else {
		/* Ours run to their end: nothing else applies. */
		xasprintf(&desc, "Job '%s' in state '%s' cannot accept command "
		    "verb '%s'", j->id, j->status, verbs[v]);
		client_send_error(c, "GenericError", desc, id, idlen);
		free(desc);
	}
	free(id);
	conn_move_fds(c->conn, msg->start + msg->len, NULL);
	conn_drain_in(c->conn, msg->len);
	return 1;
}

void
snap_jobs_shutdown(void)
{
	struct snap_job	*j;

	while ((j = TAILQ_FIRST(&snap_jobs)) != NULL) {
		TAILQ_REMOVE(&snap_jobs, j, entry);
		snap_job_free(j);
	}
}
