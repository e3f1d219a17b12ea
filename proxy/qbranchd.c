/*
 * qbranchd.c: the daemon's entry point: options, listening sockets (made,
 * or inherited), the connection to QEMU (a path, an inherited descriptor,
 * or a QEMU started in launch mode), signals, the event loop and the exit
 * status.
 */
#include <sys/stat.h>
#include <sys/time.h>

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "config.h"
#include "qbranch.h"

struct options		 opts = {
	.socket_mode = 0600,
	.max_clients = QB_DEFAULT_MAX_CLIENTS,
	.max_message = QB_DEFAULT_MAX_MESSAGE,
	.max_inflight = QB_DEFAULT_MAX_INFLIGHT,
	.max_output = QB_DEFAULT_MAX_OUTPUT,
};
struct event_base	*base;
struct listeners	 listeners = TAILQ_HEAD_INITIALIZER(listeners);

#define QB_MAX_LISTEN	64
#define QB_STOP_DRAIN	3	/* seconds for clients' last output */

static char		*listen_paths[QB_MAX_LISTEN];
static char		*listen_rules[QB_MAX_LISTEN];	/* or NULL */
static int		 listen_policy[QB_MAX_LISTEN];
static int		 nlisten;
static struct inherited	 listen_fds[QB_MAX_LISTEN];
static char		*listen_fd_rules[QB_MAX_LISTEN];
static int		 listen_fd_policy[QB_MAX_LISTEN];
static int		 nlisten_fd;

static struct event	*stop_timer;
static struct timeval	 stop_deadline;
static int		 exit_status;

static void __attribute__((noreturn))
usage(int status)
{
	fprintf(status ? stderr : stdout,
"usage: qbranchd --qemu QEMU_SOCKET | --qemu-fd N\n"
"                --listen SOCKET[,rules=FILE] | --listen-fd N[,rules=FILE]\n"
"                [...] [options]\n"
"       qbranchd --listen SOCKET[,rules=FILE] | --listen-fd N[,rules=FILE]\n"
"                [...] [options] -- qemu-system-x86_64 [QEMU_ARGS ...]\n"
"options:        [--state-dir DIR] [--image-dir DIR] [--allow-dir DIR ...]\n"
"                [--rules FILE] [--rules-dir DIR] [--audit FILE]\n"
"                [--socket-mode MODE] [--max-clients N]\n"
"                [--max-message BYTES] [--max-inflight N]\n"
"                [--max-output BYTES] [--syslog] [-v] [-n]\n"
"Listening sockets may also come from systemd (LISTEN_FDS).\n");
	exit(status);
}

static unsigned long long
parse_number(const char *opt, const char *s, unsigned long long min,
    unsigned long long max, int base_)
{
	unsigned long long	 v;
	char			*end;

	errno = 0;
	v = strtoull(s, &end, base_);
	if (errno != 0 || *s == '\0' || *end != '\0' || *s == '-' ||
	    v < min || v > max)
		fatalx("--%s: invalid value '%s' (%llu to %llu)", opt, s, min,
		    max);
	return v;
}

static int
check_state_dir(const char *dir, int create, char **cause)
{
	struct stat	sb;

	if (stat(dir, &sb) == -1) {
		if (errno != ENOENT || !create) {
			xasprintf(cause, "state directory %s: %s", dir,
			    strerror(errno));
			return -1;
		}
		if (mkdir(dir, 0700) == -1) {
			xasprintf(cause, "state directory %s: mkdir: %s", dir,
			    strerror(errno));
			return -1;
		}
		return 0;
	}
	if (!S_ISDIR(sb.st_mode) || access(dir, W_OK | X_OK) == -1) {
		xasprintf(cause, "state directory %s: not a writable "
		    "directory", dir);
		return -1;
	}
	return 0;
}

static void
close_listeners(void)
{
	struct listener	*l;

	while ((l = TAILQ_FIRST(&listeners)) != NULL) {
		TAILQ_REMOVE(&listeners, l, entry);
		listener_close(l);
	}
	listener_pause(0);
}

static void
stop_timer_cb(int fd, short what, void *arg)
{
	struct timeval	now;

	gettimeofday(&now, NULL);
	if (TAILQ_EMPTY(&clients) || timercmp(&now, &stop_deadline, >))
		event_base_loopbreak(base);
}

/*
 * Ends the daemon with the given exit status: no more clients, the link to
 * QEMU dropped, and the loop left once the clients have had QEMU's last
 * words (or after QB_STOP_DRAIN seconds). The first status given wins.
 */
