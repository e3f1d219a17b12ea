/*
 * snap-store.c: files in the state directory. A whole file is written
 * atomically: a temp file, fsync, rename over the old one, fsync the
 * directory; a reader sees the old file or the new one, never a part. A
 * journal grows by records, each in pages of its own, synced.
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "qbranch.h"

/*
 * First half of an atomic write: text goes into a temporary file beside
 * dir/name, synced. The old file is untouched until store_commit(); a full
 * or read-only disk shows here, before anything else changes. Touches no
 * JSON, so it may run in a thread while the event loop goes on.
 */
int
store_prepare(const char *dir, const char *name, const char *text,
    char **cause)
{
	char	*tmp = NULL;
	size_t	 len = strlen(text), off = 0;
	ssize_t	 n;
	int	 fd = -1, ret = -1;

	xasprintf(&tmp, "%s/.%s.tmp", dir, name);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd == -1)
		goto fail;
	while (off < len) {
		if ((n = write(fd, text + off, len - off)) == -1) {
			if (errno == EINTR)
				continue;
			goto fail;
		}
		off += n;
	}
	if (fsync(fd) == -1 || close(fd) == -1) {
		fd = -1;
		goto fail;
	}
	ret = 0;
	goto out;
fail:
	xasprintf(cause, "cannot write %s: %s", tmp, strerror(errno));
	if (fd != -1)
		close(fd);
	unlink(tmp);
out:
	free(tmp);
	return ret;
}

/* Drops a prepared write. */
void
store_abort(const char *dir, const char *name)
{
	char	*tmp;

	xasprintf(&tmp, "%s/.%s.tmp", dir, name);
	unlink(tmp);
	free(tmp);
}

static int
dir_sync(const char *dir)
{
	int	dfd, ret;

	if ((dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1)
		return -1;
	ret = fsync(dfd);
	close(dfd);
	return ret;
}

/*
 * Makes a file written earlier durable, with its name: NULL, or why not
 * (allocated).
 */
char *
file_sync(const char *path)
{
	char	*dir, *slash, *cause = NULL;
	int	 fd;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1 ||
	    fdatasync(fd) == -1)
		xasprintf(&cause, "cannot write %s: %s", path, strerror(errno));
	if (fd != -1)
		close(fd);
	if (cause != NULL)
		return cause;
	dir = xstrdup(path);
	slash = strrchr(dir, '/');
	slash[slash == dir ? 1 : 0] = '\0';
	if (dir_sync(dir) == -1)
		xasprintf(&cause, "cannot sync %s: %s", dir, strerror(errno));
	free(dir);
	return cause;
}

/* Second half: the prepared file replaces dir/name, durably. */
int
store_commit(const char *dir, const char *name, char **cause)
{
	char	*path, *tmp;
	int	 ret = -1;

	xasprintf(&path, "%s/%s", dir, name);
	xasprintf(&tmp, "%s/.%s.tmp", dir, name);
	if (rename(tmp, path) == -1 || dir_sync(dir) == -1)
		xasprintf(cause, "cannot replace %s: %s", path,
		    strerror(errno));
	else
		ret = 0;
	free(path);
	free(tmp);
	return ret;
}

/*
 * Reads dir/name (new reference). Returns NULL with *cause NULL when there
 * is no such file, or with *cause set when it cannot be read or parsed.
 */
json_t *
store_read(const char *dir, const char *name, char **cause)
{
	json_error_t	 err;
	json_t		*v;
	char		*path;

	*cause = NULL;
	xasprintf(&path, "%s/%s", dir, name);
	if (access(path, F_OK) == -1 && errno == ENOENT) {
		free(path);
		return NULL;
	}
	if ((v = json_load_file(path, JSON_REJECT_DUPLICATES, &err)) == NULL)
		xasprintf(cause, "%s:%d:%d: %s", path, err.line, err.column,
		    err.text);
	free(path);
	return v;
}

/*
 * The bytes a record takes in a journal: itself, a newline, and spaces to
 * the end of its last page. Writing a record then never rewrites a page
 * that holds an earlier one (a torn write harms the new record only), and
 * every record needs new room on the disk, so that a full disk shows at
 * store_reserve() for each of them.
 */
