/*
 * qmp.c: framing of a QMP byte stream by parsing, the way QEMU frames it.
 *
 * QEMU reads JSON texts, not lines. Its lexer cuts tokens, a streamer counts
 * braces and brackets and hands every balanced group of tokens to the parser,
 * and a lexical error is answered at once, after which the lexer skips to a
 * likely resynchronisation point. This file does the same, incrementally and
 * byte by byte, without keeping the bytes: the caller keeps them and gets
 * back offsets. It rejects everything QEMU's parser would reject (grammar,
 * escapes, UTF-8, duplicate keys), so nothing that QEMU would answer without
 * an id is ever forwarded; and it records where each top-level member lies,
 * so an id can be spliced into the raw bytes without re-encoding them.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qbranch.h"

#define QMP_MAX_NESTING	1024		/* as QEMU's json-streamer.c */
#define QMP_MAX_TOKENS	(2u << 20)
#define QMP_STR_MAX	256		/* decoded top-level string values */

enum lex_state {
	L_START,
	L_RECOVERY,
	L_STRING,
	L_ESCAPE,
	L_ZERO,
	L_DIGITS,
	L_SIGN,
	L_MANTISSA,
	L_MANTISSA_DIGITS,
	L_EXP_E,
	L_EXP_SIGN,
	L_EXP_DIGITS,
	L_KEYWORD,
};

enum token {
	T_LCURLY,
	T_RCURLY,
	T_LSQUARE,
	T_RSQUARE,
	T_COLON,
	T_COMMA,
	T_STRING,
	T_NUMBER,
	T_KEYWORD,
};

enum parse_state {
	P_VALUE,
	P_AFTER_LCURLY,
	P_BEFORE_KEY,
	P_END_OF_KEY,
	P_AFTER_LSQUARE,
	P_END_OF_VALUE,
};

struct container {
	char			kind;		/* '{' or '[' */
	enum parse_state	state;
	uint32_t		serial;		/* names an object for its keys */
};

/* Where a decoded string goes while it is lexed. */
enum decode_to {
	D_NONE,
	D_KEY,
	D_VALUE,
};

struct keyslot {
	uint64_t	hash;
	uint32_t	gen;
	uint32_t	serial;
	size_t		aoff;
};

struct member_priv {
	size_t		key_aoff;
	size_t		str_aoff;
	int		has_str;
};

struct qmp_framer {
	size_t			 max_message;
	uint64_t		 pos;		/* offset of the next byte */

	/* lexer */
	enum lex_state		 lex;
	uint64_t		 tok_start;
	char			 quote;
	int			 tok_squote;
	const char		*tok_err;	/* content error of the token */
	char			 kw[8];
	size_t			 kwlen;
	int			 u_left;	/* hex digits still due in \u */
	unsigned		 u_cp;
	unsigned		 u_high;	/* leading surrogate seen */
	int			 want_low;	/* 2: want '\\', 1: want 'u' */
	int			 utf_need;
	unsigned		 utf_cp;
	int			 utf_len;
	unsigned char		 utf_buf[6];
	enum decode_to		 decode;
	size_t			 str_aoff;
	size_t			 str_len;

	/* streamer */
	int			 group;		/* a group of tokens is open */
	int			 discard;	/* over a limit: skip to its end */
	uint64_t		 group_start;
	int			 braces;
	int			 brackets;
	size_t			 ntokens;

	/* parser */
	struct container	 stack[QMP_MAX_NESTING + 1];
	int			 depth;
	const char		*perr;
	int			 done;
	enum qmp_type		 top_type;
	uint32_t		 serial;

	/* what is recorded of the message */
	char			*arena;		/* decoded keys and strings */
	size_t			 arena_len;
	size_t			 arena_cap;
	struct keyslot		*keys;
	size_t			 keys_cap;
	size_t			 keys_used;
	uint32_t		 gen;
	struct qmp_member	*members;
	struct member_priv	*mpriv;
	size_t			 nmembers;
	size_t			 members_cap;
	int			 in_member;	/* a top-level value is open */
	int			 flags;

	int			 ready;
	struct qmp_msg		 msg;
	char			 errbuf[160];
};

