/*
 * snap-tree.c: the snapshot and branch model as pure data: lookup, naming,
 * reparenting, and its versioned JSON form (the tree file and the query
 * replies). No I/O and no QEMU here; snap-op.c and its users change QEMU's
 * graph and then this model, in that order.
 *
 * Every image records the image below it (its backing), so chains are
 * followed by path: a snapshot's image normally sits on its parent's, a
 * branch's overlay on its base's, until a delete leaves an unnamed image
 * between them. Originals (not created by qbranch) record no backing.
 */
#include <sys/stat.h>

#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "qbranch.h"

/* Entries made in this process, in order: how the tree file tells them. */
static uint64_t	snap_serial;

/*
 * Changes whenever image records may move or go (arrays freed, grown or
 * shifted; entries freed): a pointer to one, kept from before, is then
 * no longer to be followed. Only this file does such things.
 */
static uint64_t	snap_layout = 1;

/* Makes an empty tree. */
struct snap_tree *
snap_tree_new(void)
{
	struct snap_tree	*t;

	t = xcalloc(1, sizeof *t);
	TAILQ_INIT(&t->snapshots);
	TAILQ_INIT(&t->branches);
	return t;
}

/* Frees the files of a snapshot or branch. */
void
snap_files_free(struct snap_file *f, size_t n)
{
	size_t	i;

	snap_layout++;
	for (i = 0; i < n; i++) {
		free(f[i].device);
		free(f[i].file);
		free(f[i].format);
		free(f[i].backing);
	}
	free(f);
}

/* Replaces *dst (n entries) with a deep copy of src. */
void
snap_files_set(struct snap_file **dst, size_t *ndst,
    const struct snap_file *src, size_t n)
{
	struct snap_file	*f;
	size_t			 i;

	f = xcalloc(n, sizeof *f);
	for (i = 0; i < n; i++) {
		f[i].device = xstrdup(src[i].device);
		f[i].file = xstrdup(src[i].file);
		f[i].format = xstrdup(src[i].format);
		f[i].backing = src[i].backing ? xstrdup(src[i].backing) : NULL;
		f[i].owned = src[i].owned;
	}
	snap_files_free(*dst, *ndst);
	*dst = f;
	*ndst = n;
}

/* The entry for device, or NULL. */
const struct snap_file *
snap_file_find(const struct snap_file *f, size_t n, const char *device)
{
	size_t	i;

	for (i = 0; i < n; i++) {
		if (strcmp(f[i].device, device) == 0)
			return &f[i];
	}
	return NULL;
}

/* dst (same device) becomes the image src is: file, format, backing. */
void
snap_file_take(struct snap_file *dst, const struct snap_file *src)
{
	char	*file = xstrdup(src->file), *format = xstrdup(src->format);
	char	*backing = src->backing ? xstrdup(src->backing) : NULL;

	free(dst->file);
	free(dst->format);
	free(dst->backing);
	dst->file = file;
	dst->format = format;
	dst->backing = backing;
	dst->owned = src->owned;
}

/*
 * Takes a device out of the tree, before its first snapshot: the branch
 * forgets it, and from then on no operation touches it. Returns -1 with
 * *cause when a snapshot holds it already: its branches would then share
 * one writable image.
 */
int
branch_exclude_disk(struct snap_tree *t, struct branch *b,
    const char *device, char **cause)
{
	const struct snapshot	*s;
	size_t			 i;

	TAILQ_FOREACH(s, &t->snapshots, entry) {
		if (snap_file_find(s->disks, s->ndisks, device) != NULL) {
			xasprintf(cause, "device %s is in snapshot %s already: "
			    "a disk can be left out of the tree only before "
			    "its first snapshot", device, s->name);
			return -1;
		}
	}
	for (i = 0; i < b->ndisks; i++) {
		if (strcmp(b->disks[i].device, device) != 0)
			continue;
		free(b->disks[i].device);
		free(b->disks[i].file);
		free(b->disks[i].format);
		free(b->disks[i].backing);
		memmove(&b->disks[i], &b->disks[i + 1],
		    (b->ndisks - i - 1) * sizeof *b->disks);
		b->ndisks--;
		snap_layout++;
		branch_touch(b);
		return 0;
	}
	xasprintf(cause, "device %s is not in the tree", device);
	return -1;
}

