/*
 * client.c: one client session. It frames what the client sends, answers
 * errors the way QEMU would, hands commands to cmd.c, and keeps the client's
 * replies in the order of its requests: a reply the proxy makes itself waits
 * behind the replies QEMU still owes this client.
 *
 * A session is closed in one place, client_close(), which lets queued output
 * drain first and frees on a later loop turn.
 */
#include <sys/socket.h>
#include <sys/time.h>

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "qbranch.h"

#define CLIENT_CLOSE_TIMEOUT	2	/* seconds to drain output at close */
#define CLIENT_OUT_HIWAT	(1u << 20)

struct clients	clients = TAILQ_HEAD_INITIALIZER(clients);
u_int		nclients;
static uint32_t	next_client_id;

static void	client_read_cb(struct conn *, void *);
static void	client_error_cb(struct conn *, const char *, void *);
static void	client_drain_cb(struct conn *, void *);
static void	client_free_cb(int, short, void *);
static void	client_process(struct client *);
static void	client_greet(struct client *);
static void	client_peer(struct client *, int);

/* Starts a session on an accepted socket. */
void
client_accept(int fd, struct listener *l)
{
	struct client	*c;

	c = xcalloc(1, sizeof *c);
	c->id = ++next_client_id;
	c->listener = l;
	c->fr = qmp_framer_new(opts.max_message);
	TAILQ_INIT(&c->replies);
	c->conn = conn_new(fd, client_read_cb, client_error_cb,
	    client_drain_cb, c);
	c->state = CLIENT_WAITING;
	client_peer(c, fd);
	TAILQ_INSERT_TAIL(&clients, c, entry);
	nclients++;
	log_debug("client %u: connected on %s", c->id, l->path);
	if (upstream_is_ready())
		client_greet(c);
	else
		conn_read_enable(c->conn, 0);
}

/* Who is at the other end, for the rules and the audit log. */
static void
client_peer(struct client *c, int fd)
{
	struct ucred	cred;
	socklen_t	len = sizeof cred;

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
		c->uid = cred.uid;
		c->gid = cred.gid;
		c->pid = cred.pid;
	} else {
		/* Not a local socket: nobody in particular. */
		c->uid = c->gid = (unsigned)-1;
		c->pid = 0;
	}
}

static void
client_greet(struct client *c)
{
	const char	*greeting;
	size_t		 len;

	greeting = upstream_greeting(&len);
	c->state = CLIENT_NEGOTIATING;
	client_send(c, greeting, len);
	client_recheck(c);
}

/*
 * QEMU is connected and its disks checked: greets the clients that were
 * waiting for it (in launch mode, once the guest is resumed).
 */
void
client_upstream_ready(void)
{
	struct client	*c;

	if (!upstream_is_ready() || launch_hold())
		return;
	TAILQ_FOREACH(c, &clients, entry) {
		if (c->state == CLIENT_WAITING && !(c->flags & CLIENT_CLOSING))
			client_greet(c);
	}
}

/*
 * Closes every session QEMU greeted, as QEMU going away would; the ones
 * still waiting for a QEMU go on waiting.
 */
void
client_close_all(const char *reason)
{
	struct client	*c;

	TAILQ_FOREACH(c, &clients, entry) {
		if (c->state != CLIENT_WAITING)
			client_close(c, reason);
	}
}

/*
 * Ends a session: stops reading, lets queued output drain (up to a timeout)
 * and frees it on a later loop turn. Safe to call more than once.
 */
void
client_close(struct client *c, const char *reason)
{
	struct timeval	 tv = { CLIENT_CLOSE_TIMEOUT, 0 };

	if (c->flags & CLIENT_CLOSING)
		return;
	c->flags |= CLIENT_CLOSING;
	log_debug("client %u: closing: %s", c->id, reason);
	conn_read_enable(c->conn, 0);
	/* A session may close before its read loop ends: free it later. */
	upstream_forget_client(c);
	if ((c->conn->flags & CONN_DEAD) || conn_out_len(c->conn) == 0)
		tv.tv_sec = 0;
	c->close_timer = evtimer_new(base, client_free_cb, c);
	evtimer_add(c->close_timer, &tv);
}

