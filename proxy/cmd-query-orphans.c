/*
 * cmd-query-orphans.c: qbranch-query-orphans, the files qbranch made that
 * nothing uses any more (snap-orphans.c): {"orphans": [{file, size, kind,
 * reason}]}. Read-only, so it answers while the tree is refused for
 * changes too, as long as the tree could be read: without it, every
 * overlay would look like an orphan. QEMU is asked which files it has
 * open first; the directories are read in a thread.
 */
#include <stdlib.h>

#include "qbranch.h"

static void	query_orphans_exec(struct client *, json_t *, const char *,
		    size_t);

const struct cmd_entry cmd_query_orphans_entry = {
	.name = "qbranch-query-orphans",
	.exec = query_orphans_exec,
};

static const struct arg_spec query_orphans_args[] = {
	{ NULL, 0, 0 }
};

/* Who asked; the client is looked up again at each step. */
struct query_orphans {
	uint32_t		 client;
	char			*id;
	size_t			 idlen;
	json_t			*inuse;		/* files QEMU has open, a set */
	struct orphan_scan	*scan;
};

static struct client *
query_orphans_client(struct query_orphans *q)
{
	struct client	*c;

	TAILQ_FOREACH(c, &clients, entry) {
		if (c->id == q->client)
			return (c->flags & CLIENT_CLOSING) ? NULL : c;
	}
	return NULL;
}

/* Answers with ret (stolen), or with error if ret is NULL; frees q. */
static void
query_orphans_end(struct query_orphans *q, json_t *ret, const char *error)
{
	struct client	*c;

	if ((c = query_orphans_client(q)) != NULL) {
		c->flags &= ~CLIENT_BUSY;
		if (ret != NULL)
			cmd_reply(c, ret, q->id, q->idlen);
		else
			client_send_error(c, "GenericError", error, q->id,
			    q->idlen);
		client_recheck(c);
	} else
		json_decref(ret);
	orphan_scan_free(q->scan);
	json_decref(q->inuse);
	free(q->id);
	free(q);
}

static void
query_orphans_work(void *arg)
{
	struct query_orphans	*q = arg;

	orphan_scan_run(q->scan);
}

static void
query_orphans_done(void *arg)
{
	struct query_orphans	*q = arg;

	if (snap.tree == NULL) {
		query_orphans_end(q, NULL, "the snapshot tree went away");
		return;
	}
	query_orphans_end(q, json_pack("{s:o}", "orphans",
	    orphan_scan_list(q->scan)), NULL);
}

/* QEMU answered with what it has open: the directories are read. */
static void
query_orphans_inuse_cb(json_t *reply, void *arg, int nodes)
{
	struct query_orphans	*q = arg;
	json_t			*ret;

	if (reply == NULL || (ret = json_object_get(reply, "return")) ==
	    NULL) {
		query_orphans_end(q, NULL, "QEMU did not say which files it "
		    "has open: orphans cannot be told from the files it uses");
		return;
	}
	if (nodes)
		orphan_inuse_nodes(q->inuse, ret);
	else
		orphan_inuse_block(q->inuse, ret);
	q->scan = orphan_scan_new(snap.tree, q->inuse);
	io_run(query_orphans_work, query_orphans_done, q);
}

static void
query_orphans_nodes_cb(json_t *reply, void *arg)
{
	query_orphans_inuse_cb(reply, arg, 1);
}

static void
query_orphans_block_cb(json_t *reply, void *arg)
{
	query_orphans_inuse_cb(reply, arg, 0);
}

static void
query_orphans_exec(struct client *c, json_t *args, const char *id,
    size_t idlen)
{
	struct query_orphans	*q;
	char			*cause;

	if (cmd_check_args(args, query_orphans_args, &cause) == -1) {
		cmd_refuse(c, cause, id, idlen);
		return;
	}
	if (snap.tree == NULL) {
		client_send_error(c, "GenericError", snap.broken != NULL ?
		    snap.broken : "there is no snapshot tree", id, idlen);
		return;
	}
	q = xcalloc(1, sizeof *q);
	q->client = c->id;
	if (id != NULL) {
		q->id = xmemdup(id, idlen);
		q->idlen = idlen;
	}
	q->inuse = json_object();
	/* Later commands of this client wait, to keep replies in order. */
	c->flags |= CLIENT_BUSY;
	client_recheck(c);
	/*
	 * query-named-block-nodes is not safe while a block-stream runs on
	 * QEMU 7.2: during an operation the devices' chains are asked for,
	 * and the operation's own files are left out (orphan_scan_list()).
	 */
	if (snap.op != NULL)
		upstream_call("query-block", NULL, query_orphans_block_cb, q);
	else
		upstream_call("query-named-block-nodes", json_pack("{s:b}",
		    "flat", 1), query_orphans_nodes_cb, q);
}
