/*
 * snap-memory.c: the VM's RAM and device state, saved with a snapshot or
 * when a branch is left, and loaded back into the same QEMU process.
 *
 * QEMU's snapshot-save job writes the state into a small qcow2 state image
 * of the state directory, the only image named in its "devices": the guest
 * disks stay out of it, they are the tree's. snapshot-load reads it back
 * after the disks have moved.
 *
 * The fast path: QEMU reads and writes RAM through the stream at about
 * 200 MiB/s. When every shared memory backend is a file that this QEMU
 * alone maps (memory-backend-file,share=on), qbranchd copies those files
 * itself while the VM is stopped, in threads, skipping the holes of an idle
 * guest, and QEMU's stream carries only device state (x-ignore-shared, set
 * for the job only: a client's own migration must carry RAM). The live
 * files stay open and mapped from one operation to the next, so that a
 * revert reads the saved copy straight into guest RAM.
 */
#include <sys/types.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "qbranch.h"

#define STATE_IMAGE_SIZE	(1024 * 1024)	/* the state lives past it */
#define STATE_TAG		"qbranch"
#define COPY_PIECES		2		/* threads per copy */
#define COPY_CHUNK		(8 << 20)

/* A shared memory backend of the QEMU at hand, backed by a file. */
struct ram_live {
	char		*backend;
	char		*path;
	int		 fd;
	uint64_t	 size;
	unsigned char	*map;		/* not populated: pages as used */
	dev_t		 dev;
	ino_t		 ino;
	pid_t		 pid;		/* the QEMU it was checked for */
};

static struct {
	struct ram_live	*ram;
	size_t		 nram;
	int		 fast;		/* RAM is copied by qbranchd */
	char		*why_not;	/* why not, once logged */
} live;

static void
ram_live_close(struct ram_live *r)
{
	if (r->map != NULL)
		munmap(r->map, r->size);
	if (r->fd != -1)
		close(r->fd);
	free(r->backend);
	free(r->path);
}

static void
live_clear(void)
{
	size_t	i;

	for (i = 0; i < live.nram; i++)
		ram_live_close(&live.ram[i]);
	free(live.ram);
	live.ram = NULL;
	live.nram = 0;
	live.fast = 0;
}

/* qbranchd is stopping: the files are let go. */
void
snap_memory_shutdown(void)
{
	live_clear();
	free(live.why_not);
	live.why_not = NULL;
}

/*
 * QEMU went away, or an operation ended while it was away: the RAM files
 * are let go (a removed one would stay allocated while open), unless an
 * operation's threads may still copy through them.
 */
void
snap_memory_release(void)
{
	if (snap.op == NULL && !upstream_is_ready())
		live_clear();
}

static void
plain_path(const char *why)
{
	live_clear();
	if (live.why_not == NULL || strcmp(live.why_not, why) != 0) {
		log_info("RAM is saved by QEMU (slower): %s", why);
		free(live.why_not);
		live.why_not = xstrdup(why);
	}
}

static struct ram_live *
live_find(const char *backend)
{
	size_t	i;

	for (i = 0; i < live.nram; i++) {
		if (strcmp(live.ram[i].backend, backend) == 0)
			return &live.ram[i];
	}
	return NULL;
}


/*
 * Checking the RAM files. A file another process maps too (a QEMU left
 * behind, say) would be written under it: refused. One this QEMU does not
 * map (replaced since it started) is not its RAM: QEMU saves it then.
 */

/* Whether pid maps the file dev/ino. */
static int
pid_maps(pid_t pid, dev_t dev, ino_t ino)
{
	char		 path[64], line[512];
	unsigned int	 maj, min;
	unsigned long	 inode;
	FILE		*f;
	int		 found = 0;

	snprintf(path, sizeof path, "/proc/%d/maps", (int)pid);
	if ((f = fopen(path, "re")) == NULL)
		return 0;
	while (!found && fgets(line, sizeof line, f) != NULL) {
		if (sscanf(line, "%*s %*s %*s %x:%x %lu", &maj, &min,
		    &inode) == 3 && inode == ino && makedev(maj, min) == dev)
			found = 1;
		/* A path longer than the buffer: skip the rest of it. */
		while (strchr(line, '\n') == NULL &&
		    fgets(line, sizeof line, f) != NULL)
			;
	}
	fclose(f);
	return found;
}

