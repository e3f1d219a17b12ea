/*
 * launch.c: launch mode, "qbranchd [options] -- qemu-system-x86_64 ...".
 * qbranchd starts QEMU itself with -S and a private monitor: a unix socket
 * that qbranchd binds and listens on, in a directory of its own (mode
 * 0700), before QEMU exists, and hands to QEMU as an inherited descriptor:
 *
 *	-S -chardev socket,id=qbranch-qmp,fd=N,server=on,wait=off
 *	   -mon chardev=qbranch-qmp,mode=control
 *
 * so no other process can take the path first and there is nothing to
 * poll for. Once the disks are checked against the tree (snap-discover.c),
 * the guest is resumed, unless the command line had -S of its own, before
 * any client is greeted. QEMU is supervised through SIGCHLD; SIGTERM and
 * SIGINT are passed on to it, and qbranchd exits with QEMU's status.
 */
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <jansson.h>

#include "qbranch.h"

#define LAUNCH_CHARDEV		"qbranch-qmp"
#define LAUNCH_SOCKET		"qmp.sock"
#define LAUNCH_KILL_SEC		30	/* SIGKILL this long after a signal */
#define LAUNCH_EOF_SEC		2	/* for QEMU's last words, at most */

static struct {
	char		**argv;		/* QEMU's command line, ours added */
	char		 *chardev;	/* the -chardev argument */
	char		 *dir;		/* the private directory */
	char		 *path;		/* the monitor socket in it */
	pid_t		  pid;		/* QEMU's, -1 once reaped */
	int		  status;	/* qbranchd's exit status, from it */
	pid_t		  self;		/* qbranchd's */
	int		  user_paused;	/* the command line has -S */
	int		  ready;	/* QEMU answered once */
	enum {
		RESUME_DUE,
		RESUME_ASKING,		/* clients wait for it */
		RESUME_DONE,
	}		  resume;
	struct event	 *ev_chld;
	struct event	 *kill_timer;
	struct event	 *exit_timer;
} launch = { .pid = -1 };

static void	launch_chld_cb(int, short, void *);
static void	launch_kill_cb(int, short, void *);

/* Whether args has option opt; QEMU takes -opt and --opt alike. */
static int
launch_has_opt(char **args, const char *opt)
{
	const char	*a;

	for (; *args != NULL; args++) {
		a = *args;
		if (a[0] == '-' && a[1] == '-')
			a++;
		if (strcmp(a, opt) == 0)
			return 1;
	}
	return 0;
}

/* Whether cmd is a program execvp() would find and may run. */
static int
launch_can_run(const char *cmd)
{
	const char	*path, *p, *end;
	char		*full;
	int		 found = 0;

	if (strchr(cmd, '/') != NULL)
		return access(cmd, X_OK) == 0;
	if ((path = getenv("PATH")) == NULL)
		path = "/bin:/usr/bin";
	for (p = path;; p = end + 1) {
		end = strchrnul(p, ':');
		if (end == p)
			xasprintf(&full, "./%s", cmd);
		else
			xasprintf(&full, "%.*s/%s", (int)(end - p), p, cmd);
		found = access(full, X_OK) == 0;
		free(full);
		if (found || *end == '\0')
			break;
	}
	return found;
}

/*
 * Checks a QEMU command line for launch mode; with can_run (for -n), also
 * that its program can be found.
 */
int
launch_check(char **args, int can_run, char **cause)
{
	if (args[0] == NULL || args[0][0] == '\0') {
		xasprintf(cause, "no QEMU command after --");
		return -1;
	}
	if (launch_has_opt(args + 1, "-daemonize")) {
		xasprintf(cause, "QEMU's -daemonize cannot be supervised: leave "
		    "it out in launch mode");
		return -1;
	}
	if (can_run && !launch_can_run(args[0])) {
		xasprintf(cause, "QEMU command %s: not found or not executable",
		    args[0]);
		return -1;
	}
	return 0;
}

