/*
 * verb-show.c: the verbs that read, from qbranch-query-snapshots,
 * qbranch-query-branches, qbranch-query-disks and query-status: list,
 * tree, branches, info, current, parent, disks, status. Human output by
 * default; with --json the proxy's return value as it was sent (or, where
 * a verb picks from it, the picked values unchanged).
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

static const struct option json_opts[] = {
	{ "json", no_argument, NULL, 'j' },
	{ NULL, 0, NULL, 0 }
};

/* Parses the options of a verb that takes only --json. */
static int
show_json_only(struct cli *cli, int argc, char **argv, int *json)
{
	int	ch;

	while ((ch = cli_getopt(cli, argc, argv)) != -1) {
		if (ch != 'j')
			return cli_bad_option(cli, ch);
		*json = 1;
	}
	return -1;
}

/* The operand count is n; -1 after a usage error. */
static int
show_operands(struct cli *cli, int argc, char **argv, int n,
    const char *what)
{
	if (argc - optind < n) {
		cli_usage_error(cli, "missing %s", what);
		return -1;
	}
	if (argc - optind > n) {
		cli_usage_error(cli, "unexpected argument '%s'",
		    argv[optind + n]);
		return -1;
	}
	return 0;
}

/* The snapshot called name in q (borrowed), or NULL after saying so. */
static json_t *
show_find(json_t *q, const char *name)
{
	json_t	*s;
	char	*desc;

	if ((s = query_snapshot(json_object_get(q, "snapshots"), name)) ==
	    NULL) {
		xasprintf(&desc, "no snapshot named %s", name);
		hint_print_error(NULL, desc);
		free(desc);
	}
	return s;
}

static const struct option list_opts[] = {
	{ "tree", no_argument, NULL, 't' },
	{ "roots", no_argument, NULL, 'r' },
	{ "leaves", no_argument, NULL, 'l' },
	{ "parent", no_argument, NULL, 'p' },
	{ "from", required_argument, NULL, 'f' },
	{ "json", no_argument, NULL, 'j' },
	{ NULL, 0, NULL, 0 }
};

static void
list_print(json_t *rows, const char *current, int parent)
{
	struct table	*t;
	json_t		*s;
	size_t		 i;
	uint64_t	 bytes;
	char		 size[FORMAT_SIZE_LEN], when[FORMAT_TIME_LEN];
	const char	*name;

	t = table_new(8);
	table_align_right(t, 6);
	table_min_width(t, 6, FORMAT_SIZE_WIDTH);
	table_add(t, "", "NAME", parent ? "PARENT" : "", "CREATED", "STATE",
	    "MEMORY", "SIZE", "DESCRIPTION");
	json_array_foreach(rows, i, s) {
		name = query_str(s, "name");
		if (json_is_integer(json_object_get(s, "created")))
			format_time(json_integer_value(json_object_get(s,
			    "created")), when, sizeof when);
		else
			snprintf(when, sizeof when, "-");
		if (query_size(s, &bytes))
			format_size(bytes, size, sizeof size);
		else
			snprintf(size, sizeof size, "-");
		table_add(t, current != NULL && strcmp(name, current) == 0 ?
		    "*" : "", name, !parent ? "" :
		    json_is_string(json_object_get(s, "parent")) ?
		    query_str(s, "parent") : "-", when,
		    *query_str(s, "vm-state") != '\0' ? query_str(s,
		    "vm-state") : "-", json_is_true(json_object_get(s,
		    "memory")) ? "yes" : "no", size,
		    query_str(s, "description"));
	}
	table_print(t, stdout);
	table_free(t);
}

