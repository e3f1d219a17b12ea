/*
 * conn.c: a non-blocking unix stream socket with an input and an output
 * buffer, and file descriptors passed alongside the bytes (SCM_RIGHTS).
 *
 * bufferevents cannot carry descriptors, so reading is recvmsg() into the
 * input buffer and writing is writev() or sendmsg() from the output buffer.
 * Each batch of descriptors is tied to the stream offset of the bytes it
 * arrived with (or must leave with). Output is written in the same loop
 * iteration that produced it, once, after every callback of the iteration
 * has added its part: low latency without a syscall per message.
 */
#include <sys/socket.h>
#include <sys/uio.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "qbranch.h"

#define CONN_READ_SIZE	65536

static void	conn_read_cb(int, short, void *);
static void	conn_write_cb(int, short, void *);
static void	conn_flush(struct conn *);
static void	conn_fail(struct conn *, const char *);

/* Wraps a connected non-blocking socket; reading starts enabled. */
struct conn *
conn_new(int fd, void (*read_cb)(struct conn *, void *),
    void (*error_cb)(struct conn *, const char *, void *),
    void (*drain_cb)(struct conn *, void *), void *arg)
{
	struct conn	*c;

	c = xcalloc(1, sizeof *c);
	c->fd = fd;
	c->in = evbuffer_new();
	c->out = evbuffer_new();
	if (c->in == NULL || c->out == NULL)
		fatalx("evbuffer_new");
	TAILQ_INIT(&c->rfds);
	TAILQ_INIT(&c->wfds);
	c->read_cb = read_cb;
	c->error_cb = error_cb;
	c->drain_cb = drain_cb;
	c->arg = arg;
	c->rev = event_new(base, fd, EV_READ | EV_PERSIST, conn_read_cb, c);
	c->wev = event_new(base, fd, EV_WRITE | EV_PERSIST, conn_write_cb, c);
	c->flushev = event_new(base, -1, 0, conn_write_cb, c);
	if (c->rev == NULL || c->wev == NULL || c->flushev == NULL)
		fatalx("event_new");
	conn_read_enable(c, 1);
	return c;
}

static void
fdbatches_free(struct fdbatches *q)
{
	struct fdbatch	*b;
	int		 i;

	while ((b = TAILQ_FIRST(q)) != NULL) {
		TAILQ_REMOVE(q, b, entry);
		for (i = 0; i < b->nfd; i++)
			close(b->fds[i]);
		free(b);
	}
}

/* Closes the socket and every descriptor still held, and frees. */
void
conn_free(struct conn *c)
{
	if (c == NULL)
		return;
	event_free(c->rev);
	event_free(c->wev);
	event_free(c->flushev);
	evbuffer_free(c->in);
	evbuffer_free(c->out);
	fdbatches_free(&c->rfds);
	fdbatches_free(&c->wfds);
	close(c->fd);
	free(c);
}

/* Starts or stops reading from the peer. */
void
conn_read_enable(struct conn *c, int on)
{
	if (on && !(c->flags & (CONN_READING | CONN_DEAD))) {
		event_add(c->rev, NULL);
		c->flags |= CONN_READING;
	} else if (!on && (c->flags & CONN_READING)) {
		event_del(c->rev);
		c->flags &= ~CONN_READING;
	}
}

/* Drops n bytes from the head of the input. */
void
conn_drain_in(struct conn *c, size_t n)
{
	evbuffer_drain(c->in, n);
	c->in_off += n;
}

/* Queues bytes for the peer. */
void
conn_write(struct conn *c, const void *data, size_t len)
{
	evbuffer_add(c->out, data, len);
	conn_kick(c);
}

/* Bytes queued for the peer and not yet written. */
size_t
conn_out_len(struct conn *c)
{
	return evbuffer_get_length(c->out);
}

/* Schedules a write of the output before the loop waits again. */
void
conn_kick(struct conn *c)
{
	if (c->flags & (CONN_DEAD | CONN_FLUSHING))
		return;
	c->flags |= CONN_FLUSHING;
	event_active(c->flushev, EV_WRITE, 0);
}

/*
 * The peer of a connection with CONN_FDS_ONE has used the descriptors sent
 * last: the next batch may go.
 */
void
conn_release_fds(struct conn *c)
{
	c->flags &= ~CONN_FDS_HELD;
	conn_kick(c);
}

/*
 * Moves every descriptor src received with bytes before offset end to the
 * output of dst, to leave with the bytes dst is given next. With dst NULL
 * they are closed: the message they came with was not forwarded. Returns
 * the number of batches moved.
 */