static void	arena_add(struct qmp_framer *, const void *, size_t);
static int	key_insert(struct qmp_framer *, uint32_t, size_t);
static void	group_reset(struct qmp_framer *);
static void	emit(struct qmp_framer *, const char *, uint64_t);
static void	lex_error(struct qmp_framer *, unsigned char);
static void	over_limit(struct qmp_framer *, const char *);
static void	token(struct qmp_framer *, enum token, uint64_t);
static void	parse_token(struct qmp_framer *, enum token, uint64_t);
static void	value_begin(struct qmp_framer *, enum token, uint64_t);
static void	value_end(struct qmp_framer *, uint64_t);
static void	string_begin(struct qmp_framer *, char);
static void	string_byte(struct qmp_framer *, unsigned char);
static void	string_escape(struct qmp_framer *, unsigned char);
static void	string_codepoint(struct qmp_framer *, unsigned);
static int	lex_byte(struct qmp_framer *, unsigned char);

/* Makes a framer whose groups may be at most max_message bytes long. */
struct qmp_framer *
qmp_framer_new(size_t max_message)
{
	struct qmp_framer	*fr;

	fr = xcalloc(1, sizeof *fr);
	fr->max_message = max_message;
	fr->lex = L_START;
	fr->keys_cap = 64;
	fr->keys = xcalloc(fr->keys_cap, sizeof *fr->keys);
	fr->gen = 1;
	group_reset(fr);
	return fr;
}

/* Frees a framer. */
void
qmp_framer_free(struct qmp_framer *fr)
{
	if (fr == NULL)
		return;
	free(fr->arena);
	free(fr->keys);
	free(fr->members);
	free(fr->mpriv);
	free(fr);
}

/* The absolute offset of the next byte the framer will read. */
uint64_t
qmp_framer_offset(const struct qmp_framer *fr)
{
	return fr->pos;
}

/*
 * The earliest absolute offset the framer may still report in a message:
 * bytes before it are whitespace or skipped garbage, and may be dropped.
 */
uint64_t
qmp_framer_keep(const struct qmp_framer *fr)
{
	if (fr->discard)
		return fr->pos;
	if (fr->group)
		return fr->group_start;
	if (fr->lex != L_START && fr->lex != L_RECOVERY)
		return fr->tok_start;
	return fr->pos;
}

/*
 * Feeds bytes. Stops after the byte that completes a message or an error and
 * points *msg at it; the message stays valid until the next call. Returns
 * the number of bytes consumed.
 */
size_t
qmp_framer_feed(struct qmp_framer *fr, const char *buf, size_t len,
    const struct qmp_msg **msg)
{
	size_t	i = 0;
	uint64_t from;

	*msg = NULL;
	if (fr->ready)
		group_reset(fr);
	while (i < len) {
		if (lex_byte(fr, (unsigned char)buf[i])) {
			i++;
			fr->pos++;
		}
		if (!fr->ready && !fr->discard && (fr->group ||
		    (fr->lex != L_START && fr->lex != L_RECOVERY))) {
			from = fr->group ? fr->group_start : fr->tok_start;
			if (fr->pos - from > fr->max_message)
				over_limit(fr, "JSON token size limit exceeded");
		}
		if (fr->ready) {
			*msg = &fr->msg;
			break;
		}
	}
	return i;
}

static void
group_reset(struct qmp_framer *fr)
{
	fr->group = 0;
	fr->discard = 0;
	fr->braces = fr->brackets = 0;
	fr->ntokens = 0;
	fr->depth = 0;
	fr->perr = NULL;
	fr->done = 0;
	fr->top_type = QMP_T_NONE;
	fr->serial = 0;
	fr->arena_len = 0;
	fr->nmembers = 0;
	fr->in_member = 0;
	fr->flags = 0;
	fr->ready = 0;
	if (++fr->gen == 0)
		fr->gen = 1;
	if (fr->keys_cap > 1024) {
		/* Do not keep a huge table after one big message. */
		free(fr->keys);
		fr->keys_cap = 64;
		fr->keys = xcalloc(fr->keys_cap, sizeof *fr->keys);
	}
	fr->keys_used = 0;
}