size_t
store_record_len(size_t len)
{
	return (len + 1 + STORE_PAGE - 1) / STORE_PAGE * STORE_PAGE;
}

static int
journal_open(const char *dir, const char *name, char **path, char **cause)
{
	int	fd;

	xasprintf(path, "%s/%s", dir, name);
	fd = open(*path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	if (fd == -1)
		xasprintf(cause, "cannot write %s: %s", *path,
		    strerror(errno));
	return fd;
}

/*
 * Makes room for len bytes at off in the journal dir/name (made if
 * missing), so that writing them there cannot meet a full disk. A file
 * system without fallocate is only checked for taking writes.
 */
int
store_reserve(const char *dir, const char *name, off_t off, size_t len,
    char **cause)
{
	char	*path;
	int	 fd, ret = 0;

	if ((fd = journal_open(dir, name, &path, cause)) == -1) {
		free(path);
		return -1;
	}
	if (fallocate(fd, FALLOC_FL_KEEP_SIZE, off, len) == -1 &&
	    errno != EOPNOTSUPP && errno != ENOSYS) {
		xasprintf(cause, "cannot write %s: %s", path, strerror(errno));
		ret = -1;
	}
	close(fd);
	free(path);
	return ret;
}

/* Writes the record text at off in the journal dir/name, durably. */
int
store_append(const char *dir, const char *name, off_t off, const char *text,
    char **cause)
{
	size_t	 len = strlen(text), total = store_record_len(len), done = 0;
	ssize_t	 n;
	char	*path, *page;
	int	 fd, ret = -1;

	if ((fd = journal_open(dir, name, &path, cause)) == -1) {
		free(path);
		return -1;
	}
	page = xmalloc(total);
	memcpy(page, text, len);
	memset(page + len, ' ', total - len);
	page[len] = '\n';
	page[total - 1] = '\n';
	while (done < total) {
		n = pwrite(fd, page + done, total - done, off + done);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1)
			goto out;
		done += n;
	}
	if (fdatasync(fd) == -1)
		goto out;
	/* The first record may be the file's first: its name must last too. */
	if (off == 0 && dir_sync(dir) == -1)
		goto out;
	ret = 0;
out:
	if (ret == -1)
		xasprintf(cause, "cannot write %s: %s", path, strerror(errno));
	close(fd);
	free(page);
	free(path);
	return ret;
}

/* Cuts the journal dir/name to len bytes, durably; no such file is fine. */
int
store_truncate(const char *dir, const char *name, off_t len, char **cause)
{
	char	*path;
	int	 fd, ret = 0;

	xasprintf(&path, "%s/%s", dir, name);
	if ((fd = open(path, O_WRONLY | O_CLOEXEC)) == -1) {
		if (errno != ENOENT) {
			xasprintf(cause, "cannot cut %s: %s", path,
			    strerror(errno));
			ret = -1;
		}
	} else {
		if (ftruncate(fd, len) == -1 || fsync(fd) == -1) {
			xasprintf(cause, "cannot cut %s: %s", path,
			    strerror(errno));
			ret = -1;
		}
		close(fd);
	}
	free(path);
	return ret;
}

/*
 * Reads dir/name whole, NUL-terminated, its length in *len. Returns NULL
 * with *cause NULL when there is no such file.
 */
char *
store_read_text(const char *dir, const char *name, size_t *len, char **cause)
{
	struct stat	 st;
	char		*path, *text = NULL;
	size_t		 done = 0;
	ssize_t		 n;
	int		 fd;

	*cause = NULL;
	xasprintf(&path, "%s/%s", dir, name);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1) {
		if (errno != ENOENT)
			xasprintf(cause, "cannot read %s: %s", path,
			    strerror(errno));
		free(path);
		return NULL;
	}
	if (fstat(fd, &st) == -1)
		goto fail;
	text = xmalloc((size_t)st.st_size + 1);
	while (done < (size_t)st.st_size) {
		n = read(fd, text + done, st.st_size - done);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		done += n;
	}
	if (done != (size_t)st.st_size)
		goto fail;
	text[done] = '\0';
	*len = done;
	close(fd);
	free(path);
	return text;
fail:
	xasprintf(cause, "cannot read %s: %s", path, strerror(errno));
	free(text);
	close(fd);
	free(path);
	return NULL;
}