/* Another process than QEMU and qbranchd that maps the file, or 0. */
static pid_t
other_mapper(pid_t qemu, dev_t dev, ino_t ino)
{
	DIR		*d;
	struct dirent	*e;
	pid_t		 pid, found = 0;

	if ((d = opendir("/proc")) == NULL)
		return 0;
	while (found == 0 && (e = readdir(d)) != NULL) {
		if ((pid = atoi(e->d_name)) <= 0 || pid == qemu ||
		    pid == getpid())
			continue;
		if (pid_maps(pid, dev, ino))
			found = pid;
	}
	closedir(d);
	return found;
}

struct ram_probe {
	struct ram_live	*want;		/* backend, path, size from QEMU */
	size_t		 n;
	struct ram_live	*had;		/* the open ones, to reuse */
	size_t		 nhad;
	pid_t		 qemu;
	int		 checking;	/* look for other mappers again */
	char		*plain;		/* why the fast path is out */
};

/* Takes over an open file of the same QEMU, whose pages stay mapped. */
static void
probe_reuse(struct ram_probe *p, struct ram_live *r)
{
	struct ram_live	*old;
	struct stat	 st;
	size_t		 i;

	for (i = 0; i < p->nhad; i++) {
		old = &p->had[i];
		if (old->fd != -1 && strcmp(old->path, r->path) == 0 &&
		    old->size == r->size && old->pid == p->qemu &&
		    stat(r->path, &st) == 0 && st.st_dev == old->dev &&
		    st.st_ino == old->ino) {
			r->fd = old->fd;
			r->map = old->map;
			r->dev = old->dev;
			r->ino = old->ino;
			r->pid = old->pid;
			old->fd = -1;
			old->map = NULL;
			return;
		}
	}
}

static char *
probe_one(struct ram_probe *p, struct ram_live *r)
{
	struct stat	 st;
	char		*error = NULL;
	pid_t		 other;

	if (r->fd == -1) {
		if ((r->fd = open(r->path, O_RDWR | O_CLOEXEC)) == -1) {
			xasprintf(&p->plain, "cannot open %s: %s", r->path,
			    strerror(errno));
			return NULL;
		}
		if (fstat(r->fd, &st) == -1 || !S_ISREG(st.st_mode) ||
		    (uint64_t)st.st_size < r->size) {
			xasprintf(&p->plain, "%s is not a regular file of "
			    "%" PRIu64 " bytes", r->path, r->size);
			return NULL;
		}
		r->dev = st.st_dev;
		r->ino = st.st_ino;
		if (flock(r->fd, LOCK_EX | LOCK_NB) == -1) {
			xasprintf(&error, "the RAM file %s is in use by another "
			    "qbranchd: a RAM file must belong to one QEMU",
			    r->path);
			return error;
		}
		p->checking = 1;
	}
	/* Checked already for this QEMU, unless it is new to us. */
	if (r->pid != p->qemu && !pid_maps(p->qemu, r->dev, r->ino)) {
		xasprintf(&p->plain, "QEMU (process %d) does not map %s",
		    (int)p->qemu, r->path);
		return NULL;
	}
	if (p->checking && (other = other_mapper(p->qemu, r->dev,
	    r->ino)) != 0) {
		xasprintf(&error, "the RAM file %s is mapped by process %d as "
		    "well as by QEMU (process %d): a RAM file must belong to "
		    "one QEMU", r->path, (int)other, (int)p->qemu);
		return error;
	}
	if (r->map == NULL && (r->map = mmap(NULL, r->size, PROT_READ |
	    PROT_WRITE, MAP_SHARED, r->fd, 0)) == MAP_FAILED) {
		r->map = NULL;
		xasprintf(&p->plain, "cannot map %s: %s", r->path,
		    strerror(errno));
		return NULL;
	}
	r->pid = p->qemu;
	return NULL;
}

