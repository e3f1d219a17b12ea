/*
 * format.c: how values look in human output (sizes like 1.5M, ages like
 * 3m, local times) and the aligned tables the listing verbs print. Sizes
 * and ages have fixed widths so that columns after them never move.
 */
#include <langinfo.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

/*
 * bytes as the listing shows them: 512B, 1.5K, 15K, 1023K, 1.0M ... At
 * most FORMAT_SIZE_WIDTH characters; rounded to the nearest shown digit.
 */
void
format_size(uint64_t bytes, char *out, size_t len)
{
	static const char	 units[] = "BKMGTPE";
	uint64_t		 unit = 1, tenths, whole;
	int			 u = 0;

	if (bytes < 1024) {
		snprintf(out, len, "%uB", (unsigned)bytes);
		return;
	}
	for (;;) {
		u++;
		unit <<= 10;
		/* tenths of the unit, rounded; below 10.0 one decimal */
		tenths = bytes / unit * 10 + ((bytes % unit) * 10 + unit / 2) /
		    unit;
		if (tenths < 100) {
			snprintf(out, len, "%u.%u%c", (unsigned)(tenths / 10),
			    (unsigned)(tenths % 10), units[u]);
			return;
		}
		whole = bytes / unit + ((bytes % unit) >= unit / 2);
		if (whole < 1024 || units[u + 1] == '\0') {
			snprintf(out, len, "%u%c", (unsigned)whole, units[u]);
			return;
		}
	}
}

/* How long ago: 45s, 3m, 2h, 5d, 1y; whole units, rounded down. */
void
format_age(int64_t seconds, char *out, size_t len)
{
	if (seconds < 0)
		seconds = 0;
	if (seconds < 60)
		snprintf(out, len, "%llds", (long long)seconds);
	else if (seconds < 3600)
		snprintf(out, len, "%lldm", (long long)(seconds / 60));
	else if (seconds < 86400)
		snprintf(out, len, "%lldh", (long long)(seconds / 3600));
	else if (seconds < 365 * 86400)
		snprintf(out, len, "%lldd", (long long)(seconds / 86400));
	else if (seconds < (int64_t)999 * 365 * 86400)
		snprintf(out, len, "%lldy", (long long)(seconds /
		    (365 * 86400)));
	else
		snprintf(out, len, "old");
}

/* A point in time as local time, like 2026-11-22 04:58:45 +0000. */
void
format_time(int64_t when, char *out, size_t len)
{
	time_t		t = (time_t)when;
	struct tm	tm;

	if (localtime_r(&t, &tm) == NULL ||
	    strftime(out, len, "%Y-%m-%d %H:%M:%S %z", &tm) == 0)
		snprintf(out, len, "%lld", (long long)when);
}

/* Columns a UTF-8 string takes: its code points (no wide characters). */
size_t
format_width(const char *s)
{
	size_t	n = 0;

	for (; *s != '\0'; s++) {
		if (((unsigned char)*s & 0xc0) != 0x80)
			n++;
	}
	return n;
}

/* s with control characters shown as '?' (new string): safe on a tty. */
char *
format_clean(const char *s)
{
	char	*out, *p;

	out = xstrdup(s != NULL ? s : "");
	for (p = out; *p != '\0'; p++) {
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
	}
	return out;
}

/* Whether the locale's character set is UTF-8 (line drawing with it). */
int
format_utf8(void)
{
	const char	*cs = nl_langinfo(CODESET);

	return cs != NULL && (strcmp(cs, "UTF-8") == 0 ||
	    strcmp(cs, "utf8") == 0);
}

/*
 * Rows of cells, printed with columns aligned two spaces apart; a column
 * empty in every row is left out. A span row is one cell printed as it
 * is, wider than the first column perhaps, and not counted in its width.
 */
struct table {
	size_t	  ncols;
	size_t	  nrows;
	char	**cells;	/* nrows * ncols, owned */
	int	 *span;		/* per row */
	int	 *right;	/* per column: aligned right */
	size_t	 *min;		/* per column: at least this wide */
};

