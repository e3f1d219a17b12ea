/*
 * verb-change.c: the verbs that change the tree, one proxy command each:
 *
 *   create         qbranch-snapshot-create   {name?, description?, memory?,
 *                                             disks?: [{device, file} |
 *                                             {device, exclude: true}]}
 *   revert         qbranch-snapshot-revert   {name, branch?, state?,
 *                                             save-memory?, discard?, disks?}
 *   switch         qbranch-branch-switch     {branch, state?, save-memory?}
 *   delete         qbranch-snapshot-delete   {name, mode?}
 *   branch-delete  qbranch-branch-delete     {branch}
 *   edit           qbranch-snapshot-edit     {name, new-name?, description?}
 *
 * Each prints one line saying what happened, or with --json the proxy's
 * return value as it was sent. Long work shows a progress bar.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

/* Runs a change and prints its outcome; args is stolen. */
static int
change_run(struct cli *cli, const char *execute, json_t *args, int json,
    json_t **ret)
{
	char	*raw;
	int	 rv;

	cli->flags |= CLI_PROGRESS;
	if ((rv = cli_call(cli, execute, args, ret, &raw)) != EXIT_OK)
		return rv;
	if (json)
		cli_print_raw(raw);
	free(raw);
	return EXIT_OK;
}

/*
 * --disk DEV=FILE as {device, file} appended to disks; a relative FILE is
 * made absolute here, where the caller stands, not where qbranchd does.
 */
static int
change_disk_arg(struct cli *cli, json_t *disks, const char *arg)
{
	const char	*eq = strchr(arg, '=');
	char		*dev, *file, cwd[4096];
	json_t		*jdev, *jfile;

	if (eq == NULL || eq == arg || eq[1] == '\0')
		return cli_usage_error(cli, "--disk wants DEVICE=FILE, not "
		    "'%s' (see 'qbranch disks' for the devices)", arg);
	dev = xstrndup(arg, eq - arg);
	if (eq[1] == '/' || getcwd(cwd, sizeof cwd) == NULL)
		file = xstrdup(eq + 1);
	else
		xasprintf(&file, "%s/%s", cwd, eq + 1);
	jdev = cli_string(cli, dev, "--disk");
	jfile = jdev != NULL ? cli_string(cli, file, "--disk") : NULL;
	free(dev);
	free(file);
	if (jfile == NULL) {
		json_decref(jdev);
		return EXIT_USAGE;
	}
	json_array_append_new(disks, json_pack("{s:o, s:o}", "device", jdev,
	    "file", jfile));
	return EXIT_OK;
}

/* The one NAME a verb takes; -1 after a usage error. */
static int
change_one_arg(struct cli *cli, int argc, char **argv, const char *what,
    const char **name)
{
	if (argc - optind < 1) {
		cli_usage_error(cli, "missing %s", what);
		return -1;
	}
	if (argc - optind > 1) {
		cli_usage_error(cli, "unexpected argument '%s'",
		    argv[optind + 1]);
		return -1;
	}
	*name = argv[optind];
	return 0;
}

/* Sets key to the string s, unless it is not UTF-8 (reported). */
static int
change_set(struct cli *cli, json_t *args, const char *key, const char *s,
    const char *what)
{
	json_t	*v;

	if ((v = cli_string(cli, s, what)) == NULL)
		return -1;
	json_object_set_new(args, key, v);
	return 0;
}

static const struct option create_opts[] = {
	{ "description", required_argument, NULL, 'd' },
	{ "memory", no_argument, NULL, 'm' },
	{ "disk", required_argument, NULL, 'D' },
	{ "exclude", required_argument, NULL, 'x' },
	{ "json", no_argument, NULL, 'j' },
	{ NULL, 0, NULL, 0 }
};

