/*
 * tree-file.c: the tree's file form. tree.json holds the whole tree, one
 * snapshot or branch per line; tree.journal holds the changes made since,
 * one record per step of an operation. A step thus writes what it changed,
 * not the whole tree (a thousand snapshots of four disks make a 780 KB
 * file, and its write and fsync would cost more than the step itself).
 * Now and then the whole tree is written again and the journal emptied.
 *
 * A record says how the lists changed, by position: ["del", i] removes
 * entry i, ["set", i, entry] replaces it, ["add", entry] appends one; a
 * changed "bases" is given whole. Replaying records in order on the last
 * whole tree gives the tree again. Positions can be used because the model
 * only ever appends entries and removes them, never reorders.
 *
 * Each entry keeps its line until a change drops it (snap_touch()), so
 * that telling a step's changes costs what changed, not the whole tree.
 *
 * Pure: the files are written by snap-store.c, when is snap-save.c's choice.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qbranch.h"

/*
 * Appends n bytes. Inline, so that the many short constant pieces become
 * plain stores: a thousand snapshots make some 100,000 of them.
 */
static inline void
put(struct buf *b, const void *p, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		buf_add(b, p, n);
		return;
	}
	memcpy(b->data + b->len, p, n);
	b->len += n;
}
#define ADD(b, lit)	put((b), (lit), sizeof(lit) - 1)

/* A JSON string; qmp_quote_into() for the few that need escapes. */
static void
put_str(struct buf *b, const char *s)
{
	const char	*p;

	for (p = s; qmp_plain[(unsigned char)*p]; p++)
		;
	if (*p != '\0') {
		qmp_quote_into(b, s);
		return;
	}
	ADD(b, "\"");
	put(b, s, p - s);
	ADD(b, "\"");
}

static void
text_str(struct buf *b, const char *key_colon, size_t len, const char *value)
{
	put(b, key_colon, len);
	if (value != NULL)
		put_str(b, value);
	else
		ADD(b, "null");
}
/* pre goes before the key, punctuation such as ", " or "{". */
#define STR(b, pre, key, value)	text_str((b), pre "\"" key "\": ", \
				    sizeof(pre "\"" key "\": ") - 1, (value))

static void
text_files(struct buf *b, const struct snap_file *f, size_t n)
{
	size_t	i;

	ADD(b, "[");
	for (i = 0; i < n; i++) {
		if (i > 0)
			ADD(b, ", ");
		STR(b, "{", "device", f[i].device);
		STR(b, ", ", "file", f[i].file);
		STR(b, ", ", "format", f[i].format);
		STR(b, ", ", "backing", f[i].backing);
		if (f[i].owned)
			ADD(b, ", \"owned\": true}");
		else
			ADD(b, ", \"owned\": false}");
	}
	ADD(b, "]");
}

static void
text_memory(struct buf *b, const struct snap_memory *m)
{
	size_t	i;

	if (m == NULL)
		return;
	STR(b, ", \"memory\": {", "state", m->state);
	STR(b, ", ", "vm-state", m->vm_state);
	ADD(b, ", \"ram\": [");
	for (i = 0; i < m->nram; i++) {
		if (i > 0)
			ADD(b, ", ");
		STR(b, "{", "backend", m->ram[i].backend);
		STR(b, ", ", "file", m->ram[i].file);
		ADD(b, "}");
	}
	ADD(b, "]}");
}

/* Written directly, not through jansson: ten times faster. */
static void
snap_line(struct buf *b, const struct snapshot *s)
{
	char	num[48];
	int	len;

	STR(b, "{", "name", s->name);
	STR(b, ", ", "parent", s->parent ? s->parent->name : NULL);
	len = snprintf(num, sizeof num, ", \"created\": %lld",
	    (long long)s->created);
	put(b, num, len);
	STR(b, ", ", "description", s->description);
	STR(b, ", ", "vm-state", s->vm_state);
	ADD(b, ", \"disks\": ");
	text_files(b, s->disks, s->ndisks);
	text_memory(b, s->memory);
	ADD(b, "}");
}

static void
branch_line(struct buf *b, const struct branch *br)
{
	STR(b, "{", "name", br->name);
	STR(b, ", ", "base", br->base ? br->base->name : NULL);
	if (br->attached)
		ADD(b, ", \"attached\": true, \"disks\": ");
	else
		ADD(b, ", \"attached\": false, \"disks\": ");
	text_files(b, br->disks, br->ndisks);
	text_memory(b, br->memory);
	ADD(b, "}");
}

