/*
 * cmd-query-disks.c: qbranch-query-disks, each writable disk with its whole
 * backing chain as QEMU reports it (query-block), top first, and whether
 * the tree manages it.
 */
#include <stdlib.h>
#include <string.h>

#include "qbranch.h"

static void	query_disks_exec(struct client *, json_t *, const char *,
		    size_t);

const struct cmd_entry cmd_query_disks_entry = {
	.name = "qbranch-query-disks",
	.exec = query_disks_exec,
};

/* Who asked; the client is looked up again when QEMU answers. */
struct query_disks {
	uint32_t	 client;
	char		*id;
	size_t		 idlen;
	json_t		*nodes;		/* query-named-block-nodes */
};

static void	query_disks_cb(json_t *, void *);

/* The format node that has file open, or NULL. */
static json_t *
query_disks_node(struct query_disks *q, json_t *file)
{
	json_t		*n, *bare = NULL;
	size_t		 i;
	const char	*drv;

	json_array_foreach(q->nodes, i, n) {
		drv = json_string_value(json_object_get(n, "drv"));
		if (drv == NULL || !json_equal(json_object_get(n, "file"), file))
			continue;
		if (strcmp(drv, "file") != 0)
			return json_object_get(n, "node-name");
		bare = json_object_get(n, "node-name");
	}
	/* No format node over it: a device uses the file node itself. */
	return bare;
}

static void
query_disks_nodes_cb(json_t *reply, void *arg)
{
	struct query_disks	*q = arg;

	if (reply != NULL)
		q->nodes = json_incref(json_object_get(reply, "return"));
	upstream_call("query-block", NULL, query_disks_cb, q);
}

static void
query_disks_cb(json_t *reply, void *arg)
{
	struct query_disks	*q = arg;
	struct client		*c;
	json_t			*out, *b, *ins, *img, *chain, *node;
	const struct branch	*br;
	char			*dev;
	size_t			 i;

	TAILQ_FOREACH(c, &clients, entry) {
		if (c->id == q->client)
			break;
	}
	if (c == NULL || (c->flags & CLIENT_CLOSING))
		goto out;
	c->flags &= ~CLIENT_BUSY;
	if (reply == NULL || json_object_get(reply, "return") == NULL) {
		client_send_error(c, "GenericError", "QEMU did not answer "
		    "query-block", q->id, q->idlen);
		client_recheck(c);
		goto out;
	}
	out = json_array();
	json_array_foreach(json_object_get(reply, "return"), i, b) {
		ins = json_object_get(b, "inserted");
		if (ins == NULL || json_is_true(json_object_get(ins, "ro")))
			continue;
		dev = disk_device_name(b);
		b = json_string(dev != NULL ? dev : "");
		free(dev);
		chain = json_array();
		for (img = json_object_get(ins, "image"); img != NULL;
		    img = json_object_get(img, "backing-image")) {
			node = query_disks_node(q, json_object_get(img,
			    "filename"));
			json_array_append_new(chain, json_pack("{s:O, s:O, s:O}",
			    "file", json_object_get(img, "filename"),
			    "format", json_object_get(img, "format"),
			    "node-name", node != NULL ? node : json_null()));
		}
		json_object_set(json_array_get(chain, 0), "node-name",
		    json_object_get(ins, "node-name"));
		/* Excluded disks, or disks added later, are not in the tree. */
		br = branch_attached(snap.tree);
		json_array_append_new(out, json_pack("{s:o, s:b, s:o}", "device",
		    b, "managed", br != NULL && snap_file_find(br->disks,
		    br->ndisks, json_string_value(b)) != NULL, "chain", chain));
	}
	cmd_reply(c, out, q->id, q->idlen);
	client_recheck(c);
out:
	json_decref(q->nodes);
	free(q->id);
	free(q);
}

static void
query_disks_exec(struct client *c, json_t *args, const char *id,
    size_t idlen)
{
	struct query_disks	*q;

	if (cmd_query_check(c, args, id, idlen) == -1)
		return;
	q = xcalloc(1, sizeof *q);
	q->client = c->id;
	if (id != NULL) {
		q->id = xmemdup(id, idlen);
		q->idlen = idlen;
	}
	/* Later commands of this client wait, to keep replies in order. */
	c->flags |= CLIENT_BUSY;
	client_recheck(c);
	/* Node names come from query-named-block-nodes, never safe while a
	 * block-stream runs on QEMU 7.2: then they are left out. */
	if (snap.op != NULL)
		upstream_call("query-block", NULL, query_disks_cb, q);
	else
		upstream_call("query-named-block-nodes", json_pack("{s:b}",
		    "flat", 1), query_disks_nodes_cb, q);
}
