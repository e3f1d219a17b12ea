/*
 * rules.c: rule sets, read from JSON files and checked with a position for
 * every mistake. A rule set is an ordered list of rules and a default;
 * rules-match.c decides requests with them.
 *
 *	{ "default": "allow",
 *	  "rules": [
 *	    { "include": "default.json" },
 *	    { "command": "hmp/savevm", "action": "translate",
 *	      "handler": "savevm" },
 *	    { "command": ["stop", "hmp/stop"], "uid": 1000,
 *	      "action": "deny", "message": "not for you" } ] }
 */
#include <sys/stat.h>
#include <sys/types.h>

#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "qbranch.h"

#define RULES_MAX_INCLUDE	8	/* nesting of includes */
#define RULES_MAX_DEPTH		16	/* of the path to a value */
#define RULES_MAX_FILE		(4u << 20)

/* Where an include of a bare name looks when it is not beside the file. */
const char	*rules_shipped_dir;

/* QEMU's error classes (qapi/error.json). */
static const char *const rule_classes[] = {
	"GenericError", "CommandNotFound", "DeviceNotActive", "DeviceNotFound",
	"KVMMissingCap", NULL
};

static const char *const rule_actions[] = {
	[RULE_ALLOW] = "allow",
	[RULE_DENY] = "deny",
	[RULE_REWRITE] = "rewrite",
	[RULE_TRANSLATE] = "translate",
	[RULE_LOG] = "log",
	NULL				/* word_index() and word_list() stop */
};

/* The file being read, and the path to the value at hand. */
struct rules_reader {
	const char		*file;
	const char		*text;
	size_t			 len;
	struct json_step	 path[RULES_MAX_DEPTH];
	size_t			 depth;
	const char *const	*handlers;
	int			 nesting;
	char			*error;
};

const char *
rule_action_name(enum rule_action a)
{
	return rule_actions[a];
}

static void	rule_clear(struct rule *);

/* Records the first error, at the value the path leads to. */
static int __attribute__((format(printf, 2, 3)))
reader_error(struct rules_reader *r, const char *fmt, ...)
{
	va_list	 ap;
	char	*msg;
	int	 line, col;

	if (r->error != NULL)
		return -1;
	va_start(ap, fmt);
	if (vasprintf(&msg, fmt, ap) == -1)
		fatal("vasprintf");
	va_end(ap);
	json_locate(r->text, r->len, r->path, r->depth, &line, &col);
	xasprintf(&r->error, "%s:%d:%d: %s", r->file, line, col, msg);
	free(msg);
	return -1;
}

static void
reader_push_key(struct rules_reader *r, const char *key)
{
	if (r->depth < RULES_MAX_DEPTH) {
		r->path[r->depth].key = key;
		r->path[r->depth].index = 0;
	}
	r->depth++;
}

static void
reader_push_index(struct rules_reader *r, size_t i)
{
	if (r->depth < RULES_MAX_DEPTH) {
		r->path[r->depth].key = NULL;
		r->path[r->depth].index = i;
	}
	r->depth++;
}

static void
reader_pop(struct rules_reader *r)
{
	r->depth--;
}

static int
word_index(const char *const *words, const char *w)
{
	int	i;

	for (i = 0; words[i] != NULL; i++) {
		if (strcmp(words[i], w) == 0)
			return i;
	}
	return -1;
}

static char *
word_list(const char *const *words)
{
	struct buf	b = { NULL, 0, 0 };
	int		i;

	buf_addstr(&b, "");
	for (i = 0; words[i] != NULL; i++) {
		buf_addstr(&b, i > 0 ? ", " : "");
		buf_addstr(&b, words[i]);
	}
	return b.data;
}

/* Refuses keys not in known[], naming the first stranger. */
static int
check_keys(struct rules_reader *r, json_t *obj, const char *what,
    const char *const *known)
{
	const char	*key;
	json_t		*v;
	char		*list;

	json_object_foreach(obj, key, v) {
		if (word_index(known, key) != -1)
			continue;
		reader_push_key(r, key);
		list = word_list(known);
		reader_error(r, "unknown key '%s' in %s (known: %s)", key, what,
		    list);
		free(list);
		reader_pop(r);
		return -1;
	}
	return 0;
}