static void
arena_add(struct qmp_framer *fr, const void *p, size_t len)
{
	if (fr->arena_len + len > fr->arena_cap) {
		fr->arena_cap = fr->arena_cap ? fr->arena_cap : 256;
		while (fr->arena_len + len > fr->arena_cap)
			fr->arena_cap *= 2;
		fr->arena = xreallocarray(fr->arena, fr->arena_cap, 1);
	}
	memcpy(fr->arena + fr->arena_len, p, len);
	fr->arena_len += len;
}

static uint64_t
key_hash(uint32_t serial, const char *key)
{
	uint64_t h = 1469598103934665603ull ^ serial;

	for (; *key != '\0'; key++)
		h = (h ^ (unsigned char)*key) * 1099511628211ull;
	return h;
}

/* Records a key of object serial; returns -1 if the object has it already. */
static int
key_insert(struct qmp_framer *fr, uint32_t serial, size_t aoff)
{
	struct keyslot	*old, *s;
	size_t		 i, oldcap, mask;
	uint64_t	 h = key_hash(serial, fr->arena + aoff);

	if ((fr->keys_used + 1) * 2 > fr->keys_cap) {
		old = fr->keys;
		oldcap = fr->keys_cap;
		fr->keys_cap *= 2;
		fr->keys = xcalloc(fr->keys_cap, sizeof *fr->keys);
		mask = fr->keys_cap - 1;
		for (i = 0; i < oldcap; i++) {
			if (old[i].gen != fr->gen)
				continue;
			s = &fr->keys[old[i].hash & mask];
			while (s->gen == fr->gen)
				s = &fr->keys[(s - fr->keys + 1) & mask];
			*s = old[i];
		}
		free(old);
	}
	mask = fr->keys_cap - 1;
	for (i = h & mask;; i = (i + 1) & mask) {
		s = &fr->keys[i];
		if (s->gen != fr->gen)
			break;
		if (s->hash == h && s->serial == serial &&
		    strcmp(fr->arena + s->aoff, fr->arena + aoff) == 0)
			return -1;
	}
	s->gen = fr->gen;
	s->hash = h;
	s->serial = serial;
	s->aoff = aoff;
	fr->keys_used++;
	return 0;
}

/* Completes a message (error NULL) or an error; start is its first byte. */
static void
emit(struct qmp_framer *fr, const char *error, uint64_t start)
{
	struct qmp_msg	*m = &fr->msg;
	size_t		 i;

	for (i = 0; i < fr->nmembers; i++) {
		fr->members[i].key = fr->arena + fr->mpriv[i].key_aoff;
		fr->members[i].str = fr->mpriv[i].has_str ?
		    fr->arena + fr->mpriv[i].str_aoff : NULL;
	}
	m->start = start;
	m->len = fr->pos - start;
	m->type = fr->top_type;
	m->flags = fr->flags;
	m->error = error;
	m->members = fr->members;
	/* An error reports only members complete before it (for the id). */
	m->nmembers = fr->nmembers - (fr->in_member ? 1 : 0);
	fr->ready = 1;
	fr->group = 0;
}

/* A byte QEMU's lexer refuses: answered at once, then skip ahead. */
static void
lex_error(struct qmp_framer *fr, unsigned char c)
{
	uint64_t	start;

	if (c >= 0x20 && c < 0x7f)
		snprintf(fr->errbuf, sizeof fr->errbuf, "stray '%c'", c);
	else
		snprintf(fr->errbuf, sizeof fr->errbuf, "stray '\\x%02X'", c);
	start = fr->discard ? fr->pos : fr->group ? fr->group_start :
	    (fr->lex == L_START ? fr->pos : fr->tok_start);
	fr->lex = L_RECOVERY;
	fr->pos++;		/* the offending byte belongs to the error */
	emit(fr, fr->discard ? fr->perr : fr->errbuf, start);
	fr->pos--;
}

/*
 * A message over a limit is read to its end without keeping anything of
 * it, then answered with one error: the client can go on after it.
 */
