/*
 * fuzz-tree.c: the tree-file loader, as qbranchd runs it at start: the
 * whole file's JSON, the journal replayed on it, and the model made from
 * the result. The input is the tree file, a NUL, then the journal.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "qbranch.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t		*nul;
	struct snap_tree	*t;
	json_t			*root;
	char			*cause = NULL, *text;
	size_t			 tlen, good;

	nul = memchr(data, '\0', size);
	tlen = nul != NULL ? (size_t)(nul - data) : size;
	root = json_loadb((const char *)data, tlen, JSON_REJECT_DUPLICATES,
	    NULL);
	if (root == NULL)
		return 0;
	if (nul != NULL && tree_journal_replay(root, (const char *)nul + 1,
	    size - tlen - 1, &good, &cause) == -1) {
		free(cause);
		json_decref(root);
		return 0;
	}
	if ((t = snap_tree_from_json(root, &cause)) == NULL)
		free(cause);
	else {
		/* Written back, as the next change would. */
		text = snap_tree_text(t);
		free(text);
		snap_tree_free(t);
	}
	json_decref(root);
	return 0;
}
