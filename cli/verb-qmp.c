/*
 * verb-qmp.c: QMP itself. "qmp" sends one command, given whole as a JSON
 * object or as a name and an arguments object, and prints its return value
 * as the proxy sent it; "events" prints every event, one JSON line each,
 * until interrupted.
 */
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* An argument as JSON (new reference), or NULL after a usage error. */
static json_t *
qmp_parse(struct cli *cli, const char *text, const char *what)
{
	json_error_t	 err;
	json_t		*v;

	if ((v = json_loads(text, JSON_DECODE_ANY, &err)) == NULL) {
		cli_usage_error(cli, "%s is not valid JSON: %s (column %d)",
		    what, err.text, err.column);
		return NULL;
	}
	if (!json_is_object(v)) {
		json_decref(v);
		cli_usage_error(cli, "%s must be a JSON object, such as "
		    "{\"execute\": \"query-status\"}", what);
		return NULL;
	}
	return v;
}

static const struct option no_opts[] = {
	{ NULL, 0, NULL, 0 }
};

static int
qmp_exec(struct cli *cli, int argc, char **argv)
{
	json_t		*cmd = NULL, *args, *ret = NULL;
	char		*raw = NULL;
	const char	*first;
	int		 ch, rv;

	while ((ch = cli_getopt(cli, argc, argv)) != -1)
		return cli_bad_option(cli, ch);
	argc -= optind;
	argv += optind;
	if (argc < 1)
		return cli_usage_error(cli, "missing the command");
	if (argc > 2)
		return cli_usage_error(cli, "unexpected argument '%s'",
		    argv[2]);
	/* JSON of any kind is a whole command (and must be an object). */
	first = argv[0] + strspn(argv[0], " \t\n\r");
	if (*first == '\0' || strchr("{[\"'-0123456789", *first) != NULL) {
		if (argc > 1)
			return cli_usage_error(cli, "a whole command takes "
			    "no arguments object after it");
		if ((cmd = qmp_parse(cli, argv[0], "the command")) == NULL)
			return EXIT_USAGE;
	} else {
		if ((cmd = json_pack("{s:s}", "execute", argv[0])) == NULL)
			return cli_usage_error(cli, "the command name is not "
			    "valid UTF-8");
		if (argc > 1) {
			if ((args = qmp_parse(cli, argv[1], "the arguments")) ==
			    NULL) {
				json_decref(cmd);
				return EXIT_USAGE;
			}
			json_object_set_new(cmd, "arguments", args);
		}
	}
	if ((rv = cli_request(cli, cmd, &ret, &raw)) == EXIT_OK)
		cli_print_raw(raw);
	json_decref(ret);
	free(raw);
	return rv;
}

const struct verb verb_qmp_entry = {
	.name = "qmp",
	.synopsis = "JSON | COMMAND [ARGUMENTS-JSON]",
	.summary = "run any QMP command and print its return value as JSON",
	.longopts = no_opts,
	.exec = qmp_exec,
};

static int
events_exec(struct cli *cli, int argc, char **argv)
{
	char	*line, *cause = NULL;
	int	 ch, rv;

	while ((ch = cli_getopt(cli, argc, argv)) != -1)
		return cli_bad_option(cli, ch);
	if (argc - optind > 0)
		return cli_usage_error(cli, "unexpected argument '%s'",
		    argv[optind]);
	if ((rv = cli_connect(cli)) != EXIT_OK)
		return rv;
	qmp_client_stop_on_signals();
	for (;;) {
		switch (qmp_client_next_event(cli->client, &line, &cause)) {
		case QMPC_OK:
			printf("%s\n", line);
			fflush(stdout);
			free(line);
			continue;
		case QMPC_INTR:
			return EXIT_OK;
		default:
			fprintf(stderr, "qbranch: %s\nhint: qbranchd or QEMU "
			    "went away; see qbranchd's log\n", cause);
			free(cause);
			return EXIT_UNREACHABLE;
		}
	}
}

const struct verb verb_events_entry = {
	.name = "events",
	.synopsis = "",
	.summary = "print QMP events as JSON lines until interrupted",
	.longopts = no_opts,
	.exec = events_exec,
};
