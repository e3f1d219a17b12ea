/*
 * verb-orphans.c: orphans, the files qbranch made that nothing uses any
 * more (an operation cut short, a crash):
 *
 *   orphans [--json]                  qbranch-query-orphans
 *   orphans --delete [FILE...]        qbranch-orphans-delete {files?}
 *
 * The list is a table, size first; --delete without FILE removes every
 * orphan of that moment, and prints each file removed and the bytes
 * freed. With --json, the proxy's return value as it was sent.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

static const struct option orphans_opts[] = {
	{ "delete", no_argument, NULL, 'd' },
	{ "json", no_argument, NULL, 'j' },
	{ NULL, 0, NULL, 0 }
};

static void
orphans_print(json_t *ret)
{
	struct table	*t;
	json_t		*o;
	uint64_t	 size;
	char		 sz[FORMAT_SIZE_LEN];
	size_t		 i;

	if (json_array_size(json_object_get(ret, "orphans")) == 0)
		return;
	t = table_new(4);
	table_align_right(t, 0);
	table_min_width(t, 0, FORMAT_SIZE_WIDTH);
	table_add(t, "SIZE", "KIND", "FILE", "REASON");
	json_array_foreach(json_object_get(ret, "orphans"), i, o) {
		if (query_size(o, &size))
			format_size(size, sz, sizeof sz);
		else
			strcpy(sz, "?");
		table_add(t, sz, query_str(o, "kind"), query_str(o, "file"),
		    query_str(o, "reason"));
	}
	table_print(t, stdout);
	table_free(t);
}

/* A FILE operand as the proxy names it: absolute, from where we stand. */
static json_t *
orphans_file(struct cli *cli, const char *arg)
{
	char	 cwd[4096], *path;
	json_t	*v;

	while (strncmp(arg, "./", 2) == 0)
		arg += 2;
	if (arg[0] == '/' || getcwd(cwd, sizeof cwd) == NULL)
		path = xstrdup(arg);
	else
		xasprintf(&path, "%s/%s", cwd, arg);
	v = cli_string(cli, path, "FILE");
	free(path);
	return v;
}

static int
orphans_delete(struct cli *cli, int argc, char **argv, int json)
{
	json_t		*args = NULL, *files, *ret = NULL, *f, *v;
	uint64_t	 freed;
	char		*raw = NULL, sz[FORMAT_SIZE_LEN];
	size_t		 i;
	int		 rv;

	if (optind < argc) {
		files = json_array();
		args = json_pack("{s:o}", "files", files);
		for (; optind < argc; optind++) {
			if ((v = orphans_file(cli, argv[optind])) == NULL) {
				json_decref(args);
				return EXIT_USAGE;
			}
			json_array_append_new(files, v);
		}
	}
	if ((rv = cli_call(cli, "qbranch-orphans-delete", args, &ret,
	    &raw)) != EXIT_OK)
		return rv;
	if (json)
		cli_print_raw(raw);
	else {
		json_array_foreach(json_object_get(ret, "deleted"), i, f) {
			if (json_is_string(f))
				printf("removed %s\n", json_string_value(f));
		}
		v = json_object_get(ret, "freed");
		freed = json_is_integer(v) && json_integer_value(v) > 0 ?
		    (uint64_t)json_integer_value(v) : 0;
		format_size(freed, sz, sizeof sz);
		printf("%zu orphan%s removed, %s freed\n",
		    json_array_size(json_object_get(ret, "deleted")),
		    json_array_size(json_object_get(ret, "deleted")) == 1 ?
		    "" : "s", sz);
	}
	json_decref(ret);
	free(raw);
	return EXIT_OK;
}

static int
orphans_exec(struct cli *cli, int argc, char **argv)
{
	json_t	*ret;
	char	*raw;
	int	 ch, json = 0, delete = 0, rv;

	while ((ch = cli_getopt(cli, argc, argv)) != -1) {
		switch (ch) {
		case 'd':
			delete = 1;
			break;
		case 'j':
			json = 1;
			break;
		default:
			return cli_bad_option(cli, ch);
		}
	}
	if (delete)
		return orphans_delete(cli, argc, argv, json);
	if (optind < argc)
		return cli_usage_error(cli, "unexpected argument '%s' (files "
		    "to remove go with --delete)", argv[optind]);
	if ((rv = cli_call(cli, "qbranch-query-orphans", NULL, &ret, &raw)) !=
	    EXIT_OK)
		return rv;
	if (json)
		cli_print_raw(raw);
	else
		orphans_print(ret);
	json_decref(ret);
	free(raw);
	return EXIT_OK;
}

const struct verb verb_orphans_entry = {
	.name = "orphans",
	.synopsis = "[--json] | --delete [FILE...] [--json]",
	.summary = "list the files qbranch made that nothing uses, or remove "
	    "them",
	.longopts = orphans_opts,
	.exec = orphans_exec,
};