/* A table of ncols columns. */
struct table *
table_new(size_t ncols)
{
	struct table	*t;

	t = xcalloc(1, sizeof *t);
	t->ncols = ncols;
	t->right = xcalloc(ncols, sizeof *t->right);
	t->min = xcalloc(ncols, sizeof *t->min);
	return t;
}

/* Column col is at least width wide, when it is shown at all. */
void
table_min_width(struct table *t, size_t col, size_t width)
{
	if (col < t->ncols)
		t->min[col] = width;
}

/* Column col is aligned right (numbers, sizes). */
void
table_align_right(struct table *t, size_t col)
{
	if (col < t->ncols)
		t->right[col] = 1;
}

/* Adds a row of ncols strings (copied; NULL is an empty cell). */
void
table_add(struct table *t, ...)
{
	va_list		 ap;
	const char	*s;
	size_t		 i;

	t->cells = xreallocarray(t->cells, (t->nrows + 1) * t->ncols,
	    sizeof *t->cells);
	t->span = xreallocarray(t->span, t->nrows + 1, sizeof *t->span);
	t->span[t->nrows] = 0;
	va_start(ap, t);
	for (i = 0; i < t->ncols; i++) {
		s = va_arg(ap, const char *);
		t->cells[t->nrows * t->ncols + i] = format_clean(s);
	}
	va_end(ap);
	t->nrows++;
}

/* Adds a row that is one cell (copied), not aligned with the others. */
void
table_add_span(struct table *t, const char *s)
{
	size_t	i;

	t->cells = xreallocarray(t->cells, (t->nrows + 1) * t->ncols,
	    sizeof *t->cells);
	t->span = xreallocarray(t->span, t->nrows + 1, sizeof *t->span);
	t->span[t->nrows] = 1;
	t->cells[t->nrows * t->ncols] = format_clean(s);
	for (i = 1; i < t->ncols; i++)
		t->cells[t->nrows * t->ncols + i] = xstrdup("");
	t->nrows++;
}

/* Prints the rows; the last column is not padded, no line ends in space. */
void
table_print(struct table *t, FILE *f)
{
	size_t		*width, r, i, w, pad, last = 0;
	const char	*cell;
	struct buf	 line = { NULL, 0, 0 };
	int		*used;

	width = xcalloc(t->ncols, sizeof *width);
	used = xcalloc(t->ncols, sizeof *used);
	for (r = 0; r < t->nrows; r++) {
		for (i = 0; i < t->ncols; i++) {
			w = format_width(t->cells[r * t->ncols + i]);
			if (w > 0)
				used[i] = 1;
			if (w > width[i] && !t->span[r])
				width[i] = w;
		}
	}
	for (i = 0; i < t->ncols; i++) {
		if (used[i])
			last = i;
		if (width[i] < t->min[i])
			width[i] = t->min[i];
	}
	for (r = 0; r < t->nrows; r++) {
		line.len = 0;
		buf_addstr(&line, "");
		if (t->span[r]) {
			fprintf(f, "%s\n", t->cells[r * t->ncols]);
			continue;
		}
		for (i = 0; i < t->ncols; i++) {
			if (!used[i] && i > 0)
				continue;
			cell = t->cells[r * t->ncols + i];
			pad = width[i] - format_width(cell);
			if (i > 0)
				buf_addstr(&line, "  ");
			while (t->right[i] && pad > 0) {
				buf_addstr(&line, " ");
				pad--;
			}
			buf_addstr(&line, cell);
			if (i >= last)
				break;
			while (pad > 0) {
				buf_addstr(&line, " ");
				pad--;
			}
		}
		while (line.len > 0 && line.data[line.len - 1] == ' ')
			line.data[--line.len] = '\0';
		fprintf(f, "%s\n", line.data);
	}
	buf_free(&line);
	free(width);
	free(used);
}

/* Frees a table and its cells. */
void
table_free(struct table *t)
{
	size_t	i;

	if (t == NULL)
		return;
	for (i = 0; i < t->nrows * t->ncols; i++)
		free(t->cells[i]);
	free(t->cells);
	free(t->span);
	free(t->right);
	free(t->min);
	free(t);
}
