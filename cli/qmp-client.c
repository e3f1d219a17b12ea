/*
 * qmp-client.c: one QMP connection to qbranchd, blocking, one request at a
 * time. Reads the greeting, negotiates, then sends a command with an id and
 * reads until its reply, handing the events met on the way to a callback.
 * qbranchd (like QEMU) writes one message a line; a line is parsed with
 * jansson, and a reply's "return" is also cut out of the line as sent, so
 * that values jansson cannot hold (integers past INT64_MAX) are printed
 * exactly.
 */
#include <sys/socket.h>
#include <sys/un.h>

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

#define QMPC_GREETING_MS	10000		/* qbranchd waits for QEMU */
#define QMPC_MAX_MESSAGE	(64u << 20)	/* QEMU's own limit */

struct qmp_client {
	int		 fd;
	char		*path;
	struct buf	 in;		/* bytes read; framed from off */
	size_t		 off;
	unsigned	 serial;
	void		(*event_cb)(json_t *, const char *, void *);
	void		*event_arg;
};

static volatile sig_atomic_t	qmp_client_stop;

static void
qmp_client_stop_handler(int sig)
{
	qmp_client_stop = 1;
}

/* SIGINT and SIGTERM end a wait with QMPC_INTR instead of the program. */
void
qmp_client_stop_on_signals(void)
{
	struct sigaction	sa;

	memset(&sa, 0, sizeof sa);
	sa.sa_handler = qmp_client_stop_handler;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
}

/* Frees what a QMPC_ERROR reply left in err. */
void
qmp_client_error_clear(struct qmp_client_error *err)
{
	free(err->class);
	free(err->desc);
	err->class = err->desc = NULL;
}

/* Events met while waiting go to cb (message borrowed, raw line). */
void
qmp_client_set_event_cb(struct qmp_client *c, void (*cb)(json_t *, const char *,
    void *), void *arg)
{
	c->event_cb = cb;
	c->event_arg = arg;
}

static int64_t
qmp_client_now_ms(void)
{
	struct timespec	ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * The next non-empty line, without its CR LF (new string), waiting at most
 * timeout_ms (-1: for ever). Returns QMPC_OK, QMPC_LOST with *cause, or
 * QMPC_INTR.
 */
static int
qmp_client_read_line(struct qmp_client *c, int timeout_ms, char **line, char **cause)
{
	struct pollfd	 pfd;
	char		 tmp[65536], *start, *nl;
	size_t		 len;
	ssize_t		 n;
	int64_t		 deadline = qmp_client_now_ms() + timeout_ms;
	int		 wait, rv;

	for (;;) {
		/* No offset added to the NULL of a buffer never filled. */
		start = c->in.data != NULL ? c->in.data + c->off : NULL;
		len = c->in.len - c->off;
		if (len > 0 && (nl = memchr(start, '\n', len)) != NULL) {
			c->off += nl - start + 1;
			while (nl > start && (nl[-1] == '\r' || nl[-1] == ' '))
				nl--;
			if (nl == start)
				continue;
			*line = xstrndup(start, nl - start);
			return QMPC_OK;
		}
		if (len > QMPC_MAX_MESSAGE) {
			xasprintf(cause, "a message from %s is longer than "
			    "%u bytes", c->path, QMPC_MAX_MESSAGE);
			return QMPC_LOST;
		}
		if (c->off > 0) {
			memmove(c->in.data, start, len);
			c->in.len = len;
			c->off = 0;
		}
		if (qmp_client_stop)
			return QMPC_INTR;
		wait = -1;
		if (timeout_ms >= 0) {
			wait = (int)(deadline - qmp_client_now_ms());
			if (wait <= 0) {
				xasprintf(cause, "qbranchd at %s did not answer "
				    "within %d s", c->path, timeout_ms / 1000);
				return QMPC_LOST;
			}
		}
		pfd.fd = c->fd;
		pfd.events = POLLIN;
		if ((rv = poll(&pfd, 1, wait)) == -1) {
			if (errno == EINTR)
				continue;
			xasprintf(cause, "poll: %s", strerror(errno));
			return QMPC_LOST;
		}
		if (rv == 0)
			continue;
		if ((n = read(c->fd, tmp, sizeof tmp)) == -1) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			xasprintf(cause, "reading from %s: %s", c->path,
			    strerror(errno));
			return QMPC_LOST;
		}
		if (n == 0) {
			xasprintf(cause, "qbranchd closed the connection on %s",
			    c->path);
			return QMPC_LOST;
		}
		buf_add(&c->in, tmp, n);
	}
}

