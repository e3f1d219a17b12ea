/*
 * snap-orphans.c: files qbranch made that nothing uses any more, left by a
 * crash, a killed qbranchd or an operation cut short. They are found, never
 * removed on their own: qbranch-query-orphans lists them and
 * qbranch-orphans-delete removes them when asked.
 *
 * Where they are looked for: the directories new overlays go to (beside
 * each image of the tree, --image-dir, --allow-dir) for files named as
 * op_image_path() names overlays, <stem>.<suffix>, with the stem of an
 * image of the tree; and the state directory's "memory" for saved VM
 * states (snap_memory_new()). The directories are read in a thread
 * (orphan_scan_run()); what was found is judged in the event loop against
 * the tree, the files QEMU has open and those of the running operation
 * at that moment (orphan_scan_list()), by path, and in the thread by what
 * the file is (device and inode), so that a file in use under another
 * name (a symbolic link on the way to a directory) is never taken for an
 * orphan. An image is an orphan only if it is a qcow2 image with a
 * backing file that is an image of the tree, one that has the same kind
 * of name, or another orphan: what qbranch makes.
 */
#include <sys/stat.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "qbranch.h"

struct orphan_id {
	dev_t		 dev;
	ino_t		 ino;
};

struct orphan_dir {
	char		*path;
	char		**stems;	/* file names of stems */
	size_t		 nstems;
	int		 memory;	/* the state directory's "memory" */
	int		 read;		/* opened; id is set */
	struct orphan_id id;
};

struct orphan_file {
	char		*path;
	int		 memory;	/* a saved state, else an image */
	uint64_t	 size;		/* bytes allocated */
	struct orphan_id id;
	size_t		 dir;		/* the scan's directory it is in */
	int		 used;		/* a file in use, by another name */
	int		 twice;		/* found under another name too */
	int		 qcow2;
	char		*backing;	/* resolved, or NULL */
	int		 backing_gone;
};

struct orphan_scan {
	struct orphan_dir	*dirs;
	size_t			 ndirs;
	char			**used;		/* the files in use then */
	size_t			 nused;
	json_t			*inuse;		/* QEMU's open files, a set */
	struct orphan_file	*found;
	size_t			 nfound;
};

static void	orphan_set_add(json_t *, const char *);
static void	orphan_set_walk(json_t *, json_t *);
static void	orphan_inuse_op(json_t *, const struct op *);

/*
 * Adds the stem of path to the directories where its overlays may be:
 * its own and --image-dir, or (allow) the --allow-dir ones.
 */
static void
orphan_stems_add(json_t *dirs, const char *path, int allow)
{
	json_t		*set;
	char		*stem, *dir, *slash;
	const char	*name;
	size_t		 i;

	stem = snap_stem(path);
	if ((slash = strrchr(stem, '/')) == NULL || slash[1] == '\0') {
		free(stem);
		return;
	}
	name = slash + 1;
	dir = xstrndup(stem, slash == stem ? 1 : (size_t)(slash - stem));
	for (i = 0; i < 2 + opts.nallow; i++) {
		const char	*d = i == 0 ? dir : i == 1 ? opts.image_dir :
				    opts.allow[i - 2];

		if (d == NULL || (i < 2) == allow)
			continue;
		if ((set = json_object_get(dirs, d)) == NULL) {
			set = json_object();
			json_object_set_new(dirs, d, set);
		}
		json_object_set_new(set, name, json_true());
	}
	free(dir);
	free(stem);
}

static void
orphan_stems_files(json_t *dirs, const struct snap_file *f, size_t n,
    int allow)
{
	size_t	i;

	for (i = 0; i < n; i++)
		orphan_stems_add(dirs, f[i].file, allow);
}

/*
 * Every file in use now, into set: the tree's images and saved states,
 * what the running operation makes, opens or removes, and what the intent
 * of one cut short names.
 */