/* The line in b as a shared text (one reference), b emptied. */
static struct tree_text *
text_take(struct buf *b)
{
	struct tree_text	*t = xmalloc(sizeof *t + b->len + 1);

	t->refs = 1;
	t->len = b->len;
	memcpy(t->text, b->data, b->len);
	t->text[b->len] = '\0';
	b->len = 0;
	return t;
}

void
tree_text_unref(struct tree_text *t)
{
	if (t != NULL && --t->refs == 0)
		free(t);
}

static struct tree_text *
text_ref(struct tree_text *t)
{
	t->refs++;
	return t;
}

/*
 * Set (QBRANCHD_CHECK_TREE, the tests): every kept line is made again and
 * must be what the entry says now; else a snap_touch() is missing.
 */
int	tree_file_check;

static void
text_check(const struct tree_text *kept, struct buf *b, const char *what,
    const char *name)
{
	if (kept->len != b->len || memcmp(kept->text, b->data, b->len) != 0)
		fatalx("%s %s changed without snap_touch(): kept %s, now %.*s",
		    what, name, kept->text, (int)b->len, b->data);
	b->len = 0;
}

/* The entries' lines, made where they were dropped (snap_touch()). */
static struct tree_text *
snap_text(struct buf *b, struct snapshot *s)
{
	if (s->line == NULL) {
		snap_line(b, s);
		s->line = text_take(b);
		free(s->hashes);
		s->hashes = snap_files_hashes(s->disks, s->ndisks);
	}
	if (tree_file_check) {
		snap_line(b, s);
		text_check(s->line, b, "snapshot", s->name);
	}
	return s->line;
}

static struct tree_text *
branch_text(struct buf *b, struct branch *br)
{
	if (br->line == NULL) {
		branch_line(b, br);
		br->line = text_take(b);
		free(br->hashes);
		br->hashes = snap_files_hashes(br->disks, br->ndisks);
	}
	if (tree_file_check) {
		branch_line(b, br);
		text_check(br->line, b, "branch", br->name);
	}
	return br->line;
}

/* Empties a file form. */
void
tree_file_clear(struct tree_file *f)
{
	size_t	i;

	for (i = 0; i < f->nsnaps; i++)
		tree_text_unref(f->snaps[i].line);
	for (i = 0; i < f->nbranches; i++)
		tree_text_unref(f->branches[i].line);
	free(f->snaps);
	free(f->branches);
	free(f->bases);
	f->snaps = f->branches = NULL;
	f->nsnaps = f->nbranches = 0;
	f->bases = NULL;
	f->bases_len = 0;
}

/*
 * Makes f the file form of t (its seq stays). The lines are shared with
 * the entries, which keep them until they change: making the form of a
 * thousand snapshots costs a thousand pointers, not 800 KB of text.
 */
void
tree_file_set(struct tree_file *f, struct snap_tree *t)
{
	struct snapshot	*s;
	struct branch	*br;
	struct buf	 b = { NULL, 0, 0 };
	size_t		 n;

	tree_file_clear(f);
	n = 0;
	TAILQ_FOREACH(s, &t->snapshots, entry)
		n++;
	f->snaps = xcalloc(n + 1, sizeof *f->snaps);
	TAILQ_FOREACH(s, &t->snapshots, entry) {
		f->snaps[f->nsnaps].serial = s->serial;
		f->snaps[f->nsnaps++].line = text_ref(snap_text(&b, s));
	}
	n = 0;
	TAILQ_FOREACH(br, &t->branches, entry)
		n++;
	f->branches = xcalloc(n + 1, sizeof *f->branches);
	TAILQ_FOREACH(br, &t->branches, entry) {
		f->branches[f->nbranches].serial = br->serial;
		f->branches[f->nbranches++].line = text_ref(branch_text(&b,
		    br));
	}
	b.len = 0;
	text_files(&b, t->bases, t->nbases);
	f->bases = xmalloc(b.len + 1);
	memcpy(f->bases, b.data, b.len);
	f->bases[b.len] = '\0';
	f->bases_len = b.len;
	buf_free(&b);
}

