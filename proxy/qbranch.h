/*
 * qbranch.h: structures and prototypes shared by qbranchd's files, grouped
 * by the file that defines them.
 */
#ifndef QBRANCH_H
#define QBRANCH_H

#include <sys/types.h>
#include <sys/queue.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#define QB_DEFAULT_MAX_MESSAGE	(64u << 20)	/* QEMU's own token limit */
#define QB_DEFAULT_MAX_CLIENTS	256
#define QB_DEFAULT_MAX_INFLIGHT	128
#define QB_DEFAULT_MAX_OUTPUT	(64u << 20)	/* per client */
#define QB_MAX_FDS		253		/* SCM_MAX_FD on Linux */

/* log.c */
void	log_init(int debug_level, int use_syslog);
void	log_warn(const char *, ...) __attribute__((format(printf, 1, 2)));
void	log_warnx(const char *, ...) __attribute__((format(printf, 1, 2)));
void	log_info(const char *, ...) __attribute__((format(printf, 1, 2)));
void	log_debug(const char *, ...) __attribute__((format(printf, 1, 2)));
void	fatal(const char *, ...)
	    __attribute__((format(printf, 1, 2), noreturn));
void	fatalx(const char *, ...)
	    __attribute__((format(printf, 1, 2), noreturn));

/* xmalloc.c */
void	*xmalloc(size_t);
void	*xcalloc(size_t, size_t);
void	*xreallocarray(void *, size_t, size_t);
char	*xstrdup(const char *);
char	*xstrndup(const char *, size_t);
void	*xmemdup(const void *, size_t);
int	 xasprintf(char **, const char *, ...)
	    __attribute__((format(printf, 2, 3)));

/* A growable byte buffer for the few messages the proxy builds itself. */
struct buf {
	char	*data;
	size_t	 len;
	size_t	 cap;
};
void	 buf_add(struct buf *, const void *, size_t);
void	 buf_addstr(struct buf *, const char *);
void	 buf_free(struct buf *);

/* qmp.c: incremental framing of a QMP byte stream (QEMU's JSON dialect). */
enum qmp_type {
	QMP_T_NONE = 0,
	QMP_T_OBJECT,
	QMP_T_ARRAY,
	QMP_T_STRING,
	QMP_T_NUMBER,
	QMP_T_KEYWORD,
};

/* One member of the top-level object; offsets count from the message start. */
struct qmp_member {
	const char	*key;		/* decoded, NUL-terminated */
	size_t		 key_off;
	size_t		 val_off;
	size_t		 val_end;	/* one past the value's last byte */
	enum qmp_type	 val_type;
	int		 val_flags;
#define QMP_F_SQUOTE	0x1		/* holds a single-quoted string */
#define QMP_F_LONG	0x2		/* string value longer than str */
	const char	*str;		/* decoded value of a string member */
};

/*
 * A complete message, or a parse error. start is the absolute stream offset
 * of its first byte; the message's bytes are [start, start + len).
 */
struct qmp_msg {
	uint64_t		 start;
	size_t			 len;
	enum qmp_type		 type;
	int			 flags;		/* QMP_F_SQUOTE anywhere */
	const char		*error;		/* parse error text, or NULL */
	const struct qmp_member	*members;	/* when type is QMP_T_OBJECT */
	size_t			 nmembers;
};

struct qmp_framer;
struct qmp_framer *qmp_framer_new(size_t max_message);
void	 qmp_framer_free(struct qmp_framer *);
size_t	 qmp_framer_feed(struct qmp_framer *, const char *, size_t,
	    const struct qmp_msg **);
uint64_t qmp_framer_keep(const struct qmp_framer *);
uint64_t qmp_framer_offset(const struct qmp_framer *);
const struct qmp_member *qmp_msg_member(const struct qmp_msg *, const char *);
void	 qmp_requote(struct buf *, const char *, size_t);
char	*qmp_error_reply(const char *, const char *, const char *, size_t);
char	*qmp_return_reply(const char *, const char *, size_t);
char	*qmp_json_quote(const char *);

/* request.c: the shape QEMU requires of a command, checked before use. */
struct qmp_request {
	const char		*name;		/* command name */
	int			 oob;		/* sent as exec-oob */
	const struct qmp_member	*id;		/* or NULL */
	const struct qmp_member	*args;		/* or NULL */
};
int	 request_parse(const struct qmp_msg *, int, struct qmp_request *,
	    char **);

/*
 * Where a message's id is rewritten: bytes [0, head) stay, the new bytes go
 * in, skip bytes are dropped, and the rest stays. Nothing is re-encoded.
 */
struct splice {
	size_t	head;
	size_t	skip;
};
void	 splice_id_replace(const struct qmp_member *, struct splice *);
void	 splice_id_insert(struct splice *);
int	 splice_id_remove(const struct qmp_msg *, const struct qmp_member *,
	    struct splice *);
void	 splice_apply(struct buf *, const char *, size_t,
	    const struct splice *, const char *, size_t);


/*
 * The daemon's parts below use libevent; the pure parts above do not.
 */
struct event_base;
struct event;
struct evbuffer;
struct evconnlistener;
struct json_t;

/* conn.c: a non-blocking stream socket with buffers and fd passing. */
struct fdbatch {
	TAILQ_ENTRY(fdbatch)	 entry;
	uint64_t		 off;		/* stream offset they go with */
	int			 nfd;
	int			 fds[QB_MAX_FDS];
};
TAILQ_HEAD(fdbatches, fdbatch);