static void
snapshot_free(struct snapshot *s)
{
	tree_text_unref(s->line);
	free(s->hashes);
	free(s->name);
	free(s->description);
	free(s->vm_state);
	snap_files_free(s->disks, s->ndisks);
	snap_memory_free(s->memory);
	free(s);
}

static void
branch_free(struct branch *b)
{
	tree_text_unref(b->line);
	free(b->hashes);
	free(b->name);
	snap_files_free(b->disks, b->ndisks);
	snap_memory_free(b->memory);
	free(b);
}

void
snap_memory_free(struct snap_memory *m)
{
	size_t	i;

	if (m == NULL)
		return;
	for (i = 0; i < m->nram; i++) {
		free(m->ram[i].backend);
		free(m->ram[i].file);
	}
	free(m->ram);
	free(m->state);
	free(m->vm_state);
	free(m);
}

struct snap_memory *
snap_memory_dup(const struct snap_memory *m)
{
	struct snap_memory	*d;
	size_t			 i;

	if (m == NULL)
		return NULL;
	d = xcalloc(1, sizeof *d);
	d->state = xstrdup(m->state);
	d->vm_state = xstrdup(m->vm_state);
	d->ram = xcalloc(m->nram, sizeof *d->ram);
	for (i = 0; i < m->nram; i++) {
		d->ram[i].backend = xstrdup(m->ram[i].backend);
		d->ram[i].file = xstrdup(m->ram[i].file);
	}
	d->nram = m->nram;
	return d;
}

/* Appends the files of a saved state to paths (a JSON array). */
void
snap_memory_files(const struct snap_memory *m, json_t *paths)
{
	size_t	i;

	if (m == NULL)
		return;
	json_array_append_new(paths, json_string(m->state));
	for (i = 0; i < m->nram; i++)
		json_array_append_new(paths, json_string(m->ram[i].file));
}

/* Every file of every saved state in the tree (new reference). */
json_t *
snap_memory_all(const struct snap_tree *t)
{
	const struct snapshot	*s;
	const struct branch	*b;
	json_t			*files = json_array();

	TAILQ_FOREACH(s, &t->snapshots, entry)
		snap_memory_files(s->memory, files);
	TAILQ_FOREACH(b, &t->branches, entry)
		snap_memory_files(b->memory, files);
	return files;
}

/* The files of before (snap_memory_all()) the tree no longer names. */
json_t *
snap_memory_gone(const struct snap_tree *t, json_t *before)
{
	json_t		*now = snap_memory_all(t), *gone = json_array(), *f, *g;
	size_t		 i, k;
	int		 kept;

	json_array_foreach(before, i, f) {
		kept = 0;
		json_array_foreach(now, k, g) {
			if (json_equal(f, g))
				kept = 1;
		}
		if (!kept)
			json_array_append(gone, f);
	}
	json_decref(now);
	return gone;
}

/* The bytes a saved state takes on disk. */
uint64_t
snap_memory_size(const struct snap_memory *m)
{
	uint64_t	n = 0;
	size_t		i;

	if (m == NULL)
		return 0;
	n = file_allocated(m->state);
	for (i = 0; i < m->nram; i++)
		n += file_allocated(m->ram[i].file);
	return n;
}

