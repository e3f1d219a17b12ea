/*
 * qmp-build.c: what the proxy reads from and writes into messages besides
 * framing them: member lookup, single quotes made strict, JSON string
 * quoting as QEMU's writer does it, and the replies it makes itself.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qbranch.h"

/* The top-level member named key, or NULL. */
const struct qmp_member *
qmp_msg_member(const struct qmp_msg *msg, const char *key)
{
	size_t	i;

	for (i = 0; i < msg->nmembers; i++) {
		if (strcmp(msg->members[i].key, key) == 0)
			return &msg->members[i];
	}
	return NULL;
}

/*
 * Appends valid QEMU-dialect JSON to b as strict JSON: single-quoted strings
 * become double-quoted. Everything else is copied as it is.
 */
void
qmp_requote(struct buf *b, const char *p, size_t len)
{
	size_t	i;
	char	quote = 0;

	for (i = 0; i < len; i++) {
		if (quote == 0) {
			if (p[i] == '"' || p[i] == '\'') {
				quote = p[i];
				buf_add(b, "\"", 1);
			} else
				buf_add(b, &p[i], 1);
			continue;
		}
		if (p[i] == '\\' && i + 1 < len) {
			if (quote == '\'' && p[i + 1] == '\'')
				buf_add(b, "'", 1);
			else
				buf_add(b, &p[i], 2);
			i++;
		} else if (p[i] == quote) {
			buf_add(b, "\"", 1);
			quote = 0;
		} else if (p[i] == '"')
			buf_add(b, "\\\"", 2);
		else
			buf_add(b, &p[i], 1);
	}
}

/* The bytes that go into a JSON string as they are: printable ASCII but "
 * and \. */
const unsigned char qmp_plain[256] = {
	[0x20 ... 0x21] = 1, [0x23 ... 0x5b] = 1, [0x5d ... 0x7e] = 1,
};

/*
 * Appends s as a JSON string literal. Bytes that are not valid UTF-8
 * become U+FFFD, as QEMU's JSON writer does.
 */
void
qmp_quote_into(struct buf *b, const char *s)
{
	const unsigned char	*p = (const unsigned char *)s;
	char			 tmp[8];
	size_t			 n, i;

	buf_add(b, "\"", 1);
	for (;;) {
		for (n = 0; qmp_plain[p[n]]; n++)
			;
		if (n > 0) {
			buf_add(b, p, n);
			p += n;
		}
		if (*p == '\0')
			break;
		if (*p == '"' || *p == '\\') {
			buf_add(b, "\\", 1);
			buf_add(b, p++, 1);
		} else if (*p < 0x20 || *p == 0x7f) {
			snprintf(tmp, sizeof tmp, "\\u%04X", *p++);
			buf_addstr(b, tmp);
		} else {
			n = *p >= 0xF0 && *p < 0xF5 ? 4 : *p >= 0xE0 &&
			    *p < 0xF0 ? 3 : *p >= 0xC2 && *p < 0xE0 ? 2 : 0;
			for (i = 1; i < n; i++) {
				if ((p[i] & 0xC0) != 0x80)
					n = 0;
			}
			if (n == 0) {
				buf_addstr(b, "\\uFFFD");
				p++;
			} else {
				buf_add(b, p, n);
				p += n;
			}
		}
	}
	buf_add(b, "\"", 1);
}

/* s as a new JSON string literal. */
char *
qmp_json_quote(const char *s)
{
	struct buf	b = { NULL, 0, 0 };

	qmp_quote_into(&b, s);
	return b.data;
}

/*
 * Builds a QMP error reply, without line terminator. id is raw JSON (or
 * NULL for none), put in as it is.
 */
char *
qmp_error_reply(const char *class, const char *desc, const char *id,
    size_t idlen)
{
	struct buf	 b = { NULL, 0, 0 };
	char		*q;

	buf_addstr(&b, "{\"error\": {\"class\": \"");
	buf_addstr(&b, class);
	buf_addstr(&b, "\", \"desc\": ");
	q = qmp_json_quote(desc);
	buf_addstr(&b, q);
	free(q);
	buf_addstr(&b, "}");
	if (id != NULL) {
		buf_addstr(&b, ", \"id\": ");
		buf_add(&b, id, idlen);
	}
	buf_addstr(&b, "}");
	return b.data;
}

/* Builds a QMP success reply around a raw JSON value; id as above. */
char *
qmp_return_reply(const char *value, const char *id, size_t idlen)
{
	struct buf	 b = { NULL, 0, 0 };

	buf_addstr(&b, "{\"return\": ");
	buf_addstr(&b, value);
	if (id != NULL) {
		buf_addstr(&b, ", \"id\": ");
		buf_add(&b, id, idlen);
	}
	buf_addstr(&b, "}");
	return b.data;
}
