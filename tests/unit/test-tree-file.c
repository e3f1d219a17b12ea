/*
 * test-tree-file.c: the tree's file form. Random changes to a model, each
 * written as a journal record; replaying the records on the first whole
 * file must give the whole file of the model at every point. Then the
 * journal's faults: a record cut short, a damaged one, one out of order.
 */
#include <stdlib.h>
#include <string.h>

#include "qbranch.h"
#include "tap.h"

static unsigned int	seed;

static unsigned int
rnd(unsigned int n)
{
	seed = seed * 1103515245 + 12345;
	return (seed >> 16) % n;
}

static void
set_disks(struct snap_file **f, size_t *n, int ndisks, const char *stem)
{
	struct snap_file	one[2];
	char			file[64], devs[2][4] = { "vda", "vdb" };
	char			format[] = "qcow2", odd[] = "/img/\"q\"\\p";
	int			i;

	for (i = 0; i < ndisks; i++) {
		snprintf(file, sizeof file, "/img/%s.%s-%u", devs[i], stem,
		    rnd(1000));
		one[i].device = devs[i];
		one[i].file = file;
		one[i].format = format;
		one[i].backing = rnd(2) ? odd : NULL;
		one[i].owned = rnd(2);
		/* snap_files_set copies: file may be reused for the next. */
		snap_files_set(f, n, one, i + 1);
	}
}

static struct snapshot *
nth_snap(struct snap_tree *t, unsigned int k)
{
	struct snapshot	*s;

	TAILQ_FOREACH(s, &t->snapshots, entry) {
		if (k-- == 0)
			return s;
	}
	return NULL;
}

static struct branch *
nth_branch(struct snap_tree *t, unsigned int k)
{
	struct branch	*b;

	TAILQ_FOREACH(b, &t->branches, entry) {
		if (k-- == 0)
			return b;
	}
	return NULL;
}

/* A saved VM state, or none; with 0 to 2 copies of RAM files. */
static struct snap_memory *
random_memory(const char *name)
{
	struct snap_memory	*m;
	size_t			 i;

	if (rnd(3) == 0)
		return NULL;
	m = xcalloc(1, sizeof *m);
	xasprintf(&m->state, "/state/memory/%s.state", name);
	m->vm_state = xstrdup(rnd(2) ? "running" : "paused");
	m->nram = rnd(3);
	m->ram = xcalloc(m->nram, sizeof *m->ram);
	for (i = 0; i < m->nram; i++) {
		xasprintf(&m->ram[i].backend, "ram%zu", i);
		xasprintf(&m->ram[i].file, "/state/memory/%s.ram%zu.ram", name,
		    i);
	}
	return m;
}

/* One random change of the kinds operations make. */
static void
mutate(struct snap_tree *t, int *names)
{
	struct snapshot	*s, *p;
	struct branch	*b, *a;
	size_t		 ns = 0, nb = 0;
	char		 name[32];

	TAILQ_FOREACH(s, &t->snapshots, entry)
		ns++;
	TAILQ_FOREACH(b, &t->branches, entry)
		nb++;
	switch (rnd(9)) {
	case 0:
	case 1:
		snprintf(name, sizeof name, "s%d", ++*names);
		p = nth_snap(t, rnd(ns + 1));
		s = snap_add(t, name, p);
		set_disks(&s->disks, &s->ndisks, 1 + rnd(2), name);
		s->memory = random_memory(name);
		break;
	case 2:
		if ((s = nth_snap(t, rnd(ns + 1))) != NULL)
			snap_remove(t, s);
		break;
	case 3:
		if ((s = nth_snap(t, rnd(ns + 1))) != NULL) {
			/* A rename: its children's lines change too. */
			free(s->name);
			xasprintf(&s->name, "r%d", ++*names);
			snap_touch_name(t, s);
		}
		break;
	case 4:
		snprintf(name, sizeof name, "b%d", ++*names);
		b = branch_add(t, name, nth_snap(t, rnd(ns + 1)));
		set_disks(&b->disks, &b->ndisks, 1, name);
		break;
	case 5:
		if ((b = nth_branch(t, rnd(nb))) != NULL && !b->attached)
			branch_remove(t, b);
		break;
	case 6:
		if ((a = branch_attached(t)) == NULL ||
		    (b = nth_branch(t, rnd(nb))) == NULL)
			break;
		a->attached = 0;
		b->attached = 1;
		set_disks(&b->disks, &b->ndisks, 2, b->name);
		/* The branch left may keep its memory; b's is used up. */
		if (a != b) {
			snap_memory_free(a->memory);
			a->memory = random_memory(a->name);
			snap_memory_free(b->memory);
			b->memory = NULL;
		}
		branch_touch(a);
		branch_touch(b);
		break;
	case 7:
		if ((s = nth_snap(t, rnd(ns + 1))) != NULL)
			snap_tree_keep_base(t, s->disks);
		break;
	case 8:
		if (t->nbases > 0)
			snap_tree_drop_base(t, t->bases[rnd(t->nbases)].file);
		break;
	}
}