void
qbranchd_stop(int status)
{
	struct timeval	 tick = { 0, 20000 }, drain = { QB_STOP_DRAIN, 0 };
	struct client	*c;
	static int	 stopping;

	if (stopping)
		return;
	stopping = 1;
	exit_status = status;
	close_listeners();
	upstream_stop();
	TAILQ_FOREACH(c, &clients, entry)
		client_close(c, "shutting down");
	gettimeofday(&stop_deadline, NULL);
	timeradd(&stop_deadline, &drain, &stop_deadline);
	stop_timer = event_new(base, -1, EV_PERSIST, stop_timer_cb, NULL);
	if (stop_timer == NULL)
		fatalx("event_new");
	event_add(stop_timer, &tick);
}

static void
shutdown_cb(int sig, short what, void *arg)
{
	/* In launch mode QEMU gets it, and its exit ends qbranchd. */
	if (launch_signal(sig))
		return;
	log_info("%s: shutting down", strsignal(sig));
	qbranchd_stop(0);
}

/* A descriptor number from an option: it is checked for use later. */
static int
parse_fd(const char *opt, const char *s)
{
	return parse_number(opt, s, 0, INT_MAX, 10);
}

/* Whether fd was given twice, as a listener or as QEMU's connection. */
static int
fd_is_taken(int fd, int qemu_fd)
{
	int	i;

	for (i = 0; i < nlisten_fd; i++) {
		if (listen_fds[i].fd == fd)
			return 1;
	}
	return fd == qemu_fd;
}

static void
add_listen_fd(int fd, char *name, int qemu_fd, const char *from,
    char *rules)
{
	if (nlisten_fd == QB_MAX_LISTEN)
		fatalx("too many listening sockets (%d at most)",
		    QB_MAX_LISTEN);
	if (fd_is_taken(fd, qemu_fd))
		fatalx("%s: fd %d is given twice", from, fd);
	listen_fds[nlisten_fd].fd = fd;
	listen_fds[nlisten_fd].name = name;
	listen_fd_rules[nlisten_fd] = rules;
	nlisten_fd++;
}

/* Splits "WHAT,rules=FILE": WHAT is returned, FILE (or NULL) in *rules. */
static char *
split_rules(const char *opt, const char *arg, char **rules)
{
	const char	*comma = strstr(arg, ",rules=");

	*rules = NULL;
	if (comma == NULL)
		return xstrdup(arg);
	if (comma[7] == '\0')
		fatalx("--%s %s: rules= names no file", opt, arg);
	*rules = xstrdup(comma + 7);
	return xstrndup(arg, comma - arg);
}

/* The rule file of every listener, known once the options are read. */
static void
assign_policies(void)
{
	int	i;

	for (i = 0; i < nlisten; i++)
		listen_policy[i] = policy_file(listen_rules[i]);
	for (i = 0; i < nlisten_fd; i++)
		listen_fd_policy[i] = policy_file(listen_fd_rules[i]);
}

/* Makes the --listen sockets and serves the inherited ones. */
static int
open_listeners(void)
{
	struct listener	*l;
	const char	*kind = "";
	char		*cause;
	int		 i, ret = 0;

	for (i = 0; i < nlisten; i++) {
		if (listener_open(listen_paths[i], opts.socket_mode, &l,
		    &cause) == -1)
			goto fail;
		l->policy = listen_policy[i];
		TAILQ_INSERT_TAIL(&listeners, l, entry);
	}
	kind = "listening socket: ";
	for (i = 0; i < nlisten_fd; i++) {
		if (listener_adopt(listen_fds[i].fd, listen_fds[i].name, &l,
		    &cause) == -1)
			goto fail;
		l->policy = listen_fd_policy[i];
		TAILQ_INSERT_TAIL(&listeners, l, entry);
	}
	goto out;
fail:
	log_warnx("%s%s", kind, cause);
	free(cause);
	close_listeners();
	ret = -1;
out:
	for (i = 0; i < nlisten_fd; i++) {
		free(listen_fds[i].name);
		listen_fds[i].name = NULL;
	}
	return ret;
}