static int
create_exec(struct cli *cli, int argc, char **argv)
{
	json_t	*args = json_object(), *disks = json_array(), *ret = NULL, *dev;
	int	 ch, json = 0, rv = EXIT_USAGE;

	while ((ch = cli_getopt(cli, argc, argv)) != -1) {
		switch (ch) {
		case 'd':
			if (change_set(cli, args, "description", optarg,
			    "--description") == -1)
				goto out;
			break;
		case 'm':
			json_object_set_new(args, "memory", json_true());
			break;
		case 'D':
			if (change_disk_arg(cli, disks, optarg) != EXIT_OK)
				goto out;
			break;
		case 'x':
			if ((dev = cli_string(cli, optarg, "--exclude")) ==
			    NULL)
				goto out;
			json_array_append_new(disks, json_pack("{s:o, s:b}",
			    "device", dev, "exclude", 1));
			break;
		case 'j':
			json = 1;
			break;
		default:
			rv = cli_bad_option(cli, ch);
			goto out;
		}
	}
	if (argc - optind > 1) {
		cli_usage_error(cli, "unexpected argument '%s'",
		    argv[optind + 1]);
		goto out;
	}
	if (argc - optind == 1 &&
	    change_set(cli, args, "name", argv[optind], "NAME") == -1)
		goto out;
	if (json_array_size(disks) > 0)
		json_object_set(args, "disks", disks);
	rv = change_run(cli, "qbranch-snapshot-create", args, json, &ret);
	args = NULL;
	if (rv == EXIT_OK && !json) {
		printf("snapshot %s created", query_str(ret, "name"));
		if (json_is_true(json_object_get(ret, "memory")))
			printf(" with memory");
		if (json_is_string(json_object_get(ret, "parent")))
			printf(" (child of %s)", query_str(ret, "parent"));
		printf("\n");
	}
out:
	json_decref(ret);
	json_decref(disks);
	json_decref(args);
	return rv;
}

const struct verb verb_create_entry = {
	.name = "create",
	.synopsis = "[NAME] [--description TEXT] [--memory] "
	    "[--disk DEV=FILE | --exclude DEV]... [--json]",
	.summary = "take a snapshot of every disk; the VM keeps running",
	.longopts = create_opts,
	.exec = create_exec,
};

static const struct option revert_opts[] = {
	{ "branch", required_argument, NULL, 'b' },
	{ "running", no_argument, NULL, 'r' },
	{ "paused", no_argument, NULL, 'p' },
	{ "save-memory", no_argument, NULL, 's' },
	{ "discard", no_argument, NULL, 'X' },
	{ "disk", required_argument, NULL, 'D' },
	{ "json", no_argument, NULL, 'j' },
	{ NULL, 0, NULL, 0 }
};

/* --running / --paused as "state"; both is a usage error. */
static int
change_state(struct cli *cli, json_t *args, int ch)
{
	const char	*state = ch == 'r' ? "running" : "paused";

	if (json_object_get(args, "state") != NULL &&
	    strcmp(query_str(args, "state"), state) != 0) {
		cli_usage_error(cli, "--running and --paused exclude each "
		    "other");
		return -1;
	}
	json_object_set_new(args, "state", json_string(state));
	return 0;
}

static int
revert_exec(struct cli *cli, int argc, char **argv)
{
	json_t		*args = json_object(), *disks = json_array();
	json_t		*ret = NULL;
	const char	*name;
	int		 ch, json = 0, discard = 0, rv = EXIT_USAGE;

	while ((ch = cli_getopt(cli, argc, argv)) != -1) {
		switch (ch) {
		case 'b':
			if (change_set(cli, args, "branch", optarg,
			    "--branch") == -1)
				goto out;
			break;
		case 'r':
		case 'p':
			if (change_state(cli, args, ch) == -1)
				goto out;
			break;
		case 's':
			json_object_set_new(args, "save-memory", json_true());
			break;
		case 'X':
			json_object_set_new(args, "discard", json_true());
			discard = 1;
			break;
		case 'D':
			if (change_disk_arg(cli, disks, optarg) != EXIT_OK)
				goto out;
			break;
		case 'j':
			json = 1;
			break;
		default:
			rv = cli_bad_option(cli, ch);
			goto out;
		}
	}
	if (change_one_arg(cli, argc, argv, "the snapshot NAME (see 'qbranch "
	    "list')", &name) == -1 ||
	    change_set(cli, args, "name", name, "NAME") == -1)
		goto out;
	if (json_array_size(disks) > 0)
		json_object_set(args, "disks", disks);
	rv = change_run(cli, "qbranch-snapshot-revert", args, json, &ret);
	args = NULL;
	if (rv == EXIT_OK && !json)
		printf("reverted to %s: branch %s attached%s\n", name,
		    query_str(ret, "name"), discard ?
		    ", the branch left discarded" : "");
out:
	json_decref(ret);
	json_decref(disks);
	json_decref(args);
	return rv;
}

