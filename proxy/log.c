/*
 * log.c: logging in the OpenBSD daemons' shape. Messages go to stderr, or
 * to syslog when asked for and stderr is not a terminal.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "qbranch.h"

static int	log_level;	/* 0 info, 1 debug */
static int	log_syslog;

static void	log_vwrite(int, const char *, va_list, int);

/* Sets the verbosity and where messages go. */
void
log_init(int level, int use_syslog)
{
	log_level = level;
	log_syslog = use_syslog && !isatty(STDERR_FILENO);
	if (log_syslog)
		openlog("qbranchd", LOG_PID | LOG_NDELAY, LOG_DAEMON);
}

static void
log_vwrite(int pri, const char *fmt, va_list ap, int with_errno)
{
	char	msg[1024];
	int	saved = errno;

	vsnprintf(msg, sizeof msg, fmt, ap);
	if (log_syslog) {
		if (with_errno)
			syslog(pri, "%s: %s", msg, strerror(saved));
		else
			syslog(pri, "%s", msg);
	} else {
		if (with_errno)
			fprintf(stderr, "qbranchd: %s: %s\n", msg,
			    strerror(saved));
		else
			fprintf(stderr, "qbranchd: %s\n", msg);
	}
	errno = saved;
}

/* Logs a warning with the text of errno appended. */
void
log_warn(const char *fmt, ...)
{
	va_list	ap;

	va_start(ap, fmt);
	log_vwrite(LOG_WARNING, fmt, ap, 1);
	va_end(ap);
}

/* Logs a warning. */
void
log_warnx(const char *fmt, ...)
{
	va_list	ap;

	va_start(ap, fmt);
	log_vwrite(LOG_WARNING, fmt, ap, 0);
	va_end(ap);
}

/* Logs an informational message. */
void
log_info(const char *fmt, ...)
{
	va_list	ap;

	va_start(ap, fmt);
	log_vwrite(LOG_INFO, fmt, ap, 0);
	va_end(ap);
}

/* Logs a message only seen with -v. */
void
log_debug(const char *fmt, ...)
{
	va_list	ap;

	if (log_level < 1)
		return;
	va_start(ap, fmt);
	log_vwrite(LOG_DEBUG, fmt, ap, 0);
	va_end(ap);
}

/* Logs with errno and exits: start-up failures and impossible states. */
void
fatal(const char *fmt, ...)
{
	va_list	ap;

	va_start(ap, fmt);
	log_vwrite(LOG_CRIT, fmt, ap, 1);
	va_end(ap);
	exit(1);
}

/* Logs and exits: start-up failures and impossible states. */
void
fatalx(const char *fmt, ...)
{
	va_list	ap;

	va_start(ap, fmt);
	log_vwrite(LOG_CRIT, fmt, ap, 0);
	va_end(ap);
	exit(1);
}
