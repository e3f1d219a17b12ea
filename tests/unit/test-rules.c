/*
 * test-rules.c: the rule engine without the daemon. Rule files written to
 * a temporary directory, each mistake with its exact position; requests
 * decided against rule sets, table-driven; the JSON subset match, the
 * position finder and the HMP line reader; the per-name cache past its
 * refill; and the shipped rule sets.
 */
#include <sys/stat.h>

#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "qbranch.h"
#include "tap.h"

static const char *const handlers[] = {
	"savevm", "loadvm", "delvm", "info-snapshots", "snapshot-save",
	"snapshot-load", "snapshot-delete", NULL
};

static char	 dir[PATH_MAX];
static char	*made[64];
static size_t	 nmade;

/* Writes dir/name; the path is returned, to be freed. */
static char *
put(const char *name, const char *text)
{
	char	*path;
	FILE	*f;

	xasprintf(&path, "%s/%s", dir, name);
	if ((f = fopen(path, "w")) == NULL)
		fatal("%s", path);
	fputs(text, f);
	if (fclose(f) != 0)
		fatal("%s", path);
	if (nmade < sizeof made / sizeof made[0])
		made[nmade++] = xstrdup(path);
	return path;
}

/* Loads a file that must fail with exactly want. */
static void
load_fails(const char *path, const char *want, const char *what)
{
	struct rule_set	*set;
	char		*cause = NULL;

	set = rules_load(path, handlers, &cause);
	ok(set == NULL && cause != NULL && strcmp(cause, want) == 0,
	    "%s: %s", what, cause != NULL ? cause : "loaded");
	if (set == NULL && (cause == NULL || strcmp(cause, want) != 0))
		diag("wanted: %s", want);
	rules_free(set);
	free(cause);
}

/* One rule on line 3 of a file: the mistake is found at tail. */
#define RULE_HEAD	"{\"default\": \"allow\",\n\"rules\": [\n"
#define RULE_TAIL	"\n]}\n"

static const struct {
	const char	*text;
	const char	*want;		/* after the file's path */
} bad_files[] = {
	{ RULE_HEAD "{\"command\": \"stop\", \"action\": \"permit\"}"
	  RULE_TAIL, ":3:31: unknown action 'permit' (known: allow, deny, "
	  "rewrite, translate, log)" },
	{ RULE_HEAD "{\"command\": \"stop\", \"action\": 5}" RULE_TAIL,
	  ":3:31: unknown action (known: allow, deny, rewrite, translate, "
	  "log)" },
	{ RULE_HEAD "{\"command\": \"stop\"}" RULE_TAIL,
	  ":3:1: the rule states no action" },
	{ RULE_HEAD "{\"command\": \"stop\", \"acton\": \"deny\"}" RULE_TAIL,
	  ":3:30: unknown key 'acton' in a rule (known: name, comment, "
	  "command, arguments, uid, gid, listener, action, class, message, "
	  "merge, replace, handler, options)" },
	{ "{\"default\": \"allow\", \"rulez\": []}\n",
	  ":1:31: unknown key 'rulez' in a rule file (known: default, rules, "
	  "description, comment)" },
	{ "\n  {\"rules\": []}\n",
	  ":2:3: the file states no 'default' (\"allow\" or \"deny\")" },
	{ "{\"rules\": [],\n \"default\": \"log\"}\n",
	  ":2:13: unknown action 'log' (known: allow, deny)" },
	{ "{\"default\": {\"action\": \"maybe\"}}\n",
	  ":1:24: unknown action 'maybe' (known: allow, deny)" },
	{ "{\"default\": {\"action\": \"deny\", \"why\": 1}}\n",
	  ":1:39: unknown key 'why' in the default (known: action, class, "
	  "message, comment)" },
	{ "{\"default\": true}\n",
	  ":1:13: 'default' takes \"allow\", \"deny\" or an object with an "
	  "action" },
	{ "[1]\n", ":1:1: a rule file holds one object" },
	{ "{\"default\": \"allow\", \"rules\": {}}\n",
	  ":1:31: 'rules' takes an array" },
	{ RULE_HEAD "{\"command\": \"stop\", \"action\": \"allow\", "
	  "\"class\": \"GenericError\"}" RULE_TAIL,
	  ":3:49: 'class' belongs to a deny rule, not to allow" },
	{ RULE_HEAD "{\"command\": \"stop\", \"action\": \"deny\", "
	  "\"handler\": \"savevm\"}" RULE_TAIL,
	  ":3:50: 'handler' belongs to a translate rule, not to deny" },
	{ RULE_HEAD "{\"command\": \"stop\", \"action\": \"deny\", "
	  "\"class\": \"Oops\"}" RULE_TAIL,
	  ":3:48: unknown error class 'Oops' (QEMU's are: GenericError, "
	  "CommandNotFound, DeviceNotActive, DeviceNotFound, KVMMissingCap)" },
	{ RULE_HEAD "  {\"command\": \"stop\", \"action\": \"rewrite\"}"
	  RULE_TAIL,
	  ":3:3: a rewrite rule takes one of 'merge' and 'replace'" },
	{ RULE_HEAD "  {\"command\": \"stop\", \"action\": \"rewrite\", "
	  "\"merge\": {}, \"replace\": {}}" RULE_TAIL,
	  ":3:3: a rewrite rule takes one of 'merge' and 'replace'" },
	{ RULE_HEAD "{\"action\": \"rewrite\", \"merge\": [1]}" RULE_TAIL,
	  ":3:32: 'merge' takes an object" },
	{ RULE_HEAD "{\"command\": \"hmp/savevm\", \"action\": \"translate\"}"
	  RULE_TAIL, ":3:1: a translate rule names its 'handler'" },
	{ RULE_HEAD "{\"command\": \"hmp/savevm\", \"action\": \"translate\", "
	  "\"handler\": \"frob\"}" RULE_TAIL,
	  ":3:61: unknown handler 'frob' (known: savevm, loadvm, delvm, "
	  "info-snapshots, snapshot-save, snapshot-load, snapshot-delete)" },
	{ RULE_HEAD "{\"uid\": true, \"action\": \"deny\"}" RULE_TAIL,
	  ":3:9: 'uid' takes a number or a name" },
	{ RULE_HEAD "{\"uid\": [0, 1.5], \"action\": \"deny\"}" RULE_TAIL,
	  ":3:13: 'uid' takes a number or a name" },
	{ RULE_HEAD "{\"gid\": -1, \"action\": \"deny\"}" RULE_TAIL,
	  ":3:9: 'gid' takes a number or a name" },
	{ RULE_HEAD "{\"uid\": [], \"action\": \"deny\"}" RULE_TAIL,
	  ":3:9: 'uid' takes at least one id" },
	{ RULE_HEAD "{\"uid\": \"no-such-user-qb\", \"action\": \"deny\"}"
	  RULE_TAIL, ":3:9: no user named 'no-such-user-qb'" },
	{ RULE_HEAD "{\"gid\": [0, \"no-such-group-qb\"], \"action\": "
	  "\"deny\"}" RULE_TAIL, ":3:13: no group named 'no-such-group-qb'" },
	{ RULE_HEAD "{\"command\": [], \"action\": \"deny\"}" RULE_TAIL,
	  ":3:13: 'command' takes a non-empty string or a non-empty array of "
	  "them" },
	{ RULE_HEAD "{\"command\": \"\", \"action\": \"deny\"}" RULE_TAIL,
	  ":3:13: 'command' takes a non-empty string or a non-empty array of "
	  "them" },
	{ RULE_HEAD "{\"command\": [\"stop\", 5], \"action\": \"deny\"}"
	  RULE_TAIL, ":3:22: 'command' takes non-empty strings" },
	{ RULE_HEAD "{\"listener\": [\"/a\", \"\"], \"action\": \"deny\"}"
	  RULE_TAIL, ":3:21: 'listener' takes non-empty strings" },
	{ RULE_HEAD "{\"name\": 7, \"action\": \"deny\"}" RULE_TAIL,
	  ":3:10: 'name' takes a non-empty string" },
	{ RULE_HEAD "  \"stop\"" RULE_TAIL, ":3:3: a rule is an object" },
	{ RULE_HEAD "{\"command\": \"a\", \"action\": \"deny\"},\n"
	  "{\"command\": \"b\", \"action\": \"allow\"},\n  [1]" RULE_TAIL,
	  ":5:3: a rule is an object" },
	/* jansson's own positions: the column of the token's last character. */
	{ RULE_HEAD "{\"command\": \"stop\" \"action\": \"deny\"}" RULE_TAIL,
	  ":3:27: '}' expected near '\"action\"'" },
	{ "{\"default\": \"allow\",\n \"default\": \"deny\"}\n",
	  ":2:10: duplicate object key near '\"default\"'" },
	{ RULE_HEAD "{\"command\": \"a\", \"action\": \"deny\", "
	  "\"command\": \"b\"}" RULE_TAIL,
	  ":3:44: duplicate object key near '\"command\"'" },
	/* Columns count characters, as jansson's do: "é" is one. */
	{ "{\"comment\": \"\xc3\xa9\xc3\xa9\", \"default\": \"no\"}\n",
	  ":1:30: unknown action 'no' (known: allow, deny)" },
	{ "{\"comment\": \"\xc3\xa9\xc3\xa9\", \"default\": \"no\" x}\n",
	  ":1:35: '}' expected near 'x'" },
};