/* A saved state from its file form; NULL with *cause when malformed. */
struct snap_memory *
snap_memory_from_json(json_t *o, char **cause)
{
	struct snap_memory	*m;
	json_t			*ram, *r;
	const char		*state, *vm_state, *backend, *file;
	size_t			 i;

	if (json_unpack(o, "{s:s, s:s, s:o}", "state", &state, "vm-state",
	    &vm_state, "ram", &ram) == -1 || state[0] != '/' ||
	    !json_is_array(ram)) {
		*cause = xstrdup("bad 'memory'");
		return NULL;
	}
	m = xcalloc(1, sizeof *m);
	m->state = xstrdup(state);
	m->vm_state = xstrdup(vm_state);
	m->ram = xcalloc(json_array_size(ram), sizeof *m->ram);
	json_array_foreach(ram, i, r) {
		if (json_unpack(r, "{s:s, s:s}", "backend", &backend, "file",
		    &file) == -1 || file[0] != '/') {
			snap_memory_free(m);
			*cause = xstrdup("bad 'memory' RAM entry");
			return NULL;
		}
		m->ram[i].backend = xstrdup(backend);
		m->ram[i].file = xstrdup(file);
		m->nram++;
	}
	return m;
}

/* A saved state in its file form (new reference), or null. */
json_t *
snap_memory_json(const struct snap_memory *m)
{
	json_t	*ram;
	size_t	 i;

	if (m == NULL)
		return json_null();
	ram = json_array();
	for (i = 0; i < m->nram; i++)
		json_array_append_new(ram, json_pack("{s:s, s:s}", "backend",
		    m->ram[i].backend, "file", m->ram[i].file));
	return json_pack("{s:s, s:s, s:o}", "state", m->state, "vm-state",
	    m->vm_state, "ram", ram);
}

/* Frees a tree. */
void
snap_tree_free(struct snap_tree *t)
{
	struct snapshot	*s;
	struct branch	*b;

	if (t == NULL)
		return;
	while ((s = TAILQ_FIRST(&t->snapshots)) != NULL) {
		TAILQ_REMOVE(&t->snapshots, s, entry);
		snapshot_free(s);
	}
	while ((b = TAILQ_FIRST(&t->branches)) != NULL) {
		TAILQ_REMOVE(&t->branches, b, entry);
		branch_free(b);
	}
	snap_files_free(t->bases, t->nbases);
	free(t);
}

/*
 * Names go into file names: a letter or digit, then letters, digits and
 * ". _ + -", at most SNAP_NAME_MAX bytes.
 */
int
snap_name_is_valid(const char *name)
{
	size_t	i;

	if (name == NULL || name[0] == '\0' || strlen(name) > SNAP_NAME_MAX)
		return 0;
	if (!isascii((unsigned char)name[0]) ||
	    !isalnum((unsigned char)name[0]))
		return 0;
	for (i = 1; name[i] != '\0'; i++) {
		if (!isascii((unsigned char)name[i]) ||
		    (!isalnum((unsigned char)name[i]) &&
		    strchr("._+-", name[i]) == NULL))
			return 0;
	}
	return 1;
}

/* The snapshot called name, or NULL. */
struct snapshot *
snap_find(const struct snap_tree *t, const char *name)
{
	struct snapshot	*s;

	TAILQ_FOREACH(s, &t->snapshots, entry) {
		if (strcmp(s->name, name) == 0)
			return s;
	}
	return NULL;
}

/* The branch called name, or NULL. */
struct branch *
branch_find(const struct snap_tree *t, const char *name)
{
	struct branch	*b;

	TAILQ_FOREACH(b, &t->branches, entry) {
		if (strcmp(b->name, name) == 0)
			return b;
	}
	return NULL;
}

/* The branch the VM runs on; NULL only for an empty tree. */
struct branch *
branch_attached(const struct snap_tree *t)
{
	struct branch	*b;

	TAILQ_FOREACH(b, &t->branches, entry) {
		if (b->attached)
			return b;
	}
	return NULL;
}

/* The current snapshot: the base of the attached branch. */
struct snapshot *
snap_current(const struct snap_tree *t)
{
	struct branch	*b = branch_attached(t);

	return b != NULL ? b->base : NULL;
}