/* A line as a JSON object (new reference), or NULL with *cause. */
static json_t *
qmp_client_parse(const char *line, char **cause)
{
	json_error_t	 err;
	json_t		*m;

	if ((m = json_loads(line, 0, &err)) == NULL)
		m = json_loads(line, JSON_DECODE_INT_AS_REAL, &err);
	if (m == NULL) {
		xasprintf(cause, "unreadable message from qbranchd: %s",
		    err.text);
		return NULL;
	}
	if (!json_is_object(m)) {
		json_decref(m);
		*cause = xstrdup("a message from qbranchd is not a JSON object");
		return NULL;
	}
	return m;
}

/* The bytes of the top-level member key as sent (new string), or NULL. */
static char *
qmp_client_raw_member(const char *line, const char *key)
{
	struct qmp_framer	*fr;
	const struct qmp_msg	*msg;
	const struct qmp_member	*m;
	size_t			 len = strlen(line);
	char			*out = NULL;

	fr = qmp_framer_new(len + 1);
	qmp_framer_feed(fr, line, len, &msg);
	if (msg != NULL && msg->error == NULL &&
	    (m = qmp_msg_member(msg, key)) != NULL)
		out = xstrndup(line + msg->start + m->val_off,
		    m->val_end - m->val_off);
	qmp_framer_free(fr);
	return out;
}

static int
qmp_client_write(struct qmp_client *c, const char *data, size_t len, char **cause)
{
	ssize_t	n;

	while (len > 0) {
		if ((n = send(c->fd, data, len, MSG_NOSIGNAL)) == -1) {
			if (errno == EINTR)
				continue;
			xasprintf(cause, "writing to %s: %s", c->path,
			    strerror(errno));
			return QMPC_LOST;
		}
		data += n;
		len -= n;
	}
	return QMPC_OK;
}

/*
 * Sends cmd (stolen) with an id of ours and waits for its reply. On
 * QMPC_OK *ret (new reference) and *raw (new string, may be NULL) hold
 * the return value; on QMPC_ERROR err holds the error; on QMPC_LOST
 * *cause says why.
 */
int
qmp_client_request(struct qmp_client *c, json_t *cmd, json_t **ret, char **raw,
    struct qmp_client_error *err, char **cause)
{
	json_t		*m = NULL, *id;
	char		 idbuf[32], *text, *line = NULL;
	int		 rv;

	*ret = NULL;
	if (raw != NULL)
		*raw = NULL;
	snprintf(idbuf, sizeof idbuf, "qbranch-%u", c->serial++);
	json_object_set_new(cmd, "id", json_string(idbuf));
	text = json_dumps(cmd, JSON_COMPACT);
	json_decref(cmd);
	if (text == NULL) {
		*cause = xstrdup("cannot encode the command");
		return QMPC_LOST;
	}
	rv = qmp_client_write(c, text, strlen(text), cause);
	if (rv == QMPC_OK)
		rv = qmp_client_write(c, "\n", 1, cause);
	free(text);
	while (rv == QMPC_OK) {
		if ((rv = qmp_client_read_line(c, -1, &line, cause)) != QMPC_OK)
			break;
		if ((m = qmp_client_parse(line, cause)) == NULL) {
			rv = QMPC_LOST;
			break;
		}
		if (json_object_get(m, "event") != NULL) {
			if (c->event_cb != NULL)
				c->event_cb(m, line, c->event_arg);
			goto next;
		}
		/* Without an id, an error can only be ours: we wait alone. */
		id = json_object_get(m, "id");
		if (id != NULL && !(json_is_string(id) &&
		    strcmp(json_string_value(id), idbuf) == 0))
			goto next;
		if (json_object_get(m, "return") != NULL) {
			*ret = json_incref(json_object_get(m, "return"));
			if (raw != NULL &&
			    (*raw = qmp_client_raw_member(line, "return")) == NULL)
				*raw = json_dumps(*ret, JSON_ENCODE_ANY);
			break;
		}
		if (json_object_get(m, "error") != NULL) {
			id = json_object_get(m, "error");
			err->class = xstrdup(json_is_string(json_object_get(id,
			    "class")) ? json_string_value(json_object_get(id,
			    "class")) : "GenericError");
			err->desc = xstrdup(json_is_string(json_object_get(id,
			    "desc")) ? json_string_value(json_object_get(id,
			    "desc")) : "(no description)");
			rv = QMPC_ERROR;
			break;
		}
next:
		json_decref(m);
		m = NULL;
		free(line);
		line = NULL;
	}
	json_decref(m);
	free(line);
	return rv;
}

