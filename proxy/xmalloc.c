/*
 * xmalloc.c: allocation that cannot fail (running out of memory is fatal),
 * and a small growable buffer.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qbranch.h"

/* Allocates size bytes or exits. */
void *
xmalloc(size_t size)
{
	void	*p;

	if ((p = malloc(size == 0 ? 1 : size)) == NULL)
		fatal("malloc");
	return p;
}

/* Allocates zeroed memory or exits. */
void *
xcalloc(size_t n, size_t size)
{
	void	*p;

	if ((p = calloc(n == 0 ? 1 : n, size == 0 ? 1 : size)) == NULL)
		fatal("calloc");
	return p;
}

/* Resizes an array with overflow checking, or exits. */
void *
xreallocarray(void *ptr, size_t n, size_t size)
{
	void	*p;

	if (size != 0 && n > SIZE_MAX / size)
		fatalx("xreallocarray: overflow");
	if ((p = realloc(ptr, n * size == 0 ? 1 : n * size)) == NULL)
		fatal("realloc");
	return p;
}

/* Duplicates a string or exits. */
char *
xstrdup(const char *s)
{
	return xmemdup(s, strlen(s) + 1);
}

/* Duplicates at most n bytes of a string, NUL-terminated, or exits. */
char *
xstrndup(const char *s, size_t n)
{
	char	*p;
	size_t	 len = strnlen(s, n);

	p = xmalloc(len + 1);
	memcpy(p, s, len);
	p[len] = '\0';
	return p;
}

/* Duplicates a memory block or exits. */
void *
xmemdup(const void *src, size_t len)
{
	void	*p = xmalloc(len);

	memcpy(p, src, len);
	return p;
}

/* Formats into a new string or exits. */
int
xasprintf(char **ret, const char *fmt, ...)
{
	va_list	ap;
	int	n;

	va_start(ap, fmt);
	n = vasprintf(ret, fmt, ap);
	va_end(ap);
	if (n == -1)
		fatal("vasprintf");
	return n;
}

/* Appends len bytes to a buffer, which stays NUL-terminated. */
void
buf_add(struct buf *b, const void *data, size_t len)
{
	if (b->len + len + 1 > b->cap) {
		b->cap = b->cap ? b->cap : 64;
		while (b->len + len + 1 > b->cap)
			b->cap *= 2;
		b->data = xreallocarray(b->data, b->cap, 1);
	}
	if (len > 0)
		memcpy(b->data + b->len, data, len);
	b->len += len;
	b->data[b->len] = '\0';
}

/* Appends a string to a buffer. */
void
buf_addstr(struct buf *b, const char *s)
{
	buf_add(b, s, strlen(s));
}

/* Releases a buffer's memory and empties it. */
void
buf_free(struct buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}