/* Whether a is s or one of its ancestors. */
int
snap_is_ancestor(const struct snapshot *a, const struct snapshot *s)
{
	for (; s != NULL; s = s->parent) {
		if (s == a)
			return 1;
	}
	return 0;
}

/* Adds a snapshot (no disks yet) as a child of parent. */
struct snapshot *
snap_add(struct snap_tree *t, const char *name, struct snapshot *parent)
{
	struct snapshot	*s;

	s = xcalloc(1, sizeof *s);
	s->name = xstrdup(name);
	s->description = xstrdup("");
	s->vm_state = xstrdup("");
	s->parent = parent;
	s->serial = ++snap_serial;
	TAILQ_INSERT_TAIL(&t->snapshots, s, entry);
	return s;
}

/*
 * Removes a snapshot from the model: its children and the branches based
 * on it move to its parent.
 */
void
snap_remove(struct snap_tree *t, struct snapshot *s)
{
	struct snapshot	*c;
	struct branch	*b;

	TAILQ_FOREACH(c, &t->snapshots, entry) {
		if (c->parent == s) {
			c->parent = s->parent;
			snap_touch(c);
		}
	}
	TAILQ_FOREACH(b, &t->branches, entry) {
		if (b->base == s) {
			b->base = s->parent;
			branch_touch(b);
		}
	}
	TAILQ_REMOVE(&t->snapshots, s, entry);
	snapshot_free(s);
}

/*
 * An entry's tree file line is made once and kept (tree-file.c): whatever
 * changes what an entry's line says must drop it, through these.
 */
void
snap_touch(struct snapshot *s)
{
	tree_text_unref(s->line);
	s->line = NULL;
	free(s->hashes);
	s->hashes = NULL;
}

void
branch_touch(struct branch *b)
{
	tree_text_unref(b->line);
	b->line = NULL;
	free(b->hashes);
	b->hashes = NULL;
}

/* A renamed snapshot: its children and branches name it too. */
void
snap_touch_name(struct snap_tree *t, struct snapshot *s)
{
	struct snapshot	*c;
	struct branch	*b;

	snap_touch(s);
	TAILQ_FOREACH(c, &t->snapshots, entry) {
		if (c->parent == s)
			snap_touch(c);
	}
	TAILQ_FOREACH(b, &t->branches, entry) {
		if (b->base == s)
			branch_touch(b);
	}
}

/* The image record f changed: the snapshot or branch holding it. */
void
snap_tree_touch_file(struct snap_tree *t, const struct snap_file *f)
{
	struct snapshot	*s;
	struct branch	*b;
	uintptr_t	 p = (uintptr_t)f;

	TAILQ_FOREACH(s, &t->snapshots, entry) {
		if (p >= (uintptr_t)s->disks &&
		    p < (uintptr_t)(s->disks + s->ndisks))
			snap_touch(s);
	}
	TAILQ_FOREACH(b, &t->branches, entry) {
		if (p >= (uintptr_t)b->disks &&
		    p < (uintptr_t)(b->disks + b->ndisks))
			branch_touch(b);
	}
}

/* FNV-1a: a first test before strcmp() in the lookups by path. */
static uint32_t
path_hash(const char *p)
{
	uint32_t	h = 2166136261u;

	for (; *p != '\0'; p++) {
		h ^= (unsigned char)*p;
		h *= 16777619u;
	}
	return h;
}

/*
 * The hashes of an entry's paths, file then backing per disk: made with
 * its line, dropped with it (snap_touch()), so valid while it is kept.
 * With a thousand snapshots a lookup then compares 4,000 numbers, not
 * 4,000 strings sharing a long directory prefix.
 */
uint32_t *
snap_files_hashes(const struct snap_file *d, size_t n)
{
	uint32_t	*h = xcalloc(2 * n + 1, sizeof *h);
	size_t		 i;

	for (i = 0; i < n; i++) {
		h[2 * i] = path_hash(d[i].file);
		h[2 * i + 1] = d[i].backing != NULL ?
		    path_hash(d[i].backing) : 0;
	}
	return h;
}

