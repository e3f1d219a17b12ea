/*
 * listener.c: the listening unix sockets. A stale socket file is replaced,
 * a live one is refused; sockets are created with the mode asked for.
 * Sockets handed over as descriptors (--listen-fd, socket activation) are
 * served as they are and never unlinked. When the process runs out of
 * descriptors, accepting pauses for a moment instead of spinning.
 */
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/listener.h>

#include "qbranch.h"

#define LISTENER_PAUSE_SEC	1

extern struct listeners	listeners;
static struct event	*resume_timer;
static int		 paused;

static void	listener_accept_cb(struct evconnlistener *, int,
		    struct sockaddr *, int, void *);
static void	listener_error_cb(struct evconnlistener *, void *);

static int
listener_addr(const char *path, struct sockaddr_un *sun, char **cause)
{
	memset(sun, 0, sizeof *sun);
	sun->sun_family = AF_UNIX;
	if (strlen(path) >= sizeof sun->sun_path) {
		xasprintf(cause, "%s: socket path too long (%zu bytes at most)",
		    path, sizeof sun->sun_path - 1);
		return -1;
	}
	strncpy(sun->sun_path, path, sizeof sun->sun_path - 1);
	return 0;
}

/*
 * Checks that a socket can be made at path: its directory exists and no
 * live server is there. Sets *stale when a dead socket file is in the way.
 */
static int
listener_probe(const char *path, int *stale, char **cause)
{
	struct sockaddr_un	 sun;
	struct stat		 sb;
	char			*dir, *slash;
	int			 fd, ret = -1;

	*stale = 0;
	if (listener_addr(path, &sun, cause) == -1)
		return -1;
	dir = xstrdup(path);
	if ((slash = strrchr(dir, '/')) != NULL)
		*(slash == dir ? slash + 1 : slash) = '\0';
	else
		strcpy(dir, ".");
	if (stat(dir, &sb) == -1 || !S_ISDIR(sb.st_mode)) {
		xasprintf(cause, "%s: directory %s does not exist", path, dir);
		goto out;
	}
	if (lstat(path, &sb) == -1) {
		ret = 0;
		goto out;
	}
	if (!S_ISSOCK(sb.st_mode)) {
		xasprintf(cause, "%s: exists and is not a socket", path);
		goto out;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd == -1)
		fatal("socket");
	if (connect(fd, (struct sockaddr *)&sun, sizeof sun) == 0) {
		xasprintf(cause, "%s: another process is listening there",
		    path);
		close(fd);
		goto out;
	}
	close(fd);
	*stale = 1;
	ret = 0;
out:
	free(dir);
	return ret;
}

/* Accepts on a listening socket; name is taken. */
static struct listener *
listener_serve(int fd, char *name, int flags)
{
	struct listener	*l;

	l = xcalloc(1, sizeof *l);
	l->path = name;
	l->fd = fd;
	l->flags = flags;
	l->evl = evconnlistener_new(base, listener_accept_cb, l,
	    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1, fd);
	if (l->evl == NULL)
		fatalx("evconnlistener_new");
	evconnlistener_set_error_cb(l->evl, listener_error_cb);
	log_debug("listening on %s", l->path);
	return l;
}

/* For -n: whether a socket could be made at path. */
int
listener_check_path(const char *path, char **cause)
{
	int	stale;

	return listener_probe(path, &stale, cause);
}

/* Creates a listening socket at path with the given mode, and serves it. */
int
listener_open(const char *path, mode_t mode, struct listener **lp,
    char **cause)
{
	struct sockaddr_un	 sun;
	mode_t			 old;
	int			 fd, stale;

	if (listener_probe(path, &stale, cause) == -1)
		return -1;
	if (stale) {
		log_info("%s: replacing a stale socket", path);
		unlink(path);
	}
	listener_addr(path, &sun, cause);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1)
		fatal("socket");
	/* Never let the socket exist with looser permissions than asked. */
	old = umask(0177);
	if (bind(fd, (struct sockaddr *)&sun, sizeof sun) == -1) {
		umask(old);
		xasprintf(cause, "%s: bind: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	umask(old);
	if (chmod(path, mode) == -1 || listen(fd, 128) == -1) {
		xasprintf(cause, "%s: %s", path, strerror(errno));
		unlink(path);
		close(fd);
		return -1;
	}
	*lp = listener_serve(fd, xstrdup(path), 0);
	return 0;
}

/*
 * Serves a listening socket qbranchd was handed as descriptor fd; fdname
 * is systemd's name for it, or NULL. It is never unlinked.
 */
int
listener_adopt(int fd, const char *fdname, struct listener **lp,
    char **cause)
{
	if (inherit_take(fd, 1, cause) == -1)
		return -1;
	*lp = listener_serve(fd, inherit_describe(fd, fdname),
	    LISTENER_INHERITED);
	return 0;
}

/* Stops listening and removes the socket file (unless inherited). */
void
listener_close(struct listener *l)
{
	evconnlistener_free(l->evl);
	if (!(l->flags & LISTENER_INHERITED))
		unlink(l->path);
	free(l->path);
	free(l);
}

static void
listener_resume_cb(int fd, short what, void *arg)
{
	listener_pause(0);
}

/* Pauses accepting on every listener (on = 1), or resumes it. */
void
listener_pause(int on)
{
	struct listener	*l;
	struct timeval	 tv = { LISTENER_PAUSE_SEC, 0 };

	if (on == paused)
		return;
	paused = on;
	TAILQ_FOREACH(l, &listeners, entry) {
		if (on)
			evconnlistener_disable(l->evl);
		else
			evconnlistener_enable(l->evl);
	}
	if (on) {
		if (resume_timer == NULL)
			resume_timer = evtimer_new(base, listener_resume_cb,
			    NULL);
		evtimer_add(resume_timer, &tv);
	} else if (resume_timer != NULL) {
		event_free(resume_timer);
		resume_timer = NULL;
	}
}

static void
listener_accept_cb(struct evconnlistener *evl, int fd, struct sockaddr *sa,
    int salen, void *arg)
{
	struct listener	*l = arg;
	char		*reply;
	ssize_t		 n;

	if (nclients >= opts.max_clients) {
		log_warnx("%s: refused a client: %u clients already "
		    "(--max-clients)", l->path, nclients);
		xasprintf(&reply, "{\"error\": {\"class\": \"GenericError\", "
		    "\"desc\": \"qbranchd: too many clients (limit %u)\"}}\r\n",
		    opts.max_clients);
		n = write(fd, reply, strlen(reply));
		(void)n;
		free(reply);
		close(fd);
		return;
	}
	client_accept(fd, l);
}

static void
listener_error_cb(struct evconnlistener *evl, void *arg)
{
	struct listener	*l = arg;

	log_warn("%s: accept", l->path);
	if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
	    errno == ENOMEM)
		listener_pause(1);
}
