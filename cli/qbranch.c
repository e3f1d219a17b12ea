/*
 * qbranch.c: the command-line client's entry point: global options, the
 * table of verbs, the socket to use, and what every verb shares: option
 * parsing, the connection, a call with its error reporting, JSON output.
 *
 * Exit statuses: 0 success, 1 the proxy answered with an error (or a local
 * step failed), 2 a usage error, 3 qbranchd could not be reached.
 */
#include <errno.h>
#include <getopt.h>
#include <locale.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "cli.h"

const struct verb *const verbs[] = {
	&verb_create_entry,
	&verb_revert_entry,
	&verb_switch_entry,
	&verb_delete_entry,
	&verb_branch_delete_entry,
	&verb_edit_entry,
	&verb_list_entry,
	&verb_tree_entry,
	&verb_branches_entry,
	&verb_info_entry,
	&verb_current_entry,
	&verb_parent_entry,
	&verb_disks_entry,
	&verb_status_entry,
	&verb_orphans_entry,
	&verb_qmp_entry,
	&verb_events_entry,
	&verb_complete_entry,
	NULL
};

static int	help_exec(struct cli *, int, char **);

static const struct option no_opts[] = {
	{ NULL, 0, NULL, 0 }
};

static const struct verb verb_help_entry = {
	.name = "help",
	.synopsis = "[VERB]",
	.summary = "show the verbs, or one verb's options",
	.longopts = no_opts,
	.exec = help_exec,
};

/* The verb called name, or NULL. */
const struct verb *
verb_find(const char *name)
{
	size_t	i;

	if (strcmp(name, "help") == 0)
		return &verb_help_entry;
	for (i = 0; verbs[i] != NULL; i++) {
		if (strcmp(verbs[i]->name, name) == 0)
			return verbs[i];
	}
	return NULL;
}

/*
 * Prints a verb's usage and what it does; the synopsis is wrapped between
 * its bracketed groups to stay within 80 columns.
 */
void
verb_usage(const struct verb *v, FILE *f)
{
	const char	*p, *word;
	size_t		 col, len, indent;
	int		 depth;

	col = fprintf(f, "usage: qbranch [-c SOCKET] %s", v->name);
	indent = 8;
	for (p = v->synopsis; *p != '\0';) {
		p += strspn(p, " ");
		word = p;
		for (depth = 0; *p != '\0' && (depth > 0 || *p != ' '); p++) {
			if (*p == '[' || *p == '{')
				depth++;
			else if ((*p == ']' || *p == '}') && depth > 0)
				depth--;
		}
		if ((len = p - word) == 0)
			break;
		if (col + 1 + len > 79) {
			fprintf(f, "\n%*s", (int)indent, "");
			col = indent;
		} else {
			fputc(' ', f);
			col++;
		}
		fwrite(word, 1, len, f);
		col += len;
	}
	fprintf(f, "\n%*s%s\n", (int)indent, "", v->summary);
}

static void
usage(FILE *f)
{
	size_t	i;

	fprintf(f, "usage: qbranch [-c SOCKET] VERB [ARGS]\n"
	    "       qbranch help [VERB] | --version\n\n"
	    "Snapshots and branches of a live QEMU VM, through qbranchd.\n\n");
	for (i = 0; verbs[i] != NULL; i++) {
		if (!(verbs[i]->flags & VERB_HIDDEN))
			fprintf(f, "  %-14s %s\n", verbs[i]->name,
			    verbs[i]->summary);
	}
	fprintf(f, "\nThe socket is -c SOCKET, or $QBRANCH_SOCKET, or "
	    "%s/%s.sock;\na NAME without '/' means %s/NAME.sock. "
	    "Every verb takes --help; see qbranch(1).\n", QBRANCH_RUN_DIR,
	    QBRANCH_DEFAULT_NAME, QBRANCH_RUN_DIR);
}