static char *
probe_work(struct op_io *io)
{
	struct ram_probe	*p = io->data;
	char			*error = NULL;
	size_t			 i;

	for (i = 0; i < p->n; i++)
		probe_reuse(p, &p->want[i]);
	/* The rest let go first: their locks would stop the new ones. */
	for (i = 0; i < p->nhad; i++)
		ram_live_close(&p->had[i]);
	p->nhad = 0;
	for (i = 0; i < p->n && error == NULL && p->plain == NULL; i++)
		error = probe_one(p, &p->want[i]);
	return error;
}

/* A probe's wanted files, closed, and the probe. */
static void
probe_free(struct ram_probe *p)
{
	size_t	i;

	for (i = 0; i < p->n; i++)
		ram_live_close(&p->want[i]);
	free(p->want);
	free(p);
}

static void
probe_done(struct op_io *io)
{
	struct ram_probe	*p = io->data;
	struct op		*op = io->op;
	size_t			 i;

	for (i = 0; i < p->nhad; i++)
		ram_live_close(&p->had[i]);
	free(p->had);
	p->nhad = 0;
	if (io->error != NULL && op->io_error == NULL) {
		op->io_error = io->error;
		io->error = NULL;
	} else if (p->plain != NULL)
		plain_path(p->plain);
	else if (io->error == NULL) {
		live.ram = p->want;
		live.nram = p->n;
		live.fast = 1;
		free(live.why_not);
		live.why_not = NULL;
		p->want = NULL;
		p->n = 0;
	}
	free(p->plain);
	probe_free(p);
	io->data = NULL;
}

static void	probe_step(struct op *, json_t *);

/*
 * Finds out whether the fast path is open: the step continues with NULL
 * once live says so. checking: look for other processes mapping the
 * files even if they were checked before (before a save).
 */
void
op_memory_probe(struct op *op, int checking)
{
	op->mem_resume = op->step;
	op->step = probe_step;
	op->mstage = 0;
	op->mem_checking = checking;
	op_call(op, "query-memdev", NULL);
}

static void
probe_step(struct op *op, json_t *ret)
{
	struct ram_probe	*p;
	json_t			*m, *calls;
	const char		*id, *path;
	size_t			 i, n = 0;

	switch (op->mstage) {
	case 0:
		calls = json_array();
		json_array_foreach(ret, i, m) {
			if (!json_is_true(json_object_get(m, "share")))
				continue;
			if ((id = json_string_value(json_object_get(m,
			    "id"))) == NULL) {
				json_decref(calls);
				plain_path("a shared memory backend has no id");
				goto resume;
			}
			json_array_append_new(calls, json_pack("{s:s, s:{s:o, "
			    "s:s}}", "execute", "qom-get", "arguments", "path",
			    json_sprintf("/objects/%s", id), "property",
			    "mem-path"));
			n++;
		}
		if (n == 0) {
			json_decref(calls);
			plain_path("the guest's RAM is not a shared file "
			    "(memory-backend-file with share=on)");
			goto resume;
		}
		op->mstage++;
		/* Kept for the next stage: which backends, what sizes. */
		json_decref(op->memdevs);
		op->memdevs = json_incref(ret);
		op_call_all(op, calls);
		return;
	case 1:
		p = xcalloc(1, sizeof *p);
		p->want = xcalloc(json_array_size(ret), sizeof *p->want);
		n = 0;
		json_array_foreach(op->memdevs, i, m) {
			if (!json_is_true(json_object_get(m, "share")))
				continue;
			path = json_string_value(json_object_get(
			    json_array_get(ret, n), "return"));
			if (path == NULL || path[0] != '/') {
				p->n = n;
				probe_free(p);
				plain_path("a shared memory backend is not a "
				    "file (memory-backend-memfd?)");
				goto resume;
			}
			p->want[n].backend = xstrdup(json_string_value(
			    json_object_get(m, "id")));
			p->want[n].path = xstrdup(path);
			p->want[n].size = json_integer_value(json_object_get(m,
			    "size"));
			p->want[n].fd = -1;
			n++;
		}
		p->n = n;
		if ((p->qemu = upstream_pid()) <= 0) {
			probe_free(p);
			plain_path("QEMU's process is not known (its socket "
			    "does not say)");
			goto resume;
		}
		p->checking = op->mem_checking;
		/* Open ones are reused: their pages stay mapped. */
		p->had = live.ram;
		p->nhad = live.nram;
		live.ram = NULL;
		live.nram = 0;
		live.fast = 0;
		op->mstage++;
		op_io(op, probe_work, probe_done, p);
		op_io_wait(op);
		return;
	}
resume:
	op->step = op->mem_resume;
	op->step(op, NULL);
}