static void
test_parse_errors(void)
{
	char	*path, *want, name[32];
	size_t	 i;

	for (i = 0; i < sizeof bad_files / sizeof bad_files[0]; i++) {
		snprintf(name, sizeof name, "bad-%zu.json", i);
		path = put(name, bad_files[i].text);
		xasprintf(&want, "%s%s", path, bad_files[i].want);
		load_fails(path, want, name);
		free(want);
		free(path);
	}

	/* A file that is not there: its path and the system's reason. */
	xasprintf(&path, "%s/absent.json", dir);
	xasprintf(&want, "%s: No such file or directory", path);
	load_fails(path, want, "absent file");
	free(want);
	free(path);
}

static void
test_includes(void)
{
	struct rule_set	*set;
	char		*path, *cause = NULL, *want, *p;
	size_t		 i;

	/* A missing include: its position, then the file's own problem. */
	path = put("inc-missing.json", RULE_HEAD
	    "  {\"include\": \"missing.json\"}" RULE_TAIL);
	xasprintf(&want, "%s:3:15: in the file included here: %s/missing.json: "
	    "No such file or directory", path, dir);
	load_fails(path, want, "include of a missing file");
	free(want);
	free(path);

	/* A mistake in an included file is named in that file. */
	free(put("inc-bad-inner.json", "{\"default\": \"deny\",\n"
	    "\"rules\": [{\"action\": \"nope\"}]}\n"));
	path = put("inc-bad.json", RULE_HEAD
	    "{\"command\": \"x\", \"action\": \"deny\"},\n"
	    "{\"include\": \"inc-bad-inner.json\"}" RULE_TAIL);
	xasprintf(&want, "%s:4:13: in the file included here: "
	    "%s/inc-bad-inner.json:2:22: unknown action 'nope' (known: allow, "
	    "deny, rewrite, translate, log)", path, dir);
	load_fails(path, want, "a mistake in an included file");
	free(want);
	free(path);

	/* An included file must still state a default. */
	free(put("inc-nodef-inner.json", "{\"rules\": []}\n"));
	path = put("inc-nodef.json", RULE_HEAD
	    "{\"include\": \"inc-nodef-inner.json\"}" RULE_TAIL);
	xasprintf(&want, "%s:3:13: in the file included here: "
	    "%s/inc-nodef-inner.json:1:1: the file states no 'default' "
	    "(\"allow\" or \"deny\")", path, dir);
	load_fails(path, want, "an included file without a default");
	free(want);
	free(path);

	path = put("inc-key.json", RULE_HEAD
	    "{\"include\": \"x.json\", \"action\": \"deny\"}" RULE_TAIL);
	xasprintf(&want, "%s:3:33: unknown key 'action' in an include "
	    "(known: include, comment)", path);
	load_fails(path, want, "an include with a rule's key");
	free(want);
	free(path);

	path = put("inc-empty.json", RULE_HEAD "{\"include\": \"\"}" RULE_TAIL);
	xasprintf(&want, "%s:3:13: 'include' takes a file name", path);
	load_fails(path, want, "an include without a name");
	free(want);
	free(path);

	/*
	 * A file including itself: eight levels wrap the error, the ninth
	 * read stops at the nesting limit.
	 */
	path = put("loop.json", "{\"default\": \"allow\", \"rules\": "
	    "[{\"include\": \"loop.json\"}]}\n");
	want = xstrdup("");
	for (i = 0; i < 8; i++) {
		xasprintf(&p, "%s%s:1:44: in the file included here: ", want,
		    path);
		free(want);
		want = p;
	}
	xasprintf(&p, "%s%s:1:44: includes nest deeper than 8 (a loop?)",
	    want, path);
	free(want);
	load_fails(path, p, "an include loop");
	free(p);
	free(path);

	/*
	 * Includes are found next to the including file, not in the
	 * working directory; rules are spliced in place; only the top
	 * file's default counts.
	 */
	xasprintf(&p, "%s/sub", dir);
	if (mkdir(p, 0700) == -1)
		fatal("mkdir %s", p);
	free(p);
	free(put("sub/inner.json", "{\"default\": \"deny\",\n"
	    "\"rules\": [\n"
	    "{\"name\": \"inner-1\", \"command\": \"b\", \"action\": \"deny\"},\n"
	    "{\"name\": \"inner-2\", \"command\": \"a\", \"action\": \"deny\"}\n"
	    "]}\n"));
	free(put("sub/middle.json", "{\"default\": \"deny\", \"rules\": [\n"
	    "{\"include\": \"inner.json\"},\n"
	    "{\"name\": \"middle\", \"command\": \"c\", \"action\": \"deny\"}\n"
	    "]}\n"));
	path = put("sub/outer.json", "{\"default\": \"allow\",\n"
	    "\"rules\": [\n"
	    "{\"name\": \"first\", \"command\": \"a\", \"action\": \"allow\"},\n"
	    "{\"include\": \"middle.json\"},\n"
	    "{\"name\": \"last\", \"command\": \"d\", \"action\": \"deny\"}\n"
	    "]}\n");
	set = rules_load(path, handlers, &cause);
	ok(set != NULL, "nested includes next to the including file: %s",
	    set == NULL ? cause : "loaded");
	if (set != NULL) {
		ok(set->nrules == 5 &&
		    strcmp(set->rules[0].name, "first") == 0 &&
		    strcmp(set->rules[1].name, "inner-1") == 0 &&
		    strcmp(set->rules[2].name, "inner-2") == 0 &&
		    strcmp(set->rules[3].name, "middle") == 0 &&
		    strcmp(set->rules[4].name, "last") == 0,
		    "included rules are spliced in place");
		ok(strcmp(set->rules[0].where, "outer.json:3") == 0 &&
		    strcmp(set->rules[1].where, "inner.json:3") == 0 &&
		    strcmp(set->rules[3].where, "middle.json:3") == 0 &&
		    strcmp(set->rules[4].where, "outer.json:5") == 0,
		    "each rule names its own file and line: %s %s %s %s",
		    set->rules[0].where, set->rules[1].where,
		    set->rules[3].where, set->rules[4].where);
		ok(set->deflt.action == RULE_ALLOW &&
		    strcmp(set->deflt.where, "outer.json:default") == 0,
		    "the included files' deny default is not used");
	} else {
		ok(0, "included rules are spliced in place");
		ok(0, "each rule names its own file and line");
		ok(0, "the included files' deny default is not used");
	}
	rules_free(set);
	free(cause);
	free(path);
}