static int
list_exec(struct cli *cli, int argc, char **argv)
{
	json_t		*q = NULL, *branches = NULL, *rows = NULL, *s, *snaps;
	const char	*from = NULL, *current;
	char		*raw = NULL;
	int		 ch, tree = 0, roots = 0, leaves = 0, parent = 0;
	int		 json = 0, rv;
	size_t		 i;

	while ((ch = cli_getopt(cli, argc, argv)) != -1) {
		switch (ch) {
		case 't':
			tree = 1;
			break;
		case 'r':
			roots = 1;
			break;
		case 'l':
			leaves = 1;
			break;
		case 'p':
			parent = 1;
			break;
		case 'f':
			from = optarg;
			break;
		case 'j':
			json = 1;
			break;
		default:
			return cli_bad_option(cli, ch);
		}
	}
	if (show_operands(cli, argc, argv, 0, "") == -1)
		return EXIT_USAGE;
	if (tree && (roots || leaves || parent || json))
		return cli_usage_error(cli, "--tree goes with --from only "
		    "(for JSON, see 'qbranch tree --json')");
	if (roots && from != NULL)
		return cli_usage_error(cli, "--roots and --from exclude each "
		    "other: descendants have a parent");
	if ((rv = cli_call(cli, "qbranch-query-snapshots", NULL, &q, &raw)) !=
	    EXIT_OK)
		goto out;
	snaps = json_object_get(q, "snapshots");
	current = json_string_value(json_object_get(q, "current"));
	if (from != NULL && show_find(q, from) == NULL) {
		rv = EXIT_FAILED;
		goto out;
	}
	if (tree) {
		if ((rv = cli_call(cli, "qbranch-query-branches", NULL,
		    &branches, NULL)) == EXIT_OK)
			tree_view_print(q, branches, from, stdout);
		goto out;
	}
	if (json && !roots && !leaves && from == NULL) {
		cli_print_raw(raw);
		goto out;
	}
	rows = json_array();
	json_array_foreach(snaps, i, s) {
		if (roots && json_is_string(json_object_get(s, "parent")))
			continue;
		if (leaves && json_array_size(json_object_get(s,
		    "children")) > 0)
			continue;
		if (from != NULL && !query_is_descendant(snaps, s, from))
			continue;
		json_array_append(rows, s);
	}
	if (json) {
		s = json_pack("{s:O, s:O}", "snapshots", rows, "current",
		    json_object_get(q, "current") != NULL ?
		    json_object_get(q, "current") : json_null());
		cli_print_json(s);
		json_decref(s);
	} else if (json_array_size(rows) > 0)
		list_print(rows, current, parent);
out:
	json_decref(rows);
	json_decref(branches);
	json_decref(q);
	free(raw);
	return rv;
}

const struct verb verb_list_entry = {
	.name = "list",
	.synopsis = "[--tree] [--roots] [--leaves] [--parent] [--from NAME] "
	    "[--json]",
	.summary = "list the snapshots (like virsh snapshot-list)",
	.longopts = list_opts,
	.exec = list_exec,
};

static const struct option tree_opts[] = {
	{ "dot", no_argument, NULL, 'd' },
	{ "svg", required_argument, NULL, 's' },
	{ "from", required_argument, NULL, 'f' },
	{ "json", no_argument, NULL, 'j' },
	{ NULL, 0, NULL, 0 }
};

static int
tree_exec(struct cli *cli, int argc, char **argv)
{
	json_t		*q = NULL, *branches = NULL;
	const char	*svg = NULL, *from = NULL;
	char		*rawq = NULL, *rawb = NULL, *cause;
	int		 ch, dot = 0, json = 0, rv;

	while ((ch = cli_getopt(cli, argc, argv)) != -1) {
		switch (ch) {
		case 'd':
			dot = 1;
			break;
		case 's':
			svg = optarg;
			break;
		case 'f':
			from = optarg;
			break;
		case 'j':
			json = 1;
			break;
		default:
			return cli_bad_option(cli, ch);
		}
	}
	if (show_operands(cli, argc, argv, 0, "") == -1)
		return EXIT_USAGE;
	if (dot + json + (svg != NULL) > 1)
		return cli_usage_error(cli, "--dot, --svg and --json exclude "
		    "each other");
	if (from != NULL && (dot || json || svg != NULL))
		return cli_usage_error(cli, "--from goes with the text view "
		    "only");
	if (svg != NULL && !tree_view_has_dot()) {
		fprintf(stderr, "qbranch: dot (Graphviz) is not installed, "
		    "or not in $PATH\nhint: install Graphviz (apt-get install "
		    "graphviz), or write the graph with 'qbranch tree --dot > "
		    "tree.dot' and render it elsewhere\n");
		return EXIT_FAILED;
	}
	if ((rv = cli_call(cli, "qbranch-query-snapshots", NULL, &q,
	    &rawq)) != EXIT_OK ||
	    (rv = cli_call(cli, "qbranch-query-branches", NULL, &branches,
	    &rawb)) != EXIT_OK)
		goto out;
	if (from != NULL && show_find(q, from) == NULL)
		rv = EXIT_FAILED;
	else if (json) {
		/* Both answers, each as the proxy sent it. */
		printf("{\"snapshots\": %s, \"branches\": %s}\n", rawq, rawb);
	} else if (dot)
		tree_view_dot(q, branches, stdout);
	else if (svg != NULL) {
		if (tree_view_svg(q, branches, svg, &cause) == -1) {
			fprintf(stderr, "qbranch: %s\nhint: 'qbranch tree "
			    "--dot' shows what dot was given\n", cause);
			free(cause);
			rv = EXIT_FAILED;
		}
	} else
		tree_view_print(q, branches, from, stdout);
out:
	json_decref(q);
	json_decref(branches);
	free(rawq);
	free(rawb);
	return rv;
}