/*
 * Copying RAM: between a live file and a saved copy, each piece of the
 * file in its own thread. A save copies the live file's data and leaves its
 * holes as holes; a load reads the copy's data into guest RAM and punches
 * the copy's holes into the live file (an idle guest costs nothing).
 */
struct ram_copy {
	int		 live_fd;
	unsigned char	*map;
	char		*path;		/* the saved copy */
	int		 fd;
	off_t		 lo, hi;	/* the piece */
	int		 load;
};

static int
full_pwrite(int fd, const unsigned char *p, size_t n, off_t off)
{
	ssize_t	w;

	while (n > 0) {
		if ((w = pwrite(fd, p, n, off)) == -1) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += w;
		n -= w;
		off += w;
	}
	return 0;
}

static int
full_pread(int fd, unsigned char *p, size_t n, off_t off)
{
	ssize_t	r;

	while (n > 0) {
		if ((r = pread(fd, p, n, off)) == -1) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (r == 0) {
			errno = EIO;	/* the copy was cut short */
			return -1;
		}
		p += r;
		n -= r;
		off += r;
	}
	return 0;
}

/* The next data at or after off below hi: [*data, *end), or 0 if none. */
static int
next_data(int fd, off_t off, off_t hi, off_t *data, off_t *end)
{
	off_t	d, h;

	if ((d = lseek(fd, off, SEEK_DATA)) == -1 || d >= hi)
		return 0;
	if ((h = lseek(fd, d, SEEK_HOLE)) == -1 || h > hi)
		h = hi;
	*data = d;
	*end = h;
	return 1;
}

static char *
copy_work(struct op_io *io)
{
	struct ram_copy	*c = io->data;
	int		 src;
	off_t		 off = c->lo, d, e, k;
	size_t		 n;
	char		*error = NULL;

	if ((c->fd = open(c->path, (c->load ? O_RDONLY : O_RDWR) |
	    O_CLOEXEC)) == -1) {
		xasprintf(&error, "cannot open %s: %s", c->path,
		    strerror(errno));
		free(c->path);
		return error;
	}
	src = c->load ? c->fd : c->live_fd;
	while (error == NULL && off < c->hi) {
		if (!next_data(src, off, c->hi, &d, &e))
			d = e = c->hi;
		/* A hole of the copy: nothing of it may stay in RAM. */
		if (c->load && d > off && fallocate(c->live_fd,
		    FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off,
		    d - off) == -1)
			xasprintf(&error, "cannot clear RAM: %s",
			    strerror(errno));
		/* Reserved first: a full disk fails here, not later. */
		if (error == NULL && !c->load && d < e &&
		    fallocate(c->fd, 0, d, e - d) == -1)
			xasprintf(&error, "cannot save RAM into %s: %s",
			    c->path, strerror(errno));
		for (k = d; error == NULL && k < e; k += n) {
			n = e - k < COPY_CHUNK ? e - k : COPY_CHUNK;
			if (c->load ? full_pread(c->fd, c->map + k, n, k) :
			    full_pwrite(c->fd, c->map + k, n, k))
				xasprintf(&error, "cannot %s RAM %s %s: %s",
				    c->load ? "load" : "save", c->load ?
				    "from" : "into", c->path, strerror(errno));
		}
		off = e;
	}
	close(c->fd);
	free(c->path);
	return error;
}

