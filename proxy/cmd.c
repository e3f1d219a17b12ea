/*
 * cmd.c: the path every well-formed request takes. Before negotiation only
 * the commands marked for it exist; afterwards a command the proxy owns runs
 * here, and every other one goes to QEMU untouched but for its id.
 */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "qbranch.h"

static const struct cmd_entry *cmd_table[] = {
	&cmd_qmp_capabilities_entry,
	&cmd_snapshot_create_entry,
	&cmd_snapshot_revert_entry,
	&cmd_branch_switch_entry,
	&cmd_snapshot_delete_entry,
	&cmd_branch_delete_entry,
	&cmd_snapshot_edit_entry,
	&cmd_query_snapshots_entry,
	&cmd_query_branches_entry,
	&cmd_query_disks_entry,
	&cmd_query_orphans_entry,
	&cmd_orphans_delete_entry,
};

/* Answers a request with a GenericError; cause is freed. */
void
cmd_refuse(struct client *c, char *cause, const char *id, size_t idlen)
{
	client_send_error(c, "GenericError", cause, id, idlen);
	free(cause);
}

/*
 * Saved VM states live in the state directory: a request whose flag key
 * asks for one is refused without it. Returns -1 with an allocated *cause.
 */
int
cmd_check_state_dir(json_t *args, const char *key, char **cause)
{
	if (!json_is_true(json_object_get(args, key)) || opts.state_dir != NULL)
		return 0;
	xasprintf(cause, "'%s' needs qbranchd's --state-dir, where the VM "
	    "state is kept", key);
	return -1;
}

/*
 * Checks arguments against a spec the way QEMU's input visitor does, with
 * its texts. Returns -1 with an allocated *cause.
 */
int
cmd_check_args(json_t *args, const struct arg_spec *spec, char **cause)
{
	const struct arg_spec	*a;
	const char		*key, *want;
	json_t			*v;
	int			 good;

	for (a = spec; a->name != NULL; a++) {
		v = json_object_get(args, a->name);
		if (v == NULL) {
			if (a->required) {
				xasprintf(cause, "Parameter '%s' is missing",
				    a->name);
				return -1;
			}
			continue;
		}
		switch (a->type) {
		case 's':
			good = json_is_string(v);
			want = "string";
			break;
		case 'b':
			good = json_is_boolean(v);
			want = "boolean";
			break;
		case 'a':
			good = json_is_array(v);
			want = "array";
			break;
		default:
			good = json_is_integer(v);
			want = "integer";
			break;
		}
		if (!good) {
			xasprintf(cause, "Invalid parameter type for '%s', "
			    "expected: %s", a->name, want);
			return -1;
		}
	}
	json_object_foreach(args, key, v) {
		for (a = spec; a->name != NULL; a++) {
			if (strcmp(a->name, key) == 0)
				break;
		}
		if (a->name == NULL) {
			xasprintf(cause, "Parameter '%s' is unexpected", key);
			return -1;
		}
	}
	return 0;
}

/*
 * The proxy's own commands as query-commands entries, comma-separated, for
 * splicing into QEMU's list (qmp_capabilities is in it already).
 */
const char *
cmd_list_json(void)
{
	static struct buf	b;
	size_t			i;

	if (b.data != NULL)
		return b.data;
	buf_addstr(&b, "");
	for (i = 0; i < sizeof cmd_table / sizeof cmd_table[0]; i++) {
		if (cmd_table[i]->flags & CMD_NEGOTIATION)
			continue;
		buf_addstr(&b, b.len > 0 ? ", {\"name\": \"" : "{\"name\": \"");
		buf_addstr(&b, cmd_table[i]->name);
		buf_addstr(&b, "\"}");
	}
	return b.data;
}

static const struct cmd_entry *
cmd_find(const char *name)
{
	size_t	i;

	for (i = 0; i < sizeof cmd_table / sizeof cmd_table[0]; i++) {
		if (strcmp(cmd_table[i]->name, name) == 0)
			return cmd_table[i];
	}
	return NULL;
}

