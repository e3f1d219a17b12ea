/*
 * upstream.c: the one connection to QEMU's monitor. It (re)connects with
 * backoff, keeps QEMU's greeting for the clients, negotiates once for all of
 * them, gives every forwarded command a proxy-unique id and sends each reply
 * back to the client that asked, with that client's own id spliced in.
 * Events go to every client in command mode. A connection handed over as a
 * descriptor (--qemu-fd) cannot be made again: when it ends, so does
 * qbranchd.
 */
#include <sys/socket.h>
#include <sys/un.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <jansson.h>

#include "qbranch.h"

#define UP_BACKOFF_MIN_MS	50
#define UP_BACKOFF_MAX_MS	2000
#define UP_GREETING_TIMEOUT	10	/* seconds */

static struct {
	char			*path;
	enum {
		UP_DOWN,
		UP_GREETING,
		UP_NEGOTIATING,
		UP_READY,
	}			 state;
	struct conn		*conn;
	struct qmp_framer	*fr;
	char			*greeting;
	size_t			 greeting_len;
	int			 oob;
	uint64_t		 next_uid;
	struct pendings		 pending;
	struct event		*timer;
	int			 backoff_ms;
	int			 waiting_logged;
	int			 inherited;	/* --qemu-fd: no reconnect */
	int			 was_ready;
	pid_t			 pid;		/* QEMU's, 0 if not known */
	void			(*down_cb)(void);
} up = { .pending = TAILQ_HEAD_INITIALIZER(up.pending) };

static void	upstream_connect(void);
static void	upstream_open(int);
static void	upstream_timer_cb(int, short, void *);
static void	upstream_read_cb(struct conn *, void *);
static void	upstream_error_cb(struct conn *, const char *, void *);
static void	upstream_down(const char *);

/* Whether clients can be served. */
int
upstream_is_ready(void)
{
	return up.state == UP_READY && !snap_reconciling() &&
	    !launch_holding();
}

/* Whether QEMU is there, greeted, whatever the snapshot tree is doing. */
int
upstream_connected(void)
{
	return up.state == UP_READY;
}

/* QEMU's greeting, as it sent it. */
const char *
upstream_greeting(size_t *len)
{
	*len = up.greeting_len;
	return up.greeting;
}

/* Whether QEMU offered out-of-band execution (and so can clients). */
int
upstream_has_oob(void)
{
	return up.oob;
}

/* Starts connecting to QEMU's monitor socket at path. */
void
upstream_start(const char *path)
{
	up.path = xstrdup(path);
	up.timer = evtimer_new(base, upstream_timer_cb, NULL);
	up.backoff_ms = UP_BACKOFF_MIN_MS;
	upstream_connect();
}

/*
 * Uses fd, a connection to QEMU's monitor that qbranchd was handed, whose
 * greeting is still unread. It cannot be made again once it ends.
 */
void
upstream_start_fd(int fd)
{
	xasprintf(&up.path, "fd %d", fd);
	up.timer = evtimer_new(base, upstream_timer_cb, NULL);
	up.inherited = 1;
	upstream_open(fd);
}

/*
 * Calls cb once the connection is down: now, if it is. For a QEMU that has
 * exited: what it wrote last (replies, SHUTDOWN) is still in the socket,
 * before the end of file, and reaches the clients first.
 */
void
upstream_when_down(void (*cb)(void))
{
	if (up.state == UP_DOWN) {
		cb();
		return;
	}
	up.down_cb = cb;
}

/* Drops the connection for good (shutdown). */
void
upstream_stop(void)
{
	up.down_cb = NULL;
	if (up.timer != NULL)
		event_free(up.timer);
	up.timer = NULL;
	if (up.state != UP_DOWN)
		upstream_down("shutting down");
	free(up.path);
	up.path = NULL;
	free(up.greeting);
	up.greeting = NULL;
}

/* Frees a request record. */
void
pending_free(struct pending *p)
{
	free(p->id);
	free(p->reply);
	free(p);
}

static void
upstream_retry(void)
{
	struct timeval	tv;

	tv.tv_sec = up.backoff_ms / 1000;
	tv.tv_usec = (up.backoff_ms % 1000) * 1000;
	evtimer_add(up.timer, &tv);
	up.backoff_ms *= 2;
	if (up.backoff_ms > UP_BACKOFF_MAX_MS)
		up.backoff_ms = UP_BACKOFF_MAX_MS;
}

