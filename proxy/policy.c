/*
 * policy.c: the rules each listening socket applies. Every rule file in
 * use is read at start and again on SIGHUP, all of them or none: one
 * mistake leaves the old rules in force. Each request of a negotiated
 * client is decided before it goes anywhere: allowed through untouched,
 * denied with the rule's error, rewritten, or handed to a translation.
 */
#include <sys/stat.h>

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "qbranch.h"

#define POLICY_MAX_FILES	65	/* each listener's, and the default */
#define POLICY_STACK_SUBJECTS	4

struct policy_file {
	char		*path;
	struct rule_set	*set;
};

static struct policy_file	 files[POLICY_MAX_FILES];
static int			 nfiles;
static const char		*rules_dir;	/* NULL: the default */
static const char		*default_name = "default.json";
static int			 default_file = -1;

void
policy_set_dir(const char *dir)
{
	rules_dir = dir;
}

void
policy_set_default(const char *name)
{
	default_name = name;
}

/*
 * A rule file's path: a name with a slash is a path (made absolute, for
 * reloads), a bare name is in the rules directory, ".json" optional.
 */
static char *
policy_resolve(const char *name)
{
	char	*path, *cwd;
	size_t	 n = strlen(name);

	if (rules_dir == NULL &&
	    (rules_dir = getenv("QBRANCHD_RULES_DIR")) == NULL)
		rules_dir = QB_RULES_DIR;
	rules_shipped_dir = rules_dir;
	if (strchr(name, '/') != NULL) {
		if (*name == '/' || (cwd = getcwd(NULL, 0)) == NULL)
			return xstrdup(name);
		xasprintf(&path, "%s/%s", cwd, name);
		free(cwd);
		return path;
	}
	if (n > 5 && strcmp(name + n - 5, ".json") == 0)
		xasprintf(&path, "%s/%s", rules_dir, name);
	else
		xasprintf(&path, "%s/%s.json", rules_dir, name);
	return path;
}

/*
 * The rule file a listener uses: name, or the default when NULL. Returns
 * its number for listener->policy.
 */
int
policy_file(const char *name)
{
	char	*path;
	int	 i;

	if (name == NULL && default_file != -1)
		return default_file;
	path = policy_resolve(name != NULL ? name : default_name);
	for (i = 0; i < nfiles; i++) {
		if (strcmp(files[i].path, path) == 0) {
			free(path);
			goto out;
		}
	}
	if (nfiles == POLICY_MAX_FILES)
		fatalx("too many rule files");
	files[nfiles].path = path;
	i = nfiles++;
out:
	if (name == NULL)
		default_file = i;
	return i;
}

/*
 * Reads every rule file in use. On success the new rules replace the old
 * at once; otherwise each file's first mistake is logged and nothing
 * changes. Returns the number of files with mistakes.
 */
int
policy_load(void)
{
	struct rule_set	*sets[POLICY_MAX_FILES];
	char		*cause;
	int		 i, bad = 0;

	for (i = 0; i < nfiles; i++) {
		sets[i] = rules_load(files[i].path, translate_handler_names(),
		    &cause);
		if (sets[i] == NULL) {
			log_warnx("%s", cause);
			free(cause);
			bad++;
		}
	}
	for (i = 0; i < nfiles; i++) {
		if (bad > 0)
			rules_free(sets[i]);
		else {
			rules_free(files[i].set);
			files[i].set = sets[i];
		}
	}
	return bad;
}

void
policy_reload(void)
{
	if (policy_load() > 0)
		log_warnx("SIGHUP: rules not reloaded; the old rules stay in "
		    "force");
	else
		log_info("SIGHUP: rules reloaded (%d file%s)", nfiles,
		    nfiles == 1 ? "" : "s");
	audit_reopen();
}

void
policy_shutdown(void)
{
	int	i;

	for (i = 0; i < nfiles; i++) {
		rules_free(files[i].set);
		free(files[i].path);
	}
	nfiles = 0;
	default_file = -1;
}

/* A rewrite's arguments: merged into, or replacing, the ones given. */
static void
policy_rewrite(json_t **args, const struct rule *rule)
{
	const char	*key;
	json_t		*v, *have;

	if (rule->replace != NULL) {
		json_decref(*args);
		*args = json_deep_copy(rule->replace);
		return;
	}
	if (*args == NULL)
		*args = json_object();
	json_object_foreach(rule->merge, key, v) {
		have = json_object_get(*args, key);
		if (json_is_object(have) && json_is_object(v))
			json_object_update(have, v);
		else
			json_object_set(*args, key, v);
	}
}

/* Applies the rewrites of a decision to args (the whole arguments). */
static json_t *
policy_rewrite_all(json_t *args, const struct rule_decision *d,
    const struct rule_subject *subjects, size_t n)
{
	json_t	*actions, *a, *data;
	size_t	 i, k = 0;

	args = args != NULL ? json_deep_copy(args) : NULL;
	if (d->rewrite[0] != NULL)
		policy_rewrite(&args, d->rewrite[0]);
	actions = json_object_get(args, "actions");
	for (i = 1; i < n; i++) {
		if (subjects[i].kind == RULE_SUBJECT_HMP &&
		    d->rewrite[i] != NULL)
			policy_rewrite(&args, d->rewrite[i]);
		if (subjects[i].kind != RULE_SUBJECT_ACTION)
			continue;
		/* The i-th subject is the k-th action that had a type. */
		for (; k < json_array_size(actions); k++) {
			a = json_array_get(actions, k);
			if (json_is_string(json_object_get(a, "type")))
				break;
		}
		if (d->rewrite[i] != NULL && (a = json_array_get(actions, k)) !=
		    NULL) {
			data = json_incref(json_object_get(a, "data"));
			policy_rewrite(&data, d->rewrite[i]);
			json_object_set_new(a, "data", data);
		}
		k++;
	}
	return args;
}