static int
help_exec(struct cli *cli, int argc, char **argv)
{
	const struct verb	*v;
	int			 ch;

	while ((ch = cli_getopt(cli, argc, argv)) != -1)
		return cli_bad_option(cli, ch);
	argc -= optind;
	argv += optind;
	if (argc == 0) {
		usage(stdout);
		return EXIT_OK;
	}
	if (argc > 1)
		return cli_usage_error(cli, "one verb at a time");
	if ((v = verb_find(argv[0])) == NULL) {
		fprintf(stderr, "qbranch: unknown verb '%s'\nhint: see "
		    "'qbranch help' for the verbs\n", argv[0]);
		return EXIT_USAGE;
	}
	verb_usage(v, stdout);
	return EXIT_OK;
}

/*
 * The next option of the verb's (getopt_long's return), after -c SOCKET
 * and -h/--help, which every verb takes; -1 at the end.
 */
int
cli_getopt(struct cli *cli, int argc, char **argv)
{
	const struct option	*o;
	size_t			 n = 0;
	int			 ch;

	if (cli->longopts == NULL) {
		for (o = cli->verb->longopts; o->name != NULL; o++)
			n++;
		cli->longopts = xcalloc(n + 3, sizeof *cli->longopts);
		memcpy(cli->longopts, cli->verb->longopts,
		    n * sizeof *cli->longopts);
		cli->longopts[n].name = "socket";
		cli->longopts[n].has_arg = required_argument;
		cli->longopts[n].val = 'c';
		cli->longopts[n + 1].name = "help";
		cli->longopts[n + 1].val = 'h';
	}
	for (;;) {
		ch = getopt_long(argc, argv, "c:h", cli->longopts, NULL);
		if (ch != 'c')
			return ch;
		free(cli->socket);
		cli->socket = xstrdup(optarg);
	}
}

/* An option the verb does not take (getopt said why), or -h. */
int
cli_bad_option(struct cli *cli, int ch)
{
	if (ch == 'h') {
		verb_usage(cli->verb, stdout);
		return EXIT_OK;
	}
	verb_usage(cli->verb, stderr);
	fprintf(stderr, "hint: see 'qbranch help %s' and qbranch(1)\n",
	    cli->verb->name);
	return EXIT_USAGE;
}

