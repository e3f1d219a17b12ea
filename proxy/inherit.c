/*
 * inherit.c: descriptors qbranchd is handed by whoever starts it: listening
 * sockets (--listen-fd, systemd's socket activation) and a connection to
 * QEMU's monitor (--qemu-fd). Each one is checked before it is used, so a
 * wrong number is a clear message at start-up, never a crash or a hang.
 */
#include <sys/socket.h>
#include <sys/un.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "qbranch.h"

#define SD_LISTEN_FDS_START	3	/* sd_listen_fds(3) */

/*
 * Checks that fd is an open unix stream socket, listening (listening = 1)
 * or connected (listening = 0). Nothing about it is changed.
 */
int
inherit_check(int fd, int listening, char **cause)
{
	struct sockaddr_un	sun;
	socklen_t		len;
	int			type, acc;

	if (fcntl(fd, F_GETFD) == -1) {
		xasprintf(cause, "fd %d: not an open descriptor", fd);
		return -1;
	}
	len = sizeof type;
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == -1) {
		xasprintf(cause, "fd %d: not a socket (%s)", fd,
		    strerror(errno));
		return -1;
	}
	memset(&sun, 0, sizeof sun);
	len = sizeof sun;
	if (getsockname(fd, (struct sockaddr *)&sun, &len) == -1 ||
	    sun.sun_family != AF_UNIX || type != SOCK_STREAM) {
		xasprintf(cause, "fd %d: not a unix stream socket", fd);
		return -1;
	}
	len = sizeof acc;
	if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &len) == -1)
		acc = 0;
	if (listening && !acc) {
		xasprintf(cause, "fd %d: a socket, but not a listening one", fd);
		return -1;
	}
	if (!listening && acc) {
		xasprintf(cause, "fd %d: a listening socket, not a connection "
		    "to QEMU's monitor", fd);
		return -1;
	}
	len = sizeof sun;
	if (!listening && getpeername(fd, (struct sockaddr *)&sun, &len) ==
	    -1) {
		xasprintf(cause, "fd %d: not connected (%s)", fd,
		    strerror(errno));
		return -1;
	}
	return 0;
}

/*
 * Checks fd as inherit_check() does and takes it for use: close-on-exec
 * (a QEMU started in launch mode must not get it) and non-blocking.
 */
int
inherit_take(int fd, int listening, char **cause)
{
	int	flags;

	if (inherit_check(fd, listening, cause) == -1)
		return -1;
	if (fcntl(fd, F_SETFD, FD_CLOEXEC) == -1 ||
	    (flags = fcntl(fd, F_GETFL)) == -1 ||
	    fcntl(fd, F_SETFL, flags | O_NONBLOCK) == -1) {
		xasprintf(cause, "fd %d: fcntl: %s", fd, strerror(errno));
		return -1;
	}
	return 0;
}

/*
 * A name for an inherited socket in the log: its path, if it is bound to
 * one, with its number and the name systemd gave it. The string is new.
 */
char *
inherit_describe(int fd, const char *fdname)
{
	struct sockaddr_un	 sun;
	socklen_t		 len = sizeof sun;
	char			*s, *where;
	size_t			 n;

	memset(&sun, 0, sizeof sun);
	if (getsockname(fd, (struct sockaddr *)&sun, &len) == 0 &&
	    len > offsetof(struct sockaddr_un, sun_path) + 1) {
		n = len - offsetof(struct sockaddr_un, sun_path);
		if (n > sizeof sun.sun_path)
			n = sizeof sun.sun_path;
		if (sun.sun_path[0] == '\0')
			xasprintf(&where, "@%.*s", (int)n - 1, sun.sun_path + 1);
		else
			where = xstrndup(sun.sun_path, n);
	} else
		where = xstrdup("an unnamed socket");
	if (fdname != NULL)
		xasprintf(&s, "%s (fd %d, \"%s\")", where, fd, fdname);
	else
		xasprintf(&s, "%s (fd %d)", where, fd);
	free(where);
	return s;
}

static int
inherit_number(const char *s, long max, long *v)
{
	char	*end;

	errno = 0;
	*v = strtol(s, &end, 10);
	return errno != 0 || *s == '\0' || *end != '\0' || *v < 0 ||
	    *v > max ? -1 : 0;
}

/*
 * systemd's socket activation: LISTEN_FDS descriptors from 3 on, when
 * LISTEN_PID names this process, and their names from LISTEN_FDNAMES.
 * Fills in[] (names are new strings, or NULL) and returns how many there
 * are: 0 when there is no activation, -1 with *cause when it is wrong.
 * The variables are removed, so that a QEMU started in launch mode does not
 * see them.
 */
int
inherit_activation(struct inherited *in, int max, char **cause)
{
	const char	*pid_s, *fds_s, *names_s;
	char		*names = NULL, *name, *next;
	long		 pid, nfds;
	int		 i, ret = -1;

	pid_s = getenv("LISTEN_PID");
	fds_s = getenv("LISTEN_FDS");
	names_s = getenv("LISTEN_FDNAMES");
	if (fds_s == NULL) {
		ret = 0;
		goto out;
	}
	if (pid_s == NULL || inherit_number(pid_s, LONG_MAX, &pid) == -1 ||
	    pid != (long)getpid()) {
		log_debug("LISTEN_FDS is for another process (LISTEN_PID %s)",
		    pid_s != NULL ? pid_s : "unset");
		ret = 0;
		goto out;
	}
	if (inherit_number(fds_s, INT_MAX - SD_LISTEN_FDS_START, &nfds) ==
	    -1) {
		xasprintf(cause, "socket activation: LISTEN_FDS=%s is not a "
		    "number of descriptors", fds_s);
		goto out;
	}
	if (nfds > max) {
		xasprintf(cause, "socket activation: %ld sockets, at most %d "
		    "are served", nfds, max);
		goto out;
	}
	if (names_s != NULL)
		names = xstrdup(names_s);
	next = names;
	for (i = 0; i < nfds; i++) {
		in[i].fd = SD_LISTEN_FDS_START + i;
		in[i].name = NULL;
		if (next != NULL) {
			name = next;
			if ((next = strchr(name, ':')) != NULL)
				*next++ = '\0';
			if (*name != '\0')
				in[i].name = xstrdup(name);
		}
	}
	ret = nfds;
out:
	free(names);
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
	return ret;
}
