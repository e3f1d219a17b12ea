/*
 * test-cli-format.c: how qbranch shows values to people: sizes, ages,
 * times, and aligned tables (widths, right alignment, empty columns,
 * spans, control characters).
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "tap.h"

static void
test_size(void)
{
	static const struct {
		uint64_t	 bytes;
		const char	*want;
	} cases[] = {
		{ 0, "0B" }, { 1, "1B" }, { 1023, "1023B" },
		{ 1024, "1.0K" }, { 1536, "1.5K" }, { 1075, "1.0K" },
		{ 1076, "1.1K" }, { 10188, "9.9K" }, { 10189, "10K" },
		{ 10239, "10K" }, { 1047552, "1023K" }, { 1048063, "1023K" },
		{ 1048064, "1.0M" }, { 1048576, "1.0M" },
		{ 1572864, "1.5M" }, { 268435456, "256M" },
		{ 1073741824, "1.0G" }, { 1099511627776ULL, "1.0T" },
		{ UINT64_MAX, "16E" },
	};
	char	buf[FORMAT_SIZE_LEN];
	size_t	i;

	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		format_size(cases[i].bytes, buf, sizeof buf);
		ok(strcmp(buf, cases[i].want) == 0 &&
		    strlen(buf) <= FORMAT_SIZE_WIDTH, "size %llu -> %s (%s)",
		    (unsigned long long)cases[i].bytes, cases[i].want, buf);
	}
}

static void
test_age(void)
{
	static const struct {
		int64_t		 secs;
		const char	*want;
	} cases[] = {
		{ -5, "0s" }, { 0, "0s" }, { 59, "59s" }, { 60, "1m" },
		{ 3599, "59m" }, { 3600, "1h" }, { 86399, "23h" },
		{ 86400, "1d" }, { 364 * 86400, "364d" },
		{ 365 * 86400, "1y" }, { (int64_t)998 * 365 * 86400, "998y" },
		{ (int64_t)5000 * 365 * 86400, "old" },
	};
	char	buf[FORMAT_AGE_LEN];
	size_t	i;

	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		format_age(cases[i].secs, buf, sizeof buf);
		ok(strcmp(buf, cases[i].want) == 0 &&
		    strlen(buf) <= FORMAT_AGE_WIDTH, "age %lld -> %s (%s)",
		    (long long)cases[i].secs, cases[i].want, buf);
	}
}

static void
test_time(void)
{
	char	buf[FORMAT_TIME_LEN];

	setenv("TZ", "UTC", 1);
	tzset();
	format_time(1795320000, buf, sizeof buf);
	ok(strcmp(buf, "2026-11-22 04:00:00 +0000") == 0,
	    "time in UTC (%s)", buf);
	setenv("TZ", "CET-1", 1);
	tzset();
	format_time(1795320000, buf, sizeof buf);
	ok(strcmp(buf, "2026-11-22 05:00:00 +0100") == 0,
	    "time in local time (%s)", buf);
}

/* What table_print writes, as a new string. */
static char *
table_text(struct table *t)
{
	char	*text = NULL;
	size_t	 len = 0;
	FILE	*f;

	f = open_memstream(&text, &len);
	table_print(t, f);
	fclose(f);
	return text;
}

static void
test_table(void)
{
	struct table	*t;
	char		*text, *clean;

	t = table_new(4);
	table_align_right(t, 2);
	table_add(t, "NAME", "", "SIZE", "DESCRIPTION");
	table_add(t, "a", NULL, "1.5M", "first");
	table_add(t, "longer", "", "12K", "");
	text = table_text(t);
	ok(strcmp(text, "NAME    SIZE  DESCRIPTION\n"
	    "a       1.5M  first\n"
	    "longer   12K\n") == 0,
	    "columns aligned, right alignment, empty column dropped, no "
	    "trailing spaces");
	if (strcmp(text, "NAME    SIZE  DESCRIPTION\na       1.5M  first\n"
	    "longer   12K\n") != 0)
		diag("got:\n%s", text);
	free(text);
	table_free(t);

	t = table_new(2);
	table_add(t, "x", "1");
	table_add_span(t, "a very long span line");
	table_add(t, "\xe2\x94\x94\xe2\x94\x80 y", "2");
	text = table_text(t);
	ok(strcmp(text, "x     1\na very long span line\n"
	    "\xe2\x94\x94\xe2\x94\x80 y  2\n") == 0,
	    "spans do not widen a column; UTF-8 counts by code point");
	free(text);
	table_free(t);

	t = table_new(2);
	table_add(t, "evil\033[2Jname", "line\nbreak");
	text = table_text(t);
	ok(strcmp(text, "evil?[2Jname  line?break\n") == 0,
	    "control characters are not sent to the terminal");
	free(text);
	table_free(t);

	clean = format_clean(NULL);
	ok(strcmp(clean, "") == 0, "format_clean(NULL) is empty");
	free(clean);
	ok(format_width("caf\xc3\xa9") == 4, "width of a UTF-8 string");
}

int
main(void)
{
	test_size();
	test_age();
	test_time();
	test_table();
	return tap_done();
}