const struct verb verb_tree_entry = {
	.name = "tree",
	.synopsis = "[--from NAME | --dot | --svg FILE | --json]",
	.summary = "show snapshots and branches as a tree",
	.longopts = tree_opts,
	.exec = tree_exec,
};

/* A branch's or snapshot's disks as DEV=FILE ... (new string). */
static char *
show_disks(json_t *o)
{
	struct buf	 b = { NULL, 0, 0 };
	json_t		*d;
	size_t		 i;

	buf_addstr(&b, "");
	json_array_foreach(json_object_get(o, "disks"), i, d) {
		if (i > 0)
			buf_addstr(&b, " ");
		buf_addstr(&b, query_str(d, "device"));
		buf_addstr(&b, "=");
		buf_addstr(&b, query_str(d, "file"));
	}
	return b.data;
}

static int
branches_exec(struct cli *cli, int argc, char **argv)
{
	struct table	*t;
	json_t		*ret, *b;
	char		*raw, *disks;
	int		 json = 0, rv;
	size_t		 i;

	if ((rv = show_json_only(cli, argc, argv, &json)) != -1)
		return rv;
	if (show_operands(cli, argc, argv, 0, "") == -1)
		return EXIT_USAGE;
	if ((rv = cli_call(cli, "qbranch-query-branches", NULL, &ret,
	    &raw)) != EXIT_OK)
		return rv;
	if (json)
		cli_print_raw(raw);
	else if (json_array_size(ret) > 0) {
		t = table_new(4);
		table_add(t, "", "BRANCH", "BASE", "DISKS");
		json_array_foreach(ret, i, b) {
			disks = show_disks(b);
			table_add(t, json_is_true(json_object_get(b,
			    "attached")) ? "*" : "", query_str(b, "name"),
			    json_is_string(json_object_get(b, "base")) ?
			    query_str(b, "base") : "-", disks);
			free(disks);
		}
		table_print(t, stdout);
		table_free(t);
	}
	json_decref(ret);
	free(raw);
	return EXIT_OK;
}

const struct verb verb_branches_entry = {
	.name = "branches",
	.synopsis = "[--json]",
	.summary = "list the branches; * marks the attached one",
	.longopts = json_opts,
	.exec = branches_exec,
};

/* The names in a JSON array of strings, comma-separated (new string). */
static char *
show_names(json_t *a)
{
	struct buf	 b = { NULL, 0, 0 };
	json_t		*v;
	size_t		 i;

	buf_addstr(&b, "");
	json_array_foreach(a, i, v) {
		if (b.len > 0)
			buf_addstr(&b, ", ");
		buf_addstr(&b, json_is_string(v) ? json_string_value(v) : "?");
	}
	if (b.len == 0)
		buf_addstr(&b, "-");
	return b.data;
}

static void
info_print(json_t *q, json_t *s, json_t *branches)
{
	struct table	*t;
	json_t		*grow = json_array(), *b, *d;
	char		 when[FORMAT_TIME_LEN], age[FORMAT_AGE_LEN];
	char		 size[FORMAT_SIZE_LEN], *text, *names;
	const char	*name = query_str(s, "name");
	uint64_t	 bytes;
	int64_t		 secs;
	size_t		 i;

	t = table_new(2);
	table_add(t, "name:", name);
	table_add(t, "parent:", json_is_string(json_object_get(s, "parent")) ?
	    query_str(s, "parent") : "-");
	names = show_names(json_object_get(s, "children"));
	table_add(t, "children:", names);
	free(names);
	if (json_is_integer(json_object_get(s, "created")) &&
	    query_age(s, time(NULL), &secs)) {
		format_time(json_integer_value(json_object_get(s, "created")),
		    when, sizeof when);
		format_age(secs, age, sizeof age);
		xasprintf(&text, "%s (%s ago)", when, age);
	} else
		text = xstrdup("-");
	table_add(t, "created:", text);
	free(text);
	table_add(t, "description:", query_str(s, "description"));
	table_add(t, "vm state:", query_str(s, "vm-state"));
	table_add(t, "memory:", json_is_true(json_object_get(s, "memory")) ?
	    "yes" : "no");
	if (query_size(s, &bytes))
		format_size(bytes, size, sizeof size);
	else
		snprintf(size, sizeof size, "-");
	table_add(t, "size:", size);
	table_add(t, "current:", strcmp(query_str(q, "current"), name) == 0 ?
	    "yes" : "no");
	json_array_foreach(branches, i, b) {
		if (strcmp(query_str(b, "base"), name) == 0)
			json_array_append_new(grow, json_string(query_str(b,
			    "name")));
	}
	names = show_names(grow);
	table_add(t, "branches:", names);
	free(names);
	json_array_foreach(json_object_get(s, "disks"), i, d) {
		xasprintf(&text, "disk %s:", query_str(d, "device"));
		table_add(t, text, query_str(d, "file"));
		free(text);
	}
	table_print(t, stdout);
	table_free(t);
	json_decref(grow);
}

