/*
 * test-qmp.c: the framer against tables of streams, fed whole, split at
 * every point, and one byte at a time; id splicing for every JSON type.
 */
#include <stdlib.h>
#include <string.h>

#include "qbranch.h"
#include "tap.h"

/* Frames input in chunks of at most step bytes (0: split once at split). */
static char *
frame_all(const char *in, size_t len, size_t split, size_t step,
    size_t max)
{
	struct qmp_framer	*fr = qmp_framer_new(max);
	const struct qmp_msg	*m;
	struct buf		 out = { NULL, 0, 0 };
	size_t			 off = 0, lim, n, i;
	char			 tmp[64];

	buf_addstr(&out, "");
	while (off < len) {
		lim = step ? step : (off < split ? split - off : len - off);
		if (lim > len - off)
			lim = len - off;
		n = qmp_framer_feed(fr, in + off, lim, &m);
		off += n;
		if (m == NULL)
			continue;
		if (m->error != NULL) {
			buf_addstr(&out, "E(");
			buf_addstr(&out, m->error);
			buf_addstr(&out, ")");
		} else
			buf_addstr(&out, "M");
		buf_add(&out, "[", 1);
		buf_add(&out, in + m->start, m->len);
		buf_add(&out, "]", 1);
		for (i = 0; i < m->nmembers; i++) {
			snprintf(tmp, sizeof tmp, "%s%s=", i ? "," : "<",
			    m->members[i].key);
			buf_addstr(&out, tmp);
			buf_add(&out, in + m->start + m->members[i].val_off,
			    m->members[i].val_end - m->members[i].val_off);
			if (i + 1 == m->nmembers)
				buf_addstr(&out, ">");
		}
		buf_addstr(&out, " ");
	}
	qmp_framer_free(fr);
	return out.data;
}

static const struct {
	const char	*in;
	const char	*want;
} cases[] = {
	{ "{\"execute\": \"query-status\"}",
	  "M[{\"execute\": \"query-status\"}]<execute=\"query-status\"> " },
	{ "{'execute':'x','id':[1,{\"a\":null}]}{\"execute\":\"y\"}",
	  "M[{'execute':'x','id':[1,{\"a\":null}]}]<execute='x',"
	  "id=[1,{\"a\":null}]> M[{\"execute\":\"y\"}]<execute=\"y\"> " },
	{ "  \r\n{\"id\": -1.5e-3, \"execute\":\"x\"}\r\n",
	  "M[{\"id\": -1.5e-3, \"execute\":\"x\"}]<id=-1.5e-3,"
	  "execute=\"x\"> " },
	{ "[1] 23 \"s\" ",
	  "M[[1]] M[23] M[\"s\"] " },
	{ "{\"a\":1,\"a\":2}",
	  "E(duplicate key)[{\"a\":1,\"a\":2}]<a=1> " },
	{ "{\"a\":{\"b\":1},\"c\":{\"b\":1}}",
	  "M[{\"a\":{\"b\":1},\"c\":{\"b\":1}}]<a={\"b\":1},c={\"b\":1}> " },
	{ "{\"a\":{\"b\":1,\"\\u0062\":2}}",
	  "E(duplicate key)[{\"a\":{\"b\":1,\"\\u0062\":2}}] " },
	{ "{\"id\":7,\"x\":@}",
	  "E(stray '@')[{\"id\":7,\"x\":@]<id=7> E(expecting value)[}] " },
	{ "[1 }", "E(expected ',' or ']')[[1 }] " },
	{ "}", "E(expecting value)[}] " },
	{ "{\"a\" 1}", "E(expecting ':')[{\"a\" 1}] " },
	{ "{1:2}", "E(expecting key)[{1:2}] " },
	{ "{\"a\":tru}", "E(invalid keyword)[{\"a\":tru}] " },
	{ "\"x\\q\" ", "E(invalid escape sequence in string)[\"x\\q\"] " },
	{ "\"\\ud800\" ", "E(invalid \\u escape in string)[\"\\ud800\"] " },
	{ "\"\\ud83d\\ude00\" ", "M[\"\\ud83d\\ude00\"] " },
	{ "\"\\uFFFF\" ", "E(invalid Unicode character in \\u escape)"
	  "[\"\\uFFFF\"] " },
	{ "\"\xc3\xa9\" \"\xc3\" ", "M[\"\xc3\xa9\"] "
	  "E(invalid UTF-8 sequence in string)[\"\xc3\"] " },
	{ "\"\xc0\x80\" \"\xc1\xbf\" ", "M[\"\xc0\x80\"] "
	  "E(invalid UTF-8 sequence in string)[\"\xc1\xbf\"] " },
	{ "\"\xed\xa0\x80\" ",
	  "E(invalid UTF-8 sequence in string)[\"\xed\xa0\x80\"] " },
	{ "012", "E(stray '1')[01] " },
	{ "{\"a\":\x01}",
	  "E(stray '\\x01')[{\"a\":\x01] E(expecting value)[}] " },
	{ "\xff garbage {\"execute\":\"x\"}",
	  "E(stray '\\xFF')[\xff] M[{\"execute\":\"x\"}]<execute=\"x\"> " },
	{ "'it\\'s' ", "M['it\\'s'] " },
	{ "{\"s\":\"a\nb\"}",
	  "E(stray '\\x0A')[{\"s\":\"a\n] E(expecting value)[}] " },
};