static void
test_good_files(void)
{
	struct rule_set	*set;
	struct passwd	*pw;
	struct group	*gr;
	struct rule	*r;
	char		*path, *cause = NULL, *text;

	path = put("good.json", "{\"description\": \"all keys\",\n"
	    "\"comment\": \"x\",\n"
	    "\"default\": {\"action\": \"deny\", \"class\": \"CommandNotFound\","
	    " \"message\": \"no\", \"comment\": \"y\"},\n"
	    "\"rules\": [\n"
	    "{\"name\": \"n\", \"comment\": \"c\", \"command\": [\"a\", \"b*\"],"
	    " \"arguments\": {\"k\": 1}, \"uid\": [0, \"root\"], \"gid\": 5,"
	    " \"listener\": \"/run/*.sock\", \"action\": \"deny\","
	    " \"message\": \"m\"},\n"
	    "{\"action\": \"rewrite\", \"replace\": {\"x\": 1}},\n"
	    "{\"action\": \"translate\", \"handler\": \"savevm\","
	    " \"options\": {\"o\": true}},\n"
	    "{\"command\": \"q*\", \"action\": \"log\"}\n"
	    "]}\n");
	set = rules_load(path, handlers, &cause);
	ok(set != NULL, "a file with every key loads: %s",
	    set == NULL ? cause : "ok");
	if (set != NULL && set->nrules == 4) {
		r = &set->rules[0];
		ok(r->ncommands == 2 && strcmp(r->commands[1], "b*") == 0 &&
		    r->nuids == 2 && r->uids[0] == 0 && r->uids[1] == 0 &&
		    r->ngids == 1 && r->gids[0] == 5 && r->nlisteners == 1 &&
		    json_integer_value(json_object_get(r->arguments, "k")) ==
		    1 && strcmp(r->err_class, "GenericError") == 0 &&
		    strcmp(r->message, "m") == 0 &&
		    strcmp(r->where, "good.json:5") == 0,
		    "a deny rule's fields, its class GenericError by default");
		ok(set->rules[1].replace != NULL &&
		    set->rules[1].merge == NULL &&
		    set->rules[1].ncommands == 0 &&
		    strcmp(set->rules[2].handler, "savevm") == 0 &&
		    json_is_true(json_object_get(set->rules[2].options, "o")) &&
		    set->rules[3].action == RULE_LOG,
		    "rewrite, translate and log rules");
		ok(set->deflt.action == RULE_DENY &&
		    strcmp(set->deflt.err_class, "CommandNotFound") == 0 &&
		    strcmp(set->deflt.message, "no") == 0,
		    "an object default with a class and a message");
	} else {
		ok(0, "a deny rule's fields");
		ok(0, "rewrite, translate and log rules");
		ok(0, "an object default");
	}
	rules_free(set);
	free(cause);
	cause = NULL;
	free(path);

	/* A user and a group by name: whoever runs the test. */
	if ((pw = getpwuid(getuid())) == NULL || (gr = getgrgid(getgid())) ==
	    NULL)
		fatalx("no name for uid %u or gid %u", getuid(), getgid());
	xasprintf(&text, "{\"default\": \"allow\", \"rules\": "
	    "[{\"uid\": \"%s\", \"gid\": [\"%s\"], \"action\": \"deny\"}]}",
	    pw->pw_name, gr->gr_name);
	path = put("user.json", text);
	free(text);
	set = rules_load(path, handlers, &cause);
	ok(set != NULL && set->rules[0].nuids == 1 &&
	    set->rules[0].uids[0] == getuid() && set->rules[0].ngids == 1 &&
	    set->rules[0].gids[0] == getgid(), "a user and a group by name "
	    "(%s, %s): %s", pw->pw_name, gr->gr_name,
	    set == NULL ? cause : "ok");
	rules_free(set);
	free(cause);
	free(path);
}

static void
test_shipped_load(const char *rdir)
{
	static const char *const files[] = {
		"default.json", "read-only.json", "transparent.json"
	};
	struct rule_set	*set;
	char		*path, *cause;
	size_t		 i;

	for (i = 0; i < sizeof files / sizeof files[0]; i++) {
		cause = NULL;
		xasprintf(&path, "%s/%s", rdir, files[i]);
		set = rules_load(path, handlers, &cause);
		ok(set != NULL, "shipped %s loads: %s", files[i],
		    set == NULL ? cause : "ok");
		rules_free(set);
		free(cause);
		free(path);
	}
}