int
conn_move_fds(struct conn *src, uint64_t end, struct conn *dst)
{
	struct fdbatch	*b;
	int		 i, moved = 0;

	while ((b = TAILQ_FIRST(&src->rfds)) != NULL && b->off < end) {
		TAILQ_REMOVE(&src->rfds, b, entry);
		if (dst == NULL) {
			for (i = 0; i < b->nfd; i++)
				close(b->fds[i]);
			free(b);
			continue;
		}
		b->off = dst->out_off + evbuffer_get_length(dst->out);
		TAILQ_INSERT_TAIL(&dst->wfds, b, entry);
		moved++;
	}
	return moved;
}

/*
 * Moves a message of len bytes from the head of src's input to dst's output
 * with the splice applied (dst NULL: drops it). The bytes are moved, not
 * re-encoded.
 */
void
conn_splice(struct conn *src, struct conn *dst, size_t len,
    const struct splice *sp, const char *ins, size_t inslen)
{
	if (dst == NULL) {
		conn_drain_in(src, len);
		return;
	}
	evbuffer_remove_buffer(src->in, dst->out, sp->head);
	if (inslen > 0)
		evbuffer_add(dst->out, ins, inslen);
	evbuffer_drain(src->in, sp->skip);
	evbuffer_remove_buffer(src->in, dst->out, len - sp->head - sp->skip);
	src->in_off += len;
	conn_kick(dst);
}

/*
 * Frames src's input: returns the next complete message (or parse error),
 * which then starts at the head of the input, or NULL when more bytes are
 * needed. Bytes no message can use are dropped on the way.
 */
const struct qmp_msg *
conn_next_msg(struct conn *c, struct qmp_framer *fr)
{
	struct evbuffer_ptr	 ptr;
	struct evbuffer_iovec	 v;
	const struct qmp_msg	*msg;
	uint64_t		 scan;

	for (;;) {
		scan = qmp_framer_offset(fr);
		if (scan - c->in_off >= evbuffer_get_length(c->in))
			return NULL;
		evbuffer_ptr_set(c->in, &ptr, scan - c->in_off,
		    EVBUFFER_PTR_SET);
		if (evbuffer_peek(c->in, -1, &ptr, &v, 1) < 1)
			return NULL;
		qmp_framer_feed(fr, v.iov_base, v.iov_len, &msg);
		if (msg != NULL) {
			conn_drain_in(c, msg->start - c->in_off);
			return msg;
		}
		conn_drain_in(c, qmp_framer_keep(fr) - c->in_off);
	}
}

/* Reads a copy of len bytes at offset off of the input. */
void
conn_copy_in(struct conn *c, size_t off, void *dst, size_t len)
{
	struct evbuffer_ptr	 ptr;

	evbuffer_ptr_set(c->in, &ptr, off, EVBUFFER_PTR_SET);
	evbuffer_copyout_from(c->in, &ptr, dst, len);
}

static void
conn_fail(struct conn *c, const char *reason)
{
	if (c->flags & CONN_DEAD)
		return;
	conn_read_enable(c, 0);
	event_del(c->wev);
	c->flags |= CONN_DEAD;
	c->error_cb(c, reason, c->arg);
}

static void
conn_read_cb(int fd, short what, void *arg)
{
	struct conn		*c = arg;
	struct evbuffer_iovec	 v[2];
	struct msghdr		 msg;
	struct cmsghdr		*cm;
	struct fdbatch		*b;
	union {
		struct cmsghdr	hdr;
		char		buf[CMSG_SPACE(sizeof(int) * QB_MAX_FDS)];
	}			 cmsgbuf;
	ssize_t			 n;
	int			 nv, i, nfd;
	uint64_t		 at;

	nv = evbuffer_reserve_space(c->in, CONN_READ_SIZE, v, 2);
	if (nv <= 0)
		fatalx("evbuffer_reserve_space");
	memset(&msg, 0, sizeof msg);
	msg.msg_iov = (struct iovec *)v;
	msg.msg_iovlen = nv;
	msg.msg_control = cmsgbuf.buf;
	msg.msg_controllen = sizeof cmsgbuf.buf;
	n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
	if (n == -1) {
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
			return;
		conn_fail(c, strerror(errno));
		return;
	}
	at = c->in_off + evbuffer_get_length(c->in);
	for (cm = CMSG_FIRSTHDR(&msg); cm != NULL;
	    cm = CMSG_NXTHDR(&msg, cm)) {
		if (cm->cmsg_level != SOL_SOCKET ||
		    cm->cmsg_type != SCM_RIGHTS)
			continue;
		nfd = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		b = xcalloc(1, sizeof *b);
		b->off = at;
		b->nfd = nfd;
		memcpy(b->fds, CMSG_DATA(cm), nfd * sizeof(int));
		if (msg.msg_flags & MSG_CTRUNC) {
			log_warnx("descriptors cut short; dropped");
			for (i = 0; i < nfd; i++)
				close(b->fds[i]);
			free(b);
			continue;
		}
		TAILQ_INSERT_TAIL(&c->rfds, b, entry);
	}
	if (n == 0) {
		evbuffer_commit_space(c->in, v, 0);
		conn_fail(c, "end of file");
		return;
	}
	for (i = 0; i < nv; i++) {
		if ((size_t)n < v[i].iov_len)
			v[i].iov_len = n;
		n -= v[i].iov_len;
	}
	evbuffer_commit_space(c->in, v, nv);
	c->read_cb(c, c->arg);
}

