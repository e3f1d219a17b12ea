/*
 * test-snap-tree.c: the pure snapshot model: names, reparenting, default
 * names, stems, dependants, and the tree file's round trip and checks.
 */
#include <stdlib.h>
#include <string.h>

#include "qbranch.h"
#include "tap.h"

static void
set_file(struct snap_file **f, size_t *n, const char *file,
    const char *backing, int owned)
{
	struct snap_file	one;

	one.device = xstrdup("vda");
	one.file = xstrdup(file);
	one.format = xstrdup("qcow2");
	one.backing = backing != NULL ? xstrdup(backing) : NULL;
	one.owned = owned;
	snap_files_set(f, n, &one, 1);
	free(one.device);
	free(one.file);
	free(one.format);
	free(one.backing);
}

static void
test_names(void)
{
	static const struct {
		const char	*name;
		int		 valid;
	} cases[] = {
		{ "s1", 1 }, { "A.b_c+d-e", 1 }, { "9", 1 },
		{ "", 0 }, { "-x", 0 }, { ".hidden", 0 }, { "../x", 0 },
		{ "a/b", 0 }, { "x y", 0 }, { "caf\xc3\xa9", 0 }, { "a\tb", 0 },
	};
	char	long_[70];
	size_t	i;

	for (i = 0; i < sizeof cases / sizeof cases[0]; i++)
		ok(snap_name_is_valid(cases[i].name) == cases[i].valid,
		    "name '%s' is %s", cases[i].name,
		    cases[i].valid ? "valid" : "refused");
	memset(long_, 'a', sizeof long_);
	long_[64] = '\0';
	ok(snap_name_is_valid(long_), "64 characters are allowed");
	long_[64] = 'a';
	long_[65] = '\0';
	ok(!snap_name_is_valid(long_), "65 characters are refused");
}

static void
test_stem(void)
{
	char	*s;

	s = snap_stem("/img/vm.qcow2");
	ok(strcmp(s, "/img/vm") == 0, "stem of vm.qcow2: %s", s);
	free(s);
	s = snap_stem("/img/vm");
	ok(strcmp(s, "/img/vm") == 0, "stem without extension: %s", s);
	free(s);
	s = snap_stem("/img.d/vm");
	ok(strcmp(s, "/img.d/vm") == 0, "a dot in the directory: %s", s);
	free(s);
	s = snap_stem("/img/.vm");
	ok(strcmp(s, "/img/.vm") == 0, "a dot file keeps its name: %s", s);
	free(s);
}

/* The seed 001 tree: A -> B -> D, A -> C -> E, and branches on D and E. */
static struct snap_tree *
seed_tree(void)
{
	struct snap_tree	*t = snap_tree_new();
	struct snapshot		*a, *b, *c, *d, *e;
	struct branch		*br;

	a = snap_add(t, "A", NULL);
	set_file(&a->disks, &a->ndisks, "/i/vm.qcow2", NULL, 0);
	b = snap_add(t, "B", a);
	set_file(&b->disks, &b->ndisks, "/i/vm.A", "/i/vm.qcow2", 1);
	c = snap_add(t, "C", a);
	set_file(&c->disks, &c->ndisks, "/i/vm.A-1", "/i/vm.qcow2", 1);
	d = snap_add(t, "D", b);
	set_file(&d->disks, &d->ndisks, "/i/vm.B", "/i/vm.A", 1);
	e = snap_add(t, "E", c);
	set_file(&e->disks, &e->ndisks, "/i/vm.C", "/i/vm.A-1", 1);
	br = branch_add(t, "main", d);
	set_file(&br->disks, &br->ndisks, "/i/vm.D", "/i/vm.B", 1);
	br = branch_add(t, "A-1", e);
	br->attached = 1;
	set_file(&br->disks, &br->ndisks, "/i/vm.E", "/i/vm.C", 1);
	return t;
}

static void
test_model(void)
{
	struct snap_tree	*t = seed_tree();
	struct snapshot		*a = snap_find(t, "A"), *b = snap_find(t, "B");
	struct snap_file	*one = NULL;
	json_t			*j;
	char			*name;

	ok(snap_current(t) == snap_find(t, "E"), "current is the attached "
	    "branch's base");
	ok(snap_is_ancestor(a, snap_find(t, "E")) &&
	    !snap_is_ancestor(b, snap_find(t, "E")), "ancestry");
	ok(snap_tree_dependants(t, "/i/vm.qcow2", &one) == 2,
	    "two images sit on the original");
	ok(snap_tree_dependants(t, "/i/vm.A", &one) == 1 &&
	    strcmp(one->file, "/i/vm.B") == 0, "one image sits on vm.A");
	ok(snap_tree_image(t, "/i/vm.D") != NULL &&
	    snap_tree_image(t, "/nope") == NULL, "images are found by path");

	snap_remove(t, b);
	ok(snap_find(t, "D")->parent == a, "removing B moves D to A");
	ok(branch_find(t, "main")->base == snap_find(t, "D"),
	    "branches keep their base");
	snap_remove(t, snap_find(t, "D"));
	ok(branch_find(t, "main")->base == a, "removing D moves main to A");

	j = snap_json(t, snap_find(t, "A"));
	ok(json_array_size(json_object_get(j, "children")) == 1 &&
	    json_is_null(json_object_get(j, "parent")) &&
	    json_is_false(json_object_get(j, "current")),
	    "snapshot object: children, parent, current");
	json_decref(j);

	name = snap_default_name(t, 0);
	ok(strcmp(name, "vm-19700101000000") == 0, "default name: %s", name);
	snap_add(t, name, NULL);
	free(name);
	name = snap_default_name(t, 0);
	ok(strcmp(name, "vm-19700101000000-2") == 0, "taken: %s", name);
	free(name);
	snap_tree_free(t);
}