/* Removes the private socket and directory; at most once. */
static void
launch_remove(void)
{
	if (launch.path != NULL) {
		/* QEMU may have removed it already. */
		if (unlink(launch.path) == -1 && errno != ENOENT)
			log_warn("unlink %s", launch.path);
		free(launch.path);
		launch.path = NULL;
	}
	if (launch.dir != NULL) {
		if (rmdir(launch.dir) == -1 && errno != ENOENT)
			log_warn("rmdir %s", launch.dir);
		free(launch.dir);
		launch.dir = NULL;
	}
}

/*
 * An exit before the normal end (fatal, a failed exec): no QEMU is left
 * behind without its supervisor, nor the private directory.
 */
static void
launch_atexit(void)
{
	if (getpid() != launch.self)
		return;
	if (launch.pid > 0)
		kill(launch.pid, SIGTERM);
	launch_remove();
}

/* The private directory and a listening socket in it, for QEMU. */
static int
launch_socket(void)
{
	struct sockaddr_un	 sun;
	const char		*tmp;
	char			*dir;
	int			 fd;

	if ((tmp = getenv("TMPDIR")) == NULL || tmp[0] != '/')
		tmp = "/tmp";
	xasprintf(&dir, "%s/qbranchd.XXXXXX", tmp);
	if (mkdtemp(dir) == NULL)
		fatal("launch mode: mkdtemp %s", dir);
	launch.dir = dir;
	xasprintf(&launch.path, "%s/%s", dir, LAUNCH_SOCKET);
	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	if (strlen(launch.path) >= sizeof sun.sun_path)
		fatalx("launch mode: %s: path too long for a unix socket; set "
		    "TMPDIR to a shorter directory", launch.path);
	strncpy(sun.sun_path, launch.path, sizeof sun.sun_path - 1);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1)
		fatal("socket");
	if (bind(fd, (struct sockaddr *)&sun, sizeof sun) == -1 ||
	    listen(fd, 8) == -1)
		fatal("launch mode: %s", launch.path);
	return fd;
}

/* QEMU's command line with -S and the private monitor added at the end. */
static void
launch_argv(char **args, int fd)
{
	/* execvp() wants char *: writable copies of the constants. */
	static char	opt_S[] = "-S", opt_chardev[] = "-chardev",
			opt_mon[] = "-mon",
			mon[] = "chardev=" LAUNCH_CHARDEV ",mode=control";
	size_t		n, i = 0;

	for (n = 0; args[n] != NULL; n++)
		;
	launch.argv = xcalloc(n + 6, sizeof *launch.argv);
	for (i = 0; i < n; i++)
		launch.argv[i] = args[i];
	/* At the end, so wrappers (taskset, env, ...) keep working. */
	if (!launch.user_paused)
		launch.argv[i++] = opt_S;
	xasprintf(&launch.chardev, "socket,id=%s,fd=%d,server=on,wait=off",
	    LAUNCH_CHARDEV, fd);
	launch.argv[i++] = opt_chardev;
	launch.argv[i++] = launch.chardev;
	launch.argv[i++] = opt_mon;
	launch.argv[i++] = mon;
	launch.argv[i] = NULL;
}

