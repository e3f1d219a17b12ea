/*
 * tree-view.c: the snapshot tree drawn for people (text, one snapshot or
 * branch a line) and for Graphviz (dot, and SVG through dot). Input is what
 * qbranch-query-snapshots and qbranch-query-branches returned. Snapshots
 * are listed under their parent in the proxy's order; the branches growing
 * from a snapshot come first under it, as [name]. The current snapshot and
 * the attached branch are marked with '*'.
 */
#include <sys/wait.h>

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

struct tree_view {
	json_t		*snaps;		/* borrowed: the "snapshots" array */
	json_t		*branches;	/* borrowed */
	const char	*current;
	int64_t		 now;
	struct table	*table;
	const char	*const *glyph;	/* tee, corner, bar, space */
	size_t		 depth;
};

static const char *const glyph_utf8[] = {
	"\xe2\x94\x9c\xe2\x94\x80\xe2\x94\x80 ",	/* ├── */
	"\xe2\x94\x94\xe2\x94\x80\xe2\x94\x80 ",	/* └── */
	"\xe2\x94\x82   ",				/* │   */
	"    ",
};
static const char *const glyph_ascii[] = { "|-- ", "`-- ", "|   ", "    " };

static void	tree_view_snapshot(struct tree_view *, json_t *, const char *,
		    int, int);

/* Whether branch b grows from the snapshot at (NULL: the original disks). */
static int
tree_view_is_base(json_t *b, const char *at)
{
	const char	*v = json_string_value(json_object_get(b, "base"));

	if (at == NULL)
		return v == NULL;
	return v != NULL && strcmp(v, at) == 0;
}

/* The child snapshots of s, as the proxy lists them (new array). */
static json_t *
tree_view_children(struct tree_view *tv, json_t *s)
{
	json_t	*out = json_array(), *c, *name;
	size_t	 i;

	json_array_foreach(json_object_get(s, "children"), i, name) {
		if (json_is_string(name) && (c = query_snapshot(tv->snaps,
		    json_string_value(name))) != NULL)
			json_array_append(out, c);
	}
	return out;
}

static void
tree_view_branch(struct tree_view *tv, json_t *b, const char *prefix,
    int last, int root)
{
	char	*line;

	xasprintf(&line, "%s%s[%s]%s", prefix, root ? "" :
	    tv->glyph[last ? 1 : 0], query_str(b, "name"),
	    json_is_true(json_object_get(b, "attached")) ? " *" : "");
	table_add_span(tv->table, line);
	free(line);
}

/* What grows from the snapshot at (NULL: the top): branches, children. */
static void
tree_view_below(struct tree_view *tv, const char *at, json_t *kids,
    const char *prefix)
{
	json_t	*b;
	size_t	 i, n = 0, nb = 0, nk = json_array_size(kids);

	json_array_foreach(tv->branches, i, b) {
		if (tree_view_is_base(b, at))
			nb++;
	}
	json_array_foreach(tv->branches, i, b) {
		if (tree_view_is_base(b, at)) {
			n++;
			tree_view_branch(tv, b, prefix, n == nb + nk,
			    at == NULL);
		}
	}
	json_array_foreach(kids, i, b) {
		n++;
		tree_view_snapshot(tv, b, prefix, n == nb + nk, at == NULL);
	}
}

static void
tree_view_snapshot(struct tree_view *tv, json_t *s, const char *prefix,
    int last, int root)
{
	char		 age[FORMAT_AGE_LEN], size[FORMAT_SIZE_LEN];
	char		*left, *below;
	const char	*name = query_str(s, "name");
	json_t		*kids;
	uint64_t	 bytes;
	int64_t		 secs;

	xasprintf(&left, "%s%s%s%s", prefix, root ? "" :
	    tv->glyph[last ? 1 : 0], name, tv->current != NULL &&
	    strcmp(tv->current, name) == 0 ? " *" : "");
	if (query_age(s, tv->now, &secs))
		format_age(secs, age, sizeof age);
	else
		snprintf(age, sizeof age, "-");
	if (query_size(s, &bytes))
		format_size(bytes, size, sizeof size);
	else
		snprintf(size, sizeof size, "-");
	table_add(tv->table, left, age, size,
	    json_is_true(json_object_get(s, "memory")) ? "+mem" : "",
	    query_str(s, "description"));
	free(left);
	/* Bad input may loop; no tree is deeper than it has snapshots. */
	if (++tv->depth > json_array_size(tv->snaps))
		goto out;
	xasprintf(&below, "%s%s", prefix, root ? "" :
	    tv->glyph[last ? 3 : 2]);
	kids = tree_view_children(tv, s);
	tree_view_below(tv, name, kids, below);
	json_decref(kids);
	free(below);
out:
	tv->depth--;
}