/* A record as the journal holds it: its own pages. */
static void
journal_add(struct buf *j, const char *record)
{
	size_t	len = strlen(record), total = store_record_len(len);
	char	*page = xmalloc(total);

	memset(page, ' ', total);
	memcpy(page, record, len);
	page[len] = '\n';
	page[total - 1] = '\n';
	buf_add(j, page, total);
	free(page);
}

static json_t *
replayed(const char *first, const struct buf *j, size_t *good, char **cause)
{
	json_t	*root = json_loads(first, 0, NULL);

	if (tree_journal_replay(root, j->data ? j->data : "", j->len, good,
	    cause) == -1) {
		json_decref(root);
		return NULL;
	}
	return root;
}

static void
test_random(unsigned int s0, int steps)
{
	struct snap_tree	*t = snap_tree_new(), *u;
	struct tree_file	 saved, now;
	struct buf		 j = { NULL, 0, 0 };
	struct branch		*b;
	json_t			*root, *want;
	char			*first, *rec, *text, *cause = NULL;
	size_t			 good;
	int			 names = 0, step, whole, bad = 0, records = 0;
	int			 checked = 0;

	seed = s0;
	b = branch_add(t, "main", NULL);
	b->attached = 1;
	set_disks(&b->disks, &b->ndisks, 2, "main");
	memset(&saved, 0, sizeof saved);
	tree_file_set(&saved, t);
	first = tree_file_text(&saved);
	for (step = 0; step < steps && !bad; step++) {
		mutate(t, &names);
		if (rnd(3) == 0)
			mutate(t, &names);
		rec = tree_file_change(&saved, t, &now, &whole);
		if (whole) {
			bad = 1;
			diag("seed %u step %d: no record for the change", s0,
			    step);
			break;
		}
		if (rec != NULL) {
			journal_add(&j, rec);
			records++;
		} else if (now.seq != saved.seq)
			bad = 1;
		free(rec);
		tree_file_clear(&saved);
		saved = now;
		if (step % 7 != 0 && step != steps - 1)
			continue;
		checked++;
		text = tree_file_text(&saved);
		want = json_loads(text, 0, NULL);
		root = replayed(first, &j, &good, &cause);
		if (root == NULL || !json_equal(root, want) || good != j.len) {
			diag("seed %u step %d: %s", s0, step,
			    cause ? cause : "replay differs");
			bad = 1;
		}
		/* And the replayed file is a tree again, the same one. */
		u = root != NULL ? snap_tree_from_json(root, &cause) : NULL;
		free(text);
		text = u != NULL ? snap_tree_text(u) : NULL;
		rec = snap_tree_text(t);
		if (text == NULL || strcmp(text, rec) != 0) {
			diag("seed %u step %d: %s", s0, step,
			    cause ? cause : "the tree read back differs");
			diag("got  %s", text ? text : "(null)");
			diag("want %s", rec);
			bad = 1;
		}
		free(rec);
		snap_tree_free(u);
		free(text);
		json_decref(root);
		json_decref(want);
	}
	ok(!bad, "seed %u: %d records of %d steps replay to the tree at each "
	    "of %d checks", s0, records, steps, checked);
	free(cause);
	free(first);
	buf_free(&j);
	tree_file_clear(&saved);
	snap_tree_free(t);
}