static void
over_limit(struct qmp_framer *fr, const char *text)
{
	if (!fr->group) {
		fr->group = 1;
		fr->group_start = fr->tok_start;
	}
	fr->discard = 1;
	fr->perr = text;
	fr->decode = D_NONE;
	fr->nmembers = 0;
	fr->in_member = 0;
}

/* Counts a token into its group and parses it; end is one past it. */
static void
token(struct qmp_framer *fr, enum token t, uint64_t end)
{
	if (!fr->group) {
		fr->group = 1;
		fr->group_start = fr->tok_start;
	}
	if (++fr->ntokens > QMP_MAX_TOKENS && !fr->discard)
		over_limit(fr, "JSON token count limit exceeded");
	switch (t) {
	case T_LCURLY:
		fr->braces++;
		break;
	case T_RCURLY:
		fr->braces--;
		break;
	case T_LSQUARE:
		fr->brackets++;
		break;
	case T_RSQUARE:
		fr->brackets--;
		break;
	default:
		break;
	}
	if (fr->braces + fr->brackets > QMP_MAX_NESTING && !fr->discard)
		over_limit(fr, "JSON nesting depth limit exceeded");
	parse_token(fr, t, end);
	if ((fr->braces > 0 || fr->brackets > 0) &&
	    fr->braces >= 0 && fr->brackets >= 0)
		return;
	/* The group is balanced: QEMU parses it now. */
	if (fr->perr == NULL && !fr->done)
		fr->perr = "expecting value";
	if (fr->discard) {
		/* Its bytes are gone already: an empty error at the end. */
		emit(fr, fr->perr, fr->pos);
	} else if (fr->perr != NULL) {
		snprintf(fr->errbuf, sizeof fr->errbuf, "%s", fr->perr);
		emit(fr, fr->errbuf, fr->group_start);
	} else
		emit(fr, NULL, fr->group_start);
}

static void
parse_error(struct qmp_framer *fr, const char *text)
{
	if (fr->perr == NULL)
		fr->perr = text;
}

/* Pushdown check of the grammar, one token at a time, as QEMU's parser. */
static void
parse_token(struct qmp_framer *fr, enum token t, uint64_t end)
{
	struct container	*c;

	if (fr->perr != NULL || fr->done)
		return;
	c = fr->depth > 0 ? &fr->stack[fr->depth - 1] : NULL;
	switch (c != NULL ? c->state : P_VALUE) {
	case P_AFTER_LCURLY:
		if (t == T_RCURLY) {
			fr->depth--;
			value_end(fr, end);
			return;
		}
		c->state = P_BEFORE_KEY;
		/* FALLTHROUGH */
	case P_BEFORE_KEY:
		if (t != T_STRING) {
			parse_error(fr, "expecting key");
			return;
		}
		if (fr->tok_err != NULL) {
			parse_error(fr, fr->tok_err);
			return;
		}
		if (key_insert(fr, c->serial, fr->str_aoff) == -1) {
			parse_error(fr, "duplicate key");
			return;
		}
		if (fr->depth == 1) {
			if (fr->nmembers == fr->members_cap) {
				fr->members_cap = fr->members_cap ?
				    fr->members_cap * 2 : 8;
				fr->members = xreallocarray(fr->members,
				    fr->members_cap, sizeof *fr->members);
				fr->mpriv = xreallocarray(fr->mpriv,
				    fr->members_cap, sizeof *fr->mpriv);
			}
			memset(&fr->members[fr->nmembers], 0,
			    sizeof *fr->members);
			memset(&fr->mpriv[fr->nmembers], 0, sizeof *fr->mpriv);
			fr->mpriv[fr->nmembers].key_aoff = fr->str_aoff;
			fr->members[fr->nmembers].key_off =
			    fr->tok_start - fr->group_start;
			fr->nmembers++;
			fr->in_member = 1;
		}
		c->state = P_END_OF_KEY;
		return;
	case P_END_OF_KEY:
		if (t == T_COLON)
			c->state = P_VALUE;
		else
			parse_error(fr, "expecting ':'");
		return;
	case P_AFTER_LSQUARE:
		if (t == T_RSQUARE) {
			fr->depth--;
			value_end(fr, end);
			return;
		}
		c->state = P_VALUE;
		/* FALLTHROUGH */
	case P_VALUE:
		value_begin(fr, t, end);
		return;
	case P_END_OF_VALUE:
		if (c->kind == '[') {
			if (t == T_COMMA)
				c->state = P_VALUE;
			else if (t == T_RSQUARE) {
				fr->depth--;
				value_end(fr, end);
			} else
				parse_error(fr, "expected ',' or ']'");
		} else {
			if (t == T_COMMA)
				c->state = P_BEFORE_KEY;
			else if (t == T_RCURLY) {
				fr->depth--;
				value_end(fr, end);
			} else
				parse_error(fr, "expected ',' or '}'");
		}
		return;
	}
}