static void
upstream_connect(void)
{
	struct sockaddr_un	 sun;
	int			 fd;

	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	strncpy(sun.sun_path, up.path, sizeof sun.sun_path - 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1)
		fatal("socket");
	if (connect(fd, (struct sockaddr *)&sun, sizeof sun) == -1 &&
	    errno != EINPROGRESS) {
		if (!up.waiting_logged)
			log_info("waiting for QEMU at %s: %s", up.path,
			    strerror(errno));
		up.waiting_logged = 1;
		close(fd);
		upstream_retry();
		return;
	}
	upstream_open(fd);
}

/* The process at the other end of the QMP socket, or 0. */
pid_t
upstream_pid(void)
{
	return up.pid;
}

/* Starts the QMP session on a connected socket: the greeting is due. */
static void
upstream_open(int fd)
{
	struct timeval		 tv = { UP_GREETING_TIMEOUT, 0 };
	struct ucred		 cred;
	socklen_t		 len = sizeof cred;

	log_debug("connected to %s, waiting for the greeting", up.path);
	up.pid = getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 ?
	    cred.pid : 0;
	up.conn = conn_new(fd, upstream_read_cb, upstream_error_cb, NULL,
	    NULL);
	/*
	 * QEMU keeps only the descriptors of its latest read, and with oob on
	 * it reads ahead of the command that will use them: send a batch only
	 * once the command that took the previous one has been answered.
	 */
	up.conn->flags |= CONN_FDS_ONE;
	up.fr = qmp_framer_new(SIZE_MAX / 2);
	up.state = UP_GREETING;
	evtimer_add(up.timer, &tv);
}

static void
upstream_timer_cb(int fd, short what, void *arg)
{
	if (up.state == UP_DOWN)
		upstream_connect();
	else if (up.state != UP_READY)
		upstream_down("no greeting from QEMU in time");
}

/*
 * QEMU went away: its clients are disconnected, as QEMU itself would do,
 * and the proxy connects again when QEMU is back.
 */
static void
upstream_down(const char *reason)
{
	struct pending	*p;
	void		(*cb)(void);

	if (up.state == UP_READY)
		log_warnx("QEMU at %s went away: %s", up.path, reason);
	else
		log_debug("QEMU at %s: %s", up.path, reason);
	client_close_all("QEMU went away");
	up.state = UP_DOWN;
	while ((p = TAILQ_FIRST(&up.pending)) != NULL) {
		TAILQ_REMOVE(&up.pending, p, up_entry);
		if (p->flags & PENDING_INTERNAL)
			p->cb(NULL, p->cb_arg);
		pending_free(p);
	}
	conn_free(up.conn);
	up.conn = NULL;
	qmp_framer_free(up.fr);
	up.fr = NULL;
	up.state = UP_DOWN;
	up.waiting_logged = 0;
	up.pid = 0;
	snap_memory_release();
	if (up.timer == NULL)
		return;			/* shutting down */
	evtimer_del(up.timer);
	if ((cb = up.down_cb) != NULL) {
		up.down_cb = NULL;
		cb();
		return;
	}
	if (!up.inherited) {
		upstream_retry();
		return;
	}
	/* Nothing to connect to again: done, and done well if it served. */
	if (up.was_ready)
		log_info("QEMU's monitor on %s closed (%s); an inherited "
		    "connection cannot be reopened: exiting", up.path, reason);
	else
		log_warnx("QEMU's monitor on %s failed before it was ready "
		    "(%s): exiting", up.path, reason);
	qbranchd_stop(up.was_ready ? 0 : 1);
}

static void
upstream_error_cb(struct conn *conn, const char *reason, void *arg)
{
	upstream_down(reason);
}

/*
 * Detaches a closing client from the requests it has in flight: their
 * replies will be dropped on arrival.
 */
void
upstream_forget_client(struct client *c)
{
	struct pending	*p;

	TAILQ_FOREACH(p, &up.pending, up_entry) {
		if (p->client != c)
			continue;
		p->client = NULL;
		if (!(p->flags & PENDING_OOB)) {
			TAILQ_REMOVE(&c->replies, p, client_entry);
			c->nreplies--;
		}
	}
}