/* A string, or a non-empty array of strings, as a new list. */
static int
read_strings(struct rules_reader *r, json_t *obj, const char *key,
    char ***out, size_t *n)
{
	json_t	*v = json_object_get(obj, key), *e;
	size_t	 i;

	*out = NULL;
	*n = 0;
	if (v == NULL)
		return 0;
	reader_push_key(r, key);
	if (json_is_string(v) && json_string_length(v) > 0) {
		*out = xcalloc(1, sizeof **out);
		(*out)[0] = xstrdup(json_string_value(v));
		*n = 1;
	} else if (json_is_array(v) && json_array_size(v) > 0) {
		*out = xcalloc(json_array_size(v), sizeof **out);
		json_array_foreach(v, i, e) {
			reader_push_index(r, i);
			if (!json_is_string(e) || json_string_length(e) == 0) {
				reader_error(r, "'%s' takes non-empty strings",
				    key);
				reader_pop(r);
				break;
			}
			(*out)[(*n)++] = xstrdup(json_string_value(e));
			reader_pop(r);
		}
	} else
		reader_error(r, "'%s' takes a non-empty string or a non-empty "
		    "array of them", key);
	reader_pop(r);
	return r->error != NULL ? -1 : 0;
}

/* One user or group: a number, or a name looked up now. */
static int
read_id(struct rules_reader *r, const char *key, json_t *v, unsigned *id)
{
	struct passwd	*pw;
	struct group	*gr;
	const char	*name;

	if (json_is_integer(v) && json_integer_value(v) >= 0 &&
	    json_integer_value(v) < UINT_MAX) {
		*id = json_integer_value(v);
		return 0;
	}
	if ((name = json_string_value(v)) == NULL)
		return reader_error(r, "'%s' takes a number or a name", key);
	if (strcmp(key, "uid") == 0) {
		if ((pw = getpwnam(name)) == NULL)
			return reader_error(r, "no user named '%s'", name);
		*id = pw->pw_uid;
	} else {
		if ((gr = getgrnam(name)) == NULL)
			return reader_error(r, "no group named '%s'", name);
		*id = gr->gr_gid;
	}
	return 0;
}

static int
read_ids(struct rules_reader *r, json_t *obj, const char *key,
    unsigned **out, size_t *n)
{
	json_t	*v = json_object_get(obj, key), *e;
	size_t	 i;

	*out = NULL;
	*n = 0;
	if (v == NULL)
		return 0;
	reader_push_key(r, key);
	if (!json_is_array(v)) {
		*out = xcalloc(1, sizeof **out);
		if (read_id(r, key, v, *out) == 0)
			*n = 1;
	} else if (json_array_size(v) == 0)
		reader_error(r, "'%s' takes at least one id", key);
	else {
		*out = xcalloc(json_array_size(v), sizeof **out);
		json_array_foreach(v, i, e) {
			reader_push_index(r, i);
			if (read_id(r, key, e, &(*out)[*n]) == 0)
				(*n)++;
			reader_pop(r);
			if (r->error != NULL)
				break;
		}
	}
	reader_pop(r);
	return r->error != NULL ? -1 : 0;
}

static int
read_object(struct rules_reader *r, json_t *obj, const char *key,
    json_t **out)
{
	json_t	*v = json_object_get(obj, key);

	*out = NULL;
	if (v == NULL)
		return 0;
	if (!json_is_object(v)) {
		reader_push_key(r, key);
		reader_error(r, "'%s' takes an object", key);
		reader_pop(r);
		return -1;
	}
	*out = json_incref(v);
	return 0;
}

static int
read_string(struct rules_reader *r, json_t *obj, const char *key, char **out)
{
	json_t	*v = json_object_get(obj, key);

	*out = NULL;
	if (v == NULL)
		return 0;
	if (!json_is_string(v) || json_string_length(v) == 0) {
		reader_push_key(r, key);
		reader_error(r, "'%s' takes a non-empty string", key);
		reader_pop(r);
		return -1;
	}
	*out = xstrdup(json_string_value(v));
	return 0;
}

