/*
 * progress.c: the progress bar of a long operation, on stderr and only when
 * stderr is a terminal. qbranchd sends QBRANCH_PROGRESS events ({operation,
 * job, current, total}, every 200 ms of a block job) to every client; the
 * bar is redrawn on each, completed to 100% when the reply says the
 * operation succeeded, and then the line is cleared.
 */
#include <sys/ioctl.h>

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

#define PROGRESS_CLEAR	"\r\033[K"

static struct {
	int		 on;		/* stderr is a terminal */
	int		 drawn;		/* a bar is on the screen */
	char		 operation[32];
	uint64_t	 current;
	uint64_t	 total;
	struct sigaction old_int;
	struct sigaction old_term;
} bar;

/* An interrupted operation leaves no half bar behind. */
static void
progress_signal(int sig)
{
	ssize_t	n;

	n = write(STDERR_FILENO, PROGRESS_CLEAR, sizeof PROGRESS_CLEAR - 1);
	(void)n;
	signal(sig, SIG_DFL);
	raise(sig);
}

static int
progress_columns(void)
{
	struct winsize	ws;

	if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 20)
		return ws.ws_col;
	return 80;
}

static void
progress_draw(void)
{
	char		 cur[FORMAT_SIZE_LEN], tot[FORMAT_SIZE_LEN], right[64];
	char		 nums[2 * FORMAT_SIZE_LEN];
	char		 fill[256];
	int		 pct, width, n;
	struct sigaction sa;

	if (bar.total == 0)
		pct = 0;
	else if (bar.current >= bar.total)
		pct = 100;
	else
		pct = (int)((double)bar.current * 100 / bar.total);
	format_size(bar.current, cur, sizeof cur);
	format_size(bar.total, tot, sizeof tot);
	snprintf(nums, sizeof nums, "%s/%s", cur, tot);
	snprintf(right, sizeof right, " %3d%%  %*s", pct,
	    2 * FORMAT_SIZE_WIDTH + 1, nums);
	/* the label, " [", the bar, "]", the numbers; the last column free */
	width = progress_columns() - 1 - (int)strlen(bar.operation) - 3 -
	    (int)strlen(right);
	if (width > (int)sizeof fill - 1)
		width = sizeof fill - 1;
	if (!bar.drawn) {
		memset(&sa, 0, sizeof sa);
		sa.sa_handler = progress_signal;
		sigemptyset(&sa.sa_mask);
		sigaction(SIGINT, &sa, &bar.old_int);
		sigaction(SIGTERM, &sa, &bar.old_term);
		bar.drawn = 1;
	}
	if (width < 10) {
		fprintf(stderr, "\r%s%s\033[K", bar.operation, right);
	} else {
		n = width * pct / 100;
		memset(fill, '#', n);
		memset(fill + n, '.', width - n);
		fill[width] = '\0';
		fprintf(stderr, "\r%s [%s]%s\033[K", bar.operation, fill,
		    right);
	}
	fflush(stderr);
}

/* Shows a bar for the events of the request about to be sent. */
void
progress_start(void)
{
	memset(&bar, 0, sizeof bar);
	bar.on = isatty(STDERR_FILENO);
}

/* The client's event callback: QBRANCH_PROGRESS moves the bar. */
void
progress_event(json_t *ev, const char *line, void *arg)
{
	json_t		*data = json_object_get(ev, "data");
	const char	*op;

	if (!bar.on || !json_is_string(json_object_get(ev, "event")) ||
	    strcmp(json_string_value(json_object_get(ev, "event")),
	    "QBRANCH_PROGRESS") != 0)
		return;
	op = json_string_value(json_object_get(data, "operation"));
	snprintf(bar.operation, sizeof bar.operation, "%s",
	    op != NULL ? op : "working");
	if (json_integer_value(json_object_get(data, "current")) >= 0)
		bar.current = json_integer_value(json_object_get(data,
		    "current"));
	if (json_integer_value(json_object_get(data, "total")) >= 0)
		bar.total = json_integer_value(json_object_get(data, "total"));
	progress_draw();
}

/* The reply came: a successful operation reaches 100%; the line clears. */
void
progress_end(int success)
{
	if (!bar.drawn)
		return;
	if (success) {
		if (bar.total == 0)
			bar.total = 1;
		bar.current = bar.total;
		progress_draw();
	}
	fputs(PROGRESS_CLEAR, stderr);
	fflush(stderr);
	sigaction(SIGINT, &bar.old_int, NULL);
	sigaction(SIGTERM, &bar.old_term, NULL);
	bar.drawn = 0;
}