/* The whole tree file, as text. */
char *
tree_file_text(const struct tree_file *f)
{
	struct buf	 b = { NULL, 0, 0 };
	char		 num[64];
	size_t		 i;
	int		 len;

	b.cap = 128 + f->bases_len;
	for (i = 0; i < f->nsnaps; i++)
		b.cap += f->snaps[i].line->len + 3;
	for (i = 0; i < f->nbranches; i++)
		b.cap += f->branches[i].line->len + 3;
	b.data = xmalloc(b.cap);
	len = snprintf(num, sizeof num, "{\"version\": %d, \"seq\": %llu,",
	    SNAP_TREE_VERSION, (unsigned long long)f->seq);
	put(&b, num, len);
	ADD(&b, "\n\"snapshots\": [");
	for (i = 0; i < f->nsnaps; i++) {
		put(&b, i > 0 ? ",\n " : "\n ", i > 0 ? 3 : 2);
		put(&b, f->snaps[i].line->text, f->snaps[i].line->len);
	}
	ADD(&b, "],\n\"branches\": [");
	for (i = 0; i < f->nbranches; i++) {
		put(&b, i > 0 ? ",\n " : "\n ", i > 0 ? 3 : 2);
		put(&b, f->branches[i].line->text,
		    f->branches[i].line->len);
	}
	ADD(&b, "],\n\"bases\": ");
	put(&b, f->bases, f->bases_len);
	ADD(&b, "}\n");
	b.data[b.len] = '\0';
	return b.data;
}

/* The whole tree file of t. */
char *
snap_tree_text(struct snap_tree *t)
{
	struct tree_file	 f;
	char			*text;

	memset(&f, 0, sizeof f);
	tree_file_set(&f, t);
	text = tree_file_text(&f);
	tree_file_clear(&f);
	return text;
}

/*
 * One list's changes, from the lines written (old) to the lines now (new),
 * matched by serial: an entry keeps its serial while it lives, and new
 * ones get larger serials than any before them. Returns -1 if the lists do
 * not fit that (they cannot be told apart by position).
 */
static int
list_changes(struct buf *b, const char *key, const struct tree_line *old,
    size_t nold, const struct tree_line *new, size_t nnew)
{
	uint64_t	 newest = nold > 0 ? old[nold - 1].serial : 0;
	size_t		 i = 0, j, k = 0, start = b->len;
	char		 num[48];
	int		 len, any = 0;

#define OP(fmt, ...) do {						\
	len = snprintf(num, sizeof num, "%s" fmt, any++ ? ", " : "",	\
	    __VA_ARGS__);						\
	buf_add(b, num, len);						\
} while (0)

	buf_add(b, ", \"", 3);
	buf_addstr(b, key);
	ADD(b, "\": [");
	for (j = 0; j < nnew; j++) {
		if (new[j].serial <= newest) {
			while (i < nold && old[i].serial != new[j].serial) {
				OP("[\"del\", %zu]", k);
				i++;
			}
			if (i == nold)
				return -1;
			if (old[i].line != new[j].line &&
			    (old[i].line->len != new[j].line->len ||
			    memcmp(old[i].line->text, new[j].line->text,
			    new[j].line->len) != 0)) {
				OP("[\"set\", %zu, ", k);
				buf_add(b, new[j].line->text, new[j].line->len);
				ADD(b, "]");
			}
			i++;
			k++;
			continue;
		}
		/* New entries come after every entry that was there. */
		for (; i < nold; i++)
			OP("[\"del\", %zu]", k);
		OP("%s", "[\"add\", ");
		buf_add(b, new[j].line->text, new[j].line->len);
		ADD(b, "]");
		k++;
	}
	for (; i < nold; i++)
		OP("[\"del\", %zu]", k);
#undef OP
	if (!any)
		b->len = start;
	else
		ADD(b, "]");
	b->data[b->len] = '\0';
	return 0;
}

/*
 * The record of what changed from the file form old to the tree t: *new is
 * set to t's file form, and the record (one line, no newline) returned, or
 * NULL with *new->seq == old->seq when nothing changed. Sets *whole when
 * the change is not a record's to tell (the whole file must be written).
 */
char *
tree_file_change(const struct tree_file *old, struct snap_tree *t,
    struct tree_file *new, int *whole)
{
	struct buf	 b = { NULL, 0, 0 };
	char		 num[48];
	size_t		 head;
	int		 len;

	*whole = 0;
	memset(new, 0, sizeof *new);
	tree_file_set(new, t);
	new->seq = old->seq + 1;
	len = snprintf(num, sizeof num, "{\"seq\": %llu",
	    (unsigned long long)new->seq);
	buf_add(&b, num, len);
	head = b.len;
	if (list_changes(&b, "snapshots", old->snaps, old->nsnaps,
	    new->snaps, new->nsnaps) == -1 ||
	    list_changes(&b, "branches", old->branches, old->nbranches,
	    new->branches, new->nbranches) == -1) {
		*whole = 1;
		buf_free(&b);
		return NULL;
	}
	if (old->bases_len != new->bases_len ||
	    memcmp(old->bases, new->bases, new->bases_len) != 0) {
		ADD(&b, ", \"bases\": ");
		buf_add(&b, new->bases, new->bases_len);
	}
	if (b.len == head) {
		new->seq = old->seq;
		buf_free(&b);
		return NULL;
	}
	ADD(&b, "}");
	b.data[b.len] = '\0';
	return b.data;
}