/* The first token of a value. */
static void
value_begin(struct qmp_framer *fr, enum token t, uint64_t end)
{
	struct container	*c;
	enum qmp_type		 type;

	switch (t) {
	case T_LCURLY:
	case T_LSQUARE:
		type = t == T_LCURLY ? QMP_T_OBJECT : QMP_T_ARRAY;
		break;
	case T_STRING:
		type = QMP_T_STRING;
		break;
	case T_NUMBER:
		type = QMP_T_NUMBER;
		break;
	case T_KEYWORD:
		type = QMP_T_KEYWORD;
		break;
	default:
		parse_error(fr, "expecting value");
		return;
	}
	if (fr->tok_err != NULL) {
		parse_error(fr, fr->tok_err);
		return;
	}
	if (fr->depth == 0)
		fr->top_type = type;
	else if (fr->depth == 1 && fr->stack[0].kind == '{') {
		fr->members[fr->nmembers - 1].val_off =
		    fr->tok_start - fr->group_start;
		fr->members[fr->nmembers - 1].val_type = type;
		if (t == T_STRING) {
			if (fr->decode == D_VALUE) {
				fr->mpriv[fr->nmembers - 1].str_aoff =
				    fr->str_aoff;
				fr->mpriv[fr->nmembers - 1].has_str = 1;
			} else
				fr->members[fr->nmembers - 1].val_flags |=
				    QMP_F_LONG;
		}
	}
	if (t == T_LCURLY || t == T_LSQUARE) {
		c = &fr->stack[fr->depth++];
		c->kind = t == T_LCURLY ? '{' : '[';
		c->state = t == T_LCURLY ? P_AFTER_LCURLY : P_AFTER_LSQUARE;
		c->serial = fr->serial++;
		return;
	}
	value_end(fr, end);
}

/* A value is complete; end is one past its last byte. */
static void
value_end(struct qmp_framer *fr, uint64_t end)
{
	if (fr->depth == 0) {
		fr->done = 1;
		return;
	}
	fr->stack[fr->depth - 1].state = P_END_OF_VALUE;
	if (fr->depth == 1 && fr->stack[0].kind == '{' && fr->in_member) {
		fr->members[fr->nmembers - 1].val_end = end - fr->group_start;
		fr->in_member = 0;
	}
}

/* QEMU's is_valid_codepoint(): no surrogates or noncharacters. */
static int
codepoint_is_valid(unsigned cp)
{
	if (cp > 0x10FFFF)
		return 0;
	if ((cp >= 0xFDD0 && cp <= 0xFDEF) || (cp & 0xFFFE) == 0xFFFE)
		return 0;
	if (cp >= 0xD800 && cp <= 0xDFFF)
		return 0;
	return 1;
}

static void
string_error(struct qmp_framer *fr, const char *text)
{
	if (fr->tok_err == NULL)
		fr->tok_err = text;
}

static void
string_begin(struct qmp_framer *fr, char quote)
{
	struct container	*c;

	fr->quote = quote;
	fr->tok_squote = quote == '\'';
	fr->tok_err = NULL;
	fr->u_left = 0;
	fr->u_high = 0;
	fr->want_low = 0;
	fr->utf_need = 0;
	fr->str_len = 0;
	fr->decode = D_NONE;
	c = fr->depth > 0 ? &fr->stack[fr->depth - 1] : NULL;
	if (fr->perr == NULL && c != NULL) {
		if (c->state == P_AFTER_LCURLY || c->state == P_BEFORE_KEY)
			fr->decode = D_KEY;
		else if (c->state == P_VALUE && fr->depth == 1 &&
		    c->kind == '{')
			fr->decode = D_VALUE;
	}
	fr->str_aoff = fr->arena_len;
}

