/*
 * hmp.c: reading an HMP command line the way QEMU's monitor does, enough
 * to match rules on its command and to translate the snapshot commands:
 * the command word with its alias resolved, and the words after it
 * (plain, or double-quoted with backslash escapes).
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "qbranch.h"

/* QEMU's HMP aliases (hmp-commands.hx, "name|alias"). */
static const struct {
	const char	*alias;
	const char	*name;
} hmp_aliases[] = {
	{ "c", "cont" },
	{ "?", "help" },
	{ "p", "print" },
	{ "q", "quit" },
	{ "s", "stop" },
};

static const char *
skip_space(const char *p)
{
	while (isspace((unsigned char)*p))
		p++;
	return p;
}

/*
 * The command of an HMP line, alias resolved; *rest (if given) is set
 * past it and the blanks after. NULL for a blank line. As in QEMU, the
 * word ends at a slash too (x/4i, p/x): QEMU runs "savevm/a" as savevm.
 */
char *
hmp_command(const char *line, const char **rest)
{
	const char	*p = skip_space(line), *end;
	size_t		 i, n;

	for (end = p; *end != '\0' && *end != '/' &&
	    !isspace((unsigned char)*end); end++)
		;
	if ((n = end - p) == 0)
		return NULL;
	if (rest != NULL)
		*rest = skip_space(end);
	for (i = 0; i < sizeof hmp_aliases / sizeof hmp_aliases[0]; i++) {
		if (strlen(hmp_aliases[i].alias) == n &&
		    memcmp(hmp_aliases[i].alias, p, n) == 0)
			return xstrdup(hmp_aliases[i].name);
	}
	return xstrndup(p, n);
}

/*
 * The words of the rest of a line: up to max of them go to words[]
 * (allocated). Returns how many there were, or -1 for an unterminated
 * quote.
 */
int
hmp_words(const char *p, char **words, int max)
{
	struct buf	 b;
	int		 n = 0, i, escaped;

	for (p = skip_space(p); *p != '\0'; p = skip_space(p)) {
		memset(&b, 0, sizeof b);
		buf_addstr(&b, "");
		if (*p == '"') {
			for (p++; *p != '"'; p++) {
				if ((escaped = *p == '\\' && p[1] != '\0'))
					p++;
				if (*p == '\0') {
					buf_free(&b);
					goto bad;
				}
				buf_add(&b, !escaped ? p : *p == 'n' ? "\n" :
				    *p == 'r' ? "\r" : p, 1);
			}
			p++;
		} else {
			for (; *p != '\0' && !isspace((unsigned char)*p); p++)
				buf_add(&b, p, 1);
		}
		buf_add(&b, "", 1);
		if (n < max)
			words[n] = b.data;
		else
			free(b.data);
		n++;
	}
	return n;
bad:
	for (i = 0; i < n && i < max; i++)
		free(words[i]);
	return -1;
}
