/*
 * complete.c: the hidden verb the bash completion asks, one word a line:
 *
 *   qbranch [-c SOCKET] __complete verbs
 *   qbranch [-c SOCKET] __complete options VERB
 *   qbranch [-c SOCKET] __complete snapshots | branches | devices | commands
 *   qbranch [-c SOCKET] __complete orphans
 *
 * Verbs and options come from the verb table, so the completion never
 * falls behind; names come from the proxy. Quiet on any failure: a
 * completion must not print errors into the command line being typed.
 */
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const struct option no_opts[] = {
	{ NULL, 0, NULL, 0 }
};

/* Prints the member key of every element of a, asked for with execute. */
static int
complete_names(struct cli *cli, const char *execute, const char *list,
    const char *key)
{
	struct qmp_client_error	 err = { NULL, NULL };
	json_t			*ret = NULL, *a, *v;
	char			*cause = NULL, *hint_cause = NULL;
	const char		*hint;
	size_t			 i;
	int			 rv = EXIT_FAILED;

	if ((cli->client = qmp_client_open(cli_socket_path(cli), &hint_cause,
	    &hint)) == NULL)
		goto out;
	if (qmp_client_call(cli->client, execute, NULL, &ret, NULL, &err,
	    &cause) != QMPC_OK)
		goto out;
	a = list != NULL ? json_object_get(ret, list) : ret;
	json_array_foreach(a, i, v) {
		if (json_is_string(json_object_get(v, key)))
			printf("%s\n", json_string_value(json_object_get(v,
			    key)));
	}
	rv = EXIT_OK;
out:
	qmp_client_error_clear(&err);
	json_decref(ret);
	free(cause);
	free(hint_cause);
	return rv;
}

static int
complete_exec(struct cli *cli, int argc, char **argv)
{
	const struct verb	*v;
	const struct option	*o;
	const char		*what;
	size_t			 i;
	int			 ch;

	while ((ch = cli_getopt(cli, argc, argv)) != -1) {
		if (ch == 'h')
			return cli_bad_option(cli, ch);
		return EXIT_USAGE;
	}
	if (argc - optind < 1)
		return EXIT_USAGE;
	what = argv[optind];
	if (strcmp(what, "verbs") == 0) {
		for (i = 0; verbs[i] != NULL; i++) {
			if (!(verbs[i]->flags & VERB_HIDDEN))
				printf("%s\n", verbs[i]->name);
		}
		printf("help\n");
		return EXIT_OK;
	}
	if (strcmp(what, "options") == 0) {
		if (argc - optind < 2 ||
		    (v = verb_find(argv[optind + 1])) == NULL) {
			printf("--socket\n--help\n--version\n");
			return EXIT_OK;
		}
		for (o = v->longopts; o->name != NULL; o++)
			printf("--%s\n", o->name);
		printf("--socket\n--help\n");
		return EXIT_OK;
	}
	if (strcmp(what, "snapshots") == 0)
		return complete_names(cli, "qbranch-query-snapshots",
		    "snapshots", "name");
	if (strcmp(what, "branches") == 0)
		return complete_names(cli, "qbranch-query-branches", NULL,
		    "name");
	if (strcmp(what, "devices") == 0)
		return complete_names(cli, "qbranch-query-disks", NULL,
		    "device");
	if (strcmp(what, "commands") == 0)
		return complete_names(cli, "query-commands", NULL, "name");
	if (strcmp(what, "orphans") == 0)
		return complete_names(cli, "qbranch-query-orphans", "orphans",
		    "file");
	return EXIT_USAGE;
}

const struct verb verb_complete_entry = {
	.name = "__complete",
	.synopsis = "verbs | options VERB | snapshots | branches | devices | "
	    "commands | orphans",
	.summary = "words for the shell's completion",
	.longopts = no_opts,
	.exec = complete_exec,
	.flags = VERB_HIDDEN,
};