static void
policy_deny(struct client *c, const struct qmp_msg *msg,
    const struct qmp_request *req, const struct rule_decision *d,
    const struct rule_subject *s)
{
	char	*id = NULL, *desc;
	size_t	 idlen = 0;

	if (req->id != NULL)
		id = client_copy_id(c, msg, req->id, &idlen);
	if (d->rule->action == RULE_TRANSLATE)
		xasprintf(&desc, "'%s' cannot be translated inside a "
		    "transaction (rule %s): send it on its own", s->name,
		    d->rule->where);
	else if (d->rule->message != NULL)
		desc = xstrdup(d->rule->message);
	else
		xasprintf(&desc, "'%s' is not allowed on this socket (rule "
		    "%s)", s->name, d->rule->where);
	client_send_error(c, d->rule->action == RULE_DENY ?
	    d->rule->err_class : "GenericError", desc, id, idlen);
	free(desc);
	free(id);
	conn_move_fds(c->conn, msg->start + msg->len, NULL);
	conn_drain_in(c->conn, msg->len);
}

/* Sends the rewritten request on: to QEMU, or to the proxy's own command. */
static void
policy_send_rewritten(struct client *c, const struct qmp_msg *msg,
    const struct qmp_request *req, json_t *args)
{
	json_t	*cmd;
	char	*text;

	if (cmd_is_own(req->name) || snap_op_blocks(req->name)) {
		cmd_dispatch_args(c, msg, req, args);
		return;
	}
	cmd = json_pack("{s:s}", req->oob ? "exec-oob" : "execute",
	    req->name);
	if (args != NULL)
		json_object_set(cmd, "arguments", args);
	text = json_dumps(cmd, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(cmd);
	log_debug("client %u: rewritten: %s", c->id, text);
	upstream_forward_text(c, msg, req, text);
	free(text);
}

/*
 * Decides a request of a negotiated client. Returns 0 when it goes on as
 * usual; 1 when it was answered, rewritten or translated here (its bytes
 * consumed).
 */
int
policy_apply(struct client *c, const struct qmp_msg *msg,
    const struct qmp_request *req)
{
	struct rule_subject	 stack_subjects[POLICY_STACK_SUBJECTS];
	char			*stack_names[POLICY_STACK_SUBJECTS];
	struct rule_subject	*subjects = stack_subjects;
	char			**names = stack_names;
	struct rule_set		*set = files[c->listener->policy].set;
	struct rule_decision	 d;
	struct rule_peer	 peer;
	const struct rule	*r;
	json_t			*args = NULL, *rewritten;
	size_t			 n, i;
	int			 ret = 1;

	if (strcmp(req->name, "transaction") == 0 ||
	    strcmp(req->name, "human-monitor-command") == 0 ||
	    rules_need_args(set, req->name))
		args = cmd_arguments(c, msg, req);
	n = rules_count_subjects(req->name, args);
	if (n > POLICY_STACK_SUBJECTS) {
		subjects = xcalloc(n, sizeof *subjects);
		names = xcalloc(n, sizeof *names);
	}
	n = rules_subjects(req->name, args, subjects, names);
	peer.uid = c->uid;
	peer.gid = c->gid;
	peer.listener = c->listener->path;
	rules_decide(set, subjects, n, &peer, &d);
	for (i = 0; i < d.nlogged; i++) {
		r = d.logged[i];
		log_info("rule %s%s%s%s: client %u (uid %d, pid %d) on %s: %s",
		    r->where, r->name != NULL ? " (" : "",
		    r->name != NULL ? r->name : "", r->name != NULL ? ")" : "",
		    c->id, (int)c->uid, (int)c->pid, c->listener->path,
		    req->name);
	}
	audit_decision(c, req->name, &d, &subjects[d.subject]);
	switch (d.action) {
	case RULE_DENY:
		policy_deny(c, msg, req, &d, &subjects[d.subject]);
		break;
	case RULE_REWRITE:
		if (args == NULL)
			args = cmd_arguments(c, msg, req);
		rewritten = policy_rewrite_all(args, &d, subjects, n);
		policy_send_rewritten(c, msg, req, rewritten);
		json_decref(rewritten);
		break;
	case RULE_TRANSLATE:
		if (args == NULL)
			args = cmd_arguments(c, msg, req);
		ret = translate_run(c, msg, req, args, d.rule);
		break;
	default:
		ret = 0;
		break;
	}
	rules_decision_clear(&d);
	for (i = 1; i < n; i++)
		free(names[i]);
	if (subjects != stack_subjects) {
		free(subjects);
		free(names);
	}
	json_decref(args);
	return ret;
}
