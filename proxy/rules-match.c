/*
 * rules-match.c: deciding a request with a rule set. A request shows one
 * name or more: its command, each transaction action as
 * transaction/<type>, and an HMP command line's command as hmp/<word>,
 * aliases resolved. Each name takes the first rule that matches it, log
 * rules aside (they record and go on); one denied name denies the whole
 * request, so nothing walks in through a side door.
 *
 * The rules a command name could match are worked out once per name and
 * rule set and kept, so a long rule set costs its globs only once.
 */
#include <fnmatch.h>
#include <stdlib.h>
#include <string.h>

#include "qbranch.h"

#define RULES_CACHE_SLOTS	512	/* a power of two */
#define RULES_CACHE_FILL	384	/* then it starts again */

struct rules_cache_entry {
	char		*name;
	uint32_t	 hash;
	size_t		*rules;		/* indexes of the candidates */
	size_t		 nrules;
};

static uint32_t
name_hash(const char *s)
{
	uint32_t	h = 2166136261u;

	for (; *s != '\0'; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h;
}

void
rules_cache_clear(struct rule_set *set)
{
	size_t	i;

	if (set->cache == NULL)
		return;
	for (i = 0; i < RULES_CACHE_SLOTS; i++) {
		free(set->cache[i].name);
		free(set->cache[i].rules);
	}
	free(set->cache);
	set->cache = NULL;
	set->ncached = 0;
}

static int
rule_names_match(const struct rule *rule, const char *name)
{
	size_t	i;

	if (rule->ncommands == 0)
		return 1;
	for (i = 0; i < rule->ncommands; i++) {
		if (fnmatch(rule->commands[i], name, 0) == 0)
			return 1;
	}
	return 0;
}

/* The rules whose command patterns take name, in order. */
static const struct rules_cache_entry *
rules_candidates(struct rule_set *set, const char *name)
{
	struct rules_cache_entry	*e;
	uint32_t			 h = name_hash(name);
	size_t				 slot, i;

	if (set->cache == NULL)
		set->cache = xcalloc(RULES_CACHE_SLOTS, sizeof *set->cache);
	for (slot = h & (RULES_CACHE_SLOTS - 1);;
	    slot = (slot + 1) & (RULES_CACHE_SLOTS - 1)) {
		e = &set->cache[slot];
		if (e->name == NULL)
			break;
		if (e->hash == h && strcmp(e->name, name) == 0)
			return e;
	}
	if (set->ncached >= RULES_CACHE_FILL) {
		/* Full: start again rather than probe ever longer. */
		rules_cache_clear(set);
		set->cache = xcalloc(RULES_CACHE_SLOTS, sizeof *set->cache);
		e = &set->cache[h & (RULES_CACHE_SLOTS - 1)];
	}
	e->name = xstrdup(name);
	e->hash = h;
	for (i = 0; i < set->nrules; i++) {
		if (!rule_names_match(&set->rules[i], name))
			continue;
		e->rules = xreallocarray(e->rules, e->nrules + 1,
		    sizeof *e->rules);
		e->rules[e->nrules++] = i;
	}
	set->ncached++;
	return e;
}

/*
 * A JSON subset match: every member of an object pattern is in the value
 * and matches; a string pattern is a glob; every element of an array
 * pattern matches some element of the value; anything else is equal.
 */
int
rules_json_match(json_t *pattern, json_t *value)
{
	const char	*key;
	json_t		*p, *v;
	size_t		 i, k;

	if (value == NULL)
		return 0;
	switch (json_typeof(pattern)) {
	case JSON_OBJECT:
		if (!json_is_object(value))
			return 0;
		json_object_foreach(pattern, key, p) {
			if (!rules_json_match(p, json_object_get(value, key)))
				return 0;
		}
		return 1;
	case JSON_STRING:
		return json_is_string(value) &&
		    fnmatch(json_string_value(pattern),
		    json_string_value(value), 0) == 0;
	case JSON_ARRAY:
		if (!json_is_array(value))
			return 0;
		json_array_foreach(pattern, i, p) {
			json_array_foreach(value, k, v) {
				if (rules_json_match(p, v))
					break;
			}
			if (k == json_array_size(value))
				return 0;
		}
		return 1;
	default:
		return json_equal(pattern, value);
	}
}

static int
ids_match(const unsigned *ids, size_t n, unsigned id)
{
	size_t	i;

	if (n == 0)
		return 1;
	for (i = 0; i < n; i++) {
		if (ids[i] == id)
			return 1;
	}
	return 0;
}

static int
rule_matches(const struct rule *rule, const struct rule_subject *s,
    const struct rule_peer *peer)
{
	size_t	i;

	if (!ids_match(rule->uids, rule->nuids, peer->uid) ||
	    !ids_match(rule->gids, rule->ngids, peer->gid))
		return 0;
	if (rule->nlisteners > 0) {
		for (i = 0; i < rule->nlisteners; i++) {
			if (fnmatch(rule->listeners[i], peer->listener, 0) ==
			    0)
				break;
		}
		if (i == rule->nlisteners)
			return 0;
	}
	if (rule->arguments != NULL) {
		/* A command without arguments has an empty object of them. */
		if (s->args == NULL)
			return json_object_size(rule->arguments) == 0;
		return rules_json_match(rule->arguments, s->args);
	}
	return 1;
}

/* Whether any rule for this command name looks at its arguments. */
int
rules_need_args(struct rule_set *set, const char *name)
{
	const struct rules_cache_entry	*e = rules_candidates(set, name);
	size_t				 i;

	for (i = 0; i < e->nrules; i++) {
		if (set->rules[e->rules[i]].arguments != NULL)
			return 1;
	}
	return 0;
}

/*
 * Decides a request's subjects (subjects[0] is the command itself). The
 * decision names the deciding rule, or the default's, and lists the log
 * rules met and the rewrite of each subject.
 */
void
rules_decide(struct rule_set *set, const struct rule_subject *subjects,
    size_t n, const struct rule_peer *peer, struct rule_decision *d)
{
	const struct rules_cache_entry	*e;
	const struct rule		*rule, *got;
	size_t				 i, k;

	memset(d, 0, sizeof *d);
	d->action = RULE_ALLOW;
	d->rule = &set->deflt;
	for (i = 0; i < n; i++) {
		e = rules_candidates(set, subjects[i].name);
		got = &set->deflt;
		for (k = 0; k < e->nrules; k++) {
			rule = &set->rules[e->rules[k]];
			if (!rule_matches(rule, &subjects[i], peer))
				continue;
			if (rule->action != RULE_LOG) {
				got = rule;
				break;
			}
			if (d->nlogged < RULES_MAX_LOGGED)
				d->logged[d->nlogged++] = rule;
		}
		if (got->action == RULE_REWRITE) {
			if (d->rewrite == NULL)
				d->rewrite = xcalloc(n, sizeof *d->rewrite);
			d->rewrite[i] = got;
		}
		switch (got->action) {
		case RULE_DENY:
			if (d->action != RULE_DENY) {
				d->action = RULE_DENY;
				d->rule = got;
				d->subject = i;
			}
			break;
		case RULE_TRANSLATE:
			if (d->action == RULE_DENY || d->action ==
			    RULE_TRANSLATE)
				break;
			d->action = subjects[i].kind == RULE_SUBJECT_ACTION ?
			    RULE_DENY : RULE_TRANSLATE;
			d->rule = got;
			d->subject = i;
			break;
		case RULE_REWRITE:
			if (d->action == RULE_ALLOW) {
				d->action = RULE_REWRITE;
				d->rule = got;
				d->subject = i;
			}
			break;
		default:
			if (i == 0 && d->action == RULE_ALLOW)
				d->rule = got;
			break;
		}
	}
}

void
rules_decision_clear(struct rule_decision *d)
{
	free(d->rewrite);
	d->rewrite = NULL;
}

/* How many names a request shows (see rules_subjects()). */
size_t
rules_count_subjects(const char *name, json_t *args)
{
	if (strcmp(name, "transaction") == 0)
		return 1 + json_array_size(json_object_get(args, "actions"));
	if (strcmp(name, "human-monitor-command") == 0)
		return 2;
	return 1;
}

/*
 * The names a request shows, for its command name and arguments (args
 * may be NULL): out and names have rules_count_subjects() places. Returns
 * how many were filled; names[] holds the made-up names, to be freed.
 */
size_t
rules_subjects(const char *name, json_t *args, struct rule_subject *out,
    char **names)
{
	json_t		*actions, *a;
	const char	*type, *line;
	char		*word;
	size_t		 n = 0, i;

	out[n].name = name;
	out[n].args = args;
	out[n++].kind = RULE_SUBJECT_COMMAND;
	names[0] = NULL;
	if (strcmp(name, "transaction") == 0) {
		actions = json_object_get(args, "actions");
		json_array_foreach(actions, i, a) {
			if ((type = json_string_value(json_object_get(a,
			    "type"))) == NULL)
				continue;
			xasprintf(&names[n], "transaction/%s", type);
			out[n].name = names[n];
			out[n].args = json_object_get(a, "data");
			out[n++].kind = RULE_SUBJECT_ACTION;
		}
	} else if (strcmp(name, "human-monitor-command") == 0) {
		line = json_string_value(json_object_get(args,
		    "command-line"));
		if (line != NULL && (word = hmp_command(line, NULL)) != NULL) {
			xasprintf(&names[n], "hmp/%s", word);
			free(word);
			out[n].name = names[n];
			out[n].args = args;
			out[n++].kind = RULE_SUBJECT_HMP;
		}
	}
	return n;
}