static void	copy_done(struct op_io *);

/* Starts the copies of every RAM file, in pieces: op_io_wait() waits. */
static void
op_copy_ram(struct op *op, const struct snap_memory *m, int load)
{
	struct ram_live	*r;
	struct ram_copy	*c;
	size_t		 i, k;

	for (i = 0; i < m->nram; i++) {
		if ((r = live_find(m->ram[i].backend)) == NULL)
			fatalx("no live RAM file %s", m->ram[i].backend);
		for (k = 0; k < COPY_PIECES; k++) {
			c = xcalloc(1, sizeof *c);
			c->live_fd = r->fd;
			c->map = r->map;
			c->path = xstrdup(m->ram[i].file);
			c->load = load;
			/* Pieces on 2 MiB bounds: huge pages stay whole. */
			c->lo = (r->size / COPY_PIECES * k) & ~(off_t)0x1fffff;
			c->hi = k + 1 == COPY_PIECES ? (off_t)r->size :
			    (off_t)(r->size / COPY_PIECES * (k + 1)) &
			    ~(off_t)0x1fffff;
			op_io(op, copy_work, copy_done, c);
		}
	}
}


/*
 * The files of a new saved state: the state image first, written whole,
 * then an empty copy per RAM file, the size of the live one. They are
 * removed if the operation fails.
 */
struct state_files {
	char		**paths;
	uint64_t	*sizes;
	size_t		 n;
	unsigned char	*head;		/* the state image's */
	size_t		 head_len;
	size_t		 made;		/* how many exist */
};

static int
free_path(const char *path, const struct snap_tree *t)
{
	json_t			*files = snap_memory_all(t), *f;
	size_t			 i;
	int			 taken = access(path, F_OK) == 0;

	json_array_foreach(files, i, f) {
		if (strcmp(json_string_value(f), path) == 0)
			taken = 1;
	}
	json_decref(files);
	return !taken;
}

/*
 * A new saved state for the snapshot or branch called name (kind says
 * which), its files named after it in the state directory's "memory".
 */
struct snap_memory *
snap_memory_new(const char *kind, const char *name, const char *vm_state)
{
	struct snap_memory	*m;
	char			*stem, *p;
	size_t			 i;
	int			 n;

	m = xcalloc(1, sizeof *m);
	m->vm_state = xstrdup(vm_state);
	for (n = 1;; n++) {
		if (n == 1)
			xasprintf(&stem, "%s/memory/%s-%s", opts.state_dir,
			    kind, name);
		else
			xasprintf(&stem, "%s/memory/%s-%s.%d", opts.state_dir,
			    kind, name, n);
		xasprintf(&p, "%s.state", stem);
		if (free_path(p, snap.tree))
			break;
		free(p);
		free(stem);
	}
	m->state = p;
	if (live.fast) {
		m->ram = xcalloc(live.nram, sizeof *m->ram);
		m->nram = live.nram;
		for (i = 0; i < live.nram; i++) {
			m->ram[i].backend = xstrdup(live.ram[i].backend);
			xasprintf(&m->ram[i].file, "%s.%s.ram", stem,
			    live.ram[i].backend);
		}
	}
	free(stem);
	return m;
}

static char *
state_files_work(struct op_io *io)
{
	struct state_files	*sf = io->data;
	char			*dir, *error = NULL;
	size_t			 i;
	int			 fd;

	dir = xstrdup(sf->paths[0]);
	*strrchr(dir, '/') = '\0';
	if (mkdir(dir, 0700) == -1 && errno != EEXIST)
		xasprintf(&error, "cannot make %s: %s", dir, strerror(errno));
	free(dir);
	for (i = 0; error == NULL && i < sf->n; i++) {
		fd = open(sf->paths[i], O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
		    0600);
		if (fd == -1) {
			xasprintf(&error, "cannot create %s: %s", sf->paths[i],
			    strerror(errno));
			break;
		}
		sf->made++;
		if ((i == 0 && full_pwrite(fd, sf->head, sf->head_len, 0) ==
		    -1) || ftruncate(fd, sf->sizes[i]) == -1)
			xasprintf(&error, "cannot write %s: %s", sf->paths[i],
			    strerror(errno));
		close(fd);
	}
	return error;
}