/* Keys that belong to one action only. */
static const struct {
	const char		*key;
	enum rule_action	 action;
} action_keys[] = {
	{ "class", RULE_DENY },
	{ "message", RULE_DENY },
	{ "merge", RULE_REWRITE },
	{ "replace", RULE_REWRITE },
	{ "handler", RULE_TRANSLATE },
	{ "options", RULE_TRANSLATE },
};

/* The action and what goes with it, of a rule or a default. */
static int
read_action(struct rules_reader *r, json_t *obj, struct rule *rule,
    int is_default)
{
	json_t		*v;
	const char	*a;
	char		*list;
	size_t		 i;
	int		 k;

	v = json_object_get(obj, "action");
	if (v == NULL)
		return reader_error(r, "%s states no action",
		    is_default ? "the default" : "the rule");
	reader_push_key(r, "action");
	a = json_string_value(v);
	k = a != NULL ? word_index(rule_actions, a) : -1;
	if (k == -1 || (is_default && k != RULE_ALLOW && k != RULE_DENY)) {
		list = is_default ? xstrdup("allow, deny") :
		    word_list(rule_actions);
		reader_error(r, "unknown action%s%s%s (known: %s)",
		    a != NULL ? " '" : "", a != NULL ? a : "",
		    a != NULL ? "'" : "", list);
		free(list);
		reader_pop(r);
		return -1;
	}
	reader_pop(r);
	rule->action = k;
	for (i = 0; i < sizeof action_keys / sizeof action_keys[0]; i++) {
		if (json_object_get(obj, action_keys[i].key) == NULL ||
		    action_keys[i].action == rule->action)
			continue;
		reader_push_key(r, action_keys[i].key);
		reader_error(r, "'%s' belongs to a %s rule, not to %s",
		    action_keys[i].key, rule_actions[action_keys[i].action],
		    rule_actions[rule->action]);
		reader_pop(r);
		return -1;
	}
	if (read_string(r, obj, "class", &rule->err_class) == -1 ||
	    read_string(r, obj, "message", &rule->message) == -1 ||
	    read_object(r, obj, "merge", &rule->merge) == -1 ||
	    read_object(r, obj, "replace", &rule->replace) == -1 ||
	    read_string(r, obj, "handler", &rule->handler) == -1 ||
	    read_object(r, obj, "options", &rule->options) == -1)
		return -1;
	if (rule->err_class != NULL &&
	    word_index(rule_classes, rule->err_class) == -1) {
		reader_push_key(r, "class");
		list = word_list(rule_classes);
		reader_error(r, "unknown error class '%s' (QEMU's are: %s)",
		    rule->err_class, list);
		free(list);
		reader_pop(r);
		return -1;
	}
	if (rule->action == RULE_DENY && rule->err_class == NULL)
		rule->err_class = xstrdup("GenericError");
	if (rule->action == RULE_REWRITE &&
	    (rule->merge != NULL) == (rule->replace != NULL))
		return reader_error(r, "a rewrite rule takes one of 'merge' "
		    "and 'replace'");
	if (rule->action == RULE_TRANSLATE) {
		if (rule->handler == NULL)
			return reader_error(r, "a translate rule names its "
			    "'handler'");
		if (word_index(r->handlers, rule->handler) == -1) {
			reader_push_key(r, "handler");
			list = word_list(r->handlers);
			reader_error(r, "unknown handler '%s' (known: %s)",
			    rule->handler, list);
			free(list);
			reader_pop(r);
			return -1;
		}
	}
	return 0;
}

static const char *const rule_keys[] = {
	"name", "comment", "command", "arguments", "uid", "gid", "listener",
	"action", "class", "message", "merge", "replace", "handler", "options",
	NULL
};

static int
read_rule(struct rules_reader *r, json_t *obj, struct rule *rule)
{
	int	line, col;

	json_locate(r->text, r->len, r->path, r->depth, &line, &col);
	xasprintf(&rule->where, "%s:%d", strrchr(r->file, '/') != NULL ?
	    strrchr(r->file, '/') + 1 : r->file, line);
	if (check_keys(r, obj, "a rule", rule_keys) == -1 ||
	    read_string(r, obj, "name", &rule->name) == -1 ||
	    read_strings(r, obj, "command", &rule->commands,
	    &rule->ncommands) == -1 ||
	    read_object(r, obj, "arguments", &rule->arguments) == -1 ||
	    read_ids(r, obj, "uid", &rule->uids, &rule->nuids) == -1 ||
	    read_ids(r, obj, "gid", &rule->gids, &rule->ngids) == -1 ||
	    read_strings(r, obj, "listener", &rule->listeners,
	    &rule->nlisteners) == -1)
		return -1;
	return read_action(r, obj, rule, 0);
}

