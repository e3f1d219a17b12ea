/*
 * snap-store.c: files in the state directory, written atomically: a temp
 * file, fsync, rename over the old one, fsync the directory. A reader sees
 * the old file or the new one, never a part, whatever crashes when.
 */
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

/* Second half: the prepared file replaces dir/name, durably. */
int
store_commit(const char *dir, const char *name, char **cause)
{
	char	*path, *tmp;
	int	 dfd = -1, ret = -1;

	xasprintf(&path, "%s/%s", dir, name);
	xasprintf(&tmp, "%s/.%s.tmp", dir, name);
	if (rename(tmp, path) == -1 ||
	    (dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1 ||
	    fsync(dfd) == -1)
		xasprintf(cause, "cannot replace %s: %s", path,
		    strerror(errno));
	else
		ret = 0;
	if (dfd != -1)
		close(dfd);
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