static void
state_files_done(struct op_io *io)
{
	struct state_files	*sf = io->data;
	struct op		*op = io->op;
	size_t			 i;

	for (i = 0; i < sf->made; i++)
		op_undo_unlink(op, sf->paths[i]);
	if (io->error != NULL && op->io_error == NULL) {
		op->io_error = io->error;
		io->error = NULL;
	}
	for (i = 0; i < sf->n; i++)
		free(sf->paths[i]);
	free(sf->paths);
	free(sf->sizes);
	free(sf->head);
	free(sf);
	io->data = NULL;
}

/*
 * Makes the files of m before the VM stops (op_io_wait() waits), and
 * marks them to be synced before the tree names them.
 */
void
op_memory_files(struct op *op, const struct snap_memory *m)
{
	struct state_files	*sf;
	struct ram_live		*r;
	char			*cause;
	size_t			 i;

	sf = xcalloc(1, sizeof *sf);
	sf->n = 1 + m->nram;
	sf->paths = xcalloc(sf->n, sizeof *sf->paths);
	sf->sizes = xcalloc(sf->n, sizeof *sf->sizes);
	sf->paths[0] = xstrdup(m->state);
	if (qcow2_overlay_build(STATE_IMAGE_SIZE, NULL, NULL, &sf->head,
	    &sf->head_len, &sf->sizes[0], &cause) == -1)
		fatalx("state image: %s", cause);
	for (i = 0; i < m->nram; i++) {
		if ((r = live_find(m->ram[i].backend)) == NULL)
			fatalx("no live RAM file %s", m->ram[i].backend);
		sf->paths[1 + i] = xstrdup(m->ram[i].file);
		sf->sizes[1 + i] = r->size;
	}
	if (op->sync_first == NULL)
		op->sync_first = json_array();
	for (i = 0; i < sf->n; i++)
		json_array_append_new(op->sync_first, json_string(
		    sf->paths[i]));
	op_io(op, state_files_work, state_files_done, sf);
}

/*
 * Checks before the VM stops that m can be loaded: every file is there,
 * and RAM copies go with the live RAM files (the same backends and sizes).
 * Returns -1 after op_fail().
 */
int
op_memory_loadable(struct op *op, const struct snap_memory *m)
{
	struct ram_live	*r;
	struct stat	 st;
	size_t		 i;

	if (stat(m->state, &st) == -1) {
		op_fail(op, "the saved VM state %s cannot be read: %s",
		    m->state, strerror(errno));
		return -1;
	}
	for (i = 0; i < m->nram; i++) {
		if ((r = live_find(m->ram[i].backend)) == NULL) {
			op_fail(op, "the saved VM state holds RAM of memory "
			    "backend %s, and QEMU has no such shared RAM "
			    "file now%s%s", m->ram[i].backend, live.why_not ?
			    ": " : "", live.why_not ? live.why_not : "");
			return -1;
		}
		if (stat(m->ram[i].file, &st) == -1 ||
		    (uint64_t)st.st_size != r->size) {
			op_fail(op, "the saved RAM %s does not fit the %" PRIu64
			    " bytes of memory backend %s", m->ram[i].file,
			    r->size, r->backend);
			return -1;
		}
	}
	if (m->nram == 0 && live.nram > 0) {
		op_fail(op, "the saved VM state holds its RAM in the state "
		    "image, and QEMU's RAM is a shared file now: it cannot "
		    "be loaded into it");
		return -1;
	}
	return 0;
}