static int	read_file(struct rules_reader *, struct rule_set *, int);

/* An include: the other file's rules, in place; its default is unused. */
static int
read_include(struct rules_reader *r, json_t *obj, struct rule_set *set)
{
	static const char *const keys[] = { "include", "comment", NULL };
	struct rules_reader	 sub;
	const char		*name, *slash;
	char			*path;
	int			 ret;

	if (check_keys(r, obj, "an include", keys) == -1)
		return -1;
	reader_push_key(r, "include");
	if ((name = json_string_value(json_object_get(obj, "include"))) ==
	    NULL || *name == '\0') {
		reader_error(r, "'include' takes a file name");
		reader_pop(r);
		return -1;
	}
	if (r->nesting >= RULES_MAX_INCLUDE) {
		reader_error(r, "includes nest deeper than %d (a loop?)",
		    RULES_MAX_INCLUDE);
		reader_pop(r);
		return -1;
	}
	if (*name != '/' && (slash = strrchr(r->file, '/')) != NULL)
		xasprintf(&path, "%.*s/%s", (int)(slash - r->file), r->file,
		    name);
	else
		path = xstrdup(name);
	/* A bare name not beside the file is one of the shipped sets. */
	if (strchr(name, '/') == NULL && rules_shipped_dir != NULL &&
	    access(path, F_OK) == -1) {
		free(path);
		xasprintf(&path, "%s/%s", rules_shipped_dir, name);
	}
	memset(&sub, 0, sizeof sub);
	sub.file = path;
	sub.handlers = r->handlers;
	sub.nesting = r->nesting + 1;
	if ((ret = read_file(&sub, set, 0)) == -1)
		reader_error(r, "in the file included here: %s", sub.error);
	free(sub.error);
	free(path);
	reader_pop(r);
	return ret;
}

static int
read_rules(struct rules_reader *r, json_t *rules, struct rule_set *set)
{
	json_t	*obj;
	size_t	 i;

	reader_push_key(r, "rules");
	if (!json_is_array(rules)) {
		reader_error(r, "'rules' takes an array");
		reader_pop(r);
		return -1;
	}
	json_array_foreach(rules, i, obj) {
		reader_push_index(r, i);
		if (!json_is_object(obj))
			reader_error(r, "a rule is an object");
		else if (json_object_get(obj, "include") != NULL)
			read_include(r, obj, set);
		else {
			set->rules = xreallocarray(set->rules,
			    set->nrules + 1, sizeof *set->rules);
			memset(&set->rules[set->nrules], 0,
			    sizeof *set->rules);
			if (read_rule(r, obj, &set->rules[set->nrules++]) ==
			    -1) {
				rule_clear(&set->rules[--set->nrules]);
			}
		}
		reader_pop(r);
		if (r->error != NULL)
			return -1;
	}
	reader_pop(r);
	return 0;
}

static int
read_default(struct rules_reader *r, json_t *v, struct rule *d)
{
	static const char *const keys[] = {
		"action", "class", "message", "comment", NULL
	};
	json_t	*obj;
	int	 ret;

	reader_push_key(r, "default");
	if (json_is_string(v)) {
		/* Errors point at the string itself. */
		obj = json_pack("{s:O}", "action", v);
		ret = read_action(r, obj, d, 1);
		json_decref(obj);
	} else if (json_is_object(v))
		ret = check_keys(r, v, "the default", keys) == -1 ? -1 :
		    read_action(r, v, d, 1);
	else
		ret = reader_error(r, "'default' takes \"allow\", \"deny\" or "
		    "an object with an action");
	reader_pop(r);
	xasprintf(&d->where, "%s:default", strrchr(r->file, '/') != NULL ?
	    strrchr(r->file, '/') + 1 : r->file);
	return ret;
}