static int
info_exec(struct cli *cli, int argc, char **argv)
{
	json_t	*q = NULL, *branches = NULL, *s;
	int	 json = 0, rv;

	if ((rv = show_json_only(cli, argc, argv, &json)) != -1)
		return rv;
	if (show_operands(cli, argc, argv, 1, "the snapshot NAME (see "
	    "'qbranch list')") == -1)
		return EXIT_USAGE;
	if ((rv = cli_call(cli, "qbranch-query-snapshots", NULL, &q, NULL)) !=
	    EXIT_OK)
		goto out;
	if ((s = show_find(q, argv[optind])) == NULL)
		rv = EXIT_FAILED;
	else if (json)
		cli_print_json(s);
	else if ((rv = cli_call(cli, "qbranch-query-branches", NULL,
	    &branches, NULL)) == EXIT_OK)
		info_print(q, s, branches);
out:
	json_decref(q);
	json_decref(branches);
	return rv;
}

const struct verb verb_info_entry = {
	.name = "info",
	.synopsis = "NAME [--json]",
	.summary = "show one snapshot",
	.longopts = json_opts,
	.exec = info_exec,
};

static int
current_exec(struct cli *cli, int argc, char **argv)
{
	json_t		*q, *s;
	const char	*name;
	int		 json = 0, rv;

	if ((rv = show_json_only(cli, argc, argv, &json)) != -1)
		return rv;
	if (show_operands(cli, argc, argv, 0, "") == -1)
		return EXIT_USAGE;
	if ((rv = cli_call(cli, "qbranch-query-snapshots", NULL, &q, NULL)) !=
	    EXIT_OK)
		return rv;
	name = json_string_value(json_object_get(q, "current"));
	s = name != NULL ? query_snapshot(json_object_get(q, "snapshots"),
	    name) : NULL;
	if (json)
		cli_print_json(s != NULL ? s : json_null());
	else if (name != NULL)
		printf("%s\n", name);
	else {
		fprintf(stderr, "qbranch: no current snapshot: the attached "
		    "branch grows from the original disks\nhint: take one "
		    "with 'qbranch create'\n");
		rv = EXIT_FAILED;
	}
	json_decref(q);
	return rv;
}

const struct verb verb_current_entry = {
	.name = "current",
	.synopsis = "[--json]",
	.summary = "name the snapshot the attached branch grows from",
	.longopts = json_opts,
	.exec = current_exec,
};

static int
parent_exec(struct cli *cli, int argc, char **argv)
{
	json_t		*q, *s, *p = NULL;
	const char	*parent;
	int		 json = 0, rv;

	if ((rv = show_json_only(cli, argc, argv, &json)) != -1)
		return rv;
	if (show_operands(cli, argc, argv, 1, "the snapshot NAME (see "
	    "'qbranch list')") == -1)
		return EXIT_USAGE;
	if ((rv = cli_call(cli, "qbranch-query-snapshots", NULL, &q, NULL)) !=
	    EXIT_OK)
		return rv;
	if ((s = show_find(q, argv[optind])) == NULL) {
		rv = EXIT_FAILED;
		goto out;
	}
	if ((parent = json_string_value(json_object_get(s, "parent"))) != NULL)
		p = query_snapshot(json_object_get(q, "snapshots"), parent);
	if (json)
		cli_print_json(p != NULL ? p : json_null());
	else if (parent != NULL)
		printf("%s\n", parent);
	else {
		fprintf(stderr, "qbranch: snapshot %s has no parent: it is a "
		    "root of the tree\nhint: see 'qbranch tree'\n",
		    argv[optind]);
		rv = EXIT_FAILED;
	}
out:
	json_decref(q);
	return rv;
}