/* The rule set the decision table runs against. */
static const char match_rules[] =
"{\"default\": \"allow\",\n"
"\"rules\": [\n"
"{\"name\": \"log-q\", \"command\": \"query-*\", \"action\": \"log\"},\n"
"{\"name\": \"exact\", \"command\": \"stop\", \"action\": \"deny\"},\n"
"{\"name\": \"glob-snap\", \"command\": \"blockdev-snapshot*\","
" \"action\": \"deny\", \"class\": \"DeviceNotFound\"},\n"
"{\"name\": \"array\", \"command\": [\"eject\", \"cont\"], \"uid\": 1000,"
" \"action\": \"deny\"},\n"
"{\"name\": \"args\", \"command\": \"device_add\", \"arguments\":"
" {\"driver\": \"virtio-*\", \"opts\": {\"ro\": true, \"n\": 3}},"
" \"action\": \"deny\"},\n"
"{\"name\": \"arr-args\", \"command\": \"set-tags\", \"arguments\":"
" {\"tags\": [\"a*\", \"b\"]}, \"action\": \"deny\"},\n"
"{\"name\": \"no-args\", \"command\": \"system_reset\", \"arguments\": {},"
" \"action\": \"deny\"},\n"
"{\"name\": \"gid\", \"command\": \"quit\", \"gid\": [50, 51],"
" \"action\": \"deny\"},\n"
"{\"name\": \"listener\", \"command\": \"system_powerdown\","
" \"listener\": \"/run/qb/ro*.sock\", \"action\": \"deny\"},\n"
"{\"name\": \"first\", \"command\": \"query-cpus-fast\","
" \"action\": \"deny\"},\n"
"{\"name\": \"second\", \"command\": \"query-cpus-fast\","
" \"action\": \"allow\"},\n"
"{\"name\": \"log-q2\", \"command\": \"query-*\", \"action\": \"log\"},\n"
"{\"name\": \"tx-deny\", \"command\": \"transaction/drive-backup\","
" \"action\": \"deny\"},\n"
"{\"name\": \"hmp-stop\", \"command\": [\"hmp/stop\", \"hmp/cont\"],"
" \"action\": \"deny\"},\n"
"{\"name\": \"hmp-quit\", \"command\": \"hmp/quit\", \"uid\": 0,"
" \"action\": \"deny\"},\n"
"{\"name\": \"hmp-print\", \"command\": \"hmp/print\", \"action\": \"log\"},\n"
"{\"name\": \"hmp-help\", \"command\": \"hmp/help\", \"action\": \"rewrite\","
" \"merge\": {\"x\": 1}},\n"
"{\"name\": \"tx-translate\", \"command\": \"transaction/snap*\","
" \"action\": \"translate\", \"handler\": \"snapshot-save\"},\n"
"{\"name\": \"translate\", \"command\": \"hmp/savevm\","
" \"action\": \"translate\", \"handler\": \"savevm\"},\n"
"{\"name\": \"rw\", \"command\": \"rw-me\", \"action\": \"rewrite\","
" \"replace\": {}},\n"
"{\"name\": \"rw-action\", \"command\": \"transaction/abort\","
" \"action\": \"rewrite\", \"merge\": {\"y\": 2}},\n"
"{\"name\": \"num\", \"command\": \"numbers\", \"arguments\":"
" {\"n\": 1, \"b\": false, \"z\": null}, \"action\": \"deny\"},\n"
"{\"name\": \"log-all\", \"action\": \"log\"},\n"
"{\"name\": \"deny-hmp-any\", \"command\": \"hmp/*\", \"uid\": 7,"
" \"action\": \"deny\"}\n"
"]}\n";

static const char deny_rules[] =
"{\"default\": {\"action\": \"deny\", \"class\": \"CommandNotFound\"},\n"
" \"rules\": [{\"name\": \"q\", \"command\": \"query-*\","
" \"action\": \"allow\"}]}\n";

#define U	1000
#define G	100
#define L	"/run/qb/vm.sock"
#define HMC	"human-monitor-command"

static const struct {
	int		 set;		/* 0 match_rules, 1 deny_rules */
	const char	*cmd;
	const char	*args;		/* JSON, or NULL */
	unsigned	 uid, gid;
	const char	*listener;
	const char	*want;		/* action rule subject logged */
} decisions[] = {
	/* log-all comes late: only names no earlier rule decides log it. */
	{ 0, "stop", NULL, U, G, L, "deny exact 0 []" },
	{ 0, "stopp", NULL, U, G, L, "allow default 0 [log-all]" },
	{ 0, "blockdev-snapshot-sync", NULL, U, G, L,
	  "deny glob-snap 0 []" },
	{ 0, "blockdev-snapshot", NULL, U, G, L,
	  "deny glob-snap 0 []" },
	{ 0, "xblockdev-snapshot", NULL, U, G, L,
	  "allow default 0 [log-all]" },
	{ 0, "eject", "{\"device\": \"cd0\"}", U, G, L,
	  "deny array 0 []" },
	{ 0, "cont", NULL, U, G, L, "deny array 0 []" },
	{ 0, "cont", NULL, 0, G, L, "allow default 0 [log-all]" },
	{ 0, "device_add", "{\"driver\": \"virtio-blk-pci\", \"id\": \"d0\","
	  " \"opts\": {\"ro\": true, \"n\": 3, \"more\": \"x\"}}", U, G, L,
	  "deny args 0 []" },
	{ 0, "device_add", "{\"driver\": \"e1000\", \"opts\": {\"ro\": true,"
	  " \"n\": 3}}", U, G, L, "allow default 0 [log-all]" },
	{ 0, "device_add", "{\"driver\": \"virtio-net\", \"opts\": {\"ro\":"
	  " false, \"n\": 3}}", U, G, L, "allow default 0 [log-all]" },
	{ 0, "device_add", "{\"driver\": \"virtio-net\", \"opts\": {\"ro\":"
	  " true, \"n\": 4}}", U, G, L, "allow default 0 [log-all]" },
	{ 0, "device_add", "{\"driver\": \"virtio-net\", \"opts\": {\"ro\":"
	  " true}}", U, G, L, "allow default 0 [log-all]" },
	{ 0, "device_add", "{\"driver\": \"virtio-net\", \"opts\": \"ro\"}",
	  U, G, L, "allow default 0 [log-all]" },
	{ 0, "device_add", "{\"driver\": 5, \"opts\": {\"ro\": true, \"n\":"
	  " 3}}", U, G, L, "allow default 0 [log-all]" },
	{ 0, "device_add", NULL, U, G, L, "allow default 0 [log-all]" },
	{ 0, "set-tags", "{\"tags\": [\"zz\", \"b\", \"abc\"]}", U, G, L,
	  "deny arr-args 0 []" },
	{ 0, "set-tags", "{\"tags\": [\"zz\", \"b\"]}", U, G, L,
	  "allow default 0 [log-all]" },
	{ 0, "set-tags", "{\"tags\": [\"abc\"]}", U, G, L,
	  "allow default 0 [log-all]" },
	{ 0, "set-tags", "{\"tags\": \"abc b\"}", U, G, L,
	  "allow default 0 [log-all]" },
	{ 0, "set-tags", "{\"tags\": []}", U, G, L,
	  "allow default 0 [log-all]" },
	{ 0, "system_reset", NULL, U, G, L, "deny no-args 0 []" },
	{ 0, "system_reset", "{}", U, G, L, "deny no-args 0 []" },
	{ 0, "system_reset", "{\"x\": 1}", U, G, L,
	  "deny no-args 0 []" },
	{ 0, "quit", NULL, U, 51, L, "deny gid 0 []" },
	{ 0, "quit", NULL, U, G, L, "allow default 0 [log-all]" },
	{ 0, "system_powerdown", NULL, U, G, "/run/qb/ro-1.sock",
	  "deny listener 0 []" },
	{ 0, "system_powerdown", NULL, U, G, L,
	  "allow default 0 [log-all]" },
	{ 0, "query-cpus-fast", NULL, U, G, L, "deny first 0 [log-q]" },
	{ 0, "query-status", NULL, U, G, L,
	  "allow default 0 [log-q,log-q2,log-all]" },
	{ 0, "numbers", "{\"n\": 1, \"b\": false, \"z\": null, \"o\": 2}",
	  U, G, L, "deny num 0 []" },
	{ 0, "numbers", "{\"n\": 2, \"b\": false, \"z\": null}", U, G, L,
	  "allow default 0 [log-all]" },
	{ 0, "numbers", "{\"n\": 1, \"b\": true, \"z\": null}", U, G, L,
	  "allow default 0 [log-all]" },
	{ 0, "numbers", "{\"n\": 1, \"b\": false}", U, G, L,
	  "allow default 0 [log-all]" },
	{ 0, "numbers", "{\"n\": \"1\", \"b\": false, \"z\": null}", U, G, L,
	  "allow default 0 [log-all]" },
	/* A transaction: its actions are names too. */
	{ 0, "transaction", "{\"actions\": [{\"type\": \"abort\"},"
	  " {\"type\": \"drive-backup\", \"data\": {\"device\": \"vda\"}}]}",
	  U, G, L, "deny tx-deny 2 [log-all]" },
	{ 0, "transaction", "{\"actions\": [{\"type\": \"drive-backup\"},"
	  " {\"type\": \"abort\"}]}", U, G, L,
	  "deny tx-deny 1 [log-all]" },
	{ 0, "transaction", "{\"actions\": [{\"type\": \"snapshot-x\"}]}",
	  U, G, L, "deny tx-translate 1 [log-all]" },
	{ 0, "transaction", "{\"actions\": [{\"type\": \"abort\"}]}", U, G, L,
	  "rewrite rw-action 1 [log-all]" },
	{ 0, "transaction", "{\"actions\": []}", U, G, L,
	  "allow default 0 [log-all]" },
	{ 0, "transaction", NULL, U, G, L, "allow default 0 [log-all]" },
	{ 0, "rw-me", NULL, U, G, L, "rewrite rw 0 []" },
	/* HMP: the command word, aliases resolved. */
	{ 0, HMC, "{\"command-line\": \"  s\"}", U, G, L,
	  "deny hmp-stop 1 [log-all]" },
	{ 0, HMC, "{\"command-line\": \"stop\"}", U, G, L,
	  "deny hmp-stop 1 [log-all]" },
	{ 0, HMC, "{\"command-line\": \"c 1\"}", U, G, L,
	  "deny hmp-stop 1 [log-all]" },
	{ 0, HMC, "{\"command-line\": \"stopx\"}", U, G, L,
	  "allow default 0 [log-all,log-all]" },
	{ 0, HMC, "{\"command-line\": \"q\"}", 0, G, L,
	  "deny hmp-quit 1 [log-all]" },
	{ 0, HMC, "{\"command-line\": \"q\"}", U, G, L,
	  "allow default 0 [log-all,log-all]" },
	{ 0, HMC, "{\"command-line\": \"p 1+1\"}", U, G, L,
	  "allow default 0 [log-all,hmp-print,log-all]" },
	{ 0, HMC, "{\"command-line\": \"?\"}", U, G, L,
	  "rewrite hmp-help 1 [log-all]" },
	{ 0, HMC, "{\"command-line\": \"savevm snap1\"}", U, G, L,
	  "translate translate 1 [log-all]" },
	/* QEMU ends the command word at a slash: "savevm/x" is savevm. */
	{ 0, HMC, "{\"command-line\": \"savevm/x\"}", U, G, L,
	  "translate translate 1 [log-all]" },
	{ 0, HMC, "{\"command-line\": \"s/x\"}", U, G, L,
	  "deny hmp-stop 1 [log-all]" },
	{ 0, HMC, "{\"command-line\": \"info status\"}", 7, G, L,
	  "deny deny-hmp-any 1 [log-all,log-all]" },
	{ 0, HMC, "{\"command-line\": \"   \"}", 7, G, L,
	  "allow default 0 [log-all]" },
	{ 0, HMC, NULL, 7, G, L, "allow default 0 [log-all]" },
	/* A deny default. */
	{ 1, "query-status", NULL, U, G, L, "allow q 0 []" },
	{ 1, "stop", NULL, U, G, L, "deny default 0 []" },
	{ 1, "transaction", "{\"actions\": [{\"type\": \"abort\"}]}", U, G, L,
	  "deny default 0 []" },
	{ 1, HMC, "{\"command-line\": \"info status\"}", U, G, L,
	  "deny default 0 []" },
};