/* Whether disk i's file (which 0) or backing (1) is path, hashed ph. */
static int
disk_has(const struct snap_file *d, const uint32_t *h, size_t i, int which,
    uint32_t ph, const char *path)
{
	const char	*p = which ? d[i].backing : d[i].file;

	if (p == NULL || (h != NULL && h[2 * i + which] != ph))
		return 0;
	return strcmp(p, path) == 0;
}

/* Adds a detached branch (no disks yet) growing from base. */
struct branch *
branch_add(struct snap_tree *t, const char *name, struct snapshot *from)
{
	struct branch	*b;

	b = xcalloc(1, sizeof *b);
	b->name = xstrdup(name);
	b->base = from;
	b->serial = ++snap_serial;
	TAILQ_INSERT_TAIL(&t->branches, b, entry);
	return b;
}

/* Removes a branch from the model. */
void
branch_remove(struct snap_tree *t, struct branch *b)
{
	struct snapshot	*s;
	const char	*dash = strrchr(b->name, '-');
	char		*stem, *end;
	long		 n;

	/* A default name <snapshot>-<N> is free again for reverts to it. */
	if (dash != NULL && dash[1] >= '1' && dash[1] <= '9') {
		n = strtol(dash + 1, &end, 10);
		stem = xstrndup(b->name, dash - b->name);
		if (*end == '\0' && (s = snap_find(t, stem)) != NULL &&
		    n < s->revert_next)
			s->revert_next = n;
		free(stem);
	}
	TAILQ_REMOVE(&t->branches, b, entry);
	branch_free(b);
}

/*
 * The record of an image anywhere in the tree, or NULL. Operations ask
 * about the same few images again and again (the root snapshot's are in
 * every chain, and the last found in a scan): recent answers are kept,
 * and used while no record has moved (snap_layout) and the one kept still
 * has that path.
 */
struct snap_file *
snap_tree_image(struct snap_tree *t, const char *path)
{
	struct snapshot		*s;
	struct branch		*b;
	struct snap_file	*f = NULL;
	uint32_t		 h = path_hash(path);
	size_t			 i, slot = h % SNAP_FOUND_SLOTS;

	if (t->found[slot].layout == snap_layout &&
	    t->found[slot].f != NULL &&
	    strcmp(t->found[slot].f->file, path) == 0)
		return t->found[slot].f;
	/* Branches, then the newest snapshots: what operations ask about. */
	TAILQ_FOREACH(b, &t->branches, entry) {
		for (i = 0; i < b->ndisks; i++) {
			if (disk_has(b->disks, b->hashes, i, 0, h, path)) {
				f = &b->disks[i];
				goto found;
			}
		}
	}
	TAILQ_FOREACH_REVERSE(s, &t->snapshots, snap_list, entry) {
		for (i = 0; i < s->ndisks; i++) {
			if (disk_has(s->disks, s->hashes, i, 0, h, path)) {
				f = &s->disks[i];
				goto found;
			}
		}
	}
	for (i = 0; i < t->nbases; i++) {
		if (strcmp(t->bases[i].file, path) == 0) {
			f = &t->bases[i];
			goto found;
		}
	}
	return NULL;
found:
	t->found[slot].f = f;
	t->found[slot].layout = snap_layout;
	return f;
}

/*
 * Keeps an image no snapshot names any more, because other images still
 * sit on it: an unnamed base.
 */