/*
 * Saving and loading. The state images open, and x-ignore-shared goes on
 * for the fast path, with the operation's new overlays before the VM stops
 * (op_add_overlays()): a state image that does not open stops the operation
 * while nothing has changed. Then, with the VM stopped, RAM is copied and
 * the job runs. Once the last job is done the images close and the
 * capability goes off again.
 */
static json_t *
state_add_call(const struct snap_memory *m)
{
	char	node[40], fnode[40];

	op_node_name(m->state, node, sizeof node);
	op_file_node_name(m->state, fnode, sizeof fnode);
	/*
	 * QEMU's flushes are not needed: a load changes nothing that must
	 * last, and a save is synced before the tree names it.
	 */
	return json_pack("{s:s, s:{s:s, s:s, s:{s:b}, s:{s:s, s:s, s:s, "
	    "s:{s:b}}}}", "execute", "blockdev-add", "arguments", "driver",
	    "qcow2", "node-name", node, "cache", "no-flush", 1, "file",
	    "driver", "file", "node-name", fnode, "filename", m->state,
	    "cache", "no-flush", 1);
}

static json_t *
state_del_call(const struct snap_memory *m)
{
	char	node[40];

	op_node_name(m->state, node, sizeof node);
	return json_pack("{s:s, s:{s:s}}", "execute", "blockdev-del",
	    "arguments", "node-name", node);
}

static json_t *
ignore_shared_call(int on)
{
	return json_pack("{s:s, s:{s:[{s:s, s:b}]}}", "execute",
	    "migrate-set-capabilities", "arguments", "capabilities",
	    "capability", "x-ignore-shared", "state", on);
}

static int
copies_ram(const struct op *op)
{
	return (op->mem_save != NULL && op->mem_save->nram > 0) ||
	    (op->mem_load != NULL && op->mem_load->nram > 0);
}

/* Appends the memory work's first calls to calls (op_add_overlays()). */
void
op_memory_open_calls(struct op *op, json_t *calls)
{
	if (op->mem_save != NULL)
		json_array_append_new(calls, state_add_call(op->mem_save));
	if (op->mem_load != NULL)
		json_array_append_new(calls, state_add_call(op->mem_load));
	if (copies_ram(op))
		json_array_append_new(calls, ignore_shared_call(1));
}

/* Their replies, from replies[i]: what worked is undone on a failure. */
void
op_memory_opened(struct op *op, json_t *replies, size_t i)
{
	json_t	*undo[3];
	size_t	 n = 0, k;

	if (op->mem_save != NULL)
		undo[n++] = state_del_call(op->mem_save);
	if (op->mem_load != NULL)
		undo[n++] = state_del_call(op->mem_load);
	if (copies_ram(op))
		undo[n++] = ignore_shared_call(0);
	for (k = 0; k < n; k++) {
		if (json_object_get(json_array_get(replies, i + k),
		    "return") != NULL)
			json_array_append(op->undo, undo[k]);
		json_decref(undo[k]);
	}
}

/* Drops an undo entry that is done with, wherever it is. */
static void
undo_forget(struct op *op, json_t *call)
{
	json_t	*u;
	size_t	 i;

	json_array_foreach(op->undo, i, u) {
		if (json_equal(u, call)) {
			json_array_remove(op->undo, i);
			break;
		}
	}
	json_decref(call);
}

enum {
	STATE_COPIED,
	STATE_RAN,
	STATE_CLOSED,
};

static void	state_step(struct op *, json_t *);

static void
state_start(struct op *op, struct snap_memory *m, int load)
{
	op->mem = m;
	op->mem_loading = load;
	op->mem_resume = op->step;
	op->mstage = STATE_COPIED;
	op->step = state_step;
	free(op->job_error);
	op->job_error = NULL;
	if (m->nram > 0) {
		op_copy_ram(op, m, load);
		op_io_wait(op);
		return;
	}
	state_step(op, NULL);
}

/* With the VM stopped: saves its state into m (opened before). */
void
op_memory_save(struct op *op, struct snap_memory *m)
{
	state_start(op, m, 0);
}

