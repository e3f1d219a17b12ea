/*
 * hint.c: what to do next after the proxy said no. An error is printed as
 * "qbranch: <desc>" and a line "hint: ..." picked from the error's class
 * and text; the first matching entry of the table wins.
 */
#include <string.h>

#include "cli.h"

static const struct hint {
	const char	*class;		/* NULL: any */
	const char	*match;		/* NULL: any; else a substring */
	const char	*hint;
} hints[] = {
	{ "CommandNotFound", NULL,
	    "this qbranchd or QEMU has no such command: see "
	    "'qbranch qmp query-commands'" },
	{ NULL, "no snapshot named",
	    "see 'qbranch list' for the snapshots" },
	{ NULL, "no branch named",
	    "see 'qbranch branches' for the branches" },
	{ NULL, "Parameter 'memory' is unexpected",
	    "this qbranchd is too old to save memory state: leave out --memory" },
	{ NULL, "Parameter 'save-memory' is unexpected",
	    "this qbranchd is too old to save memory state: leave out "
	    "--save-memory" },
	{ NULL, "is unexpected",
	    "this qbranchd does not know that argument: leave it out, or "
	    "update qbranchd" },
	{ NULL, "a snapshot named",
	    "pick another name, or see 'qbranch list'" },
	{ NULL, "a branch named",
	    "pick another --branch name, or see 'qbranch branches'" },
	{ NULL, "is attached already",
	    "the VM runs on it already: see 'qbranch status'" },
	{ NULL, "is attached",
	    "switch to another branch ('qbranch switch') or revert "
	    "('qbranch revert') first; see 'qbranch branches'" },
	{ NULL, "grows from",
	    "switch to another branch ('qbranch switch') or revert "
	    "('qbranch revert') first; see 'qbranch tree'" },
	{ NULL, "no managed disk",
	    "see 'qbranch disks' for the device names" },
	{ NULL, "excluding a disk",
	    "leave out --exclude: every writable disk is snapshotted" },
	{ NULL, "outside the directories",
	    "name a file in qbranchd's --image-dir or an --allow-dir, or in "
	    "the directory of the disk's images" },
	{ NULL, "exists already",
	    "qbranch never overwrites a file: name another one" },
	{ NULL, "invalid snapshot name",
	    "pick a name such as 'before-upgrade'" },
	{ NULL, "invalid branch name",
	    "pick a name such as 'experiment'" },
	{ NULL, "operation is running",
	    "wait until it ends (see 'qbranch events'), then try again" },
	{ NULL, "try again",
	    "try again in a moment" },
	{ NULL, "does not accept value",
	    "see 'qbranch help' for the options" },
	{ NULL, "an export holds",
	    "remove the export first; see 'qbranch qmp query-block-exports'" },
	{ NULL, "-S",
	    "restart QEMU with -S, as qbranchd(8) says" },
	{ "GenericError", NULL,
	    "see qbranchd's log for details, and 'qbranch status'" },
	{ NULL, NULL,
	    "see qbranchd's log for details" },
};

/* The hint for an error of class with text desc (static). */
const char *
hint_for(const char *class, const char *desc)
{
	size_t	i;

	for (i = 0; i < sizeof hints / sizeof hints[0]; i++) {
		if (hints[i].class != NULL && (class == NULL ||
		    strcmp(hints[i].class, class) != 0))
			continue;
		if (hints[i].match != NULL && (desc == NULL ||
		    strstr(desc, hints[i].match) == NULL))
			continue;
		return hints[i].hint;
	}
	return "see qbranchd's log for details";
}

/* Prints a QMP error and its hint on stderr. */
void
hint_print_error(const char *class, const char *desc)
{
	fprintf(stderr, "qbranch: %s\nhint: %s\n", desc != NULL ? desc :
	    "the proxy answered with an error", hint_for(class, desc));
}