static void
test_split_points(void)
{
	size_t	 i, len, k;
	char	*whole, *part;
	int	 same;

	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		len = strlen(cases[i].in);
		whole = frame_all(cases[i].in, len, len, 0, 1 << 20);
		ok(strcmp(whole, cases[i].want) == 0, "case %zu whole", i);
		if (strcmp(whole, cases[i].want) != 0)
			diag("got  %s\n# want %s", whole, cases[i].want);
		same = 1;
		for (k = 0; k <= len; k++) {
			part = frame_all(cases[i].in, len, k, 0, 1 << 20);
			if (strcmp(part, whole) != 0) {
				diag("split at %zu: %s", k, part);
				same = 0;
			}
			free(part);
		}
		part = frame_all(cases[i].in, len, 0, 1, 1 << 20);
		if (strcmp(part, whole) != 0)
			same = 0;
		free(part);
		ok(same, "case %zu at every split point and bytewise", i);
		free(whole);
	}
}

/* Every case glued into one stream gives the concatenated answers. */
static void
test_mixed_stream(void)
{
	struct buf	 in = { NULL, 0, 0 }, want = { NULL, 0, 0 };
	size_t		 i, k;
	char		*got;
	int		 same = 1;

	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		/* Cases ending in an open number or recovery need a break. */
		buf_addstr(&in, cases[i].in);
		buf_addstr(&in, "\n");
		buf_addstr(&want, cases[i].want);
	}
	got = frame_all(in.data, in.len, in.len, 0, 1 << 20);
	ok(strcmp(got, want.data) == 0, "mixed stream, whole");
	if (strcmp(got, want.data) != 0)
		diag("got  %s\n# want %s", got, want.data);
	for (k = 0; k <= in.len; k += 7) {
		char *p = frame_all(in.data, in.len, k, 0, 1 << 20);
		if (strcmp(p, got) != 0)
			same = 0;
		free(p);
	}
	ok(same, "mixed stream split at many points");
	free(got);
	buf_free(&in);
	buf_free(&want);
}

