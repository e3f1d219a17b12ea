/*
 * orphan-match.c: what a file qbranch made looks like, for the search of
 * orphans (snap-orphans.c): the names it gives new overlays
 * (<stem>.<suffix>, op_image_path()) and saved VM states (snapshot-<name>
 * and branch-<name> in the state directory's "memory", snap_memory_new()),
 * and where a qcow2 header keeps the name of its backing file. Pure: no
 * I/O.
 */
#include <stdint.h>
#include <string.h>

#include "qbranch.h"

/* A revert's suffix is <name>-<N>: a name, a dash and up to 10 digits. */
#define ORPHAN_SUFFIX_MAX	(SNAP_NAME_MAX + 11)

static int
orphan_char_is_name(char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
	    (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == '+' ||
	    ch == '-';
}

static int
orphan_char_is_alnum(char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
	    (ch >= '0' && ch <= '9');
}

/* Whether s, len bytes, is a name as snap_name_is_valid() allows. */
static int
orphan_is_name(const char *s, size_t len, size_t max)
{
	size_t	i;

	if (len == 0 || len > max || !orphan_char_is_alnum(s[0]))
		return 0;
	for (i = 1; i < len; i++) {
		if (!orphan_char_is_name(s[i]))
			return 0;
	}
	return 1;
}

/*
 * Whether the file name (no directory) is one qbranch gives a new overlay
 * of an image whose stem's file name is stem: <stem>.<suffix>, the suffix
 * a snapshot's name or a revert's <name>-<N>.
 */
int
orphan_name_is_image(const char *name, const char *stem)
{
	size_t	len = strlen(stem);

	if (len == 0 || strncmp(name, stem, len) != 0 || name[len] != '.')
		return 0;
	name += len + 1;
	return orphan_is_name(name, strlen(name), ORPHAN_SUFFIX_MAX);
}

/*
 * Whether the file name (no directory) is one qbranch gives a saved VM
 * state: snapshot-<name>[.<N>].state, or the copy of a RAM backend,
 * snapshot-<name>[.<N>].<backend>.ram; branch-... alike.
 */
int
orphan_name_is_memory(const char *name)
{
	static const char *const kinds[] = { "snapshot-", "branch-", NULL };
	static const char *const ends[] = { ".state", ".ram", NULL };
	size_t	len, klen, elen, i, k;

	len = strlen(name);
	for (i = 0; kinds[i] != NULL; i++) {
		klen = strlen(kinds[i]);
		if (strncmp(name, kinds[i], klen) != 0)
			continue;
		for (k = 0; ends[k] != NULL; k++) {
			elen = strlen(ends[k]);
			if (len <= klen + elen ||
			    strcmp(name + len - elen, ends[k]) != 0)
				continue;
			/* The name, its number and a backend: loosely. */
			if (orphan_is_name(name + klen, len - klen - elen,
			    SIZE_MAX))
				return 1;
		}
	}
	return 0;
}

static uint64_t
orphan_be(const unsigned char *p, int n)
{
	uint64_t	v = 0;
	int		i;

	for (i = 0; i < n; i++)
		v = v << 8 | p[i];
	return v;
}

/*
 * Reads the start of a file (len bytes of head): 1 if it is a qcow2 image
 * (version 2 or 3), with *off and *size where its backing file's name is
 * (0 and 0 for none); 0 if it is not.
 */
int
orphan_qcow2_backing(const unsigned char *head, size_t len, uint64_t *off,
    uint32_t *size)
{
	uint64_t	version, o;
	uint32_t	n;

	*off = 0;
	*size = 0;
	if (len < ORPHAN_QCOW2_HEAD || memcmp(head, "QFI\xfb", 4) != 0)
		return 0;
	version = orphan_be(head + 4, 4);
	if (version != 2 && version != 3)
		return 0;
	o = orphan_be(head + 8, 8);
	n = (uint32_t)orphan_be(head + 16, 4);
	/* QEMU's own bounds: after the version 2 header, at most 1023. */
	if (o == 0 || n == 0)
		return 1;
	if (o < 72 || n > 1023)
		return 0;
	*off = o;
	*size = n;
	return 1;
}