/* For -n: reports what is wrong; returns the exit status. */
static int
check_config(char **qemu_argv, int qemu_fd)
{
	char	*cause;
	int	 i, bad = 0;

	for (i = 0; i < nlisten; i++) {
		if (listener_check_path(listen_paths[i], &cause) == -1) {
			log_warnx("%s", cause);
			free(cause);
			bad = 1;
		}
	}
	for (i = 0; i < nlisten_fd; i++) {
		if (inherit_check(listen_fds[i].fd, 1, &cause) == -1) {
			log_warnx("listening socket: %s", cause);
			free(cause);
			bad = 1;
		}
	}
	if (qemu_fd != -1 && inherit_check(qemu_fd, 0, &cause) == -1) {
		log_warnx("--qemu-fd: %s", cause);
		free(cause);
		bad = 1;
	}
	if (qemu_argv != NULL && launch_check(qemu_argv, 1, &cause) == -1) {
		log_warnx("%s", cause);
		free(cause);
		bad = 1;
	}
	if (opts.state_dir != NULL &&
	    check_state_dir(opts.state_dir, 0, &cause) == -1) {
		log_warnx("%s", cause);
		free(cause);
		bad = 1;
	}
	if (policy_load() > 0)
		bad = 1;
	if (!bad)
		fprintf(stderr, "qbranchd: configuration OK\n");
	return bad;
}

