/*
 * translate.c: QEMU's internal-snapshot commands run as operations on the
 * tree, for a rule whose action is "translate". HMP savevm, loadvm and
 * delvm become create (with memory), revert and delete, and "info
 * snapshots" lists the tree in QEMU's own table; they answer as HMP does,
 * with an empty string or "Error: ..." text. The QMP jobs snapshot-save,
 * -load and -delete are in snap-job.c.
 *
 * A translation runs the proxy's own command for the client, and the
 * client's reply hook takes that command's reply to make the answer. A
 * rule's "options" are merged into the command's arguments, so a rule set
 * can say, for example, that loadvm discards the branch it leaves.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "qbranch.h"

struct hmp_translation {
	struct reply_hook	 hook;
	struct client		*client;
	char			*id;		/* the request's, raw */
	size_t			 idlen;
	json_t			*then;		/* savevm over a name: create */
};

/* The translation whose create waits for the delete's operation to end. */
static struct hmp_translation	*hmp_waiting;

static int	translate_savevm(struct client *, json_t *, json_t *,
		    const char *, size_t);
static int	translate_loadvm(struct client *, json_t *, json_t *,
		    const char *, size_t);
static int	translate_delvm(struct client *, json_t *, json_t *,
		    const char *, size_t);
static int	translate_info(struct client *, json_t *, json_t *,
		    const char *, size_t);

static const struct translate_handler translate_handlers[] = {
	{ "savevm", translate_savevm },
	{ "loadvm", translate_loadvm },
	{ "delvm", translate_delvm },
	{ "info-snapshots", translate_info },
	{ "snapshot-save", snap_job_save },
	{ "snapshot-load", snap_job_load },
	{ "snapshot-delete", snap_job_delete },
};
#define NHANDLERS (sizeof translate_handlers / sizeof translate_handlers[0])

const char *const *
translate_handler_names(void)
{
	static const char	*names[NHANDLERS + 1];
	size_t			 i;

	for (i = 0; i < NHANDLERS; i++)
		names[i] = translate_handlers[i].name;
	return names;
}

/*
 * Runs the handler a translate rule names. Returns 1 when it took the
 * request (its bytes consumed), 0 when the request goes on as usual.
 */
int
translate_run(struct client *c, const struct qmp_msg *msg,
    const struct qmp_request *req, json_t *args, const struct rule *rule)
{
	const struct translate_handler	*h = NULL;
	char				*id = NULL;
	size_t				 idlen = 0, i;
	int				 taken;

	for (i = 0; i < NHANDLERS; i++) {
		if (strcmp(translate_handlers[i].name, rule->handler) == 0)
			h = &translate_handlers[i];
	}
	if (h == NULL || req->oob || args == NULL)
		return 0;
	if (req->id != NULL)
		id = client_copy_id(c, msg, req->id, &idlen);
	taken = h->run(c, args, rule->options, id, idlen) == 0;
	free(id);
	if (taken) {
		conn_move_fds(c->conn, msg->start + msg->len, NULL);
		conn_drain_in(c->conn, msg->len);
	}
	return taken;
}

/* The arguments of a translated command: its own, then a rule's options. */
json_t *
translate_args(json_t *own, json_t *options)
{
	if (options != NULL)
		json_object_update(own, options);
	return own;
}

/* Answers an HMP command with its text, as human-monitor-command does. */
static void
hmp_answer(struct client *c, const char *id, size_t idlen, const char *text)
{
	char	*quoted;

	quoted = qmp_json_quote(text);
	client_reply_local(c, qmp_return_reply(quoted, id, idlen));
	free(quoted);
}

/* QEMU's answer to a command line it cannot read. */
static void
hmp_usage(struct client *c, const char *id, size_t idlen, const char *verb,
    const char *what)
{
	char	*text;

	xasprintf(&text, "%s: %s\r\nTry \"help %s\" for more information\r\n",
	    verb, what, verb);
	hmp_answer(c, id, idlen, text);
	free(text);
}

/*
 * The one word after an HMP command, or NULL after answering: none when
 * optional and absent, else a usage error.
 */