const struct verb verb_parent_entry = {
	.name = "parent",
	.synopsis = "NAME [--json]",
	.summary = "name a snapshot's parent",
	.longopts = json_opts,
	.exec = parent_exec,
};

static int
disks_exec(struct cli *cli, int argc, char **argv)
{
	struct table	*t;
	json_t		*ret, *d, *img;
	char		*raw;
	int		 json = 0, rv;
	size_t		 i, k;

	if ((rv = show_json_only(cli, argc, argv, &json)) != -1)
		return rv;
	if (show_operands(cli, argc, argv, 0, "") == -1)
		return EXIT_USAGE;
	if ((rv = cli_call(cli, "qbranch-query-disks", NULL, &ret, &raw)) !=
	    EXIT_OK)
		return rv;
	if (json)
		cli_print_raw(raw);
	else if (json_array_size(ret) > 0) {
		t = table_new(4);
		table_add(t, "DEVICE", "FILE", "FORMAT", "NODE");
		json_array_foreach(ret, i, d) {
			json_array_foreach(json_object_get(d, "chain"), k,
			    img) {
				table_add(t, k == 0 ? query_str(d, "device") :
				    "", query_str(img, "file"),
				    query_str(img, "format"),
				    json_is_string(json_object_get(img,
				    "node-name")) ? query_str(img,
				    "node-name") : "-");
			}
		}
		table_print(t, stdout);
		table_free(t);
	}
	json_decref(ret);
	free(raw);
	return EXIT_OK;
}

const struct verb verb_disks_entry = {
	.name = "disks",
	.synopsis = "[--json]",
	.summary = "show each writable disk's chain of images, top first",
	.longopts = json_opts,
	.exec = disks_exec,
};

static int
status_exec(struct cli *cli, int argc, char **argv)
{
	struct table	*t;
	json_t		*st = NULL, *q = NULL, *branches = NULL, *b, *out;
	json_t		*branch = json_null();
	char		 n[32];
	int		 json = 0, rv;
	size_t		 i;

	if ((rv = show_json_only(cli, argc, argv, &json)) != -1)
		return rv;
	if (show_operands(cli, argc, argv, 0, "") == -1)
		return EXIT_USAGE;
	if ((rv = cli_call(cli, "query-status", NULL, &st, NULL)) != EXIT_OK ||
	    (rv = cli_call(cli, "qbranch-query-snapshots", NULL, &q,
	    NULL)) != EXIT_OK ||
	    (rv = cli_call(cli, "qbranch-query-branches", NULL, &branches,
	    NULL)) != EXIT_OK) {
		if (st != NULL && !json)
			printf("vm:  %s\n", query_str(st, "status"));
		goto out;
	}
	json_array_foreach(branches, i, b) {
		if (json_is_true(json_object_get(b, "attached")))
			branch = json_object_get(b, "name");
	}
	out = json_object();
	json_object_set(out, "status", json_object_get(st, "status") ?
	    json_object_get(st, "status") : json_null());
	json_object_set(out, "running", json_object_get(st, "running") ?
	    json_object_get(st, "running") : json_null());
	json_object_set(out, "branch", branch);
	json_object_set(out, "current", json_object_get(q, "current") ?
	    json_object_get(q, "current") : json_null());
	json_object_set_new(out, "snapshots", json_integer(json_array_size(
	    json_object_get(q, "snapshots"))));
	/* A path that is not UTF-8 is left out. */
	json_object_set_new(out, "socket", json_string(cli_socket_path(cli)));
	if (json)
		cli_print_json(out);
	else {
		t = table_new(2);
		table_add(t, "vm:", query_str(out, "status"));
		table_add(t, "branch:", json_is_string(branch) ?
		    json_string_value(branch) : "-");
		table_add(t, "current:", json_is_string(json_object_get(out,
		    "current")) ? query_str(out, "current") : "-");
		snprintf(n, sizeof n, "%zu", json_array_size(json_object_get(q,
		    "snapshots")));
		table_add(t, "snapshots:", n);
		table_add(t, "socket:", cli_socket_path(cli));
		table_print(t, stdout);
		table_free(t);
	}
	json_decref(out);
out:
	json_decref(st);
	json_decref(q);
	json_decref(branches);
	return rv;
}

const struct verb verb_status_entry = {
	.name = "status",
	.synopsis = "[--json]",
	.summary = "the VM's run state, the attached branch, the current "
	    "snapshot",
	.longopts = json_opts,
	.exec = status_exec,
};