static void
orphan_taken(json_t *set, const struct snap_tree *t)
{
	const struct snapshot	*s;
	const struct branch	*b;
	json_t			*memory;
	size_t			 i;

	TAILQ_FOREACH(s, &t->snapshots, entry) {
		for (i = 0; i < s->ndisks; i++)
			orphan_set_add(set, s->disks[i].file);
	}
	TAILQ_FOREACH(b, &t->branches, entry) {
		for (i = 0; i < b->ndisks; i++)
			orphan_set_add(set, b->disks[i].file);
	}
	for (i = 0; i < t->nbases; i++)
		orphan_set_add(set, t->bases[i].file);
	memory = snap_memory_all(t);
	orphan_set_walk(set, memory);
	json_decref(memory);
	if (snap.op != NULL)
		orphan_inuse_op(set, snap.op);
	/* An operation cut short and not recovered yet: recover.c decides. */
	orphan_set_walk(set, json_object_get(snap.intent, "created"));
	orphan_set_walk(set, json_object_get(snap.intent, "doomed"));
	orphan_set_walk(set, json_object_get(snap.intent, "attach"));
	orphan_set_walk(set, json_object_get(snap.intent, "merge"));
}

/*
 * What to read, from the tree (borrowed), copied for the thread; inuse
 * (a set, new reference taken) holds the files QEMU has open.
 */
struct orphan_scan *
orphan_scan_new(const struct snap_tree *t, json_t *inuse)
{
	struct orphan_scan	*scan;
	const struct snapshot	*s;
	const struct branch	*b;
	struct orphan_dir	*d;
	json_t			*dirs, *set, *v;
	const char		*path, *name;
	char			*memory = NULL;
	size_t			 k;
	int			 allow;

	/*
	 * In order: a file found under two names is listed under the first,
	 * where qbranch itself writes rather than where a caller may.
	 */
	dirs = json_object();
	if (opts.state_dir != NULL) {
		xasprintf(&memory, "%s/memory", opts.state_dir);
		json_object_set_new(dirs, memory, json_object());
	}
	for (allow = 0; allow < 2; allow++) {
		TAILQ_FOREACH(s, &t->snapshots, entry)
			orphan_stems_files(dirs, s->disks, s->ndisks, allow);
		TAILQ_FOREACH(b, &t->branches, entry)
			orphan_stems_files(dirs, b->disks, b->ndisks, allow);
		orphan_stems_files(dirs, t->bases, t->nbases, allow);
	}
	scan = xcalloc(1, sizeof *scan);
	scan->dirs = xcalloc(json_object_size(dirs) + 1, sizeof *scan->dirs);
	json_object_foreach(dirs, path, set) {
		d = &scan->dirs[scan->ndirs++];
		d->path = xstrdup(path);
		d->memory = memory != NULL && strcmp(path, memory) == 0;
		d->stems = xcalloc(json_object_size(set) + 1,
		    sizeof *d->stems);
		k = 0;
		json_object_foreach(set, name, v)
			d->stems[k++] = xstrdup(name);
		d->nstems = k;
	}
	json_decref(dirs);
	free(memory);

	/* The thread also knows the files in use by what they are. */
	set = json_object();
	orphan_taken(set, t);
	json_object_update(set, inuse);
	scan->used = xcalloc(json_object_size(set) + 1, sizeof *scan->used);
	json_object_foreach(set, path, v)
		scan->used[scan->nused++] = xstrdup(path);
	json_decref(set);
	scan->inuse = json_incref(inuse);
	return scan;
}

/* Frees a scan and what it found. */
void
orphan_scan_free(struct orphan_scan *scan)
{
	size_t	i, k;

	if (scan == NULL)
		return;
	for (i = 0; i < scan->ndirs; i++) {
		for (k = 0; k < scan->dirs[i].nstems; k++)
			free(scan->dirs[i].stems[k]);
		free(scan->dirs[i].stems);
		free(scan->dirs[i].path);
	}
	free(scan->dirs);
	for (i = 0; i < scan->nfound; i++) {
		free(scan->found[i].path);
		free(scan->found[i].backing);
	}
	free(scan->found);
	for (i = 0; i < scan->nused; i++)
		free(scan->used[i]);
	free(scan->used);
	json_decref(scan->inuse);
	free(scan);
}

static int
orphan_dir_has_stem(const struct orphan_dir *d, const char *name)
{
	size_t	k;

	for (k = 0; k < d->nstems; k++) {
		if (orphan_name_is_image(name, d->stems[k]))
			return 1;
	}
	return 0;
}

