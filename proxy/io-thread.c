/*
 * io-thread.c: file work that waits on the disk (writes that must be
 * synced) runs in a short-lived thread, never in the event loop, which
 * keeps forwarding every client's messages meanwhile. The thread touches
 * only what it was given; when it ends, its completion runs back in the
 * loop, woken through a pipe.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "qbranch.h"

struct io_work {
	void	(*work)(void *);
	void	(*done)(void *);
	void	 *arg;
};

static int		 wake[2] = { -1, -1 };
static struct event	*wake_ev;

/*
 * Work not taken in yet (running, or done and not read from the pipe),
 * waited for at exit (io_drain()): no file is left half written, and no
 * result is dropped.
 */
static pthread_mutex_t	 running_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t	 running_done = PTHREAD_COND_INITIALIZER;
static unsigned		 running, unread;

static void
io_wake_cb(int fd, short what, void *arg)
{
	struct io_work	*w;
	ssize_t		 n;

	for (;;) {
		n = read(fd, &w, sizeof w);
		if (n == -1 && errno == EINTR)
			continue;
		if (n != (ssize_t)sizeof w)
			return;
		pthread_mutex_lock(&running_lock);
		unread--;
		pthread_mutex_unlock(&running_lock);
		w->done(w->arg);
		free(w);
	}
}

/* Sets up the wake-up pipe; call once the event base exists. */
void
io_init(void)
{
	if (pipe2(wake, O_CLOEXEC) == -1)
		fatal("pipe2");
	if (fcntl(wake[0], F_SETFL, O_NONBLOCK) == -1)
		fatal("fcntl");
	wake_ev = event_new(base, wake[0], EV_READ | EV_PERSIST, io_wake_cb,
	    NULL);
	event_add(wake_ev, NULL);
}

/*
 * At exit, before anything is freed: waits for the threads, and lets the
 * event loop take in their results (which may start more work).
 */
void
io_drain(void)
{
	int	left;

	for (;;) {
		pthread_mutex_lock(&running_lock);
		while (running > 0)
			pthread_cond_wait(&running_done, &running_lock);
		left = unread > 0;
		pthread_mutex_unlock(&running_lock);
		if (!left)
			return;
		event_base_loop(base, EVLOOP_NONBLOCK);
	}
}

void
io_shutdown(void)
{
	if (wake_ev != NULL)
		event_free(wake_ev);
	wake_ev = NULL;
	if (wake[0] != -1)
		close(wake[0]);
	if (wake[1] != -1)
		close(wake[1]);
	wake[0] = wake[1] = -1;
}

/* A pointer is less than PIPE_BUF: each write arrives whole. */
static void
io_post(struct io_work *w)
{
	while (write(wake[1], &w, sizeof w) == -1) {
		if (errno != EINTR)
			fatal("io wake-up");
	}
}

static void *
io_thread(void *arg)
{
	struct io_work	*w = arg;

	w->work(w->arg);
	pthread_mutex_lock(&running_lock);
	io_post(w);
	unread++;
	if (--running == 0)
		pthread_cond_signal(&running_done);
	pthread_mutex_unlock(&running_lock);
	return NULL;
}

/*
 * Runs work(arg) in a thread of its own, then done(arg) in the event loop.
 * Without a thread to be had, the work runs here: slower, still correct.
 */
void
io_run(void (*work)(void *), void (*done)(void *), void *arg)
{
	struct io_work	*w;
	pthread_attr_t	 attr;
	pthread_t	 t;
	int		 error;

	w = xcalloc(1, sizeof *w);
	w->work = work;
	w->done = done;
	w->arg = arg;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_mutex_lock(&running_lock);
	running++;
	pthread_mutex_unlock(&running_lock);
	error = pthread_create(&t, &attr, io_thread, w);
	pthread_attr_destroy(&attr);
	if (error != 0) {
		log_warnx("pthread_create: %s; the file work runs in the "
		    "event loop", strerror(error));
		work(arg);
		pthread_mutex_lock(&running_lock);
		running--;
		io_post(w);
		unread++;
		pthread_mutex_unlock(&running_lock);
	}
}