/*
 * Prints the tree: q is qbranch-query-snapshots' return, branches that of
 * qbranch-query-branches. With from, only the descendants of that snapshot.
 */
void
tree_view_print(json_t *q, json_t *branches, const char *from, FILE *f)
{
	struct tree_view	 tv;
	json_t			*roots, *s, *none = json_array();
	size_t			 i;
	const char		*parent;

	memset(&tv, 0, sizeof tv);
	tv.snaps = json_object_get(q, "snapshots");
	tv.branches = json_is_array(branches) ? branches : none;
	tv.current = json_string_value(json_object_get(q, "current"));
	tv.now = time(NULL);
	tv.glyph = format_utf8() ? glyph_utf8 : glyph_ascii;
	tv.table = table_new(5);
	table_align_right(tv.table, 1);
	table_align_right(tv.table, 2);
	/* Fixed widths: the columns after them never move. */
	table_min_width(tv.table, 1, FORMAT_AGE_WIDTH);
	table_min_width(tv.table, 2, FORMAT_SIZE_WIDTH);
	roots = json_array();
	json_array_foreach(tv.snaps, i, s) {
		parent = json_string_value(json_object_get(s, "parent"));
		if (from != NULL) {
			if (parent != NULL && strcmp(parent, from) == 0)
				json_array_append(roots, s);
		} else if (parent == NULL ||
		    query_snapshot(tv.snaps, parent) == NULL)
			json_array_append(roots, s);
	}
	if (from != NULL) {
		/* The branches on from itself are not its descendants. */
		json_array_foreach(roots, i, s)
			tree_view_snapshot(&tv, s, "", 0, 1);
	} else
		tree_view_below(&tv, NULL, roots, "");
	table_print(tv.table, f);
	table_free(tv.table);
	json_decref(roots);
	json_decref(none);
}

/* s as the inside of a dot quoted string (new string). */
static char *
tree_view_dot_quote(const char *s)
{
	struct buf	 b = { NULL, 0, 0 };
	char		*clean = format_clean(s);
	const char	*p;

	buf_addstr(&b, "");
	for (p = clean; *p != '\0'; p++) {
		if (*p == '"' || *p == '\\')
			buf_add(&b, "\\", 1);
		buf_add(&b, p, 1);
	}
	free(clean);
	return b.data;
}

/*
 * Prints the tree as a Graphviz digraph: snapshots are boxes (the current
 * one bold, with '*'), branches are ellipses hanging from their base (the
 * attached one filled and bold), and the original disks a plain node when
 * a branch grows from them.
 */