/* Appends decoded bytes of the current string where they are wanted. */
static void
string_append(struct qmp_framer *fr, const void *p, size_t len)
{
	if (fr->decode == D_NONE)
		return;
	if (fr->decode == D_VALUE && fr->str_len + len > QMP_STR_MAX) {
		fr->decode = D_NONE;	/* too long to be a command name */
		fr->arena_len = fr->str_aoff;
		return;
	}
	arena_add(fr, p, len);
	fr->str_len += len;
}

static void
string_end(struct qmp_framer *fr)
{
	if (fr->utf_need > 0 || fr->u_left > 0 || fr->want_low)
		string_error(fr, fr->u_left > 0 || fr->want_low ?
		    "invalid \\u escape in string" :
		    "invalid UTF-8 sequence in string");
	if (fr->decode != D_NONE)
		arena_add(fr, "", 1);
	if (fr->tok_squote) {
		fr->flags |= QMP_F_SQUOTE;
		if (fr->depth >= 1 && fr->in_member && fr->nmembers > 0)
			fr->members[fr->nmembers - 1].val_flags |=
			    QMP_F_SQUOTE;
	}
}

/* Encodes a code point as QEMU does: modified UTF-8, U+0000 as C0 80. */
static void
string_codepoint(struct qmp_framer *fr, unsigned cp)
{
	unsigned char	b[4];
	size_t		n;

	if (!codepoint_is_valid(cp)) {
		string_error(fr, "invalid Unicode character in \\u escape");
		return;
	}
	if (cp == 0) {
		b[0] = 0xC0;
		b[1] = 0x80;
		n = 2;
	} else if (cp < 0x80) {
		b[0] = cp;
		n = 1;
	} else if (cp < 0x800) {
		b[0] = 0xC0 | (cp >> 6);
		b[1] = 0x80 | (cp & 0x3F);
		n = 2;
	} else if (cp < 0x10000) {
		b[0] = 0xE0 | (cp >> 12);
		b[1] = 0x80 | ((cp >> 6) & 0x3F);
		b[2] = 0x80 | (cp & 0x3F);
		n = 3;
	} else {
		b[0] = 0xF0 | (cp >> 18);
		b[1] = 0x80 | ((cp >> 12) & 0x3F);
		b[2] = 0x80 | ((cp >> 6) & 0x3F);
		b[3] = 0x80 | (cp & 0x3F);
		n = 4;
	}
	string_append(fr, b, n);
}