/* "action rule subject [logged,...]" of a decision. */
static char *
describe(struct rule_set *set, const struct rule_decision *d)
{
	struct buf	 b = { NULL, 0, 0 };
	char		 num[32];
	size_t		 i;

	buf_addstr(&b, rule_action_name(d->action));
	buf_addstr(&b, " ");
	buf_addstr(&b, d->rule == &set->deflt ? "default" :
	    d->rule->name != NULL ? d->rule->name : d->rule->where);
	snprintf(num, sizeof num, " %zu [", d->subject);
	buf_addstr(&b, num);
	for (i = 0; i < d->nlogged; i++) {
		buf_addstr(&b, i > 0 ? "," : "");
		buf_addstr(&b, d->logged[i]->name);
	}
	buf_addstr(&b, "]");
	return b.data;
}

/* Decides one request; the description is returned, to be freed. */
static char *
decide(struct rule_set *set, const char *cmd, json_t *args, unsigned uid,
    unsigned gid, const char *listener, struct rule_decision *d,
    size_t *nsubj)
{
	struct rule_subject	*subj;
	struct rule_peer	 peer;
	char			**names, *s;
	size_t			 n, i;

	n = rules_count_subjects(cmd, args);
	subj = xcalloc(n, sizeof *subj);
	names = xcalloc(n, sizeof *names);
	n = rules_subjects(cmd, args, subj, names);
	peer.uid = uid;
	peer.gid = gid;
	peer.listener = listener;
	rules_decide(set, subj, n, &peer, d);
	s = describe(set, d);
	for (i = 0; i < n; i++)
		free(names[i]);
	free(names);
	free(subj);
	if (nsubj != NULL)
		*nsubj = n;
	return s;
}

static json_t *
j(const char *text)
{
	json_error_t	 e;
	json_t		*v;

	if (text == NULL)
		return NULL;
	if ((v = json_loads(text, JSON_DECODE_ANY, &e)) == NULL)
		fatalx("bad test JSON %s: %s", text, e.text);
	return v;
}