void
snap_tree_keep_base(struct snap_tree *t, const struct snap_file *f)
{
	struct snap_file	*all;
	size_t			 i;

	for (i = 0; i < t->nbases; i++) {
		if (strcmp(t->bases[i].file, f->file) == 0)
			return;
	}
	snap_layout++;
	all = xcalloc(t->nbases + 1, sizeof *all);
	if (t->nbases > 0)
		memcpy(all, t->bases, t->nbases * sizeof *all);
	all[t->nbases].device = xstrdup(f->device);
	all[t->nbases].file = xstrdup(f->file);
	all[t->nbases].format = xstrdup(f->format);
	all[t->nbases].backing = f->backing ? xstrdup(f->backing) : NULL;
	all[t->nbases].owned = f->owned;
	free(t->bases);
	t->bases = all;
	t->nbases++;
}

/* Forgets an unnamed base. */
void
snap_tree_drop_base(struct snap_tree *t, const char *path)
{
	size_t	i;

	for (i = 0; i < t->nbases; i++) {
		if (strcmp(t->bases[i].file, path) != 0)
			continue;
		free(t->bases[i].device);
		free(t->bases[i].file);
		free(t->bases[i].format);
		free(t->bases[i].backing);
		snap_layout++;
		if (i + 1 < t->nbases)
			memmove(&t->bases[i], &t->bases[i + 1],
			    (t->nbases - i - 1) * sizeof *t->bases);
		t->nbases--;
		return;
	}
}

/* How many images of the tree have path as their backing. */
size_t
snap_tree_dependants(const struct snap_tree *t, const char *path,
    struct snap_file **one)
{
	struct snapshot	*s;
	struct branch	*b;
	size_t		 i, n = 0;
	uint32_t	 h = path_hash(path);

	TAILQ_FOREACH(s, &t->snapshots, entry) {
		for (i = 0; i < s->ndisks; i++) {
			if (disk_has(s->disks, s->hashes, i, 1, h, path)) {
				n++;
				*one = &s->disks[i];
			}
		}
	}
	TAILQ_FOREACH(b, &t->branches, entry) {
		for (i = 0; i < b->ndisks; i++) {
			if (disk_has(b->disks, b->hashes, i, 1, h, path)) {
				n++;
				*one = &b->disks[i];
			}
		}
	}
	for (i = 0; i < t->nbases; i++) {
		if (t->bases[i].backing != NULL &&
		    strcmp(t->bases[i].backing, path) == 0) {
			n++;
			*one = &t->bases[i];
		}
	}
	return n;
}

/* A free default snapshot name, vm-YYYYMMDDHHMMSS[-N], as QEMU's savevm. */
char *
snap_default_name(const struct snap_tree *t, int64_t now)
{
	struct tm	 tm;
	time_t		 tt = now;
	char		 stamp[32], *name;
	int		 n;

	gmtime_r(&tt, &tm);
	strftime(stamp, sizeof stamp, "vm-%Y%m%d%H%M%S", &tm);
	name = xstrdup(stamp);
	for (n = 2; snap_find(t, name) != NULL; n++) {
		free(name);
		xasprintf(&name, "%s-%d", stamp, n);
	}
	return name;
}

/*
 * The path an image's derived files start with: the image's path without
 * its last extension (/img/vm.qcow2 gives /img/vm).
 */
char *
snap_stem(const char *path)
{
	const char	*slash = strrchr(path, '/');
	const char	*dot = strrchr(path, '.');

	if (dot == NULL || (slash != NULL && dot < slash) ||
	    dot == (slash != NULL ? slash + 1 : path))
		return xstrdup(path);
	return xstrndup(path, dot - path);
}

static json_t *
files_json(const struct snap_file *f, size_t n, int full)
{
	json_t	*a = json_array(), *o;
	size_t	 i;

	for (i = 0; i < n; i++) {
		o = json_pack("{s:s, s:s}", "device", f[i].device, "file",
		    f[i].file);
		if (full) {
			json_object_set_new(o, "format",
			    json_string(f[i].format));
			json_object_set_new(o, "backing", f[i].backing ?
			    json_string(f[i].backing) : json_null());
			json_object_set_new(o, "owned",
			    json_boolean(f[i].owned));
		}
		json_array_append_new(a, o);
	}
	return a;
}