/* Sends the head of the output with the batch of descriptors due there. */
static int
conn_send_fds(struct conn *c, struct fdbatch *b, size_t len)
{
	struct evbuffer_iovec	 v[8];
	struct msghdr		 msg;
	struct cmsghdr		*cm;
	union {
		struct cmsghdr	hdr;
		char		buf[CMSG_SPACE(sizeof(int) * QB_MAX_FDS)];
	}			 cmsgbuf;
	ssize_t			 n;
	int			 nv, i;

	nv = evbuffer_peek(c->out, len, NULL, v, 8);
	if (nv > 8)
		nv = 8;
	memset(&msg, 0, sizeof msg);
	/* Padding included: every byte of the control data is defined. */
	memset(&cmsgbuf, 0, sizeof cmsgbuf);
	msg.msg_iov = (struct iovec *)v;
	msg.msg_iovlen = nv;
	msg.msg_control = cmsgbuf.buf;
	msg.msg_controllen = CMSG_SPACE(sizeof(int) * b->nfd);
	/* The control buffer is big enough: there is a first header. */
	cm = (struct cmsghdr *)cmsgbuf.buf;
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int) * b->nfd);
	memcpy(CMSG_DATA(cm), b->fds, sizeof(int) * b->nfd);
	/* Only the bytes up to the next batch may go with these. */
	for (i = 0; i < nv; i++) {
		if (v[i].iov_len > len)
			v[i].iov_len = len;
		len -= v[i].iov_len;
	}
	n = sendmsg(c->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
	if (n <= 0)
		return -1;
	TAILQ_REMOVE(&c->wfds, b, entry);
	for (i = 0; i < b->nfd; i++)
		close(b->fds[i]);
	free(b);
	evbuffer_drain(c->out, n);
	c->out_off += n;
	return 0;
}

static void
conn_flush(struct conn *c)
{
	struct fdbatch	*b;
	size_t		 len, upto;
	int		 n;

	while ((len = evbuffer_get_length(c->out)) > 0) {
		b = TAILQ_FIRST(&c->wfds);
		upto = len;
		if (b != NULL && b->off > c->out_off && b->off - c->out_off <
		    len)
			upto = b->off - c->out_off;
		if (b != NULL && b->off <= c->out_off) {
			if (c->flags & CONN_FDS_HELD)
				break;
			if (TAILQ_NEXT(b, entry) != NULL &&
			    TAILQ_NEXT(b, entry)->off - c->out_off < len)
				upto = TAILQ_NEXT(b, entry)->off - c->out_off;
			n = conn_send_fds(c, b, upto);
			if (n == 0 && (c->flags & CONN_FDS_ONE))
				c->flags |= CONN_FDS_HELD;
		} else {
			n = evbuffer_write_atmost(c->out, c->fd, upto);
			if (n > 0)
				c->out_off += n;
		}
		if (n < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK ||
			    errno == EINTR)
				break;
			conn_fail(c, strerror(errno));
			return;
		}
		if (n == 0)
			break;
	}
	if (evbuffer_get_length(c->out) > 0) {
		event_add(c->wev, NULL);
		return;
	}
	event_del(c->wev);
	if (c->drain_cb != NULL)
		c->drain_cb(c, c->arg);
}

static void
conn_write_cb(int fd, short what, void *arg)
{
	struct conn	*c = arg;

	c->flags &= ~CONN_FLUSHING;
	if (c->flags & CONN_DEAD)
		return;
	conn_flush(c);
}