static void
test_decisions(void)
{
	struct rule_set		*sets[2];
	struct rule_decision	 d;
	struct rule_subject	 subj[4];
	json_t			*args;
	char			*path, *cause = NULL, *got, *names[4];
	size_t			 i, n;

	path = put("match.json", match_rules);
	sets[0] = rules_load(path, handlers, &cause);
	if (sets[0] == NULL)
		fatalx("match.json: %s", cause);
	free(path);
	path = put("deny.json", deny_rules);
	sets[1] = rules_load(path, handlers, &cause);
	if (sets[1] == NULL)
		fatalx("deny.json: %s", cause);
	free(path);

	for (i = 0; i < sizeof decisions / sizeof decisions[0]; i++) {
		args = j(decisions[i].args);
		got = decide(sets[decisions[i].set], decisions[i].cmd, args,
		    decisions[i].uid, decisions[i].gid, decisions[i].listener,
		    &d, NULL);
		ok(strcmp(got, decisions[i].want) == 0, "%s %s uid %u gid %u "
		    "%s: %s", decisions[i].cmd, decisions[i].args != NULL ?
		    decisions[i].args : "-", decisions[i].uid,
		    decisions[i].gid, decisions[i].listener, got);
		if (strcmp(got, decisions[i].want) != 0)
			diag("wanted: %s", decisions[i].want);
		free(got);
		rules_decision_clear(&d);
		json_decref(args);
	}

	/* The subjects themselves. */
	args = j("{\"actions\": [{\"type\": \"abort\", \"data\": {\"a\": 1}},"
	    " {\"data\": {}}, {\"type\": \"drive-backup\"}]}");
	n = rules_count_subjects("transaction", args);
	ok(n == 4, "a transaction of three actions counts 4 names: %zu", n);
	n = rules_subjects("transaction", args, subj, names);
	ok(n == 3 && names[0] == NULL && subj[0].kind ==
	    RULE_SUBJECT_COMMAND && subj[0].args == args &&
	    strcmp(subj[1].name, "transaction/abort") == 0 &&
	    subj[1].kind == RULE_SUBJECT_ACTION &&
	    json_integer_value(json_object_get(subj[1].args, "a")) == 1 &&
	    strcmp(subj[2].name, "transaction/drive-backup") == 0 &&
	    subj[2].args == NULL,
	    "transaction/<type> for each typed action, with its data");
	while (n-- > 1)
		free(names[n]);
	json_decref(args);
	args = j("{\"command-line\": \"\\tp/x 5\"}");
	n = rules_subjects(HMC, args, subj, names);
	ok(n == 2 && strcmp(subj[1].name, "hmp/print") == 0 &&
	    subj[1].kind == RULE_SUBJECT_HMP && subj[1].args == args,
	    "hmp/<word> of a command line: %s", n == 2 ? subj[1].name : "-");
	while (n-- > 1)
		free(names[n]);
	json_decref(args);

	/* The rewrite of each subject, also when the request is denied. */
	args = j("{\"actions\": [{\"type\": \"abort\"}, {\"type\": \"x\"},"
	    " {\"type\": \"abort\"}, {\"type\": \"drive-backup\"}]}");
	got = decide(sets[0], "transaction", args, U, G, L, &d, &n);
	ok(n == 5 && d.action == RULE_DENY && d.subject == 4 &&
	    d.rewrite != NULL && d.rewrite[0] == NULL &&
	    d.rewrite[1] != NULL && strcmp(d.rewrite[1]->name,
	    "rw-action") == 0 && d.rewrite[2] == NULL &&
	    d.rewrite[3] == d.rewrite[1] && d.rewrite[4] == NULL,
	    "rewrites are recorded per subject: %s", got);
	free(got);
	rules_decision_clear(&d);
	json_decref(args);
	got = decide(sets[0], "stop", NULL, U, G, L, &d, NULL);
	ok(d.rewrite == NULL && strcmp(d.rule->err_class, "GenericError") == 0,
	    "no rewrite, no list; a deny without a class is GenericError");
	free(got);
	rules_decision_clear(&d);
	got = decide(sets[0], "blockdev-snapshot-sync", NULL, U, G, L, &d,
	    NULL);
	ok(strcmp(d.rule->err_class, "DeviceNotFound") == 0,
	    "a deny rule's class");
	free(got);
	rules_decision_clear(&d);
	got = decide(sets[1], "stop", NULL, U, G, L, &d, NULL);
	ok(strcmp(d.rule->err_class, "CommandNotFound") == 0,
	    "the deny default's class");
	free(got);
	rules_decision_clear(&d);

	ok(rules_need_args(sets[0], "device_add") == 1 &&
	    rules_need_args(sets[0], "system_reset") == 1 &&
	    rules_need_args(sets[0], "stop") == 0,
	    "rules_need_args knows which names look at arguments");

	rules_free(sets[0]);
	rules_free(sets[1]);
}

static void
test_many_logs(void)
{
	struct rule_set		*set;
	struct rule_decision	 d;
	struct buf		 b = { NULL, 0, 0 };
	char			*path, *cause = NULL, *got;
	int			 i;

	buf_addstr(&b, "{\"default\": \"deny\", \"rules\": [");
	for (i = 0; i < 10; i++)
		buf_addstr(&b, "{\"name\": \"l\", \"action\": \"log\"},");
	buf_addstr(&b, "{\"name\": \"a\", \"action\": \"allow\"}]}");
	path = put("logs.json", b.data);
	buf_free(&b);
	set = rules_load(path, handlers, &cause);
	if (set == NULL)
		fatalx("logs.json: %s", cause);
	got = decide(set, "x", NULL, U, G, L, &d, NULL);
	ok(strcmp(got, "allow a 0 [l,l,l,l,l,l,l,l]") == 0,
	    "log rules past RULES_MAX_LOGGED are not kept, matching goes "
	    "on: %s", got);
	free(got);
	rules_decision_clear(&d);
	rules_free(set);
	free(path);
}

static void
test_shipped_decisions(const char *rdir)
{
	static const struct {
		const char	*file;
		const char	*cmd;
		const char	*args;
		const char	*want;
	} cases[] = {
		{ "default.json", "blockdev-snapshot-sync", "{\"device\": "
		  "\"vda\", \"snapshot-file\": \"/x\"}",
		  "deny chain-commands 0 []" },
		{ "default.json", "transaction", "{\"actions\": [{\"type\": "
		  "\"blockdev-snapshot-sync\", \"data\": {\"device\": "
		  "\"vda\"}}]}", "deny chain-actions 1 []" },
		{ "default.json", HMC, "{\"command-line\": \"snapshot_blkdev "
		  "vda /x.qcow2\"}", "deny chain-hmp 1 []" },
		{ "default.json", "query-status", NULL, "allow default 0 []" },
		{ "default.json", "blockdev-del", "{\"node-name\": \"n\"}",
		  "deny chain-commands 0 []" },
		{ "read-only.json", "query-status", NULL,
		  "allow read-only.json:8 0 []" },
		{ "read-only.json", "qom-get", "{\"path\": \"/\", "
		  "\"property\": \"type\"}", "allow read-only.json:8 0 []" },
		{ "read-only.json", "qbranch-query-snapshots", NULL,
		  "allow read-only.json:8 0 []" },
		{ "read-only.json", "stop", NULL, "deny default 0 []" },
		{ "read-only.json", HMC, "{\"command-line\": \"info status\"}",
		  "deny default 0 []" },
		{ "transparent.json", HMC, "{\"command-line\": \"savevm s1\"}",
		  "translate transparent.json:5 1 []" },
		{ "transparent.json", "snapshot-save", "{\"job-id\": \"j\", "
		  "\"tag\": \"t\", \"vmstate\": \"vda\", \"devices\": "
		  "[\"vda\"]}", "translate transparent.json:20 0 []" },
		{ "transparent.json", "blockdev-del", "{\"node-name\": \"n\"}",
		  "deny chain-commands 0 []" },
		{ "transparent.json", HMC, "{\"command-line\": \"commit vda\"}",
		  "deny chain-hmp 1 []" },
		{ "transparent.json", "query-status", NULL,
		  "allow default 0 []" },
	};
	struct rule_set		*set;
	struct rule_decision	 d;
	json_t			*args;
	char			*path, *cause, *got;
	size_t			 i;

	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		cause = NULL;
		xasprintf(&path, "%s/%s", rdir, cases[i].file);
		if ((set = rules_load(path, handlers, &cause)) == NULL) {
			ok(0, "%s: %s", path, cause);
			free(cause);
			free(path);
			continue;
		}
		args = j(cases[i].args);
		got = decide(set, cases[i].cmd, args, U, G, L, &d, NULL);
		ok(strcmp(got, cases[i].want) == 0, "%s: %s %s: %s",
		    cases[i].file, cases[i].cmd, cases[i].args != NULL ?
		    cases[i].args : "-", got);
		if (strcmp(got, cases[i].want) != 0)
			diag("wanted: %s", cases[i].want);
		free(got);
		rules_decision_clear(&d);
		json_decref(args);
		rules_free(set);
		free(path);
	}
}