static void
hup_cb(int sig, short what, void *arg)
{
	policy_reload();
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "qemu",		required_argument,	NULL, 'q' },
		{ "qemu-fd",		required_argument,	NULL, 'Q' },
		{ "listen",		required_argument,	NULL, 'l' },
		{ "listen-fd",		required_argument,	NULL, 'L' },
		{ "state-dir",		required_argument,	NULL, 's' },
		{ "socket-mode",	required_argument,	NULL, 'm' },
		{ "image-dir",		required_argument,	NULL, 'D' },
		{ "allow-dir",		required_argument,	NULL, 'A' },
		{ "max-clients",	required_argument,	NULL, 'C' },
		{ "max-message",	required_argument,	NULL, 'M' },
		{ "max-inflight",	required_argument,	NULL, 'I' },
		{ "max-output",		required_argument,	NULL, 'O' },
		{ "rules",		required_argument,	NULL, 'R' },
		{ "rules-dir",		required_argument,	NULL, 'r' },
		{ "audit",		required_argument,	NULL, 'a' },
		{ "syslog",		no_argument,		NULL, 'S' },
		{ "verbose",		no_argument,		NULL, 'v' },
		{ "check",		no_argument,		NULL, 'n' },
		{ "help",		no_argument,		NULL, 'h' },
		{ "version",		no_argument,		NULL, 'V' },
		{ NULL,			0,			NULL, 0 }
	};
	struct inherited activated[QB_MAX_LISTEN];
	struct event	*ev_term, *ev_int, *ev_hup;
	struct client	*c;
	char		**qemu_argv = NULL, *cause, *what, *rules;
	const char	*path, *audit_path = NULL;
	int		 ch, i, n, checkonly = 0, use_syslog = 0, qemu_fd = -1;

	log_init(0, 0);
	/* "+": options end at the first word that is not one (QEMU's). */
	while ((ch = getopt_long(argc, argv, "+vnh", longopts, NULL)) != -1) {
		switch (ch) {
		case 'q':
			if (*optarg == '\0')
				fatalx("--qemu: an empty path");
			opts.qemu = optarg;
			break;
		case 'Q':
			qemu_fd = parse_fd("qemu-fd", optarg);
			if (fd_is_taken(qemu_fd, -1))
				fatalx("--qemu-fd: fd %d is given twice",
				    qemu_fd);
			break;
		case 'l':
			if (*optarg == '\0')
				fatalx("--listen: an empty path");
			if (nlisten == QB_MAX_LISTEN)
				fatalx("too many --listen options");
			listen_paths[nlisten] = split_rules("listen", optarg,
			    &listen_rules[nlisten]);
			if (*listen_paths[nlisten++] == '\0')
				fatalx("--listen: an empty path");
			break;
		case 'L':
			what = split_rules("listen-fd", optarg, &rules);
			add_listen_fd(parse_fd("listen-fd", what), NULL,
			    qemu_fd, "--listen-fd", rules);
			free(what);
			break;
		case 'R':
			policy_set_default(optarg);
			break;
		case 'r':
			policy_set_dir(optarg);
			break;
		case 'a':
			audit_path = optarg;
			break;
		case 's':
			opts.state_dir = optarg;
			break;
		case 'D':
		case 'A':
			if (optarg[0] != '/' || strstr(optarg, "/..") != NULL)
				fatalx("--%s %s: an absolute path without "
				    "\"..\" is needed", ch == 'D' ?
				    "image-dir" : "allow-dir", optarg);
			if (ch == 'D')
				opts.image_dir = optarg;
			else if (opts.nallow == sizeof opts.allow /
			    sizeof opts.allow[0])
				fatalx("too many --allow-dir options");
			else
				opts.allow[opts.nallow++] = optarg;
			break;
		case 'm':
			opts.socket_mode = parse_number("socket-mode", optarg,
			    0, 0777, 8);
			break;
		case 'C':
			opts.max_clients = parse_number("max-clients", optarg,
			    1, 65536, 10);
			break;
		case 'M':
			opts.max_message = parse_number("max-message", optarg,
			    64, SIZE_MAX / 4, 10);
			break;
		case 'I':
			opts.max_inflight = parse_number("max-inflight",
			    optarg, 1, 1u << 20, 10);
			break;
		case 'O':
			opts.max_output = parse_number("max-output", optarg,
			    4096, SIZE_MAX / 4, 10);
			break;
		case 'S':
			use_syslog = 1;
			break;
		case 'v':
			opts.verbose++;
			break;
		case 'n':
			checkonly = 1;
			break;
		case 'V':
			printf("qbranchd %s\n", PACKAGE_VERSION);
			return 0;
		case 'h':
			usage(0);
		default:
			usage(2);
		}
	}
	if (optind < argc)
		qemu_argv = argv + optind;
	if ((opts.qemu != NULL) + (qemu_fd != -1) + (qemu_argv != NULL) !=
	    1) {
		fprintf(stderr, "qbranchd: one of --qemu, --qemu-fd or a QEMU "
		    "command line after -- is required\n");
		usage(2);
	}
	if ((n = inherit_activation(activated, QB_MAX_LISTEN, &cause)) == -1)
		fatalx("%s", cause);
	for (i = 0; i < n; i++)
		add_listen_fd(activated[i].fd, activated[i].name, qemu_fd,
		    "socket activation", NULL);
	if (nlisten == 0 && nlisten_fd == 0) {
		fprintf(stderr, "qbranchd: --listen, --listen-fd or socket "
		    "activation is required\n");
		usage(2);
	}
	if (qemu_argv != NULL && launch_check(qemu_argv, 0, &cause) == -1)
		fatalx("%s", cause);
	log_init(opts.verbose, use_syslog);
	assign_policies();

	if (checkonly)
		return check_config(qemu_argv, qemu_fd);
	if (policy_load() > 0)
		fatalx("the rules have mistakes (above); nothing started");
	if (audit_path != NULL && audit_init(audit_path) == -1)
		exit(1);

	if (opts.state_dir != NULL &&
	    check_state_dir(opts.state_dir, 1, &cause) == -1)
		fatalx("%s", cause);
	signal(SIGPIPE, SIG_IGN);
	if ((base = event_base_new()) == NULL)
		fatalx("event_base_new");
	if (qemu_fd != -1 && inherit_take(qemu_fd, 0, &cause) == -1)
		fatalx("--qemu-fd: %s", cause);
	if (open_listeners() == -1)
		exit(1);
	ev_term = evsignal_new(base, SIGTERM, shutdown_cb, NULL);
	ev_int = evsignal_new(base, SIGINT, shutdown_cb, NULL);
	ev_hup = evsignal_new(base, SIGHUP, hup_cb, NULL);
	evsignal_add(ev_term, NULL);
	evsignal_add(ev_int, NULL);
	evsignal_add(ev_hup, NULL);
	io_init();
	tree_file_check = getenv("QBRANCHD_CHECK_TREE") != NULL;
	snap_init();
	intent_load();
	fault_init();
	if (qemu_argv != NULL) {
		if ((path = launch_start(qemu_argv, &exit_status)) == NULL) {
			close_listeners();
			launch_stop();
			exit(exit_status);
		}
		upstream_start(path);
		xasprintf(&what, "the QEMU it started");
	} else if (qemu_fd != -1) {
		upstream_start_fd(qemu_fd);
		xasprintf(&what, "QEMU on fd %d", qemu_fd);
	} else {
		upstream_start(opts.qemu);
		xasprintf(&what, "QEMU at %s", opts.qemu);
	}
	log_info("serving %s on %d socket%s", what, nlisten + nlisten_fd,
	    nlisten + nlisten_fd == 1 ? "" : "s");
	free(what);

	event_base_dispatch(base);
	io_drain();

	/* Sessions still open at shutdown: free them for a clean exit. */
	while ((c = TAILQ_FIRST(&clients)) != NULL)
		client_free(c);
	snap_shutdown();
	snap_jobs_shutdown();
	audit_shutdown();
	policy_shutdown();
	io_shutdown();
	for (i = 0; i < nlisten; i++) {
		free(listen_paths[i]);
		free(listen_rules[i]);
	}
	for (i = 0; i < nlisten_fd; i++)
		free(listen_fd_rules[i]);
	launch_stop();
	if (stop_timer != NULL)
		event_free(stop_timer);
	event_free(ev_term);
	event_free(ev_int);
	event_free(ev_hup);
	event_base_free(base);
	return exit_status;
}