const struct verb verb_revert_entry = {
	.name = "revert",
	.synopsis = "NAME [--branch BRANCH] [--running | --paused] "
	    "[--save-memory] [--discard] [--disk DEV=FILE]... [--json]",
	.summary = "go back to a snapshot, on a new branch; the branch left "
	    "is kept",
	.longopts = revert_opts,
	.exec = revert_exec,
};

static const struct option switch_opts[] = {
	{ "running", no_argument, NULL, 'r' },
	{ "paused", no_argument, NULL, 'p' },
	{ "save-memory", no_argument, NULL, 's' },
	{ "json", no_argument, NULL, 'j' },
	{ NULL, 0, NULL, 0 }
};

static int
switch_exec(struct cli *cli, int argc, char **argv)
{
	json_t		*args = json_object(), *ret = NULL;
	const char	*branch;
	int		 ch, json = 0, rv = EXIT_USAGE;

	while ((ch = cli_getopt(cli, argc, argv)) != -1) {
		switch (ch) {
		case 'r':
		case 'p':
			if (change_state(cli, args, ch) == -1)
				goto out;
			break;
		case 's':
			json_object_set_new(args, "save-memory", json_true());
			break;
		case 'j':
			json = 1;
			break;
		default:
			rv = cli_bad_option(cli, ch);
			goto out;
		}
	}
	if (change_one_arg(cli, argc, argv, "the BRANCH (see 'qbranch "
	    "branches')", &branch) == -1 ||
	    change_set(cli, args, "branch", branch, "BRANCH") == -1)
		goto out;
	rv = change_run(cli, "qbranch-branch-switch", args, json, &ret);
	args = NULL;
	if (rv == EXIT_OK && !json) {
		if (json_is_string(json_object_get(ret, "base")))
			printf("switched to branch %s (on snapshot %s)\n",
			    branch, query_str(ret, "base"));
		else
			printf("switched to branch %s (on the original "
			    "disks)\n", branch);
	}
out:
	json_decref(ret);
	json_decref(args);
	return rv;
}

const struct verb verb_switch_entry = {
	.name = "switch",
	.synopsis = "BRANCH [--running | --paused] [--save-memory] [--json]",
	.summary = "attach another branch as it was left",
	.longopts = switch_opts,
	.exec = switch_exec,
};

static const struct option delete_opts[] = {
	{ "children", no_argument, NULL, 'C' },
	{ "children-only", no_argument, NULL, 'O' },
	{ "metadata", no_argument, NULL, 'M' },
	{ "json", no_argument, NULL, 'j' },
	{ NULL, 0, NULL, 0 }
};

static int
delete_exec(struct cli *cli, int argc, char **argv)
{
	json_t		*args = json_object(), *ret = NULL;
	const char	*name, *mode = NULL, *done;
	int		 ch, json = 0, rv = EXIT_USAGE;

	while ((ch = cli_getopt(cli, argc, argv)) != -1) {
		switch (ch) {
		case 'C':
		case 'O':
		case 'M':
			if (mode != NULL) {
				cli_usage_error(cli, "--children, "
				    "--children-only and --metadata exclude "
				    "each other");
				goto out;
			}
			mode = ch == 'C' ? "children" : ch == 'O' ?
			    "children-only" : "metadata-only";
			break;
		case 'j':
			json = 1;
			break;
		default:
			rv = cli_bad_option(cli, ch);
			goto out;
		}
	}
	if (change_one_arg(cli, argc, argv, "the snapshot NAME (see 'qbranch "
	    "list')", &name) == -1 ||
	    change_set(cli, args, "name", name, "NAME") == -1)
		goto out;
	if (mode != NULL)
		json_object_set_new(args, "mode", json_string(mode));
	rv = change_run(cli, "qbranch-snapshot-delete", args, json, &ret);
	args = NULL;
	if (rv == EXIT_OK && !json) {
		if (mode == NULL)
			done = "deleted, its data merged into its children";
		else if (strcmp(mode, "children") == 0)
			done = "and its descendants deleted";
		else if (strcmp(mode, "children-only") == 0)
			done = "kept, its descendants deleted";
		else
			done = "forgotten, its images left as they are";
		printf("snapshot %s %s\n", name, done);
	}
out:
	json_decref(ret);
	json_decref(args);
	return rv;
}

