/*
 * query.c: looking into what qbranch-query-snapshots returned. Every
 * lookup tolerates missing or mistyped members: what the proxy sends is
 * printed, never trusted to be well formed.
 */
#include <string.h>

#include "cli.h"

/* The snapshot called name in the "snapshots" array (borrowed), or NULL. */
json_t *
query_snapshot(json_t *snaps, const char *name)
{
	json_t	*s;
	size_t	 i;

	json_array_foreach(snaps, i, s) {
		if (json_is_string(json_object_get(s, "name")) &&
		    strcmp(json_string_value(json_object_get(s, "name")),
		    name) == 0)
			return s;
	}
	return NULL;
}

/* The string member key of o, or "" (borrowed). */
const char *
query_str(json_t *o, const char *key)
{
	const char	*v = json_string_value(json_object_get(o, key));

	return v != NULL ? v : "";
}

/* Whether s descends from the snapshot called ancestor (not s itself). */
int
query_is_descendant(json_t *snaps, json_t *s, const char *ancestor)
{
	const char	*parent;
	size_t		 hops;

	/* A loop in bad input ends after as many hops as snapshots. */
	for (hops = 0; hops <= json_array_size(snaps); hops++) {
		parent = json_string_value(json_object_get(s, "parent"));
		if (parent == NULL)
			return 0;
		if (strcmp(parent, ancestor) == 0)
			return 1;
		if ((s = query_snapshot(snaps, parent)) == NULL)
			return 0;
	}
	return 0;
}

/* The snapshot's "size" in bytes, when the proxy tells it. */
int
query_size(json_t *s, uint64_t *size)
{
	json_t	*v = json_object_get(s, "size");

	if (json_is_integer(v) && json_integer_value(v) >= 0) {
		*size = (uint64_t)json_integer_value(v);
		return 1;
	}
	if (json_is_real(v) && json_real_value(v) >= 0) {
		*size = (uint64_t)json_real_value(v);	/* past INT64_MAX */
		return 1;
	}
	return 0;
}

/* Seconds since the snapshot was taken, seen at now, when it says. */
int
query_age(json_t *s, int64_t now, int64_t *age)
{
	json_t	*v = json_object_get(s, "created");

	if (!json_is_integer(v))
		return 0;
	*age = now - json_integer_value(v);
	return 1;
}