/* Queues the reply a client's forwarded command is owed. */
static struct pending *
upstream_pending(struct client *c, const struct qmp_msg *msg,
    const struct qmp_request *req)
{
	struct pending	*p;

	p = xcalloc(1, sizeof *p);
	p->uid = ++up.next_uid;
	p->client = c;
	if (req->id != NULL)
		p->id = client_copy_id(c, msg, req->id, &p->idlen);
	else
		p->flags |= PENDING_NOID;
	if (strcmp(req->name, "query-commands") == 0)
		p->flags |= PENDING_COMMANDS;
	else if (strcmp(req->name, "query-jobs") == 0 && snap_jobs_exist())
		p->flags |= PENDING_JOBS;
	if (req->oob)
		p->flags |= PENDING_OOB;
	else {
		TAILQ_INSERT_TAIL(&c->replies, p, client_entry);
		c->nreplies++;
	}
	TAILQ_INSERT_TAIL(&up.pending, p, up_entry);
	if (conn_move_fds(c->conn, msg->start + msg->len, up.conn) > 0)
		p->flags |= PENDING_FDS;
	return p;
}

/*
 * Sends a client's command to QEMU under a fresh id; the bytes move from
 * the client's input with only the id changed.
 */
void
upstream_forward(struct client *c, const struct qmp_msg *msg,
    const struct qmp_request *req)
{
	struct pending	*p;
	struct splice	 sp;
	char		 ins[48];
	int		 n;

	p = upstream_pending(c, msg, req);
	if (req->id != NULL) {
		splice_id_replace(req->id, &sp);
		n = snprintf(ins, sizeof ins, "%" PRIu64, p->uid);
	} else {
		splice_id_insert(&sp);
		n = snprintf(ins, sizeof ins, "\"id\": %" PRIu64 ", ", p->uid);
	}
	conn_splice(c->conn, up.conn, msg->len, &sp, ins, n);
}

/*
 * Sends a client's command to QEMU as the proxy rewrote it (text, an
 * object without an id), in place of the message it sent.
 */
void
upstream_forward_text(struct client *c, const struct qmp_msg *msg,
    const struct qmp_request *req, const char *text)
{
	struct pending	*p;
	char		 ins[48];
	int		 n;

	p = upstream_pending(c, msg, req);
	n = snprintf(ins, sizeof ins, "{\"id\": %" PRIu64 ", ", p->uid);
	conn_write(up.conn, ins, n);
	conn_write(up.conn, text + 1, strlen(text + 1));
	conn_write(up.conn, "\r\n", 2);
	conn_drain_in(c->conn, msg->len);
}

/*
 * Sends a command of the proxy's own to QEMU. cb gets the whole reply
 * (borrowed), or NULL when QEMU went away first. args is stolen.
 */
void
upstream_call(const char *execute, json_t *args,
    void (*cb)(json_t *, void *), void *arg)
{
	struct pending	*p;
	json_t		*cmd;
	char		*text;

	p = xcalloc(1, sizeof *p);
	p->uid = ++up.next_uid;
	p->flags = PENDING_INTERNAL;
	p->cb = cb;
	p->cb_arg = arg;
	cmd = json_pack("{s:s, s:I}", "execute", execute, "id",
	    (json_int_t)p->uid);
	if (args != NULL)
		json_object_set_new(cmd, "arguments", args);
	text = json_dumps(cmd, JSON_COMPACT);
	json_decref(cmd);
	if (text == NULL)
		fatalx("json_dumps");
	log_debug("qbranch -> QEMU: %s", text);
	if (up.state != UP_READY) {
		free(text);
		pending_free(p);
		cb(NULL, arg);
		return;
	}
	TAILQ_INSERT_TAIL(&up.pending, p, up_entry);
	conn_write(up.conn, text, strlen(text));
	free(text);
}

/* Hands the reply to one of the proxy's own commands to its caller. */
static void
upstream_reply_internal(const struct qmp_msg *msg, struct pending *p)
{
	json_t	*reply;
	char	*text;

	text = (char *)evbuffer_pullup(up.conn->in, msg->len);
	reply = json_loadb(text, msg->len, JSON_DECODE_ANY, NULL);
	log_debug("QEMU -> qbranch: %.*s", (int)(msg->len > 300 ? 300 :
	    msg->len), text);
	conn_drain_in(up.conn, msg->len);
	if (reply == NULL)
		reply = json_pack("{s:{s:s, s:s}}", "error", "class",
		    "GenericError", "desc", "unreadable reply from QEMU");
	p->cb(reply, p->cb_arg);
	json_decref(reply);
	pending_free(p);
}