/* The bytes a file takes on disk, or UINT64_MAX when it cannot be known. */
uint64_t
file_allocated(const char *path)
{
	struct stat	sb;

	if (stat(path, &sb) == -1)
		return UINT64_MAX;
	return (uint64_t)sb.st_blocks * 512;
}

/* The bytes the files take on disk, as the queries show them. */
static json_t *
files_size_json(const struct snap_file *f, size_t n)
{
	json_int_t	total = 0;
	uint64_t	size;
	size_t		i;

	for (i = 0; i < n; i++) {
		if ((size = file_allocated(f[i].file)) != UINT64_MAX)
			total += (json_int_t)size;
	}
	return json_integer(total);
}

/* The branch that has path as an overlay, or NULL. */
struct branch *
branch_of_overlay(const struct snap_tree *t, const char *path)
{
	struct branch	*b;
	size_t		 i;

	TAILQ_FOREACH(b, &t->branches, entry) {
		for (i = 0; i < b->ndisks; i++) {
			if (strcmp(b->disks[i].file, path) == 0)
				return b;
		}
	}
	return NULL;
}

/* A snapshot as the queries show it (new reference). */
json_t *
snap_json(const struct snap_tree *t, const struct snapshot *s)
{
	const struct snapshot	*c;
	json_t			*o, *children = json_array();

	TAILQ_FOREACH(c, &t->snapshots, entry) {
		if (c->parent == s)
			json_array_append_new(children, json_string(c->name));
	}
	o = json_pack("{s:s, s:o, s:o, s:I, s:s, s:s, s:o, s:o, s:b, s:b}",
	    "name", s->name,
	    "parent", s->parent ? json_string(s->parent->name) : json_null(),
	    "children", children,
	    "created", (json_int_t)s->created,
	    "description", s->description,
	    "vm-state", s->vm_state,
	    "disks", files_json(s->disks, s->ndisks, 0),
	    "size", files_size_json(s->disks, s->ndisks),
	    "memory", s->memory != NULL,
	    "current", snap_current(t) == s);
	if (s->memory != NULL)
		json_object_set_new(o, "memory-size", json_integer(
		    snap_memory_size(s->memory)));
	return o;
}

/* A branch as the queries show it (new reference). */
json_t *
branch_json(const struct branch *b)
{
	json_t	*o;

	o = json_pack("{s:s, s:o, s:b, s:o, s:o, s:b}",
	    "name", b->name,
	    "base", b->base ? json_string(b->base->name) : json_null(),
	    "attached", b->attached,
	    "disks", files_json(b->disks, b->ndisks, 0),
	    "size", files_size_json(b->disks, b->ndisks),
	    "memory", b->memory != NULL);
	if (b->memory != NULL)
		json_object_set_new(o, "memory-size", json_integer(
		    snap_memory_size(b->memory)));
	return o;
}

static int
files_from_json(json_t *a, struct snap_file **fp, size_t *np, char **cause)
{
	struct snap_file	*f;
	json_t			*o, *backing;
	const char		*device, *file, *format;
	int			 owned;
	size_t			 i;

	if (!json_is_array(a)) {
		*cause = xstrdup("'disks' is not an array");
		return -1;
	}
	f = xcalloc(json_array_size(a), sizeof *f);
	json_array_foreach(a, i, o) {
		if (json_unpack(o, "{s:s, s:s, s:s, s:o, s:b}", "device",
		    &device, "file", &file, "format", &format, "backing",
		    &backing, "owned", &owned) == -1 || file[0] != '/' ||
		    (!json_is_null(backing) && !json_is_string(backing))) {
			snap_files_free(f, i);
			xasprintf(cause, "disk %zu: bad entry", i);
			return -1;
		}
		f[i].device = xstrdup(device);
		f[i].file = xstrdup(file);
		f[i].format = xstrdup(format);
		f[i].backing = json_is_string(backing) ?
		    xstrdup(json_string_value(backing)) : NULL;
		f[i].owned = owned;
	}
	*fp = f;
	*np = json_array_size(a);
	return 0;
}