static char *
hmp_tag(struct client *c, json_t *args, const char *id, size_t idlen,
    int optional, int *absent)
{
	const char	*line, *rest;
	char		*verb, *words[1];
	int		 n;

	*absent = 0;
	line = json_string_value(json_object_get(args, "command-line"));
	if (line == NULL || (verb = hmp_command(line, &rest)) == NULL)
		return NULL;
	n = hmp_words(rest, words, 1);
	if (n == 1) {
		free(verb);
		return words[0];
	}
	if (n == 0 && optional)
		*absent = 1;
	else
		hmp_usage(c, id, idlen, verb, n == 0 ? "string expected" :
		    "extraneous characters at the end of line");
	if (n > 1)
		free(words[0]);
	free(verb);
	return NULL;
}

static void
hmp_translation_free(struct reply_hook *hook)
{
	struct hmp_translation	*t = (struct hmp_translation *)hook;

	if (hmp_waiting == t)
		hmp_waiting = NULL;
	json_decref(t->then);
	free(t->id);
	free(t);
}

/*
 * Overlay files for a create (args) made again under a name that was just
 * deleted: where the default <stem>.<name> is still in use (the branch
 * that grew from the deleted snapshot runs on it), the first free
 * <stem>.<name>-<N>, as a revert names its overlays.
 */
static void
hmp_free_overlays(json_t *args)
{
	struct branch	*b;
	json_t		*disks;
	const char	*name;
	char		*path, *suffix;
	size_t		 i;
	int		 n;

	name = json_string_value(json_object_get(args, "name"));
	if (snap.tree == NULL || name == NULL ||
	    (b = branch_attached(snap.tree)) == NULL)
		return;
	disks = json_array();
	for (i = 0; i < b->ndisks; i++) {
		path = op_image_path(snap.tree, b->disks[i].device, name);
		for (n = 1; snap_tree_image(snap.tree, path) != NULL ||
		    access(path, F_OK) == 0; n++) {
			free(path);
			xasprintf(&suffix, "%s-%d", name, n);
			path = op_image_path(snap.tree, b->disks[i].device,
			    suffix);
			free(suffix);
		}
		if (n > 1)
			json_array_append_new(disks, json_pack("{s:s, s:s}",
			    "device", b->disks[i].device, "file", path));
		free(path);
	}
	if (json_array_size(disks) > 0)
		json_object_set(args, "disks", disks);
	json_decref(disks);
}

/*
 * The delete of a savevm over a name has ended: its create runs now, with
 * the client still held busy since the delete's reply.
 */
static void
hmp_then_start(struct op *op)
{
	struct hmp_translation	*t = hmp_waiting;
	struct client		*c;
	json_t			*then;

	hmp_waiting = NULL;
	if (t == NULL)
		return;		/* the client left */
	c = t->client;
	then = t->then;
	t->then = NULL;
	hmp_free_overlays(then);
	cmd_run(c, "qbranch-snapshot-create", then);
	json_decref(then);
	if (snap.op == NULL || snap.op->client != c) {
		/* Answered at once: no operation frees the client later. */
		c->flags &= ~CLIENT_BUSY;
		client_recheck(c);
	}
}

/* The reply of the command run for HMP: made into HMP's answer. */
static void
hmp_translation_take(struct client *c, char *reply, struct reply_hook *hook)
{
	struct hmp_translation	*t = (struct hmp_translation *)hook;
	json_t			*r, *then;
	const char		*desc;
	char			*text;

	r = json_loads(reply, 0, NULL);
	free(reply);
	desc = json_string_value(json_object_get(json_object_get(r, "error"),
	    "desc"));
	if (desc == NULL && t->then != NULL && snap.op != NULL) {
		/*
		 * The delete answers before its operation ends, and a create
		 * now would find it still running: start it from the end.
		 * Taking the operation's client keeps the client busy, so
		 * nothing it sends next overtakes the create.
		 */
		snap.op->client = NULL;
		snap.op->on_end = hmp_then_start;
		snap.op->on_end_arg = NULL;
		hmp_waiting = t;
		c->hook = hook;
		json_decref(r);
		return;
	}
	if (desc == NULL && t->then != NULL) {
		then = t->then;
		t->then = NULL;
		c->hook = hook;
		cmd_run(c, "qbranch-snapshot-create", then);
		json_decref(then);
		json_decref(r);
		return;
	}
	if (desc != NULL) {
		xasprintf(&text, "Error: %s\r\n", desc);
		hmp_answer(c, t->id, t->idlen, text);
		free(text);
	} else
		hmp_answer(c, t->id, t->idlen, "");
	json_decref(r);
	hmp_translation_free(hook);
}