/*
 * query-commands and query-jobs: the proxy's own commands or jobs (extra,
 * comma-separated entries) join QEMU's list, spliced in before its closing
 * bracket; nothing of QEMU's is re-encoded.
 */
static void
upstream_reply_append(const struct qmp_msg *msg, struct client *c,
    const struct splice *sp, const char *ins, size_t inslen,
    const char *extra)
{
	const struct qmp_member	*ret = qmp_msg_member(msg, "return");
	struct buf		 b = { NULL, 0, 0 }, out = { NULL, 0, 0 };
	const char		*raw;
	size_t			 pos, k;
	int			 empty;

	raw = (const char *)evbuffer_pullup(up.conn->in, msg->len);
	splice_apply(&b, raw, msg->len, sp, ins, inslen);
	if (ret != NULL && ret->val_type == QMP_T_ARRAY) {
		pos = ret->val_end - 1;
		for (k = pos; k > ret->val_off && strchr(" \t\r\n",
		    raw[k - 1]) != NULL; k--)
			;
		empty = k - 1 == ret->val_off;
		if (sp->head <= pos)
			pos = pos + inslen - sp->skip;
		buf_add(&out, b.data, pos);
		if (!empty && *extra != '\0')
			buf_addstr(&out, ", ");
		buf_addstr(&out, extra);
		buf_add(&out, b.data + pos, b.len - pos);
	} else
		buf_add(&out, b.data, b.len);
	conn_drain_in(up.conn, msg->len);
	client_send(c, out.data, out.len);
	buf_free(&b);
	buf_free(&out);
}

/* Sends QEMU's reply to the client that asked, with its own id. */
static void
upstream_reply(const struct qmp_msg *msg)
{
	const struct qmp_member	*idm;
	struct pending		*p;
	struct client		*c;
	struct splice		 sp = { msg->len, 0 };
	char			 num[24];
	size_t			 n;
	uint64_t		 uid;
	const char		*ins = NULL;
	size_t			 inslen = 0;
	struct buf		 b = { NULL, 0, 0 };
	char			*extra;

	idm = qmp_msg_member(msg, "id");
	if (idm != NULL) {
		n = idm->val_end - idm->val_off;
		if (n >= sizeof num)
			n = sizeof num - 1;
		conn_copy_in(up.conn, idm->val_off, num, n);
		num[n] = '\0';
		uid = strtoull(num, NULL, 10);
		TAILQ_FOREACH(p, &up.pending, up_entry) {
			if (p->uid == uid)
				break;
		}
	} else {
		/* In-band replies come in order: the oldest one is due. */
		TAILQ_FOREACH(p, &up.pending, up_entry) {
			if (!(p->flags & PENDING_OOB))
				break;
		}
	}
	if (p == NULL) {
		log_warnx("QEMU replied to no request of ours; dropped");
		conn_drain_in(up.conn, msg->len);
		return;
	}
	TAILQ_REMOVE(&up.pending, p, up_entry);
	if (p->flags & PENDING_FDS)
		conn_release_fds(up.conn);
	if (p->flags & PENDING_INTERNAL) {
		upstream_reply_internal(msg, p);
		return;
	}
	if ((c = p->client) == NULL || (c->flags & CLIENT_CLOSING)) {
		conn_drain_in(up.conn, msg->len);
		if (c == NULL)
			pending_free(p);
		return;
	}
	if (idm != NULL && (p->flags & PENDING_NOID))
		splice_id_remove(msg, idm, &sp);
	else if (idm != NULL) {
		splice_id_replace(idm, &sp);
		ins = p->id;
		inslen = p->idlen;
	} else if (!(p->flags & PENDING_NOID)) {
		buf_addstr(&b, "\"id\": ");
		buf_add(&b, p->id, p->idlen);
		buf_addstr(&b, ", ");
		splice_id_insert(&sp);
		ins = b.data;
		inslen = b.len;
	}
	if (p->flags & PENDING_COMMANDS)
		upstream_reply_append(msg, c, &sp, ins, inslen,
		    cmd_list_json());
	else if (p->flags & PENDING_JOBS) {
		extra = snap_jobs_json();
		upstream_reply_append(msg, c, &sp, ins, inslen, extra);
		free(extra);
	} else {
		conn_splice(up.conn, c->conn, msg->len, &sp, ins, inslen);
		client_sent(c);
	}
	buf_free(&b);
	if (p->flags & PENDING_OOB)
		pending_free(p);
	else
		client_reply_done(c, p);
}