static void
client_free_cb(int fd, short what, void *arg)
{
	client_free(arg);
}

/* Frees a session at once; client_close() is the way to end one. */
void
client_free(struct client *c)
{
	struct pending	*p;

	snap_client_gone(c);
	if (c->hook != NULL)
		c->hook->free(c->hook);
	while ((p = TAILQ_FIRST(&c->replies)) != NULL) {
		TAILQ_REMOVE(&c->replies, p, client_entry);
		pending_free(p);
	}
	TAILQ_REMOVE(&clients, c, entry);
	nclients--;
	listener_pause(0);
	if (c->close_timer != NULL)
		event_free(c->close_timer);
	conn_free(c->conn);
	qmp_framer_free(c->fr);
	log_debug("client %u: freed", c->id);
	free(c);
}

static void
client_error_cb(struct conn *conn, const char *reason, void *arg)
{
	struct client	*c = arg;

	client_close(c, reason);
}

static void
client_drain_cb(struct conn *conn, void *arg)
{
	struct client	*c = arg;

	if (c->flags & CLIENT_CLOSING) {
		/* Output is out: free now rather than at the timeout. */
		event_del(c->close_timer);
		event_active(c->close_timer, EV_TIMEOUT, 0);
		return;
	}
	client_recheck(c);
}

/*
 * Reads on while the client is under its limits: commands in flight, and
 * output it has not taken yet. Called whenever one of them shrinks.
 */
void
client_recheck(struct client *c)
{
	int	 ok;

	if (c->flags & CLIENT_CLOSING || c->state == CLIENT_WAITING)
		return;
	ok = !(c->flags & CLIENT_BUSY) && c->nreplies < opts.max_inflight &&
	    conn_out_len(c->conn) < CLIENT_OUT_HIWAT;
	if (ok && !(c->conn->flags & CONN_READING)) {
		conn_read_enable(c->conn, 1);
		client_process(c);
	} else if (!ok)
		conn_read_enable(c->conn, 0);
}

/* Queues bytes for the client; one that lets too much pile up is closed. */
void
client_send(struct client *c, const char *data, size_t len)
{
	if (c->flags & CLIENT_CLOSING)
		return;
	conn_write(c->conn, data, len);
	client_sent(c);
}

/* Ends a message just queued for the client, and checks its queue. */
void
client_sent(struct client *c)
{
	conn_write(c->conn, "\r\n", 2);
	if (conn_out_len(c->conn) > opts.max_output) {
		log_warnx("client %u: over %zu bytes of output queued, "
		    "not reading them: disconnected", c->id, opts.max_output);
		client_close(c, "output queue full");
	}
}

/* Sends an event of the proxy's own to every client in command mode. */
void
client_broadcast_event(const char *name, json_t *data)
{
	struct client	*c;
	struct timeval	 tv;
	json_t		*ev;
	char		*text;

	gettimeofday(&tv, NULL);
	ev = json_pack("{s:{s:I, s:I}, s:s, s:O}", "timestamp", "seconds",
	    (json_int_t)tv.tv_sec, "microseconds", (json_int_t)tv.tv_usec,
	    "event", name, "data", data);
	text = json_dumps(ev, JSON_PRESERVE_ORDER);
	json_decref(ev);
	TAILQ_FOREACH(c, &clients, entry) {
		if (c->state == CLIENT_COMMAND)
			client_send(c, text, strlen(text));
	}
	free(text);
}

/* Sends an error reply; id is raw JSON or NULL. */
void
client_send_error(struct client *c, const char *class, const char *desc,
    const char *id, size_t idlen)
{
	char	*reply;

	reply = qmp_error_reply(class, desc, id, idlen);
	client_reply_local(c, reply);
}

/*
 * A reply made by the proxy (it takes the string): sent now if QEMU owes the
 * client nothing, else queued behind what it owes. A translation waiting
 * for the reply (c->hook) takes it instead, once.
 */