const struct verb verb_delete_entry = {
	.name = "delete",
	.synopsis = "NAME [--children | --children-only | --metadata] [--json]",
	.summary = "delete a snapshot, merging its data into what grows "
	    "from it",
	.longopts = delete_opts,
	.exec = delete_exec,
};

static const struct option json_opts[] = {
	{ "json", no_argument, NULL, 'j' },
	{ NULL, 0, NULL, 0 }
};

static int
branch_delete_exec(struct cli *cli, int argc, char **argv)
{
	json_t		*args = json_object(), *ret = NULL;
	const char	*branch;
	int		 ch, json = 0, rv = EXIT_USAGE;

	while ((ch = cli_getopt(cli, argc, argv)) != -1) {
		switch (ch) {
		case 'j':
			json = 1;
			break;
		default:
			rv = cli_bad_option(cli, ch);
			goto out;
		}
	}
	if (change_one_arg(cli, argc, argv, "the BRANCH (see 'qbranch "
	    "branches')", &branch) == -1 ||
	    change_set(cli, args, "branch", branch, "BRANCH") == -1)
		goto out;
	rv = change_run(cli, "qbranch-branch-delete", args, json, &ret);
	args = NULL;
	if (rv == EXIT_OK && !json)
		printf("branch %s deleted\n", branch);
out:
	json_decref(ret);
	json_decref(args);
	return rv;
}

const struct verb verb_branch_delete_entry = {
	.name = "branch-delete",
	.synopsis = "BRANCH [--json]",
	.summary = "delete a detached branch and its overlays",
	.longopts = json_opts,
	.exec = branch_delete_exec,
};

static const struct option edit_opts[] = {
	{ "rename", required_argument, NULL, 'r' },
	{ "description", required_argument, NULL, 'd' },
	{ "json", no_argument, NULL, 'j' },
	{ NULL, 0, NULL, 0 }
};

static int
edit_exec(struct cli *cli, int argc, char **argv)
{
	json_t		*args = json_object(), *ret = NULL;
	const char	*name;
	int		 ch, json = 0, rv = EXIT_USAGE;

	while ((ch = cli_getopt(cli, argc, argv)) != -1) {
		switch (ch) {
		case 'r':
			if (change_set(cli, args, "new-name", optarg,
			    "--rename") == -1)
				goto out;
			break;
		case 'd':
			if (change_set(cli, args, "description", optarg,
			    "--description") == -1)
				goto out;
			break;
		case 'j':
			json = 1;
			break;
		default:
			rv = cli_bad_option(cli, ch);
			goto out;
		}
	}
	if (change_one_arg(cli, argc, argv, "the snapshot NAME (see 'qbranch "
	    "list')", &name) == -1)
		goto out;
	if (json_object_size(args) == 0) {
		cli_usage_error(cli, "nothing to change: give --rename NEW "
		    "and/or --description TEXT");
		goto out;
	}
	if (change_set(cli, args, "name", name, "NAME") == -1)
		goto out;
	rv = change_run(cli, "qbranch-snapshot-edit", args, json, &ret);
	args = NULL;
	if (rv == EXIT_OK && !json) {
		if (strcmp(query_str(ret, "name"), name) != 0)
			printf("snapshot %s renamed to %s\n", name,
			    query_str(ret, "name"));
		else
			printf("snapshot %s edited\n", name);
	}
out:
	json_decref(ret);
	json_decref(args);
	return rv;
}

const struct verb verb_edit_entry = {
	.name = "edit",
	.synopsis = "NAME [--rename NEW] [--description TEXT] [--json]",
	.summary = "rename a snapshot or set its description",
	.longopts = edit_opts,
	.exec = edit_exec,
};