static int
hexval(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* The byte after a backslash. */
static void
string_escape(struct qmp_framer *fr, unsigned char c)
{
	char	out;

	if (fr->want_low == 1) {
		if (c != 'u') {
			string_error(fr, "invalid \\u escape in string");
			fr->want_low = 0;
		} else {
			fr->u_left = 4;
			fr->u_cp = 0;
			return;
		}
	}
	switch (c) {
	case '"':
	case '\'':
	case '\\':
	case '/':
		out = c;
		break;
	case 'b':
		out = '\b';
		break;
	case 'f':
		out = '\f';
		break;
	case 'n':
		out = '\n';
		break;
	case 'r':
		out = '\r';
		break;
	case 't':
		out = '\t';
		break;
	case 'u':
		fr->u_left = 4;
		fr->u_cp = 0;
		return;
	default:
		string_error(fr, "invalid escape sequence in string");
		return;
	}
	string_append(fr, &out, 1);
}

/* A byte inside a string that is not the closing quote or a backslash. */
static void
string_byte(struct qmp_framer *fr, unsigned char c)
{
	int	h;

	if (fr->u_left > 0) {
		if ((h = hexval(c)) >= 0) {
			fr->u_cp = fr->u_cp << 4 | h;
			if (--fr->u_left > 0)
				return;
			if (fr->want_low) {
				fr->want_low = 0;
				if (fr->u_cp >= 0xDC00 && fr->u_cp <= 0xDFFF)
					string_codepoint(fr, 0x10000 +
					    ((fr->u_high & 0x3FF) << 10) +
					    (fr->u_cp & 0x3FF));
				else
					string_error(fr,
					    "invalid \\u escape in string");
			} else if (fr->u_cp >= 0xD800 && fr->u_cp <= 0xDBFF) {
				fr->u_high = fr->u_cp;
				fr->want_low = 2;
			} else
				string_codepoint(fr, fr->u_cp);
			return;
		}
		string_error(fr, "invalid \\u escape in string");
		fr->u_left = 0;
		fr->want_low = 0;
	}
	if (fr->want_low == 2) {
		/* A leading surrogate not followed by \u: invalid. */
		string_error(fr, "invalid \\u escape in string");
		fr->want_low = 0;
	}
	if (fr->utf_need > 0) {
		if ((c & 0xC0) == 0x80) {
			fr->utf_cp = fr->utf_cp << 6 | (c & 0x3F);
			fr->utf_buf[fr->utf_len - fr->utf_need] = c;
			if (--fr->utf_need > 0)
				return;
			if (!codepoint_is_valid(fr->utf_cp) ||
			    (fr->utf_cp < (fr->utf_len == 2 ? 0x80u :
			    fr->utf_len == 3 ? 0x800u : 0x10000u) &&
			    !(fr->utf_cp == 0 && fr->utf_len == 2)))
				string_error(fr,
				    "invalid UTF-8 sequence in string");
			else
				string_append(fr, fr->utf_buf, fr->utf_len);
			return;
		}
		string_error(fr, "invalid UTF-8 sequence in string");
		fr->utf_need = 0;
	}
	if (c < 0x80) {
		string_append(fr, &c, 1);
		return;
	}
	if ((c & 0x40) == 0) {
		string_error(fr, "invalid UTF-8 sequence in string");
		return;
	}
	fr->utf_len = c >= 0xFC ? 6 : c >= 0xF8 ? 5 : c >= 0xF0 ? 4 :
	    c >= 0xE0 ? 3 : 2;
	fr->utf_need = fr->utf_len - 1;
	fr->utf_cp = c & (0x7F >> fr->utf_len);
	fr->utf_buf[0] = c;
	if (fr->utf_len > 4)
		fr->utf_cp = 0x110000;	/* always beyond Unicode */
}

static int
is_structural(unsigned char c)
{
	return c == '{' || c == '}' || c == '[' || c == ']' || c == ':' ||
	    c == ',';
}

/*
 * One step of the lexer, after QEMU's json-lexer.c table. Returns 1 when the
 * byte was consumed, 0 when it ends a token and must be looked at again.
 */
static int
lex_byte(struct qmp_framer *fr, unsigned char c)
{
	int	digit = c >= '0' && c <= '9';

	switch (fr->lex) {
	case L_START:
		if (c == ' ' || c == '\t' || c == '\r' || c == '\n')
			return 1;
		fr->tok_start = fr->pos;
		fr->tok_err = NULL;
		switch (c) {
		case '{':
			fr->pos++;
			token(fr, T_LCURLY, fr->pos);
			fr->pos--;
			return 1;
		case '}':
			fr->pos++;
			token(fr, T_RCURLY, fr->pos);
			fr->pos--;
			return 1;
		case '[':
			fr->pos++;
			token(fr, T_LSQUARE, fr->pos);
			fr->pos--;
			return 1;
		case ']':
			fr->pos++;
			token(fr, T_RSQUARE, fr->pos);
			fr->pos--;
			return 1;
		case ':':
			fr->pos++;
			token(fr, T_COLON, fr->pos);
			fr->pos--;
			return 1;
		case ',':
			fr->pos++;
			token(fr, T_COMMA, fr->pos);
			fr->pos--;
			return 1;
		case '"':
		case '\'':
			string_begin(fr, c);
			fr->lex = L_STRING;
			return 1;
		case '0':
			fr->lex = L_ZERO;
			return 1;
		case '-':
			fr->lex = L_SIGN;
			return 1;
		default:
			if (c >= '1' && c <= '9') {
				fr->lex = L_DIGITS;
				return 1;
			}
			if (c >= 'a' && c <= 'z') {
				fr->lex = L_KEYWORD;
				fr->kw[0] = c;
				fr->kwlen = 1;
				return 1;
			}
			lex_error(fr, c);
			return 1;
		}
	case L_RECOVERY:
		if ((c < 0x20 && c != '\t') || c >= 0xFE || is_structural(c)) {
			fr->lex = L_START;
			return 0;
		}
		return 1;
	case L_STRING:
		if (c < 0x20 || c >= 0xFE) {
			lex_error(fr, c);
			return 1;
		}
		if (c != (unsigned char)fr->quote && c != '\\') {
			string_byte(fr, c);
			return 1;
		}
		/* The lexer always honours these, whatever was due. */
		if (fr->utf_need > 0) {
			string_error(fr, "invalid UTF-8 sequence in string");
			fr->utf_need = 0;
		}
		if (fr->u_left > 0) {
			string_error(fr, "invalid \\u escape in string");
			fr->u_left = 0;
			fr->want_low = 0;
		}
		if (c == '\\') {
			if (fr->want_low == 2)
				fr->want_low = 1;
			fr->lex = L_ESCAPE;
			return 1;
		} else {
			string_end(fr);
			fr->lex = L_START;
			fr->pos++;
			token(fr, T_STRING, fr->pos);
			fr->pos--;
			return 1;
		}
	case L_ESCAPE:
		if (c < 0x20 || c >= 0xFE) {
			lex_error(fr, c);
			return 1;
		}
		fr->lex = L_STRING;
		string_escape(fr, c);
		return 1;
	case L_ZERO:
		if (digit) {
			lex_error(fr, c);
			return 1;
		}
		if (c == '.') {
			fr->lex = L_MANTISSA;
			return 1;
		}
		break;
	case L_DIGITS:
		if (digit)
			return 1;
		if (c == 'e' || c == 'E') {
			fr->lex = L_EXP_E;
			return 1;
		}
		if (c == '.') {
			fr->lex = L_MANTISSA;
			return 1;
		}
		break;
	case L_SIGN:
		if (c == '0')
			fr->lex = L_ZERO;
		else if (digit)
			fr->lex = L_DIGITS;
		else
			lex_error(fr, c);
		return 1;
	case L_MANTISSA:
		if (digit)
			fr->lex = L_MANTISSA_DIGITS;
		else
			lex_error(fr, c);
		return 1;
	case L_MANTISSA_DIGITS:
		if (digit)
			return 1;
		if (c == 'e' || c == 'E') {
			fr->lex = L_EXP_E;
			return 1;
		}
		break;
	case L_EXP_E:
		if (c == '+' || c == '-')
			fr->lex = L_EXP_SIGN;
		else if (digit)
			fr->lex = L_EXP_DIGITS;
		else
			lex_error(fr, c);
		return 1;
	case L_EXP_SIGN:
		if (digit)
			fr->lex = L_EXP_DIGITS;
		else
			lex_error(fr, c);
		return 1;
	case L_EXP_DIGITS:
		if (digit)
			return 1;
		break;
	case L_KEYWORD:
		if (c >= 'a' && c <= 'z') {
			if (fr->kwlen < sizeof fr->kw - 1)
				fr->kw[fr->kwlen] = c;
			fr->kwlen++;
			return 1;
		}
		fr->kw[fr->kwlen < sizeof fr->kw ? fr->kwlen :
		    sizeof fr->kw - 1] = '\0';
		fr->lex = L_START;
		if (strcmp(fr->kw, "true") != 0 &&
		    strcmp(fr->kw, "false") != 0 &&
		    strcmp(fr->kw, "null") != 0)
			fr->tok_err = "invalid keyword";
		token(fr, T_KEYWORD, fr->pos);
		return 0;
	}
	/* A number ended at this byte, which is looked at again. */
	fr->lex = L_START;
	token(fr, T_NUMBER, fr->pos);
	return 0;
}