static void
test_faults(void)
{
	struct snap_tree	*t = snap_tree_new();
	struct tree_file	 saved, now;
	struct branch		*b;
	struct buf		 j = { NULL, 0, 0 }, k = { NULL, 0, 0 };
	json_t			*root;
	char			*first, *rec, *cause = NULL;
	size_t			 good, len1;
	int			 whole, names = 0;

	seed = 7;
	b = branch_add(t, "main", NULL);
	b->attached = 1;
	set_disks(&b->disks, &b->ndisks, 1, "main");
	memset(&saved, 0, sizeof saved);
	tree_file_set(&saved, t);
	first = tree_file_text(&saved);

	rec = tree_file_change(&saved, t, &now, &whole);
	ok(rec == NULL && !whole && now.seq == saved.seq,
	    "no change: no record, the same seq");
	tree_file_clear(&now);

	snap_add(t, "s1", NULL);
	rec = tree_file_change(&saved, t, &now, &whole);
	ok(rec != NULL && strncmp(rec, "{\"seq\": 1, \"snapshots\": "
	    "[[\"add\", {\"name\": \"s1\"", 36) == 0, "a new snapshot is "
	    "an add: %s", rec);
	journal_add(&j, rec);
	free(rec);
	tree_file_clear(&saved);
	saved = now;
	len1 = j.len;
	ok(len1 == STORE_PAGE, "a record takes whole pages");
	mutate(t, &names);
	snap_add(t, "s2", snap_find(t, "s1"));
	rec = tree_file_change(&saved, t, &now, &whole);
	journal_add(&j, rec);
	free(rec);
	tree_file_clear(&saved);
	saved = now;

	/* Cut short: the last record, half written, is dropped. */
	buf_add(&k, j.data, len1);
	buf_add(&k, j.data + len1, 20);
	root = replayed(first, &k, &good, &cause);
	ok(root != NULL && good == len1 && json_integer_value(
	    json_object_get(root, "seq")) == 1, "a record cut short is "
	    "dropped; replay ends before it");
	json_decref(root);
	k.len = len1;
	buf_add(&k, "\0\0\0\0", 4);
	root = replayed(first, &k, &good, &cause);
	ok(root != NULL && good == len1, "so are zeroes where a record was "
	    "to be");
	json_decref(root);

	/* Damaged before a good record: refused. */
	k.len = 0;
	buf_add(&k, j.data, j.len);
	k.data[0] = '#';
	root = replayed(first, &k, &good, &cause);
	ok(root == NULL && cause != NULL && strstr(cause, "unreadable") !=
	    NULL, "a damaged record before a good one is refused: %s", cause);
	free(cause);
	cause = NULL;

	/* Out of order. */
	k.len = 0;
	buf_add(&k, j.data + len1, j.len - len1);
	root = replayed(first, &k, &good, &cause);
	ok(root == NULL && cause != NULL && strstr(cause, "order") != NULL,
	    "a record after a gap is refused: %s", cause);
	free(cause);
	cause = NULL;

	/* Records the file already holds are skipped. */
	rec = tree_file_text(&saved);
	root = replayed(rec, &j, &good, &cause);
	ok(root != NULL && good == j.len && json_integer_value(
	    json_object_get(root, "seq")) == 2, "records the file holds are "
	    "skipped");
	json_decref(root);
	free(rec);

	/* A change that is not one. */
	k.len = 0;
	journal_add(&k, "{\"seq\": 1, \"snapshots\": [[\"del\", 5]]}");
	root = replayed(first, &k, &good, &cause);
	ok(root == NULL && cause != NULL && strstr(cause, "record 1") !=
	    NULL, "a change out of range is refused: %s", cause);
	free(cause);
	cause = NULL;
	k.len = 0;
	journal_add(&k, "{\"seq\": 1, \"branches\": [[\"add\", 5]]}");
	root = replayed(first, &k, &good, &cause);
	ok(root == NULL && cause != NULL, "an add of a non-entry is "
	    "refused: %s", cause);
	free(cause);

	buf_free(&j);
	buf_free(&k);
	free(first);
	tree_file_clear(&saved);
	snap_tree_free(t);
}

int
main(void)
{
	unsigned int	s;

	tree_file_check = 1;	/* a missing touch in mutate() aborts */
	for (s = 1; s <= 6; s++)
		test_random(s, 400);
	test_faults();
	return tap_done();
}