void
tree_view_dot(json_t *q, json_t *branches, FILE *f)
{
	json_t		*snaps = json_object_get(q, "snapshots"), *s;
	const char	*current, *parent, *at;
	char		*name, *desc, *other, age[FORMAT_AGE_LEN];
	char		 size[FORMAT_SIZE_LEN];
	size_t		 i;
	int		 cur, origin = 0;
	uint64_t	 bytes;
	int64_t		 secs, now = time(NULL);

	current = json_string_value(json_object_get(q, "current"));
	fprintf(f, "digraph qbranch {\n"
	    "\tgraph [rankdir=TB, fontname=\"sans-serif\"];\n"
	    "\tnode [shape=box, style=rounded, fontname=\"sans-serif\"];\n"
	    "\tedge [color=\"gray40\", arrowhead=none];\n");
	json_array_foreach(snaps, i, s) {
		name = tree_view_dot_quote(query_str(s, "name"));
		desc = tree_view_dot_quote(query_str(s, "description"));
		cur = current != NULL && strcmp(current, query_str(s,
		    "name")) == 0;
		if (query_age(s, now, &secs))
			format_age(secs, age, sizeof age);
		else
			snprintf(age, sizeof age, "-");
		if (query_size(s, &bytes))
			format_size(bytes, size, sizeof size);
		else
			snprintf(size, sizeof size, "-");
		fprintf(f, "\t\"snapshot:%s\" [label=\"%s%s\\n%s  %s%s\", "
		    "tooltip=\"%s\"%s];\n", name, name, cur ? " *" : "", age,
		    size, json_is_true(json_object_get(s, "memory")) ?
		    "  +mem" : "", desc, cur ? ", penwidth=3" : "");
		if ((parent = json_string_value(json_object_get(s,
		    "parent"))) != NULL) {
			other = tree_view_dot_quote(parent);
			fprintf(f, "\t\"snapshot:%s\" -> \"snapshot:%s\";\n",
			    other, name);
			free(other);
		}
		free(name);
		free(desc);
	}
	json_array_foreach(branches, i, s) {
		name = tree_view_dot_quote(query_str(s, "name"));
		if (json_is_true(json_object_get(s, "attached")))
			fprintf(f, "\t\"branch:%s\" [label=\"%s *\", "
			    "shape=ellipse, style=\"filled,bold\", "
			    "fillcolor=\"gold\", penwidth=3];\n", name, name);
		else
			fprintf(f, "\t\"branch:%s\" [label=\"%s\", "
			    "shape=ellipse, style=dashed];\n", name, name);
		if ((at = json_string_value(json_object_get(s, "base"))) ==
		    NULL) {
			if (!origin++)
				fprintf(f, "\t\"origin\" [label=\"original "
				    "disks\", shape=plaintext];\n");
			fprintf(f, "\t\"origin\" -> \"branch:%s\" "
			    "[style=dashed];\n", name);
		} else {
			other = tree_view_dot_quote(at);
			fprintf(f, "\t\"snapshot:%s\" -> \"branch:%s\" "
			    "[style=dashed];\n", other, name);
			free(other);
		}
		free(name);
	}
	fprintf(f, "}\n");
}

/* Whether Graphviz's dot is in $PATH. */
int
tree_view_has_dot(void)
{
	const char	*path = getenv("PATH");
	char		*copy, *dir, *next, *file;
	int		 found = 0;

	if (path == NULL || *path == '\0')
		path = "/usr/bin:/bin";
	copy = xstrdup(path);
	for (dir = copy; dir != NULL && !found; dir = next) {
		if ((next = strchr(dir, ':')) != NULL)
			*next++ = '\0';
		xasprintf(&file, "%s/dot", *dir != '\0' ? dir : ".");
		found = access(file, X_OK) == 0;
		free(file);
	}
	free(copy);
	return found;
}

/*
 * Writes the tree as SVG to file ("-": stdout) with dot -Tsvg. Returns -1
 * with *cause when dot could not run or failed.
 */
int
tree_view_svg(json_t *q, json_t *branches, const char *file, char **cause)
{
	char		*text = NULL;
	size_t		 len = 0, off = 0;
	FILE		*mem;
	int		 fds[2], status, rv = -1;
	pid_t		 pid;
	ssize_t		 n;
	void		(*old)(int);

	if ((mem = open_memstream(&text, &len)) == NULL)
		fatal("open_memstream");
	tree_view_dot(q, branches, mem);
	fclose(mem);
	if (pipe(fds) == -1)
		fatal("pipe");
	fflush(stdout);
	if ((pid = fork()) == -1)
		fatal("fork");
	if (pid == 0) {
		dup2(fds[0], STDIN_FILENO);
		close(fds[0]);
		close(fds[1]);
		if (strcmp(file, "-") == 0)
			execlp("dot", "dot", "-Tsvg", (char *)NULL);
		else
			execlp("dot", "dot", "-Tsvg", "-o", file, (char *)NULL);
		fprintf(stderr, "qbranch: dot: %s\n", strerror(errno));
		_exit(127);
	}
	close(fds[0]);
	old = signal(SIGPIPE, SIG_IGN);
	while (off < len) {
		if ((n = write(fds[1], text + off, len - off)) == -1) {
			if (errno == EINTR)
				continue;
			break;
		}
		off += n;
	}
	close(fds[1]);
	signal(SIGPIPE, old);
	while (waitpid(pid, &status, 0) == -1) {
		if (errno != EINTR) {
			xasprintf(cause, "waitpid: %s", strerror(errno));
			goto out;
		}
	}
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		rv = 0;
	else if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
		xasprintf(cause, "could not run dot (Graphviz)");
	else if (WIFEXITED(status))
		xasprintf(cause, "dot failed (exit %d) writing %s",
		    WEXITSTATUS(status), file);
	else
		xasprintf(cause, "dot was killed by signal %d",
		    WTERMSIG(status));
out:
	free(text);
	return rv;
}