static void
upstream_event(const struct qmp_msg *msg)
{
	struct client	*c;
	const char	*data;
	json_t		*ev;

	data = (const char *)evbuffer_pullup(up.conn->in, msg->len);
	if (snap_op_wants_events()) {
		/* Only while an operation runs: not on everyone's path. */
		if ((ev = json_loadb(data, msg->len, 0, NULL)) != NULL) {
			snap_op_event(ev);
			json_decref(ev);
		}
	}
	TAILQ_FOREACH(c, &clients, entry) {
		if (c->state == CLIENT_COMMAND)
			client_send(c, data, msg->len);
	}
	conn_drain_in(up.conn, msg->len);
}

/* Keeps QEMU's greeting and negotiates capabilities for the proxy. */
static void
upstream_greeted(const struct qmp_msg *msg)
{
	json_t		*root, *caps, *v;
	json_error_t	 err;
	size_t		 i;
	const char	*cmd;

	free(up.greeting);
	up.greeting_len = msg->len;
	up.greeting = xmalloc(msg->len + 1);
	evbuffer_remove(up.conn->in, up.greeting, msg->len);
	up.conn->in_off += msg->len;
	up.greeting[msg->len] = '\0';
	up.oob = 0;
	root = json_loadb(up.greeting, up.greeting_len, 0, &err);
	caps = json_object_get(json_object_get(root, "QMP"), "capabilities");
	json_array_foreach(caps, i, v) {
		if (json_is_string(v) && strcmp(json_string_value(v), "oob") == 0)
			up.oob = 1;
	}
	if (json_array_size(caps) > (size_t)up.oob) {
		/* Offer clients only what the proxy supports too. */
		json_object_set_new(json_object_get(root, "QMP"),
		    "capabilities", up.oob ? json_pack("[s]", "oob") :
		    json_array());
		free(up.greeting);
		up.greeting = json_dumps(root, JSON_PRESERVE_ORDER);
		if (up.greeting == NULL)
			fatalx("json_dumps");
		up.greeting_len = strlen(up.greeting);
	}
	json_decref(root);
	cmd = up.oob ?
	    "{\"execute\": \"qmp_capabilities\", "
	    "\"arguments\": {\"enable\": [\"oob\"]}, \"id\": 0}" :
	    "{\"execute\": \"qmp_capabilities\", \"id\": 0}";
	conn_write(up.conn, cmd, strlen(cmd));
	up.state = UP_NEGOTIATING;
}

static void
upstream_handle(const struct qmp_msg *msg)
{
	if (msg->error != NULL || msg->type != QMP_T_OBJECT) {
		log_warnx("QEMU sent what is not a QMP message (%s); skipped",
		    msg->error ? msg->error : "not an object");
		conn_drain_in(up.conn, msg->len);
		return;
	}
	switch (up.state) {
	case UP_GREETING:
		if (qmp_msg_member(msg, "QMP") == NULL) {
			upstream_down("QEMU did not greet");
			return;
		}
		upstream_greeted(msg);
		return;
	case UP_NEGOTIATING:
		if (qmp_msg_member(msg, "event") != NULL) {
			conn_drain_in(up.conn, msg->len);
			return;
		}
		conn_drain_in(up.conn, msg->len);
		if (qmp_msg_member(msg, "return") == NULL) {
			upstream_down("QEMU refused qmp_capabilities");
			return;
		}
		up.state = UP_READY;
		up.was_ready = 1;
		up.backoff_ms = UP_BACKOFF_MIN_MS;
		evtimer_del(up.timer);
		log_info("connected to QEMU at %s", up.path);
		snap_upstream_ready();
		return;
	case UP_READY:
		if (qmp_msg_member(msg, "event") != NULL)
			upstream_event(msg);
		else
			upstream_reply(msg);
		return;
	case UP_DOWN:
		break;
	}
	conn_drain_in(up.conn, msg->len);
}

static void
upstream_read_cb(struct conn *conn, void *arg)
{
	const struct qmp_msg	*msg;

	while (up.conn == conn && (msg = conn_next_msg(conn, up.fr)) != NULL)
		upstream_handle(msg);
}