/* Runs execute with args (stolen, may be NULL); see qmp_client_request. */
int
qmp_client_call(struct qmp_client *c, const char *execute, json_t *args,
    json_t **ret, char **raw, struct qmp_client_error *err, char **cause)
{
	json_t	*cmd;

	cmd = json_pack("{s:s}", "execute", execute);
	if (args != NULL)
		json_object_set_new(cmd, "arguments", args);
	return qmp_client_request(c, cmd, ret, raw, err, cause);
}

/*
 * The next event as its line (new string). Returns QMPC_OK, QMPC_LOST
 * with *cause, or QMPC_INTR after qmp_client_stop_on_signals().
 */
int
qmp_client_next_event(struct qmp_client *c, char **line, char **cause)
{
	json_t	*m;
	int	 rv;

	for (;;) {
		if ((rv = qmp_client_read_line(c, -1, line, cause)) != QMPC_OK)
			return rv;
		if ((m = qmp_client_parse(*line, cause)) == NULL) {
			free(*line);
			return QMPC_LOST;
		}
		rv = json_object_get(m, "event") != NULL;
		json_decref(m);
		if (rv)
			return QMPC_OK;
		free(*line);
	}
}

/*
 * Connects to the socket at path, reads the greeting and negotiates.
 * Returns NULL with *cause (new) and *hint (static), what to do next.
 */
struct qmp_client *
qmp_client_open(const char *path, char **cause, const char **hint)
{
	struct sockaddr_un	 sun;
	struct qmp_client		*c;
	struct qmp_client_error	 err = { NULL, NULL };
	json_t			*m = NULL, *ret;
	char			*line = NULL, *why = NULL;

	*hint = "start qbranchd for this VM (systemctl start qbranchd@NAME), "
	    "or name its socket with -c SOCKET or $QBRANCH_SOCKET";
	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof sun.sun_path) {
		xasprintf(cause, "socket path %s is too long (at most %zu "
		    "bytes)", path, sizeof sun.sun_path - 1);
		*hint = "give qbranchd a shorter --listen path, or a symbolic "
		    "link to the directory";
		return NULL;
	}
	memcpy(sun.sun_path, path, strlen(path) + 1);
	c = xcalloc(1, sizeof *c);
	c->path = xstrdup(path);
	if ((c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1)
		fatal("socket");
	if (connect(c->fd, (struct sockaddr *)&sun, sizeof sun) == -1) {
		xasprintf(cause, "cannot connect to %s: %s", path,
		    strerror(errno));
		if (errno == EACCES || errno == EPERM)
			*hint = "run qbranch as a user who may open the socket "
			    "(qbranchd --socket-mode sets its mode)";
		else if (errno == ECONNREFUSED)
			*hint = "no qbranchd listens there any more: start it "
			    "(systemctl start qbranchd@NAME), or name another "
			    "socket with -c SOCKET or $QBRANCH_SOCKET";
		goto fail;
	}
	if (qmp_client_read_line(c, QMPC_GREETING_MS, &line, &why) !=
	    QMPC_OK) {
		xasprintf(cause, "no greeting from %s: %s", path, why);
		*hint = "qbranchd greets once QEMU's monitor answers: check "
		    "that QEMU runs, and see qbranchd's log";
		goto fail;
	}
	if ((m = qmp_client_parse(line, &why)) == NULL ||
	    !json_is_object(json_object_get(m, "QMP"))) {
		xasprintf(cause, "%s does not speak QMP: %s", path,
		    why != NULL ? why : "no greeting");
		*hint = "name qbranchd's --listen socket with -c SOCKET";
		goto fail;
	}
	switch (qmp_client_call(c, "qmp_capabilities", NULL, &ret, NULL, &err,
	    &why)) {
	case QMPC_OK:
		json_decref(ret);
		break;
	case QMPC_ERROR:
		xasprintf(cause, "qbranchd at %s refused to negotiate: %s",
		    path, err.desc);
		*hint = "see qbranchd's log";
		goto fail;
	default:
		xasprintf(cause, "negotiating with %s: %s", path, why);
		*hint = "see qbranchd's log";
		goto fail;
	}
	json_decref(m);
	free(line);
	return c;
fail:
	qmp_client_error_clear(&err);
	json_decref(m);
	free(line);
	free(why);
	qmp_client_close(c);
	return NULL;
}

/* Closes the connection and frees the client. */
void
qmp_client_close(struct qmp_client *c)
{
	if (c == NULL)
		return;
	if (c->fd != -1)
		close(c->fd);
	buf_free(&c->in);
	free(c->path);
	free(c);
}