void
client_reply_local(struct client *c, char *reply)
{
	struct pending		*p;
	struct reply_hook	*hook;

	if ((hook = c->hook) != NULL) {
		c->hook = NULL;
		hook->take(c, reply, hook);
		return;
	}
	if (TAILQ_EMPTY(&c->replies)) {
		client_send(c, reply, strlen(reply));
		free(reply);
		return;
	}
	p = xcalloc(1, sizeof *p);
	p->flags = PENDING_LOCAL;
	p->reply = reply;
	p->client = c;
	TAILQ_INSERT_TAIL(&c->replies, p, client_entry);
	c->nreplies++;
}

/*
 * QEMU answered the in-band request p, which heads the client's queue and
 * has been sent: send the local replies that waited behind it.
 */
void
client_reply_done(struct client *c, struct pending *p)
{
	TAILQ_REMOVE(&c->replies, p, client_entry);
	c->nreplies--;
	pending_free(p);
	while ((p = TAILQ_FIRST(&c->replies)) != NULL &&
	    (p->flags & PENDING_LOCAL)) {
		TAILQ_REMOVE(&c->replies, p, client_entry);
		c->nreplies--;
		client_send(c, p->reply, strlen(p->reply));
		pending_free(p);
	}
	client_recheck(c);
}

/* Copies the raw id of msg out of the input, normalised to strict JSON. */
char *
client_copy_id(struct client *c, const struct qmp_msg *msg,
    const struct qmp_member *id, size_t *len)
{
	struct buf	 b = { NULL, 0, 0 };
	size_t		 n = id->val_end - id->val_off;
	char		*raw;

	raw = xmalloc(n);
	conn_copy_in(c->conn, msg->start - c->conn->in_off + id->val_off, raw,
	    n);
	if (!(id->val_flags & QMP_F_SQUOTE)) {
		*len = n;
		return raw;
	}
	qmp_requote(&b, raw, n);
	free(raw);
	*len = b.len;
	return b.data;
}

static void
client_handle(struct client *c, const struct qmp_msg *msg)
{
	struct qmp_request	 req;
	const struct qmp_member	*id;
	char			*cause, *idraw = NULL, *desc;
	size_t			 idlen = 0;

	if (msg->error != NULL) {
		/* QEMU gives no id here; we give it when it could be read. */
		if ((id = qmp_msg_member(msg, "id")) != NULL)
			idraw = client_copy_id(c, msg, id, &idlen);
		if (strncmp(msg->error, "JSON ", 5) == 0)
			desc = xstrdup(msg->error);
		else
			xasprintf(&desc, "JSON parse error, %s", msg->error);
		log_debug("client %u: %s", c->id, desc);
		client_send_error(c, "GenericError", desc, idraw, idlen);
		free(desc);
		free(idraw);
		conn_move_fds(c->conn, msg->start + msg->len, NULL);
		conn_drain_in(c->conn, msg->len);
		return;
	}
	if (request_parse(msg, c->flags & CLIENT_OOB, &req, &cause) == -1) {
		if (req.id != NULL)
			idraw = client_copy_id(c, msg, req.id, &idlen);
		client_send_error(c, "GenericError", cause, idraw, idlen);
		free(cause);
		free(idraw);
		conn_move_fds(c->conn, msg->start + msg->len, NULL);
		conn_drain_in(c->conn, msg->len);
		return;
	}
	/* cmd_dispatch consumes the message's bytes from the input. */
	cmd_dispatch(c, msg, &req);
}

/* Frames and handles every complete message in the input, while allowed. */
static void
client_process(struct client *c)
{
	const struct qmp_msg	*msg;

	while (c->conn->flags & CONN_READING && !(c->flags & CLIENT_CLOSING) &&
	    (msg = conn_next_msg(c->conn, c->fr)) != NULL) {
		client_handle(c, msg);
		client_recheck(c);
	}
}

static void
client_read_cb(struct conn *conn, void *arg)
{
	struct client	*c = arg;

	client_process(c);
}