struct conn {
	int			 fd;
	struct event		*rev;
	struct event		*wev;
	struct event		*flushev;
	struct evbuffer		*in;
	struct evbuffer		*out;
	uint64_t		 in_off;	/* stream offset of in's head */
	uint64_t		 out_off;	/* stream offset of out's head */
	struct fdbatches	 rfds;		/* received, not yet used */
	struct fdbatches	 wfds;		/* to send with the output */
	int			 flags;
#define CONN_READING	0x1
#define CONN_DEAD	0x2			/* peer gone or error */
#define CONN_FLUSHING	0x4
#define CONN_FDS_ONE	0x8			/* one batch in use at a time */
#define CONN_FDS_HELD	0x10			/* until conn_release_fds() */
	void			(*read_cb)(struct conn *, void *);
	void			(*error_cb)(struct conn *, const char *,
				    void *);
	void			(*drain_cb)(struct conn *, void *);
	void			*arg;
};
struct conn	*conn_new(int, void (*)(struct conn *, void *),
		    void (*)(struct conn *, const char *, void *),
		    void (*)(struct conn *, void *), void *);
void		 conn_free(struct conn *);
void		 conn_read_enable(struct conn *, int);
void		 conn_kick(struct conn *);
void		 conn_drain_in(struct conn *, size_t);
void		 conn_write(struct conn *, const void *, size_t);
size_t		 conn_out_len(struct conn *);
int		 conn_move_fds(struct conn *, uint64_t, struct conn *);
void		 conn_release_fds(struct conn *);
void		 conn_splice(struct conn *, struct conn *, size_t,
		    const struct splice *, const char *, size_t);
const struct qmp_msg *conn_next_msg(struct conn *, struct qmp_framer *);
void		 conn_copy_in(struct conn *, size_t, void *, size_t);

/* listener.c */
struct listener {
	char			*path;
	int			 fd;
	struct evconnlistener	*evl;
	TAILQ_ENTRY(listener)	 entry;
};
TAILQ_HEAD(listeners, listener);
int		 listener_open(const char *, mode_t, struct listener **,
		    char **);
void		 listener_close(struct listener *);
void		 listener_pause(int);
int		 listener_check_path(const char *, char **);

/* client.c: one client session. */
struct pending;
TAILQ_HEAD(pendings, pending);
struct client {
	uint32_t		 id;
	struct conn		*conn;
	struct listener		*listener;
	struct qmp_framer	*fr;
	enum {
		CLIENT_WAITING,		/* QEMU not connected yet */
		CLIENT_NEGOTIATING,
		CLIENT_COMMAND,
	}			 state;
	int			 flags;
#define CLIENT_OOB	0x1
#define CLIENT_CLOSING	0x2
	struct pendings		 replies;	/* in order, in-band */
	u_int			 nreplies;
	struct event		*close_timer;
	TAILQ_ENTRY(client)	 entry;
};
TAILQ_HEAD(clients, client);
extern struct clients	clients;
extern u_int		nclients;
void		 client_accept(int, struct listener *);
void		 client_close(struct client *, const char *);
void		 client_free(struct client *);
void		 client_upstream_ready(void);
void		 client_close_all(const char *);
void		 client_send(struct client *, const char *, size_t);
void		 client_sent(struct client *);
void		 client_send_error(struct client *, const char *,
		    const char *, const char *, size_t);
void		 client_reply_local(struct client *, char *);
void		 client_reply_done(struct client *, struct pending *);
void		 client_recheck(struct client *);
char		*client_copy_id(struct client *, const struct qmp_msg *,
		    const struct qmp_member *, size_t *);

/* upstream.c: the QEMU connection. */
struct pending {
	uint64_t		 uid;		/* id sent to QEMU */
	struct client		*client;	/* NULL once it left */
	char			*id;		/* client's id, raw JSON */
	size_t			 idlen;
	int			 flags;
#define PENDING_OOB	0x1
#define PENDING_LOCAL	0x2			/* answered by the proxy */
#define PENDING_NOID	0x4
#define PENDING_FDS	0x8			/* came with descriptors */
	char			*reply;		/* a local reply, ready */
	TAILQ_ENTRY(pending)	 up_entry;	/* upstream's queue */
	TAILQ_ENTRY(pending)	 client_entry;	/* client's queue */
};
int		 upstream_is_ready(void);
const char	*upstream_greeting(size_t *);
int		 upstream_has_oob(void);
void		 upstream_start(const char *);
void		 upstream_stop(void);
void		 upstream_forward(struct client *, const struct qmp_msg *,
		    const struct qmp_request *);
void		 upstream_forget_client(struct client *);
void		 pending_free(struct pending *);

/* cmd.c: the path every request takes. */
struct cmd_entry {
	const char	*name;
	int		 flags;
#define CMD_NEGOTIATION	0x1		/* exists before qmp_capabilities */
	/* args is borrowed; id is the client's raw id or NULL. */
	void		(*exec)(struct client *, struct json_t *,
			    const char *, size_t);
};
void		 cmd_dispatch(struct client *, const struct qmp_msg *,
		    const struct qmp_request *);

/* cmd-*.c: one proxy-owned command each. */
extern const struct cmd_entry cmd_qmp_capabilities_entry;

/* qbranchd.c */
struct options {
	const char	*qemu;
	const char	*state_dir;
	mode_t		 socket_mode;
	u_int		 max_clients;
	size_t		 max_message;
	u_int		 max_inflight;
	size_t		 max_output;
	int		 verbose;
};
extern struct options	 opts;
extern struct event_base *base;

#endif /* QBRANCH_H */