/* Runs one of the proxy's commands for an HMP line; args is taken. */
static void
hmp_run(struct client *c, const char *id, size_t idlen, const char *name,
    json_t *args, json_t *then)
{
	struct hmp_translation	*t;

	t = xcalloc(1, sizeof *t);
	t->hook.take = hmp_translation_take;
	t->hook.free = hmp_translation_free;
	t->client = c;
	if (id != NULL)
		t->id = xmemdup(id, idlen);
	t->idlen = idlen;
	t->then = then;
	c->hook = &t->hook;
	cmd_run(c, name, args);
	json_decref(args);
}

/* QEMU's message for a tag that is not there. */
static void
hmp_no_snapshot(struct client *c, const char *id, size_t idlen,
    const char *tag)
{
	char	*text;

	xasprintf(&text, "Error: Snapshot '%s' does not exist in one or more "
	    "devices\r\n", tag);
	hmp_answer(c, id, idlen, text);
	free(text);
}

static int
translate_savevm(struct client *c, json_t *args, json_t *options,
    const char *id, size_t idlen)
{
	json_t		*create;
	char		*tag, name[32];
	struct tm	 tm;
	time_t		 now;
	int		 absent;

	if ((tag = hmp_tag(c, args, id, idlen, 1, &absent)) == NULL &&
	    !absent)
		return 0;
	if (tag == NULL) {
		/* QEMU's name for an untagged snapshot. */
		now = time(NULL);
		localtime_r(&now, &tm);
		strftime(name, sizeof name, "vm-%Y%m%d%H%M%S", &tm);
		tag = xstrdup(name);
	}
	create = translate_args(json_pack("{s:s, s:b}", "name", tag,
	    "memory", 1), options);
	/* savevm over a name replaces that snapshot, as QEMU's does. */
	if (snap.tree != NULL && snap_find(snap.tree, tag) != NULL)
		hmp_run(c, id, idlen, "qbranch-snapshot-delete",
		    json_pack("{s:s}", "name", tag), create);
	else
		hmp_run(c, id, idlen, "qbranch-snapshot-create", create, NULL);
	free(tag);
	return 0;
}

static int
translate_loadvm(struct client *c, json_t *args, json_t *options,
    const char *id, size_t idlen)
{
	char	*tag;
	int	 absent;

	if ((tag = hmp_tag(c, args, id, idlen, 0, &absent)) == NULL)
		return 0;
	if (snap.tree == NULL || snap_find(snap.tree, tag) == NULL)
		hmp_no_snapshot(c, id, idlen, tag);
	else {
		/* loadvm leaves the VM running or stopped as it was. */
		hmp_run(c, id, idlen, "qbranch-snapshot-revert",
		    translate_args(json_pack("{s:s, s:s}", "name", tag,
		    "state", "current"), options), NULL);
	}
	free(tag);
	return 0;
}

static int
translate_delvm(struct client *c, json_t *args, json_t *options,
    const char *id, size_t idlen)
{
	char	*tag;
	int	 absent;

	if ((tag = hmp_tag(c, args, id, idlen, 0, &absent)) == NULL)
		return 0;
	/* QEMU's delvm of a tag it does not have succeeds silently. */
	if (snap.tree == NULL || snap_find(snap.tree, tag) == NULL)
		hmp_answer(c, id, idlen, "");
	else
		hmp_run(c, id, idlen, "qbranch-snapshot-delete",
		    translate_args(json_pack("{s:s}", "name", tag), options),
		    NULL);
	free(tag);
	return 0;
}