/*
 * Builds a tree from its file form, checking it whole: names valid and
 * unique, parents listed before children, one attached branch. Returns NULL
 * with an allocated *cause on any fault.
 */
struct snap_tree *
snap_tree_from_json(json_t *root, char **cause)
{
	struct snap_tree	*t = snap_tree_new();
	struct snapshot		*s, *parent;
	struct branch		*b;
	json_t			*snaps, *branches, *o, *disks, *p, *bases, *mo;
	const char		*name, *desc, *state;
	json_int_t		 created, version;
	int			 attached, nattached = 0;
	size_t			 i;
	char			*why = NULL;

	if (json_unpack(root, "{s:I, s:o, s:o, s:o}", "version", &version,
	    "snapshots", &snaps, "branches", &branches, "bases", &bases) ==
	    -1 || !json_is_array(snaps) || !json_is_array(branches)) {
		why = xstrdup("not a tree file");
		goto fail;
	}
	if (version < 1 || version > SNAP_TREE_VERSION) {
		xasprintf(&why, "version %lld, this qbranchd reads %d",
		    (long long)version, SNAP_TREE_VERSION);
		goto fail;
	}
	json_array_foreach(snaps, i, o) {
		if (json_unpack(o, "{s:s, s:o, s:I, s:s, s:s, s:o}", "name",
		    &name, "parent", &p, "created", &created, "description",
		    &desc, "vm-state", &state, "disks", &disks) == -1 ||
		    !snap_name_is_valid(name) || snap_find(t, name) != NULL ||
		    (!json_is_null(p) && !json_is_string(p))) {
			xasprintf(&why, "snapshot %zu: bad or duplicate entry",
			    i);
			goto fail;
		}
		parent = NULL;
		if (json_is_string(p) &&
		    (parent = snap_find(t, json_string_value(p))) == NULL) {
			xasprintf(&why, "snapshot %s: parent %s unknown", name,
			    json_string_value(p));
			goto fail;
		}
		s = snap_add(t, name, parent);
		s->created = created;
		free(s->description);
		s->description = xstrdup(desc);
		free(s->vm_state);
		s->vm_state = xstrdup(state);
		if (files_from_json(disks, &s->disks, &s->ndisks, &why) == -1)
			goto fail;
		if ((mo = json_object_get(o, "memory")) != NULL &&
		    (s->memory = snap_memory_from_json(mo, &why)) == NULL)
			goto fail;
	}
	json_array_foreach(branches, i, o) {
		if (json_unpack(o, "{s:s, s:o, s:b, s:o}", "name", &name,
		    "base", &p, "attached", &attached, "disks", &disks) == -1 ||
		    !snap_name_is_valid(name) || branch_find(t, name) != NULL ||
		    (!json_is_null(p) && !json_is_string(p))) {
			xasprintf(&why, "branch %zu: bad or duplicate entry", i);
			goto fail;
		}
		parent = NULL;
		if (json_is_string(p) &&
		    (parent = snap_find(t, json_string_value(p))) == NULL) {
			xasprintf(&why, "branch %s: base %s unknown", name,
			    json_string_value(p));
			goto fail;
		}
		b = branch_add(t, name, parent);
		b->attached = attached;
		nattached += attached;
		if (files_from_json(disks, &b->disks, &b->ndisks, &why) == -1)
			goto fail;
		if ((mo = json_object_get(o, "memory")) != NULL &&
		    (b->memory = snap_memory_from_json(mo, &why)) == NULL)
			goto fail;
	}
	if (files_from_json(bases, &t->bases, &t->nbases, &why) == -1)
		goto fail;
	if (nattached != 1) {
		xasprintf(&why, "%d attached branches, not one", nattached);
		goto fail;
	}
	return t;
fail:
	*cause = why;
	snap_tree_free(t);
	return NULL;
}
