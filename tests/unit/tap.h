/*
 * tap.h: a minimal Test Anything Protocol emitter for the unit tests.
 */
#ifndef TAP_H
#define TAP_H

#include <stdio.h>

static int	tap_n;
static int	tap_failed;

/* cond is evaluated once: it may have side effects. */
#define ok(cond, ...) do {						\
	int tap_ok_ = !!(cond);						\
									\
	tap_n++;							\
	if (!tap_ok_)							\
		tap_failed++;						\
	printf("%sok %d - ", tap_ok_ ? "" : "not ", tap_n);		\
	printf(__VA_ARGS__);						\
	printf("\n");							\
	if (!tap_ok_)							\
		printf("#   failed at %s:%d\n", __FILE__, __LINE__);	\
} while (0)

#define diag(...) do {							\
	printf("# ");							\
	printf(__VA_ARGS__);						\
	printf("\n");							\
} while (0)

static inline int
tap_done(void)
{
	printf("1..%d\n", tap_n);
	return 0;
}

#endif /* TAP_H */