/*
 * Loads m: its failure does not fail the operation (the disks have moved
 * already), op->job_error says why, and the caller resets the guest.
 */
void
op_memory_load(struct op *op, struct snap_memory *m)
{
	state_start(op, m, 1);
}

/* A load's copy that failed goes on to close the images. */
static void
copy_done(struct op_io *io)
{
	struct op	*op = io->op;
	char		**slot;

	if (io->error == NULL)
		return;
	slot = op->mem_loading ? &op->job_error : &op->io_error;
	if (*slot == NULL) {
		*slot = io->error;
		io->error = NULL;
	}
}

static void
state_step(struct op *op, json_t *ret)
{
	struct snap_memory	*m = op->mem;
	json_t			*calls;
	const char		*error;
	char			 node[40];

	switch (op->mstage) {
	case STATE_COPIED:
		op_mark(op, "ram");
		op->mstage = STATE_RAN;
		if (op->job_error == NULL) {
			op_node_name(m->state, node, sizeof node);
			op->job_tolerate = op->mem_loading;
			op_job(op, op->mem_loading ? "snapshot-load" :
			    "snapshot-save", json_pack("{s:s, s:s, s:[s]}",
			    "tag", STATE_TAG, "vmstate", node, "devices",
			    node));
			return;
		}
		/* FALLTHROUGH */
	case STATE_RAN:
		op_mark(op, "device-state");
		op->mstage = STATE_CLOSED;
		if (!op->mem_loading && op->mem_load != NULL) {
			/* The load comes next, and closes both. */
			op->step = op->mem_resume;
			op->step(op, NULL);
			return;
		}
		calls = json_array();
		if (copies_ram(op))
			json_array_append_new(calls, ignore_shared_call(0));
		if (op->mem_save != NULL)
			json_array_append_new(calls, state_del_call(
			    op->mem_save));
		if (op->mem_load != NULL)
			json_array_append_new(calls, state_del_call(
			    op->mem_load));
		op_call_all(op, calls);
		return;
	case STATE_CLOSED:
		/* A failure to close is logged: the state is saved or loaded. */
		if ((error = op_first_error(ret)) != NULL)
			log_warnx("after the VM state: %s", error);
		if (copies_ram(op))
			undo_forget(op, ignore_shared_call(0));
		if (op->mem_save != NULL)
			undo_forget(op, state_del_call(op->mem_save));
		if (op->mem_load != NULL)
			undo_forget(op, state_del_call(op->mem_load));
		op->step = op->mem_resume;
		op->step(op, NULL);
		return;
	}
}

/*
 * Before a revert or a switch: probes the RAM files when a state is saved
 * or loaded. Continues the step with NULL.
 */
void
op_memory_begin(struct op *op, const struct snap_memory *load)
{
	int	save = json_is_true(json_object_get(op->args, "save-memory"));

	if (load == NULL && !save) {
		op->step(op, NULL);
		return;
	}
	op_memory_probe(op, save);
}

/*
 * Sets up what the attach saves and loads: the state of the branch being
 * left (save-memory) and load, and the run state wanted at the end, the
 * one load was saved in unless "state" says. Returns -1 after op_fail().
 */
int
op_memory_plan(struct op *op, const struct snap_memory *load, int *run)
{
	const struct branch	*old = branch_attached(snap.tree);
	char			*cause = NULL;

	if (load != NULL && op_memory_loadable(op, load) == -1)
		return -1;
	cmd_run_state(op->args, run, load != NULL ? strcmp(load->vm_state,
	    "running") == 0 : op->was_running, op->was_running, &cause);
	op->mem_load = snap_memory_dup(load);
	/* Its files are made by op_attach(), once its intent says so. */
	if (json_is_true(json_object_get(op->args, "save-memory")))
		op->mem_save = snap_memory_new("branch", old->name,
		    op->run_state);
	return 0;
}

/*
 * Whether the fast path applies now; for the logs and the error texts of
 * the commands.
 */
int
snap_memory_fast(void)
{
	return live.fast;
}