int
cmd_is_own(const char *name)
{
	return cmd_find(name) != NULL;
}

/*
 * Runs one of the proxy's own commands for a translation: its reply goes
 * through client_reply_local(), where the translation's hook takes it.
 */
void
cmd_run(struct client *c, const char *name, json_t *args)
{
	const struct cmd_entry	*ce;

	if ((ce = cmd_find(name)) == NULL)
		fatalx("cmd_run: no command %s", name);
	ce->exec(c, args, NULL, 0);
}

/* Parses a request's arguments (new reference; NULL if unreadable). */
json_t *
cmd_arguments(struct client *c, const struct qmp_msg *msg,
    const struct qmp_request *req)
{
	struct buf	 b = { NULL, 0, 0 };
	json_t		*args;
	char		*raw;
	size_t		 n;

	if (req->args == NULL)
		return json_object();
	n = req->args->val_end - req->args->val_off;
	raw = xmalloc(n);
	conn_copy_in(c->conn, req->args->val_off, raw, n);
	qmp_requote(&b, raw, n);
	free(raw);
	/* Fails only on what jansson cannot hold (integers past int64). */
	args = json_loadb(b.data, b.len, 0, NULL);
	buf_free(&b);
	return args;
}

/* Answers a request here, and consumes its bytes from the input. */
static void
cmd_answer(struct client *c, const struct qmp_msg *msg,
    const struct qmp_request *req, json_t *given)
{
	const struct cmd_entry	*ce;
	json_t			*args = NULL;
	char			*id = NULL, *desc = NULL;
	size_t			 idlen = 0;

	ce = cmd_find(req->name);
	if (req->id != NULL)
		id = client_copy_id(c, msg, req->id, &idlen);
	if (c->state == CLIENT_COMMAND && ce == NULL) {
		xasprintf(&desc, "%s must wait: a snapshot operation is "
		    "changing the VM's disks; try again when it has ended",
		    req->name);
		client_send_error(c, "GenericError", desc, id, idlen);
		goto out;
	}
	if (c->state != CLIENT_COMMAND &&
	    (ce == NULL || !(ce->flags & CMD_NEGOTIATION))) {
		client_send_error(c, "CommandNotFound", "Expecting capabilities "
		    "negotiation with 'qmp_capabilities'", id, idlen);
		goto out;
	}
	if (req->oob) {
		xasprintf(&desc, "The command %s does not support OOB",
		    req->name);
		client_send_error(c, "GenericError", desc, id, idlen);
		goto out;
	}
	if (given != NULL)
		args = json_incref(given);
	else if ((args = cmd_arguments(c, msg, req)) == NULL) {
		client_send_error(c, "GenericError",
		    "Invalid parameter value in 'arguments'", id, idlen);
		goto out;
	}
	ce->exec(c, args, id, idlen);
out:
	json_decref(args);
	free(desc);
	free(id);
	conn_move_fds(c->conn, msg->start + msg->len, NULL);
	conn_drain_in(c->conn, msg->len);
}

/* Runs one of the proxy's own commands with arguments a rule rewrote. */
void
cmd_dispatch_args(struct client *c, const struct qmp_msg *msg,
    const struct qmp_request *req, json_t *args)
{
	json_t	*none = NULL;

	if (args == NULL)
		args = none = json_object();
	cmd_answer(c, msg, req, args);
	json_decref(none);
}

/*
 * Runs or forwards a request whose shape request_parse() accepted, and
 * consumes its bytes from the client's input. A negotiated client's
 * requests are decided by its socket's rules first.
 */
void
cmd_dispatch(struct client *c, const struct qmp_msg *msg,
    const struct qmp_request *req)
{
	if (c->state == CLIENT_COMMAND) {
		if (policy_apply(c, msg, req))
			return;
		if (snap_jobs_exist() && snap_job_command(c, msg, req))
			return;
		if (cmd_find(req->name) == NULL &&
		    !snap_op_blocks(req->name)) {
			upstream_forward(c, msg, req);
			return;
		}
	}
	cmd_answer(c, msg, req, NULL);
}