static void
test_json_match(void)
{
	static const struct {
		const char	*pattern;
		const char	*value;	/* NULL: no value */
		int		 want;
	} cases[] = {
		{ "{\"a\": \"x*\"}", "{\"a\": \"xyz\", \"b\": 1}", 1 },
		{ "{\"a\": \"x*\"}", "{\"a\": \"yx\"}", 0 },
		{ "{\"a\": \"x*\"}", "{\"b\": \"x\"}", 0 },
		{ "{\"a\": {\"b\": [1]}}", "{\"a\": {\"b\": [2, 1]}}", 1 },
		{ "{\"a\": {\"b\": [1]}}", "{\"a\": {\"b\": [2]}}", 0 },
		{ "{\"a\": 1}", "{\"a\": \"1\"}", 0 },
		{ "{\"a\": \"1\"}", "{\"a\": 1}", 0 },
		{ "{}", "{\"a\": 1}", 1 },
		{ "{}", "[]", 0 },
		{ "\"*\"", "5", 0 },
		{ "\"vd[ab]\"", "\"vdb\"", 1 },
		{ "\"vd[ab]\"", "\"vdc\"", 0 },
		{ "[]", "[]", 1 },
		{ "[]", "[1]", 1 },
		{ "[1]", "[]", 0 },
		{ "[1]", "{\"0\": 1}", 0 },
		{ "[\"a\", \"a\"]", "[\"a\"]", 1 },
		{ "[\"a*\", \"b\"]", "[\"b\", \"c\", \"ab\"]", 1 },
		{ "[{\"t\": \"x\"}]", "[{\"t\": \"x\", \"u\": 1}]", 1 },
		{ "[[1]]", "[[2], [3, 1]]", 1 },
		{ "true", "true", 1 },
		{ "true", "false", 0 },
		{ "true", "1", 0 },
		{ "null", "null", 1 },
		{ "null", "false", 0 },
		{ "3", "3", 1 },
		{ "3", "4", 0 },
		{ "2.5", "2.5", 1 },
		{ "{\"a\": null}", "{}", 0 },
		{ "{\"a\": 1}", NULL, 0 },
	};
	json_t	*p, *v;
	size_t	 i;
	int	 got;

	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		p = j(cases[i].pattern);
		v = j(cases[i].value);
		got = rules_json_match(p, v);
		ok(got == cases[i].want, "match %s against %s: %d",
		    cases[i].pattern, cases[i].value != NULL ?
		    cases[i].value : "nothing", got);
		json_decref(p);
		json_decref(v);
	}
}

static void
test_json_locate(void)
{
	static const char text[] =
	    "{\"a\": 1,\n"
	    " \"b\": {\"c\": [10, \"x}]\\\"{\", {\"d\": true}]},\n"
	    " \"e\": [[1, 2], [3]]}";
	static const char text2[] =
	    "{\"x\": \"\\\"a\\\": 5\", \"a\": 6, \"y\": \"a\\\\\", \"z\": 1}";
#define K(s)	{ s, 0 }
#define I(n)	{ NULL, n }
	static const struct {
		const char		*text;
		struct json_step	 path[4];
		size_t			 npath;
		int			 line, col;
	} cases[] = {
		{ text, { K("a") }, 0, 1, 1 },
		{ text, { K("a") }, 1, 1, 7 },
		{ text, { K("b") }, 1, 2, 7 },
		{ text, { K("b"), K("c") }, 2, 2, 13 },
		{ text, { K("b"), K("c"), I(0) }, 3, 2, 14 },
		{ text, { K("b"), K("c"), I(1) }, 3, 2, 18 },
		{ text, { K("b"), K("c"), I(2) }, 3, 2, 28 },
		{ text, { K("b"), K("c"), I(2), K("d") }, 4, 2, 34 },
		{ text, { K("e") }, 1, 3, 7 },
		{ text, { K("e"), I(1) }, 2, 3, 16 },
		{ text, { K("e"), I(1), I(0) }, 3, 3, 17 },
		/* Steps that cannot be followed: the deepest found. */
		{ text, { K("b"), K("zz") }, 2, 2, 7 },
		{ text, { K("b"), K("c"), I(5) }, 3, 2, 13 },
		{ text, { K("a"), K("x") }, 2, 1, 7 },
		{ text, { K("e"), K("x") }, 2, 3, 7 },
		{ text, { K("b"), I(0) }, 2, 2, 7 },
		{ text, { K("zz"), K("c") }, 2, 1, 1 },
		{ text, { K("b"), K("c"), I(1), I(0) }, 4, 2, 18 },
		{ text, { K("e"), I(1), I(1) }, 3, 3, 16 },
		/* Quotes and backslashes inside strings are skipped. */
		{ text2, { K("a") }, 1, 1, 24 },
		{ text2, { K("y") }, 1, 1, 32 },
		{ text2, { K("z") }, 1, 1, 44 },
		{ "  \n\t[ ]", { I(0) }, 1, 2, 2 },
		{ "{}", { K("a") }, 1, 1, 1 },
	};
#undef K
#undef I
	size_t	 i;
	int	 line, col;

	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		json_locate(cases[i].text, strlen(cases[i].text),
		    cases[i].path, cases[i].npath, &line, &col);
		ok(line == cases[i].line && col == cases[i].col,
		    "json_locate case %zu: %d:%d, wanted %d:%d", i, line, col,
		    cases[i].line, cases[i].col);
	}
}

static void
test_hmp(void)
{
	static const struct {
		const char	*line;
		const char	*cmd;	/* NULL: none */
		const char	*rest;
	} cmds[] = {
		{ "  savevm  foo bar", "savevm", "foo bar" },
		{ "\t info snapshots ", "info", "snapshots " },
		{ "s", "stop", "" },
		{ "c", "cont", "" },
		{ "q", "quit", "" },
		{ "p $pc", "print", "$pc" },
		{ "?", "help", "" },
		{ "? info", "help", "info" },
		{ "sx", "sx", "" },
		{ "stop", "stop", "" },
		{ "help", "help", "" },
		{ "x/4i $pc", "x", "/4i $pc" },
		{ "p/x 16", "print", "/x 16" },
		{ "savevm/a", "savevm", "/a" },
		{ "/a", NULL, NULL },
		{ "", NULL, NULL },
		{ "  \t\n", NULL, NULL },
	};
	static const struct {
		const char	*rest;
		int		 max;
		int		 want;
		const char	*words[3];
	} words[] = {
		{ "a bc  d", 3, 3, { "a", "bc", "d" } },
		{ "  a\tb ", 3, 2, { "a", "b" } },
		{ "\"a b\" c", 3, 2, { "a b", "c" } },
		{ "\"q\\\"x\" \"b\\\\s\" \"l\\nm\"", 3, 3,
		  { "q\"x", "b\\s", "l\nm" } },
		{ "\"c\\rr\"", 3, 1, { "c\rr" } },
		{ "\"\"", 3, 1, { "" } },
		{ "a \"b c\"d", 3, 3, { "a", "b c", "d" } },
		{ "a b c d e", 2, 5, { "a", "b" } },
		{ "", 3, 0, { NULL } },
		{ "   ", 3, 0, { NULL } },
		{ "a \"abc", 3, -1, { NULL } },
		{ "\"ab\\", 3, -1, { NULL } },
		{ "\"ab\\\"", 3, -1, { NULL } },
	};
	char		*cmd, *w[3];
	const char	*rest;
	size_t		 i;
	int		 n, k, same;

	for (i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
		rest = NULL;
		cmd = hmp_command(cmds[i].line, &rest);
		if (cmds[i].cmd == NULL)
			ok(cmd == NULL, "hmp_command \"%s\": no command",
			    cmds[i].line);
		else
			ok(cmd != NULL && strcmp(cmd, cmds[i].cmd) == 0 &&
			    rest != NULL && strcmp(rest, cmds[i].rest) == 0,
			    "hmp_command \"%s\": \"%s\" rest \"%s\"",
			    cmds[i].line, cmd != NULL ? cmd : "(null)",
			    rest != NULL ? rest : "(null)");
		free(cmd);
	}
	cmd = hmp_command("  cont now", NULL);
	ok(cmd != NULL && strcmp(cmd, "cont") == 0,
	    "hmp_command without rest");
	free(cmd);

	for (i = 0; i < sizeof words / sizeof words[0]; i++) {
		memset(w, 0, sizeof w);
		n = hmp_words(words[i].rest, w, words[i].max);
		same = n == words[i].want;
		for (k = 0; same && k < n && k < words[i].max; k++)
			same = w[k] != NULL && strcmp(w[k], words[i].words[k]) ==
			    0;
		ok(same, "hmp_words '%s': %d", words[i].rest, n);
		for (k = 0; k < n && k < words[i].max; k++)
			free(w[k]);
	}
}

