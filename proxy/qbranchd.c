/*
 * qbranchd.c: the daemon's entry point: options, listening sockets, the
 * connection to QEMU, signals and the event loop.
 */
#include <sys/stat.h>

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

static const char	*listen_paths[64];
static int		 nlisten;

static void __attribute__((noreturn))
usage(int status)
{
	fprintf(status ? stderr : stdout,
"usage: qbranchd --qemu QEMU_SOCKET --listen SOCKET [--listen SOCKET ...]\n"
"                [--state-dir DIR] [--image-dir DIR] [--allow-dir DIR ...]\n"
"                [--socket-mode MODE] [--max-clients N]\n"
"                [--max-message BYTES] [--max-inflight N]\n"
"                [--max-output BYTES] [--syslog] [-v] [-n]\n");
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
shutdown_cb(int sig, short what, void *arg)
{
	struct listener	*l;

	log_info("%s: shutting down", strsignal(sig));
	while ((l = TAILQ_FIRST(&listeners)) != NULL) {
		TAILQ_REMOVE(&listeners, l, entry);
		listener_close(l);
	}
	upstream_stop();
	event_base_loopbreak(base);
}

static void
hup_cb(int sig, short what, void *arg)
{
	log_info("SIGHUP: nothing to reload");
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "qemu",		required_argument,	NULL, 'q' },
		{ "listen",		required_argument,	NULL, 'l' },
		{ "state-dir",		required_argument,	NULL, 's' },
		{ "socket-mode",	required_argument,	NULL, 'm' },
		{ "image-dir",		required_argument,	NULL, 'D' },
		{ "allow-dir",		required_argument,	NULL, 'A' },
		{ "max-clients",	required_argument,	NULL, 'C' },
		{ "max-message",	required_argument,	NULL, 'M' },
		{ "max-inflight",	required_argument,	NULL, 'I' },
		{ "max-output",		required_argument,	NULL, 'O' },
		{ "syslog",		no_argument,		NULL, 'S' },
		{ "verbose",		no_argument,		NULL, 'v' },
		{ "check",		no_argument,		NULL, 'n' },
		{ "help",		no_argument,		NULL, 'h' },
		{ "version",		no_argument,		NULL, 'V' },
		{ NULL,			0,			NULL, 0 }
	};
	struct event	*ev_term, *ev_int, *ev_hup;
	struct listener	*l;
	struct client	*c;
	char		*cause;
	int		 ch, i, checkonly = 0, use_syslog = 0, bad = 0;

	log_init(0, 0);
	while ((ch = getopt_long(argc, argv, "vnh", longopts, NULL)) != -1) {
		switch (ch) {
		case 'q':
			opts.qemu = optarg;
			break;
		case 'l':
			if (nlisten == (int)(sizeof listen_paths /
			    sizeof listen_paths[0]))
				fatalx("too many --listen options");
			listen_paths[nlisten++] = optarg;
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
	if (optind != argc)
		usage(2);
	if (opts.qemu == NULL || nlisten == 0) {
		fprintf(stderr, "qbranchd: --qemu and --listen are required\n");
		usage(2);
	}
	log_init(opts.verbose, use_syslog);

	if (checkonly) {
		for (i = 0; i < nlisten; i++) {
			if (listener_check_path(listen_paths[i], &cause) ==
			    -1) {
				log_warnx("%s", cause);
				free(cause);
				bad = 1;
			}
		}
		if (opts.state_dir != NULL &&
		    check_state_dir(opts.state_dir, 0, &cause) == -1) {
			log_warnx("%s", cause);
			free(cause);
			bad = 1;
		}
		if (!bad)
			fprintf(stderr, "qbranchd: configuration OK\n");
		return bad;
	}

	if (opts.state_dir != NULL &&
	    check_state_dir(opts.state_dir, 1, &cause) == -1)
		fatalx("%s", cause);
	signal(SIGPIPE, SIG_IGN);
	if ((base = event_base_new()) == NULL)
		fatalx("event_base_new");
	for (i = 0; i < nlisten; i++) {
		if (listener_open(listen_paths[i], opts.socket_mode, &l,
		    &cause) == -1) {
			log_warnx("%s", cause);
			while ((l = TAILQ_FIRST(&listeners)) != NULL) {
				TAILQ_REMOVE(&listeners, l, entry);
				listener_close(l);
			}
			exit(1);
		}
		TAILQ_INSERT_TAIL(&listeners, l, entry);
	}
	ev_term = evsignal_new(base, SIGTERM, shutdown_cb, NULL);
	ev_int = evsignal_new(base, SIGINT, shutdown_cb, NULL);
	ev_hup = evsignal_new(base, SIGHUP, hup_cb, NULL);
	evsignal_add(ev_term, NULL);
	evsignal_add(ev_int, NULL);
	evsignal_add(ev_hup, NULL);
	io_init();
	snap_init();
	upstream_start(opts.qemu);
	log_info("serving QEMU at %s on %d socket%s", opts.qemu, nlisten,
	    nlisten == 1 ? "" : "s");

	event_base_dispatch(base);

	/* Sessions still open at shutdown: free them for a clean exit. */
	while ((c = TAILQ_FIRST(&clients)) != NULL)
		client_free(c);
	snap_shutdown();
	io_shutdown();
	event_free(ev_term);
	event_free(ev_int);
	event_free(ev_hup);
	event_base_free(base);
	return 0;
}