/* Reports a usage error of the verb; returns EXIT_USAGE. */
int
cli_usage_error(struct cli *cli, const char *fmt, ...)
{
	va_list	ap;

	fprintf(stderr, "%s: ", cli->prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	verb_usage(cli->verb, stderr);
	return EXIT_USAGE;
}

/* An argument as a JSON string (new), or NULL after a usage error. */
json_t *
cli_string(struct cli *cli, const char *s, const char *what)
{
	json_t	*v;

	if ((v = json_string(s)) == NULL)
		cli_usage_error(cli, "%s is not valid UTF-8", what);
	return v;
}

/*
 * The socket: -c, else $QBRANCH_SOCKET, else the default name; a value
 * without '/' names a VM: QBRANCH_RUN_DIR/NAME.sock.
 */
const char *
cli_socket_path(struct cli *cli)
{
	const char	*s = cli->socket;

	if (cli->path != NULL)
		return cli->path;
	if (s == NULL || *s == '\0')
		s = getenv("QBRANCH_SOCKET");
	if (s == NULL || *s == '\0')
		s = QBRANCH_DEFAULT_NAME;
	if (strchr(s, '/') == NULL)
		xasprintf(&cli->path, "%s/%s.sock", QBRANCH_RUN_DIR, s);
	else
		cli->path = xstrdup(s);
	return cli->path;
}

/* Connects once; returns EXIT_OK or EXIT_UNREACHABLE (reported). */
int
cli_connect(struct cli *cli)
{
	const char	*hint;
	char		*cause;

	if (cli->client != NULL)
		return EXIT_OK;
	cli->client = qmp_client_open(cli_socket_path(cli), &cause, &hint);
	if (cli->client == NULL) {
		fprintf(stderr, "qbranch: %s\nhint: %s\n", cause, hint);
		free(cause);
		return EXIT_UNREACHABLE;
	}
	return EXIT_OK;
}

/*
 * Sends cmd (stolen), a whole QMP command. On EXIT_OK *ret (new reference)
 * and, if raw is not NULL, *raw (new string: the return value as sent)
 * hold the result; anything else was reported on stderr.
 */
int
cli_request(struct cli *cli, json_t *cmd, json_t **ret, char **raw)
{
	struct qmp_client_error	 err = { NULL, NULL };
	char			*cause = NULL;
	int			 rv;

	*ret = NULL;
	if (raw != NULL)
		*raw = NULL;
	if ((rv = cli_connect(cli)) != EXIT_OK) {
		json_decref(cmd);
		return rv;
	}
	if (cli->flags & CLI_PROGRESS) {
		progress_start();
		qmp_client_set_event_cb(cli->client, progress_event, NULL);
	}
	rv = qmp_client_request(cli->client, cmd, ret, raw, &err, &cause);
	if (cli->flags & CLI_PROGRESS) {
		progress_end(rv == QMPC_OK);
		qmp_client_set_event_cb(cli->client, NULL, NULL);
	}
	switch (rv) {
	case QMPC_OK:
		return EXIT_OK;
	case QMPC_ERROR:
		hint_print_error(err.class, err.desc);
		qmp_client_error_clear(&err);
		return EXIT_FAILED;
	default:
		fprintf(stderr, "qbranch: %s\nhint: see qbranchd's log (QEMU "
		    "may have quit); 'qbranch status' shows where things "
		    "stand\n", cause);
		free(cause);
		return EXIT_UNREACHABLE;
	}
}

/* Runs execute with args (stolen, may be NULL); see cli_request. */
int
cli_call(struct cli *cli, const char *execute, json_t *args, json_t **ret,
    char **raw)
{
	json_t	*cmd;

	cmd = json_pack("{s:s}", "execute", execute);
	if (args != NULL)
		json_object_set_new(cmd, "arguments", args);
	return cli_request(cli, cmd, ret, raw);
}

/* Prints a JSON value on one line. */
void
cli_print_json(json_t *v)
{
	char	*text;

	if ((text = json_dumps(v, JSON_ENCODE_ANY)) == NULL) {
		fprintf(stderr, "qbranch: cannot encode the output as JSON\n");
		return;
	}
	printf("%s\n", text);
	free(text);
}

/* Prints a return value exactly as the proxy sent it, on one line. */
void
cli_print_raw(const char *raw)
{
	printf("%s\n", raw);
}

int
main(int argc, char **argv)
{
	static const struct option global_opts[] = {
		{ "socket", required_argument, NULL, 'c' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 }
	};
	static char	progname[] = "qbranch";
	struct cli	cli;
	int		ch, rv;

	setlocale(LC_CTYPE, "");
	memset(&cli, 0, sizeof cli);
	argv[0] = progname;	/* getopt's messages */
	while ((ch = getopt_long(argc, argv, "+c:hV", global_opts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			free(cli.socket);
			cli.socket = xstrdup(optarg);
			break;
		case 'h':
			usage(stdout);
			rv = EXIT_OK;
			goto out;
		case 'V':
			printf("qbranch %s\n", PACKAGE_VERSION);
			rv = EXIT_OK;
			goto out;
		default:
			fprintf(stderr, "hint: see 'qbranch help'\n");
			rv = EXIT_USAGE;
			goto out;
		}
	}
	argc -= optind;
	argv += optind;
	if (argc == 0) {
		usage(stderr);
		fprintf(stderr, "qbranch: no verb given\nhint: try 'qbranch "
		    "status' or 'qbranch tree'\n");
		rv = EXIT_USAGE;
		goto out;
	}
	if ((cli.verb = verb_find(argv[0])) == NULL) {
		fprintf(stderr, "qbranch: unknown verb '%s'\nhint: see "
		    "'qbranch help' for the verbs\n", argv[0]);
		rv = EXIT_USAGE;
		goto out;
	}
	xasprintf(&cli.prog, "qbranch %s", cli.verb->name);
	argv[0] = cli.prog;
	optind = 0;	/* getopt starts over on the verb's arguments */
	rv = cli.verb->exec(&cli, argc, argv);
	if (fflush(stdout) == EOF || ferror(stdout)) {
		fprintf(stderr, "qbranch: writing the output: %s\n",
		    strerror(errno));
		if (rv == EXIT_OK)
			rv = EXIT_FAILED;
	}
out:
	qmp_client_close(cli.client);
	free(cli.socket);
	free(cli.path);
	free(cli.prog);
	free(cli.longopts);
	return rv;
}