/* Applies one list's operations (a record's "snapshots" or "branches"). */
static int
list_apply(json_t *list, json_t *ops, char **why)
{
	json_t		*op, *entry;
	const char	*verb;
	json_int_t	 i;
	size_t		 n;

	if (!json_is_array(ops)) {
		*why = xstrdup("changes are not a list");
		return -1;
	}
	json_array_foreach(ops, n, op) {
		entry = NULL;
		i = -1;
		if (json_unpack(op, "[s!]", &verb) == -1 &&
		    json_unpack(op, "[sI!]", &verb, &i) == -1 &&
		    json_unpack(op, "[so!]", &verb, &entry) == -1 &&
		    json_unpack(op, "[sIo!]", &verb, &i, &entry) == -1)
			verb = "";
		if (strcmp(verb, "del") == 0 && entry == NULL && i >= 0 &&
		    (size_t)i < json_array_size(list))
			json_array_remove(list, i);
		else if (strcmp(verb, "set") == 0 && json_is_object(entry) &&
		    i >= 0 && (size_t)i < json_array_size(list))
			json_array_set(list, i, entry);
		else if (strcmp(verb, "add") == 0 && i == -1 &&
		    json_is_object(entry))
			json_array_append(list, entry);
		else {
			xasprintf(why, "change %zu is not one", n);
			return -1;
		}
	}
	return 0;
}

static int
record_apply(json_t *root, json_t *rec, char **why)
{
	json_t	*ops, *bases;

	if ((ops = json_object_get(rec, "snapshots")) != NULL &&
	    list_apply(json_object_get(root, "snapshots"), ops, why) == -1)
		return -1;
	if ((ops = json_object_get(rec, "branches")) != NULL &&
	    list_apply(json_object_get(root, "branches"), ops, why) == -1)
		return -1;
	if ((bases = json_object_get(rec, "bases")) != NULL) {
		if (!json_is_array(bases)) {
			*why = xstrdup("bases are not a list");
			return -1;
		}
		json_object_set(root, "bases", bases);
	}
	return 0;
}

/*
 * Replays a journal (text, len bytes) on the whole tree root, a tree
 * file's JSON, setting its "seq" to the last record applied. Records the
 * tree already holds (its seq or lower) are skipped. A record that does not
 * parse ends the journal if nothing after it does (a write cut short by a
 * crash: it was never acknowledged); *good is then where it starts, and
 * len otherwise. Returns -1 with *cause for anything else.
 */
int
tree_journal_replay(json_t *root, const char *text, size_t len, size_t *good,
    char **cause)
{
	json_t		*rec;
	json_int_t	 seq, at = 0, rseq;
	size_t		 off = 0, end, torn = len, k;
	char		*why = NULL;

	if (json_unpack(root, "{s?I}", "seq", &at) == -1 ||
	    !json_is_array(json_object_get(root, "snapshots")) ||
	    !json_is_array(json_object_get(root, "branches"))) {
		*cause = xstrdup("the tree file is not one");
		return -1;
	}
	*good = len;
	for (; off < len; off = end + 1) {
		end = off;
		while (end < len && text[end] != '\n')
			end++;
		for (k = off; k < end && text[k] == ' '; k++)
			;
		if (k == end)
			continue;		/* padding */
		rec = json_loadb(text + off, end - off, JSON_REJECT_DUPLICATES,
		    NULL);
		if (rec == NULL || json_unpack(rec, "{s:I}", "seq", &seq) ==
		    -1) {
			json_decref(rec);
			if (torn == len)
				torn = off;
			continue;
		}
		if (torn != len) {
			xasprintf(cause, "journal: unreadable record at byte "
			    "%zu before record %lld", torn, (long long)seq);
			json_decref(rec);
			return -1;
		}
		if (seq <= at) {
			json_decref(rec);
			continue;		/* already in the tree file */
		}
		rseq = seq;
		if (seq != at + 1 || record_apply(root, rec, &why) == -1) {
			xasprintf(cause, "journal record %lld: %s", (long long)
			    rseq, why ? why : "out of order");
			free(why);
			json_decref(rec);
			return -1;
		}
		json_decref(rec);
		at = seq;
	}
	json_object_set_new(root, "seq", json_integer(at));
	*good = torn;
	return 0;
}
