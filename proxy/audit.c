/*
 * audit.c: the audit log (--audit FILE), one JSON line per decision. Lines
 * gather in memory and a thread appends them to the file, so a slow disk
 * never holds up the event loop; past a bound, lines are dropped and
 * counted rather than let memory grow. SIGHUP opens the file again, for
 * log rotation.
 */
#include <sys/time.h>

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "qbranch.h"

#define AUDIT_MAX_PENDING	(16u << 20)

static struct {
	const char	*path;
	int		 fd;
	struct buf	 pending;	/* lines not yet handed to a thread */
	struct buf	 writing;	/* lines the thread is writing */
	int		 busy;
	int		 written;	/* set by the thread as it ends */
	int		 reopen;
	uint64_t	 dropped;
	char		*error;		/* the thread's, for the loop to log */
} audit = { .fd = -1 };

static int
audit_open(void)
{
	int	fd;

	fd = open(audit.path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (fd == -1) {
		log_warn("audit log %s", audit.path);
		return -1;
	}
	if (audit.fd != -1)
		close(audit.fd);
	audit.fd = fd;
	return 0;
}

/* Opens the audit log at start; -1 when it cannot be written. */
int
audit_init(const char *path)
{
	audit.path = path;
	return audit_open();
}

static void
audit_write_work(void *arg)
{
	size_t	 done = 0;
	ssize_t	 n;

	while (done < audit.writing.len) {
		n = write(audit.fd, audit.writing.data + done,
		    audit.writing.len - done);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0) {
			xasprintf(&audit.error, "audit log %s: %s (%zu bytes "
			    "lost)", audit.path, n == 0 ? "short write" :
			    strerror(errno), audit.writing.len - done);
			break;
		}
		done += n;
	}
	audit.writing.len = 0;
	__atomic_store_n(&audit.written, 1, __ATOMIC_RELEASE);
}

static void	audit_flush(void);

static void
audit_write_done(void *arg)
{
	audit.busy = 0;
	if (audit.error != NULL) {
		log_warnx("%s", audit.error);
		free(audit.error);
		audit.error = NULL;
	}
	if (audit.reopen) {
		audit.reopen = 0;
		audit_open();
	}
	audit_flush();
}

static void
audit_flush(void)
{
	struct buf	t;

	if (audit.busy || audit.pending.len == 0 || audit.fd == -1)
		return;
	if (audit.dropped > 0) {
		log_warnx("audit log %s: %llu records dropped (the disk is "
		    "slower than the requests)", audit.path,
		    (unsigned long long)audit.dropped);
		audit.dropped = 0;
	}
	t = audit.writing;
	audit.writing = audit.pending;
	audit.pending = t;
	audit.busy = 1;
	audit.written = 0;
	io_run(audit_write_work, audit_write_done, NULL);
}

void
audit_reopen(void)
{
	if (audit.path == NULL)
		return;
	if (audit.busy)
		audit.reopen = 1;
	else
		audit_open();
}

/* Writes what is left, at exit; blocking is fine then. */
void
audit_shutdown(void)
{
	struct timespec	 ms = { 0, 1000000 };
	int		 i;

	if (audit.fd == -1)
		return;
	/* The loop has ended: wait for a thread still writing. */
	for (i = 0; audit.busy && i < 10000 &&
	    !__atomic_load_n(&audit.written, __ATOMIC_ACQUIRE); i++)
		nanosleep(&ms, NULL);
	if (audit.busy && !audit.written) {
		/* A write stuck for 10 s: leave it its buffer and file. */
		log_warnx("audit log %s: a write does not end; records may be "
		    "lost", audit.path);
		return;
	}
	audit.writing.len = 0;
	buf_add(&audit.writing, audit.pending.data, audit.pending.len);
	audit.pending.len = 0;
	audit_write_work(NULL);
	free(audit.error);
	audit.error = NULL;
	close(audit.fd);
	audit.fd = -1;
	buf_free(&audit.pending);
	buf_free(&audit.writing);
}

static void
audit_add_rule(struct buf *b, const char *key, const struct rule *r)
{
	buf_addstr(b, ", \"");
	buf_addstr(b, key);
	buf_addstr(b, "\": ");
	qmp_quote_into(b, r->where);
	if (r->name != NULL) {
		buf_addstr(b, ", \"");
		buf_addstr(b, key);
		buf_addstr(b, "-name\": ");
		qmp_quote_into(b, r->name);
	}
}

/* Records one decision on a request. */
void
audit_decision(struct client *c, const char *command,
    const struct rule_decision *d, const struct rule_subject *s)
{
	struct buf	*b = &audit.pending;
	struct timeval	 tv;
	struct tm	 tm;
	char		 t[256];
	size_t		 i;

	if (audit.fd == -1)
		return;
	if (b->len > AUDIT_MAX_PENDING) {
		audit.dropped++;
		return;
	}
	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	strftime(t, sizeof t, "%Y-%m-%dT%H:%M:%S", &tm);
	buf_addstr(b, "{\"time\": \"");
	buf_addstr(b, t);
	snprintf(t, sizeof t, ".%06ldZ\", \"listener\": ", (long)tv.tv_usec);
	buf_addstr(b, t);
	qmp_quote_into(b, c->listener->path);
	snprintf(t, sizeof t, ", \"client\": %u, \"uid\": %d, \"gid\": %d, "
	    "\"pid\": %d, \"command\": ", c->id, (int)c->uid, (int)c->gid,
	    (int)c->pid);
	buf_addstr(b, t);
	qmp_quote_into(b, command);
	if (s->name != command) {
		buf_addstr(b, ", \"name\": ");
		qmp_quote_into(b, s->name);
	}
	audit_add_rule(b, "rule", d->rule);
	buf_addstr(b, ", \"action\": \"");
	buf_addstr(b, rule_action_name(d->action));
	buf_addstr(b, "\"");
	if (d->nlogged > 0) {
		buf_addstr(b, ", \"logged\": [");
		for (i = 0; i < d->nlogged; i++) {
			buf_addstr(b, i > 0 ? ", " : "");
			qmp_quote_into(b, d->logged[i]->where);
		}
		buf_addstr(b, "]");
	}
	buf_addstr(b, "}\n");
	audit_flush();
}