/* Whether path is named as an overlay in a directory the scan reads. */
static int
orphan_scan_has_name(const struct orphan_scan *scan, const char *path)
{
	const char	*slash = strrchr(path, '/');
	size_t		 i, len;

	if (slash == NULL)
		return 0;
	len = slash == path ? 1 : (size_t)(slash - path);
	for (i = 0; i < scan->ndirs; i++) {
		if (strlen(scan->dirs[i].path) == len &&
		    strncmp(scan->dirs[i].path, path, len) == 0 &&
		    orphan_dir_has_stem(&scan->dirs[i], slash + 1))
			return 1;
	}
	return 0;
}

/* An image's header: is it qcow2, and over what (in a thread). */
static void
orphan_read_image(int dfd, const char *name, struct orphan_file *f,
    const char *dir)
{
	unsigned char	 head[ORPHAN_QCOW2_HEAD];
	char		 backing[1024];
	struct stat	 sb;
	uint64_t	 off;
	uint32_t	 size;
	int		 fd;

	fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK |
	    O_NOCTTY | O_CLOEXEC);
	if (fd == -1)
		return;
	if (pread(fd, head, sizeof head, 0) != (ssize_t)sizeof head ||
	    !orphan_qcow2_backing(head, sizeof head, &off, &size))
		goto out;
	f->qcow2 = 1;
	if (size == 0 || pread(fd, backing, size, off) != (ssize_t)size)
		goto out;
	backing[size] = '\0';
	if (memchr(backing, '\0', size) != NULL)
		goto out;
	if (backing[0] == '/')
		f->backing = xstrdup(backing);
	else if (strchr(backing, ':') == NULL)
		xasprintf(&f->backing, "%s/%s", dir, backing);
	else
		goto out;	/* a protocol or json: qbranch writes paths */
	f->backing_gone = stat(f->backing, &sb) == -1 && errno == ENOENT;
out:
	close(fd);
}

static int
orphan_id_cmp(const void *a, const void *b)
{
	const struct orphan_id	*x = a, *y = b;

	if (x->dev != y->dev)
		return x->dev < y->dev ? -1 : 1;
	if (x->ino != y->ino)
		return x->ino < y->ino ? -1 : 1;
	return 0;
}

/* The files found, by what they are (dev, inode), then where. */
static int
orphan_found_cmp(const void *a, const void *b)
{
	const struct orphan_file	*x = a, *y = b;
	int				 c;

	if ((c = orphan_id_cmp(&x->id, &y->id)) != 0)
		return c;
	if (x->dir != y->dir)
		return x->dir < y->dir ? -1 : 1;
	return strcmp(x->path, y->path);
}

static int
orphan_path_cmp(const void *a, const void *b)
{
	return strcmp(((const struct orphan_file *)a)->path,
	    ((const struct orphan_file *)b)->path);
}

/*
 * Reads the directories (in a thread: it touches only the scan): every
 * regular file named as qbranch names its files, with its size and, for
 * an image, its backing file. A file in use under another name (a
 * symbolic link in a directory's path, say) is marked used; one found
 * under two names is kept once. Sorted by path.
 */