/* In the child: becomes QEMU, or reports errno on ep and exits 127. */
static void __attribute__((noreturn))
launch_exec(int fd, int ep, const sigset_t *mask)
{
	static const int	 sigs[] = { SIGTERM, SIGINT, SIGHUP, SIGCHLD,
				    SIGPIPE };
	size_t			 i;
	int			 err, flags;
	ssize_t			 n;

	for (i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
		signal(sigs[i], SIG_DFL);
#ifdef __linux__
	/* QEMU must not outlive qbranchd, even one killed with SIGKILL. */
	if (prctl(PR_SET_PDEATHSIG, SIGTERM) == -1)
		goto fail;
	if (getppid() != launch.self)
		_exit(127);
#endif
	if ((flags = fcntl(fd, F_GETFD)) == -1 ||
	    fcntl(fd, F_SETFD, flags & ~FD_CLOEXEC) == -1)
		goto fail;
	sigprocmask(SIG_SETMASK, mask, NULL);
	execvp(launch.argv[0], launch.argv);
fail:
	err = errno;
	n = write(ep, &err, sizeof err);
	(void)n;
	_exit(127);
}

/*
 * Starts QEMU on args (its command line, argv[0] first) and supervises it.
 * Returns the path of its monitor, for upstream_start(), or NULL when QEMU
 * cannot be run, with qbranchd's exit status in *status: 127 when it is
 * not found, 126 otherwise, as a shell would say.
 */
const char *
launch_start(char **args, int *status)
{
	struct buf	 line = { NULL, 0, 0 };
	sigset_t	 all, old;
	ssize_t		 n;
	int		 fd, ep[2], err;
	size_t		 i;

	launch.self = getpid();
	launch.user_paused = launch_has_opt(args + 1, "-S");
	atexit(launch_atexit);
	fd = launch_socket();
	launch_argv(args, fd);
	launch.ev_chld = evsignal_new(base, SIGCHLD, launch_chld_cb, NULL);
	if (launch.ev_chld == NULL || evsignal_add(launch.ev_chld, NULL) == -1)
		fatalx("evsignal_new");
	if (pipe2(ep, O_CLOEXEC) == -1)
		fatal("pipe2");

	/* No handler of qbranchd's may run in the child before exec. */
	sigfillset(&all);
	sigprocmask(SIG_BLOCK, &all, &old);
	if ((launch.pid = fork()) == -1)
		fatal("fork");
	if (launch.pid == 0)
		launch_exec(fd, ep[1], &old);
	sigprocmask(SIG_SETMASK, &old, NULL);
	close(fd);
	close(ep[1]);

	/* End of file as soon as exec succeeds: this does not wait on QEMU. */
	do
		n = read(ep[0], &err, sizeof err);
	while (n == -1 && errno == EINTR);
	close(ep[0]);
	if (n == sizeof err) {
		while (waitpid(launch.pid, NULL, 0) == -1 && errno == EINTR)
			;
		launch.pid = -1;
		log_warnx("cannot run QEMU: %s: %s", launch.argv[0],
		    strerror(err));
		*status = err == ENOENT ? 127 : 126;
		return NULL;
	}
	for (i = 0; launch.argv[i] != NULL; i++) {
		if (i > 0)
			buf_addstr(&line, " ");
		buf_addstr(&line, launch.argv[i]);
	}
	log_debug("QEMU command line: %s", line.data);
	buf_free(&line);
	log_info("started QEMU (pid %ld)%s, its monitor at %s",
	    (long)launch.pid, launch.user_paused ? " paused by -S" : "",
	    launch.path);
	return launch.path;
}

/* At exit: the private socket and directory go. */
void
launch_stop(void)
{
	if (launch.argv == NULL)
		return;
	if (launch.ev_chld != NULL)
		event_free(launch.ev_chld);
	if (launch.kill_timer != NULL)
		event_free(launch.kill_timer);
	if (launch.exit_timer != NULL)
		event_free(launch.exit_timer);
	launch.ev_chld = launch.kill_timer = launch.exit_timer = NULL;
	launch_remove();
	free(launch.chardev);
	free(launch.argv);
	launch.chardev = NULL;
	launch.argv = NULL;
}

static void
launch_exit(void)
{
	qbranchd_stop(launch.status);
}

static void
launch_exit_cb(int fd, short what, void *arg)
{
	launch_exit();
}

static void
launch_chld_cb(int sig, short what, void *arg)
{
	struct timeval	tv = { LAUNCH_EOF_SEC, 0 };
	pid_t		pid;
	int		status, code;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		if (pid != launch.pid)
			continue;
		if (WIFEXITED(status)) {
			code = WEXITSTATUS(status);
			if (launch.ready)
				log_info("QEMU exited with status %d", code);
			else
				log_warnx("QEMU exited with status %d before "
				    "its monitor was ready", code);
		} else if (WIFSIGNALED(status)) {
			code = 128 + WTERMSIG(status);
			log_warnx("QEMU was killed by signal %d (%s)",
			    WTERMSIG(status), strsignal(WTERMSIG(status)));
		} else
			continue;
		launch.pid = -1;
		launch.status = code;
		if (launch.kill_timer != NULL)
			evtimer_del(launch.kill_timer);
		/* Its last replies and events are read before qbranchd stops. */
		launch.exit_timer = evtimer_new(base, launch_exit_cb, NULL);
		evtimer_add(launch.exit_timer, &tv);
		upstream_when_down(launch_exit);
	}
}