/* QEMU's size_to_str(): three significant digits and a binary unit. */
static void
hmp_size(char *out, size_t len, uint64_t v)
{
	static const char *const units[] = {
		"", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"
	};
	int	i = 0;

	while (i < 6 && (double)v / (double)(1ull << (i * 10)) >= 1000.0)
		i++;
	snprintf(out, len, "%0.3g %sB", (double)v / (double)(1ull <<
	    (i * 10)), units[i]);
}

/*
 * Whether QEMU is version major.minor or later, by its greeting (not when
 * there is none yet).
 */
static int
qemu_at_least(int major, int minor)
{
	const char	*text;
	json_t		*g, *v;
	size_t		 len;
	int		 ret = 0, ma, mi;

	if ((text = upstream_greeting(&len)) == NULL ||
	    (g = json_loadb(text, len, 0, NULL)) == NULL)
		return 0;
	v = json_object_get(json_object_get(json_object_get(json_object_get(g,
	    "QMP"), "version"), "qemu"), "major");
	ma = json_integer_value(v);
	mi = json_integer_value(json_object_get(json_object_get(
	    json_object_get(json_object_get(g, "QMP"), "version"), "qemu"),
	    "minor"));
	if (json_is_integer(v))
		ret = ma > major || (ma == major && mi >= minor);
	json_decref(g);
	return ret;
}

/*
 * "info snapshots": the tree's snapshots in QEMU's table, in the layout
 * of the QEMU behind us (9.2 changed it: underscores in the header, a
 * four-digit hour, "--" for no icount). The tree keeps no guest clock, so
 * that column reads zero.
 */
static int
translate_info(struct client *c, json_t *args, json_t *options,
    const char *id, size_t idlen)
{
	struct snapshot	*s;
	struct buf	 b = { NULL, 0, 0 };
	const char	*line, *rest;
	char		*verb, *words[2], size[32], date[32], row[256];
	struct tm	 tm;
	time_t		 t;
	int		 n, i, listing, wide;

	line = json_string_value(json_object_get(args, "command-line"));
	if (line == NULL || (verb = hmp_command(line, &rest)) == NULL)
		return 1;
	free(verb);
	n = hmp_words(rest, words, 2);
	listing = n == 1 && strcmp(words[0], "snapshots") == 0;
	for (i = 0; i < n && i < 2; i++)
		free(words[i]);
	if (!listing)
		return 1;
	wide = qemu_at_least(9, 2);
	buf_addstr(&b, "");
	for (s = snap.tree != NULL ? TAILQ_FIRST(&snap.tree->snapshots) :
	    NULL; s != NULL; s = TAILQ_NEXT(s, entry)) {
		if (b.len == 0) {
			buf_addstr(&b, "List of snapshots present on all "
			    "disks:\r\n");
			if (wide)
				snprintf(row, sizeof row, "%-7s %-16s %8s %19s "
				    "%15s %10s\r\n", "ID", "TAG", "VM_SIZE",
				    "DATE", "VM_CLOCK", "ICOUNT");
			else
				snprintf(row, sizeof row, "%-10s%-17s%8s%20s"
				    "%13s%11s\r\n", "ID", "TAG", "VM SIZE",
				    "DATE", "VM CLOCK", "ICOUNT");
			buf_addstr(&b, row);
		}
		hmp_size(size, sizeof size, snap_memory_size(s->memory));
		t = s->created;
		localtime_r(&t, &tm);
		strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S", &tm);
		if (wide)
			snprintf(row, sizeof row, "%-7s %-16s %8s %19s %15s "
			    "%10s\r\n", "--", s->name, size, date,
			    "0000:00:00.000", "--");
		else
			snprintf(row, sizeof row, "%-9s %-16s %8s%20s%13s%11s"
			    "\r\n", "--", s->name, size, date, "00:00:00.000",
			    "");
		buf_addstr(&b, row);
	}
	if (b.len == 0)
		buf_addstr(&b, "There is no snapshot available.\r\n");
	hmp_answer(c, id, idlen, b.data);
	buf_free(&b);
	return 0;
}