/* Lookups by path, and the answers they keep, across changes. */
static void
test_lookup(void)
{
	struct snap_tree	*t = seed_tree();
	struct snapshot		*d = snap_find(t, "D");
	struct snap_file	*f, *one = NULL;
	char			*text;

	f = snap_tree_image(t, "/i/vm.B");
	ok(f == &d->disks[0], "an image is found by path");
	ok(snap_tree_image(t, "/i/vm.B") == f, "and again, from the kept "
	    "answer");
	/* Lines and hashes made: lookups compare hashes first. */
	free(text = snap_tree_text(t));
	ok(snap_tree_image(t, "/i/vm.qcow2") == &snap_find(t, "A")->disks[0]
	    && snap_tree_dependants(t, "/i/vm.A", &one) == 1, "with hashes "
	    "kept too");
	free(f->file);
	f->file = xstrdup("/i/vm.B2");
	snap_touch(d);
	ok(snap_tree_image(t, "/i/vm.B") == NULL, "a changed path is not "
	    "found under the old one");
	ok(snap_tree_image(t, "/i/vm.B2") == f, "but under the new one");
	snap_remove(t, d);
	ok(snap_tree_image(t, "/i/vm.B2") == NULL, "a removed snapshot's "
	    "image is not found (no kept answer outlives it)");
	snap_tree_keep_base(t, snap_find(t, "B")->disks);
	ok(snap_tree_image(t, "/i/vm.A") == &snap_find(t, "B")->disks[0],
	    "a path in a snapshot and a base: the snapshot's");
	snap_tree_free(t);
}

static void
test_file(void)
{
	struct snap_tree	*t = seed_tree(), *u;
	json_t			*j, *k;
	json_error_t		 err;
	char			*cause = NULL, *a, *b;

	snap_tree_keep_base(t, snap_find(t, "B")->disks);
	a = snap_tree_text(t);
	j = json_loads(a, JSON_REJECT_DUPLICATES, &err);
	ok(j != NULL, "the tree file is JSON%s%s", j ? "" : ": ",
	    j ? "" : err.text);
	u = snap_tree_from_json(j, &cause);
	ok(u != NULL, "the tree file reads back%s%s", cause ? ": " : "",
	    cause ? cause : "");
	b = u != NULL ? snap_tree_text(u) : NULL;
	ok(b != NULL && strcmp(a, b) == 0, "round trip is identical");
	ok(u != NULL && u->nbases == 1, "unnamed bases are kept");
	free(a);
	free(b);
	snap_tree_free(u);

	/* Each fault makes the whole file unusable, with a reason. */
	k = json_deep_copy(j);
	json_object_set_new(k, "version", json_integer(99));
	u = snap_tree_from_json(k, &cause);
	ok(u == NULL && strstr(cause, "version") != NULL, "a later version "
	    "is refused: %s", cause);
	free(cause);
	json_decref(k);

	k = json_deep_copy(j);
	json_object_set_new(json_array_get(json_object_get(k, "snapshots"), 1),
	    "parent", json_string("nosuch"));
	u = snap_tree_from_json(k, &cause);
	ok(u == NULL && strstr(cause, "nosuch") != NULL,
	    "an unknown parent is refused: %s", cause);
	free(cause);
	json_decref(k);

	k = json_deep_copy(j);
	json_object_set_new(json_array_get(json_object_get(k, "branches"), 0),
	    "attached", json_true());
	u = snap_tree_from_json(k, &cause);
	ok(u == NULL && strstr(cause, "attached") != NULL,
	    "two attached branches are refused: %s", cause);
	free(cause);
	json_decref(k);

	k = json_deep_copy(j);
	json_object_set_new(json_array_get(json_object_get(k, "snapshots"), 0),
	    "name", json_string("../evil"));
	u = snap_tree_from_json(k, &cause);
	ok(u == NULL, "an unsafe name is refused: %s", cause);
	free(cause);
	json_decref(k);

	k = json_deep_copy(j);
	json_object_set_new(json_array_get(json_object_get(json_array_get(
	    json_object_get(k, "snapshots"), 0), "disks"), 0), "file",
	    json_string("relative/path"));
	u = snap_tree_from_json(k, &cause);
	ok(u == NULL, "a relative image path is refused: %s", cause);
	free(cause);
	json_decref(k);

	json_decref(j);
	snap_tree_free(t);
}

int
main(void)
{
	test_names();
	test_stem();
	test_model();
	test_lookup();
	test_file();
	return tap_done();
}