static void
launch_kill_cb(int fd, short what, void *arg)
{
	if (launch.pid == -1)
		return;
	log_warnx("QEMU (pid %ld) still runs %d s after the signal: killing it",
	    (long)launch.pid, LAUNCH_KILL_SEC);
	kill(launch.pid, SIGKILL);
}

/*
 * A termination signal in launch mode: it goes on to QEMU, whose exit ends
 * qbranchd; a QEMU that does not exit within LAUNCH_KILL_SEC is killed.
 * Returns 0 when not in launch mode: the caller shuts down itself.
 */
int
launch_signal(int sig)
{
	struct timeval	tv = { LAUNCH_KILL_SEC, 0 };

	if (launch.argv == NULL)
		return 0;
	if (launch.pid == -1)
		return 1;		/* QEMU is gone; qbranchd is stopping */
	log_info("%s: passed on to QEMU (pid %ld)", strsignal(sig),
	    (long)launch.pid);
	kill(launch.pid, sig);
	if (launch.kill_timer == NULL) {
		launch.kill_timer = evtimer_new(base, launch_kill_cb, NULL);
		evtimer_add(launch.kill_timer, &tv);
	}
	return 1;
}

/* Whether clients must wait: the guest is being resumed. */
int
launch_holding(void)
{
	return launch.resume == RESUME_ASKING;
}

static void
launch_resumed(const char *how)
{
	if (how != NULL)
		log_info("%s", how);
	launch.resume = RESUME_DONE;
	client_upstream_ready();
}

static void
launch_cont_cb(json_t *reply, void *arg)
{
	const char	*desc;

	if (reply == NULL) {
		launch.resume = RESUME_DUE;	/* QEMU went away first */
		return;
	}
	if (json_object_get(reply, "return") == NULL) {
		desc = json_string_value(json_object_get(json_object_get(reply,
		    "error"), "desc"));
		log_warnx("the guest could not be resumed: %s", desc != NULL ?
		    desc : "cont failed");
		launch_resumed(NULL);
	} else
		launch_resumed("disks checked: the guest is resumed");
}

static void
launch_status_cb(json_t *reply, void *arg)
{
	const char	*status;

	if (reply == NULL) {
		launch.resume = RESUME_DUE;
		return;
	}
	status = json_string_value(json_object_get(json_object_get(reply,
	    "return"), "status"));
	if (status == NULL || strcmp(status, "prelaunch") != 0) {
		/* Not paused by our -S any more: someone else decided. */
		log_info("the guest is %s: not resumed", status != NULL ?
		    status : "in an unknown state");
		launch_resumed(NULL);
		return;
	}
	upstream_call("cont", NULL, launch_cont_cb, NULL);
}

/*
 * QEMU answered and its disks are checked against the tree. In launch mode,
 * the first time, the guest is resumed before any client is greeted, and
 * this returns 1: client_upstream_ready() is called again after. It stays
 * paused when the command line had -S, when QEMU is not in prelaunch (the
 * state our -S leaves it in), or when the tree is unusable or the disks
 * could not be put back on their branch (snap.broken): running the guest
 * then could write a frozen image.
 */
int
launch_hold(void)
{
	if (launch.argv == NULL)
		return 0;
	launch.ready = 1;
	if (launch.resume != RESUME_DUE)
		return launch.resume == RESUME_ASKING;
	if (launch.user_paused) {
		launch.resume = RESUME_DONE;
		log_info("disks checked: the guest stays paused (-S given)");
		return 0;
	}
	if (snap.broken != NULL) {
		launch.resume = RESUME_DONE;
		log_warnx("the guest stays paused: %s", snap.broken);
		return 0;
	}
	launch.resume = RESUME_ASKING;
	upstream_call("query-status", NULL, launch_status_cb, NULL);
	return launch.resume == RESUME_ASKING;
}
