/*
 * json-locate.c: where a value sits in a JSON text, by its path of keys
 * and indexes. jansson keeps no positions, and a rule file's mistakes are
 * found after parsing; this finds the line and column to name. The text
 * has already been parsed, so the scanner only skips, never judges.
 */
#include <string.h>

#include "qbranch.h"

static size_t
skip_ws(const char *t, size_t len, size_t p)
{
	while (p < len && strchr(" \t\r\n", t[p]) != NULL && t[p] != '\0')
		p++;
	return p;
}

/* Skips a string starting at its opening quote; returns past the close. */
static size_t
skip_string(const char *t, size_t len, size_t p)
{
	for (p++; p < len && t[p] != '"'; p++) {
		if (t[p] == '\\')
			p++;
	}
	return p < len ? p + 1 : len;
}

/* Skips one value: a string, a nested object or array, or a scalar. */
static size_t
skip_value(const char *t, size_t len, size_t p)
{
	int	depth = 0;

	if (p < len && t[p] == '"')
		return skip_string(t, len, p);
	if (p < len && (t[p] == '{' || t[p] == '[')) {
		while (p < len) {
			if (t[p] == '"') {
				p = skip_string(t, len, p);
				continue;
			}
			if (t[p] == '{' || t[p] == '[')
				depth++;
			else if ((t[p] == '}' || t[p] == ']') && --depth == 0)
				return p + 1;
			p++;
		}
		return len;
	}
	while (p < len && t[p] != '\0' && strchr(",}] \t\r\n", t[p]) == NULL)
		p++;
	return p;
}

/*
 * Finds the start of the value at path (npath steps: a key, or an index
 * when the key is NULL) and returns its 1-based line and column. Where a
 * step cannot be followed, the deepest value found is given.
 */
void
json_locate(const char *t, size_t len, const struct json_step *path,
    size_t npath, int *line, int *col)
{
	size_t	 p, i, k, n, key, klen;

	p = skip_ws(t, len, 0);
	for (i = 0; i < npath && p < len; i++) {
		if ((path[i].key != NULL) != (t[p] == '{') ||
		    (path[i].key == NULL && t[p] != '['))
			break;
		k = skip_ws(t, len, p + 1);
		for (n = 0; k < len && t[k] != '}' && t[k] != ']'; n++) {
			key = k;
			if (path[i].key != NULL) {
				/* A key, then its value. */
				k = skip_string(t, len, k);
				klen = k - key - 2;
				k = skip_ws(t, len, k);
				k = skip_ws(t, len, k + 1);
				if (klen == strlen(path[i].key) &&
				    memcmp(t + key + 1, path[i].key, klen) == 0)
					break;
			} else if (n == path[i].index)
				break;
			k = skip_ws(t, len, skip_value(t, len, k));
			if (k < len && t[k] == ',')
				k = skip_ws(t, len, k + 1);
		}
		if (k >= len || t[k] == '}' || t[k] == ']')
			break;
		p = k;
	}
	*line = 1;
	*col = 1;
	for (k = 0; k < p && k < len; k++) {
		if (t[k] == '\n') {
			(*line)++;
			*col = 1;
		} else if (((unsigned char)t[k] & 0xc0) != 0x80)
			(*col)++;	/* characters, as jansson counts */
	}
}