static void
test_limits(void)
{
	struct buf	 b = { NULL, 0, 0 };
	char		*got;
	int		 i;

	for (i = 0; i < 1025; i++)
		buf_addstr(&b, "[");
	for (i = 0; i < 1025; i++)
		buf_addstr(&b, "]");
	buf_addstr(&b, "{\"execute\":\"ok\"}");
	got = frame_all(b.data, b.len, b.len, 0, 1 << 20);
	ok(strcmp(got, "E(JSON nesting depth limit exceeded)[] "
	    "M[{\"execute\":\"ok\"}]<execute=\"ok\"> ") == 0,
	    "nesting over 1024 is refused once, at the end of the message");
	free(got);
	buf_free(&b);

	buf_addstr(&b, "{\"execute\":\"");
	for (i = 0; i < 200; i++)
		buf_addstr(&b, "x");
	buf_addstr(&b, "\"} {\"execute\":\"ok\"}");
	got = frame_all(b.data, b.len, b.len, 0, 100);
	ok(strcmp(got, "E(JSON token size limit exceeded)[] "
	    "M[{\"execute\":\"ok\"}]<execute=\"ok\"> ") == 0,
	    "an oversized message gets one error, the next one is framed");
	free(got);
	got = frame_all(b.data, b.len, 0, 1, 100);
	ok(strcmp(got, "E(JSON token size limit exceeded)[] "
	    "M[{\"execute\":\"ok\"}]<execute=\"ok\"> ") == 0,
	    "... also when it comes one byte at a time");
	free(got);
	buf_free(&b);
}

/* Splices id values of every JSON type into and out of a reply. */
static void
test_splice(void)
{
	static const char *ids[] = {
		"\"s\"", "7", "-2.5e10", "18446744073709551615", "{\"a\":[1]}",
		"[1,\"2\"]", "null", "true", "false", "\"\\u00e9\\ud83d\\ude00\"",
	};
	const char		*reply = "{\"return\": {}, \"id\": 41}";
	struct qmp_framer	*fr;
	const struct qmp_msg	*m;
	struct splice		 sp;
	struct buf		 b = { NULL, 0, 0 };
	char			 want[128];
	size_t			 i;

	fr = qmp_framer_new(1 << 20);
	qmp_framer_feed(fr, reply, strlen(reply), &m);
	ok(m != NULL && m->nmembers == 2, "reply framed");
	for (i = 0; i < sizeof ids / sizeof ids[0]; i++) {
		b.len = 0;
		splice_id_replace(qmp_msg_member(m, "id"), &sp);
		splice_apply(&b, reply, m->len, &sp, ids[i], strlen(ids[i]));
		snprintf(want, sizeof want, "{\"return\": {}, \"id\": %s}",
		    ids[i]);
		ok(strcmp(b.data, want) == 0, "id %s spliced in", ids[i]);
	}
	b.len = 0;
	ok(splice_id_remove(m, qmp_msg_member(m, "id"), &sp) == 0,
	    "id can be removed");
	splice_apply(&b, reply, m->len, &sp, "", 0);
	ok(strcmp(b.data, "{\"return\": {}}") == 0, "id removed: %s",
	    b.data);
	qmp_framer_free(fr);

	reply = "{\"id\": 3, \"error\": {\"class\": \"X\", \"desc\": \"d\"}}";
	fr = qmp_framer_new(1 << 20);
	qmp_framer_feed(fr, reply, strlen(reply), &m);
	b.len = 0;
	splice_id_remove(m, qmp_msg_member(m, "id"), &sp);
	splice_apply(&b, reply, m->len, &sp, "", 0);
	ok(strcmp(b.data, "{\"error\": {\"class\": \"X\", \"desc\": \"d\"}}") ==
	    0, "leading id removed: %s", b.data);
	b.len = 0;
	splice_id_insert(&sp);
	splice_apply(&b, "{\"execute\":\"x\"}", 15, &sp, "\"id\": 9, ", 9);
	ok(strcmp(b.data, "{\"id\": 9, \"execute\":\"x\"}") == 0,
	    "id inserted: %s", b.data);
	qmp_framer_free(fr);
	buf_free(&b);
}

static void
test_requote(void)
{
	struct buf	 b = { NULL, 0, 0 };
	const char	*in = "{'a': 'it\\'s \"x\"', \"b\": \"'\"}";

	qmp_requote(&b, in, strlen(in));
	ok(strcmp(b.data, "{\"a\": \"it's \\\"x\\\"\", \"b\": \"'\"}") == 0,
	    "single quotes become double: %s", b.data);
	buf_free(&b);
}

int
main(void)
{
	test_split_points();
	test_mixed_stream();
	test_limits();
	test_splice();
	test_requote();
	return tap_done();
}