/* A whole file, up to RULES_MAX_FILE bytes, NUL-terminated. */
static char *
read_whole(const char *path, size_t *len, char **cause)
{
	struct stat	 st;
	char		*text;
	size_t		 n;
	FILE		*f;

	if ((f = fopen(path, "re")) == NULL) {
		*cause = xstrdup(strerror(errno));
		return NULL;
	}
	if (fstat(fileno(f), &st) == -1)
		*cause = xstrdup(strerror(errno));
	else if (!S_ISREG(st.st_mode))
		*cause = xstrdup("not a regular file");
	else if (st.st_size > RULES_MAX_FILE)
		*cause = xstrdup("larger than 4 MiB");
	else
		*cause = NULL;
	if (*cause != NULL) {
		fclose(f);
		return NULL;
	}
	text = xmalloc(st.st_size + 1);
	n = fread(text, 1, st.st_size, f);
	if (ferror(f)) {
		*cause = xstrdup(strerror(errno));
		fclose(f);
		free(text);
		return NULL;
	}
	fclose(f);
	text[n] = '\0';
	*len = n;
	return text;
}

/* Reads r->file into set: its rules, and its default when top is set. */
static int
read_file(struct rules_reader *r, struct rule_set *set, int top)
{
	static const char *const keys[] = {
		"default", "rules", "description", "comment", NULL
	};
	json_error_t	 jerr;
	json_t		*root = NULL, *v;
	char		*cause, *text;
	size_t		 len;
	int		 ret = -1;

	if ((text = read_whole(r->file, &len, &cause)) == NULL) {
		xasprintf(&r->error, "%s: %s", r->file, cause);
		free(cause);
		return -1;
	}
	r->text = text;
	r->len = len;
	root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
	if (root == NULL) {
		xasprintf(&r->error, "%s:%d:%d: %s", r->file, jerr.line,
		    jerr.column, jerr.text);
		goto out;
	}
	if (!json_is_object(root)) {
		reader_error(r, "a rule file holds one object");
		goto out;
	}
	if (check_keys(r, root, "a rule file", keys) == -1)
		goto out;
	if ((v = json_object_get(root, "default")) == NULL) {
		reader_error(r, "the file states no 'default' (\"allow\" or "
		    "\"deny\")");
		goto out;
	}
	if (top && read_default(r, v, &set->deflt) == -1)
		goto out;
	if ((v = json_object_get(root, "rules")) != NULL &&
	    read_rules(r, v, set) == -1)
		goto out;
	ret = 0;
out:
	json_decref(root);
	free(text);
	r->text = NULL;
	return ret;
}

/*
 * Reads a rule set from path. handlers lists the translate handlers that
 * exist. Returns NULL with an allocated "file:line:column: message".
 */
struct rule_set *
rules_load(const char *path, const char *const *handlers, char **cause)
{
	struct rules_reader	 r;
	struct rule_set		*set;

	memset(&r, 0, sizeof r);
	r.file = path;
	r.handlers = handlers;
	set = xcalloc(1, sizeof *set);
	set->path = xstrdup(path);
	if (read_file(&r, set, 1) == -1) {
		*cause = r.error;
		rules_free(set);
		return NULL;
	}
	return set;
}

static void
strings_free(char **v, size_t n)
{
	size_t	i;

	for (i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

static void
rule_clear(struct rule *rule)
{
	free(rule->where);
	free(rule->name);
	strings_free(rule->commands, rule->ncommands);
	json_decref(rule->arguments);
	free(rule->uids);
	free(rule->gids);
	strings_free(rule->listeners, rule->nlisteners);
	free(rule->err_class);
	free(rule->message);
	json_decref(rule->merge);
	json_decref(rule->replace);
	free(rule->handler);
	json_decref(rule->options);
	memset(rule, 0, sizeof *rule);
}

void
rules_free(struct rule_set *set)
{
	size_t	i;

	if (set == NULL)
		return;
	for (i = 0; i < set->nrules; i++)
		rule_clear(&set->rules[i]);
	free(set->rules);
	rule_clear(&set->deflt);
	rules_cache_clear(set);
	free(set->path);
	free(set);
}