void
orphan_scan_run(struct orphan_scan *scan)
{
	struct orphan_dir	*d;
	struct orphan_file	*f;
	struct orphan_id	*ids;
	struct dirent		*de;
	struct stat		 sb;
	size_t			 i, nids = 0, cap = 0;
	DIR			*dp;
	int			 image, memory;

	ids = xcalloc(scan->nused + 1, sizeof *ids);
	for (i = 0; i < scan->nused; i++) {
		if (stat(scan->used[i], &sb) == 0) {
			ids[nids].dev = sb.st_dev;
			ids[nids++].ino = sb.st_ino;
		}
	}
	qsort(ids, nids, sizeof *ids, orphan_id_cmp);
	for (i = 0; i < scan->ndirs; i++) {
		d = &scan->dirs[i];
		if ((dp = opendir(d->path)) == NULL)
			continue;
		if (fstat(dirfd(dp), &sb) == 0) {
			d->read = 1;
			d->id.dev = sb.st_dev;
			d->id.ino = sb.st_ino;
		}
		while ((de = readdir(dp)) != NULL) {
			image = orphan_dir_has_stem(d, de->d_name);
			memory = d->memory &&
			    orphan_name_is_memory(de->d_name);
			if (!image && !memory)
				continue;
			if (fstatat(dirfd(dp), de->d_name, &sb,
			    AT_SYMLINK_NOFOLLOW) == -1 || !S_ISREG(sb.st_mode))
				continue;
			if (scan->nfound == cap) {
				cap = cap == 0 ? 16 : cap * 2;
				scan->found = xreallocarray(scan->found, cap,
				    sizeof *scan->found);
			}
			f = &scan->found[scan->nfound++];
			memset(f, 0, sizeof *f);
			xasprintf(&f->path, "%s%s%s", d->path,
			    strcmp(d->path, "/") == 0 ? "" : "/", de->d_name);
			f->memory = !image;
			f->size = (uint64_t)sb.st_blocks * 512;
			f->dir = i;
			f->id.dev = sb.st_dev;
			f->id.ino = sb.st_ino;
			f->used = bsearch(&f->id, ids, nids, sizeof *ids,
			    orphan_id_cmp) != NULL;
			if (image)
				orphan_read_image(dirfd(dp), de->d_name, f,
				    d->path);
		}
		closedir(dp);
	}
	free(ids);
	qsort(scan->found, scan->nfound, sizeof *scan->found,
	    orphan_found_cmp);
	for (i = 1; i < scan->nfound; i++) {
		if (orphan_id_cmp(&scan->found[i - 1].id,
		    &scan->found[i].id) == 0)
			scan->found[i].twice = 1;
	}
	qsort(scan->found, scan->nfound, sizeof *scan->found,
	    orphan_path_cmp);
}

static void
orphan_set_add(json_t *set, const char *path)
{
	if (path != NULL && path[0] == '/')
		json_object_set_new(set, path, json_true());
}

/*
 * The files QEMU has open, into set (a JSON object used as a set), from
 * query-named-block-nodes (borrowed).
 */
void
orphan_inuse_nodes(json_t *set, json_t *nodes)
{
	json_t	*n;
	size_t	 i;

	json_array_foreach(nodes, i, n) {
		orphan_set_add(set, json_string_value(json_object_get(n,
		    "file")));
		orphan_set_add(set, json_string_value(json_object_get(
		    json_object_get(n, "image"), "filename")));
	}
}

/* The same from query-block (borrowed): each device's whole chain. */
void
orphan_inuse_block(json_t *set, json_t *blocks)
{
	json_t	*b, *ins, *img;
	size_t	 i;

	json_array_foreach(blocks, i, b) {
		ins = json_object_get(b, "inserted");
		orphan_set_add(set, json_string_value(json_object_get(ins,
		    "file")));
		for (img = json_object_get(ins, "image"); img != NULL;
		    img = json_object_get(img, "backing-image"))
			orphan_set_add(set, json_string_value(json_object_get(
			    img, "filename")));
	}
}

/* Every path in a JSON value, at any depth. */
static void
orphan_set_walk(json_t *set, json_t *v)
{
	const char	*key;
	json_t		*e;
	size_t		 i;

	if (json_is_string(v))
		orphan_set_add(set, json_string_value(v));
	else if (json_is_array(v)) {
		json_array_foreach(v, i, e)
			orphan_set_walk(set, e);
	} else if (json_is_object(v)) {
		json_object_foreach(v, key, e)
			orphan_set_walk(set, e);
	}
}

static void
orphan_set_memory(json_t *set, const struct snap_memory *m)
{
	json_t	*files = json_array();

	snap_memory_files(m, files);
	orphan_set_walk(set, files);
	json_decref(files);
}

/*
 * Every file the running operation makes, opens, removes or names (op
 * borrowed), into set: none of them is an orphan while it runs.
 */