/* Expected by construction: see cache_rules. */
static const char *
cache_want(const char *name, int *need_args)
{
	size_t	len = strlen(name);

	*need_args = name[len - 1] == '5';
	if (strncmp(name, "n-1", 3) == 0)
		return "deny ones 0 []";
	if (name[len - 1] == '7')
		return "rewrite sevens 0 []";
	/* Names ending in 5 have an argument rule, but no arguments. */
	return "allow default 0 []";
}

static void
test_cache(void)
{
	static const char cache_rules[] =
	    "{\"default\": \"allow\", \"rules\": [\n"
	    "{\"name\": \"ones\", \"command\": \"n-1*\", \"action\": \"deny\"},\n"
	    "{\"name\": \"sevens\", \"command\": \"n-*7\","
	    " \"action\": \"rewrite\", \"merge\": {\"x\": 1}},\n"
	    "{\"name\": \"fives\", \"command\": \"n-*5\","
	    " \"arguments\": {\"k\": 1}, \"action\": \"deny\"}\n"
	    "]}\n";
	struct rule_set		*set;
	struct rule_decision	 d;
	struct buf		 b = { NULL, 0, 0 };
	json_t			*args;
	char			*path, *cause = NULL, *got, name[32];
	const char		*want;
	size_t			 n;
	int			 pass, i, bad, need, maxfill;

	path = put("cache.json", cache_rules);
	if ((set = rules_load(path, handlers, &cause)) == NULL)
		fatalx("cache.json: %s", cause);
	free(path);

	bad = 0;
	for (i = 0; i < 1000; i++) {
		got = decide(set, "n-17", NULL, U, G, L, &d, NULL);
		bad += strcmp(got, "deny ones 0 []") != 0;
		free(got);
		rules_decision_clear(&d);
	}
	ok(bad == 0 && set->ncached == 1,
	    "one name decided 1000 times: %d wrong, %zu cached", bad,
	    set->ncached);

	/* 1000 names, twice: the cache refills several times. */
	bad = 0;
	maxfill = 0;
	for (pass = 0; pass < 2; pass++) {
		for (i = 0; i < 1000; i++) {
			snprintf(name, sizeof name, "n-%d", i);
			want = cache_want(name, &need);
			got = decide(set, name, NULL, U, G, L, &d, NULL);
			/* Before rules_need_args: a full cache clears. */
			if ((int)set->ncached > maxfill)
				maxfill = set->ncached;
			if (strcmp(got, want) != 0 ||
			    rules_need_args(set, name) != need) {
				if (bad++ < 5)
					diag("%s: %s, wanted %s", name, got,
					    want);
			}
			free(got);
			rules_decision_clear(&d);
		}
	}
	ok(bad == 0, "2000 decisions over 1000 names: %d wrong", bad);
	ok(maxfill == 384, "the cache holds up to 384 names: %d", maxfill);

	args = j("{\"k\": 1}");
	got = decide(set, "n-25", args, U, G, L, &d, NULL);
	ok(strcmp(got, "deny fives 0 []") == 0,
	    "an argument rule after the refills: %s", got);
	free(got);
	rules_decision_clear(&d);
	json_decref(args);

	/*
	 * One transaction whose 500 actions refill the cache during a single
	 * decision; the denied one is near the end.
	 */
	buf_addstr(&b, "{\"actions\": [");
	for (i = 0; i < 500; i++) {
		snprintf(name, sizeof name, "%s{\"type\": \"t-%d\"}",
		    i > 0 ? ", " : "", i == 450 ? -1 : i);
		buf_addstr(&b, name);
	}
	buf_addstr(&b, "]}");
	args = j(b.data);
	buf_free(&b);
	rules_free(set);
	path = put("cache-tx.json", "{\"default\": \"allow\", \"rules\": ["
	    "{\"name\": \"neg\", \"command\": \"transaction/t--*\","
	    " \"action\": \"deny\"},"
	    "{\"name\": \"odd\", \"command\": \"transaction/t-*[13579]\","
	    " \"action\": \"rewrite\", \"replace\": {}}]}");
	if ((set = rules_load(path, handlers, &cause)) == NULL)
		fatalx("cache-tx.json: %s", cause);
	free(path);
	got = decide(set, "transaction", args, U, G, L, &d, &n);
	bad = 0;
	for (i = 1; i <= 500; i++) {
		need = (i - 1) % 2 == 1 && i - 1 != 450;
		if ((d.rewrite != NULL && d.rewrite[i] != NULL) != need)
			bad++;
	}
	ok(n == 501 && strcmp(got, "deny neg 451 []") == 0 && bad == 0,
	    "a 500-action transaction across refills: %s, %d rewrites "
	    "wrong", got, bad);
	free(got);
	rules_decision_clear(&d);
	json_decref(args);
	rules_free(set);
}

static void
cleanup(void)
{
	char	*p;

	while (nmade > 0) {
		unlink(made[--nmade]);
		free(made[nmade]);
	}
	xasprintf(&p, "%s/sub", dir);
	rmdir(p);
	free(p);
	rmdir(dir);
}

int
main(void)
{
	const char	*tmp, *rdir;

	if ((tmp = getenv("TMPDIR")) == NULL || *tmp == '\0')
		tmp = "/tmp";
	snprintf(dir, sizeof dir, "%s/test-rules.XXXXXX", tmp);
	if (mkdtemp(dir) == NULL)
		fatal("mkdtemp");
	/* make check sets it; by hand, run from the top of the tree. */
	if ((rdir = getenv("QBRANCHD_RULES_DIR")) == NULL || *rdir == '\0')
		rdir = "rules";

	test_parse_errors();
	test_includes();
	test_good_files();
	test_shipped_load(rdir);
	test_decisions();
	test_many_logs();
	test_shipped_decisions(rdir);
	test_json_match();
	test_json_locate();
	test_hmp();
	test_cache();
	cleanup();
	return tap_done();
}