static void
orphan_inuse_op(json_t *set, const struct op *op)
{
	size_t	i;

	for (i = 0; i < op->npaths; i++) {
		orphan_set_add(set, op->paths[i]);
		if (op->backings != NULL)
			orphan_set_add(set, op->backings[i]);
	}
	orphan_set_add(set, op->s1);
	orphan_set_memory(set, op->mem);
	orphan_set_memory(set, op->mem_save);
	orphan_set_memory(set, op->mem_load);
	orphan_set_walk(set, op->nodes);
	orphan_set_walk(set, op->undo);
	orphan_set_walk(set, op->plan);
	orphan_set_walk(set, op->result);
	orphan_set_walk(set, op->opening);
	orphan_set_walk(set, op->closing);
	orphan_set_walk(set, op->sync_first);
	orphan_set_walk(set, op->mem_files);
	orphan_set_walk(set, op->doomed);
	orphan_set_walk(set, op->intent_merge);
}

/* Whether f is an orphan image; *why says over what (new string). */
static int
orphan_image_judge(const struct orphan_scan *scan,
    const struct orphan_file *f, json_t *candidates, char **why)
{
	*why = NULL;
	if (!f->qcow2 || f->backing == NULL)
		return 0;	/* not an overlay: not qbranch's */
	if (snap_tree_image(snap.tree, f->backing) != NULL)
		xasprintf(why, "no snapshot or branch uses it; an overlay of "
		    "%s", f->backing);
	else if (json_object_get(candidates, f->backing) != NULL)
		xasprintf(why, "no snapshot or branch uses it; an overlay of "
		    "the orphan %s", f->backing);
	else if (orphan_scan_has_name(scan, f->backing))
		xasprintf(why, "no snapshot or branch uses it; an overlay of "
		    "%s%s", f->backing, f->backing_gone ? ", removed since" :
		    ", which the tree does not know");
	else
		return 0;
	return 1;
}

/*
 * Whether f is in use now under the name it has in another directory the
 * scan read that is the same directory: one an operation made while the
 * scan went on, after the thread looked at the files in use.
 */
static int
orphan_taken_alias(const struct orphan_scan *scan,
    const struct orphan_file *f, json_t *taken)
{
	const struct orphan_dir	*d = &scan->dirs[f->dir], *o;
	const char		*name = strrchr(f->path, '/') + 1;
	char			*alias;
	size_t			 i;
	int			 found = 0;

	if (!d->read)
		return 0;
	for (i = 0; i < scan->ndirs && !found; i++) {
		o = &scan->dirs[i];
		if (i == f->dir || !o->read ||
		    orphan_id_cmp(&o->id, &d->id) != 0)
			continue;
		xasprintf(&alias, "%s%s%s", o->path, strcmp(o->path, "/") ==
		    0 ? "" : "/", name);
		found = json_object_get(taken, alias) != NULL ||
		    snap_tree_image(snap.tree, alias) != NULL;
		free(alias);
	}
	return found;
}

/*
 * The orphans among what the scan found, judged now (new reference):
 * [{file, size, kind, reason}], against the tree and the running
 * operation of this moment and the files QEMU had open.
 */
json_t *
orphan_scan_list(const struct orphan_scan *scan)
{
	const struct orphan_file *f;
	json_t			*out, *taken, *candidates;
	char			*why;
	size_t			 i;

	taken = json_object();
	orphan_taken(taken, snap.tree);
	json_object_update(taken, scan->inuse);
	/* Images nothing uses, before their backing files are judged. */
	candidates = json_object();
	for (i = 0; i < scan->nfound; i++) {
		f = &scan->found[i];
		if (!f->used && !f->twice &&
		    json_object_get(taken, f->path) == NULL &&
		    snap_tree_image(snap.tree, f->path) == NULL &&
		    !orphan_taken_alias(scan, f, taken))
			json_object_set_new(candidates, f->path, json_true());
	}
	out = json_array();
	for (i = 0; i < scan->nfound; i++) {
		f = &scan->found[i];
		if (json_object_get(candidates, f->path) == NULL)
			continue;
		if (f->memory)
			why = xstrdup("no snapshot or branch holds this saved "
			    "VM state");
		else if (!orphan_image_judge(scan, f, candidates, &why))
			continue;
		json_array_append_new(out, json_pack("{s:s, s:I, s:s, s:s}",
		    "file", f->path, "size", (json_int_t)f->size, "kind",
		    f->memory ? "memory" : "image", "reason", why));
		free(why);
	}
	json_decref(candidates);
	json_decref(taken);
	return out;
}
