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

#include <jansson.h>

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
void	 qmp_quote_into(struct buf *, const char *);
extern const unsigned char qmp_plain[256];

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


/* json-locate.c: a value's line and column in a JSON text. */
struct json_step {
	const char	*key;		/* or NULL: an array index */
	size_t		 index;
};
void	 json_locate(const char *, size_t, const struct json_step *, size_t,
	    int *, int *);

/* hmp.c: an HMP command line read as QEMU's monitor reads it. */
char	*hmp_command(const char *, const char **);
int	 hmp_words(const char *, char **, int);

/* rules.c and rules-match.c: rule sets, and requests decided by them. */
enum rule_action {
	RULE_ALLOW,
	RULE_DENY,
	RULE_REWRITE,
	RULE_TRANSLATE,
	RULE_LOG,
};

struct rule {
	char			*where;		/* file:line */
	char			*name;		/* or NULL */
	char			**commands;	/* globs; none: any */
	size_t			 ncommands;
	json_t			*arguments;	/* a subset pattern, or NULL */
	unsigned		*uids;		/* none: any */
	size_t			 nuids;
	unsigned		*gids;
	size_t			 ngids;
	char			**listeners;	/* globs on the socket path */
	size_t			 nlisteners;
	enum rule_action	 action;
	char			*err_class;	/* deny */
	char			*message;
	json_t			*merge;		/* rewrite */
	json_t			*replace;
	char			*handler;	/* translate */
	json_t			*options;
};

struct rules_cache_entry;
struct rule_set {
	char			*path;
	struct rule		*rules;
	size_t			 nrules;
	struct rule		 deflt;
	struct rules_cache_entry *cache;	/* per command name */
	size_t			 ncached;
};

/* One name a request shows. */
struct rule_subject {
	const char	*name;
	json_t		*args;		/* NULL: none given */
	enum {
		RULE_SUBJECT_COMMAND,
		RULE_SUBJECT_ACTION,	/* transaction/<type> */
		RULE_SUBJECT_HMP,	/* hmp/<word> */
	}		 kind;
};

struct rule_peer {
	unsigned	 uid;
	unsigned	 gid;
	const char	*listener;
};

#define RULES_MAX_LOGGED	8
struct rule_decision {
	enum rule_action	 action;	/* allow, deny, rewrite or
						   translate */
	const struct rule	*rule;		/* deciding, or the default */
	size_t			 subject;	/* the name it decided */
	const struct rule	**rewrite;	/* per subject, or NULL */
	const struct rule	*logged[RULES_MAX_LOGGED];
	size_t			 nlogged;
};

extern const char *rules_shipped_dir;
struct rule_set	*rules_load(const char *, const char *const *, char **);
void		 rules_free(struct rule_set *);
const char	*rule_action_name(enum rule_action);
void		 rules_cache_clear(struct rule_set *);
int		 rules_json_match(json_t *, json_t *);
int		 rules_need_args(struct rule_set *, const char *);
size_t		 rules_count_subjects(const char *, json_t *);
size_t		 rules_subjects(const char *, json_t *, struct rule_subject *,
		    char **);
void		 rules_decide(struct rule_set *, const struct rule_subject *,
		    size_t, const struct rule_peer *, struct rule_decision *);
void		 rules_decision_clear(struct rule_decision *);

/* snap-tree.c: the snapshot and branch model, pure data. */
#define SNAP_NAME_MAX		64
#define SNAP_TREE_VERSION	2	/* reads 1 too */

/* One disk's image in a snapshot (frozen) or a branch (its overlay). */
struct snap_file {
	char	*device;	/* qdev id (vda), or the drive id */
	char	*file;		/* absolute path */
	char	*format;	/* qcow2 or raw */
	char	*backing;	/* the image below, NULL for an original */
	int	 owned;		/* created by qbranch: only these are removed */
};

/*
 * A saved VM state (snap-memory.c): device state, and RAM unless it was
 * copied, in a qcow2 state image; the copies of RAM kept in files.
 */
struct snap_ram {
	char	*backend;	/* the memory backend's id */
	char	*file;		/* the copy of its file */
};

struct snap_memory {
	char		*state;		/* the state image */
	char		*vm_state;	/* QEMU's run state then */
	struct snap_ram	*ram;		/* none: RAM is in the state image */
	size_t		 nram;
};

struct snapshot {
	char			*name;
	char			*description;
	int64_t			 created;	/* seconds since the epoch */
	char			*vm_state;	/* QEMU's run state then */
	struct snapshot		*parent;
	struct snap_file	*disks;
	size_t			 ndisks;
	struct snap_memory	*memory;	/* NULL: disks only */
	uint64_t		 serial;	/* order of making, in memory */
	struct tree_text	*line;		/* its tree file line, or NULL */
	uint32_t		*hashes;	/* of its paths, kept with line */
	int			 revert_next;	/* a revert's <name>-<N> from here */
	TAILQ_ENTRY(snapshot)	 entry;
};

struct branch {
	char			*name;
	struct snapshot		*base;		/* NULL: the original disks */
	int			 attached;
	struct snap_file	*disks;
	size_t			 ndisks;
	struct snap_memory	*memory;	/* saved when it was left */
	uint64_t		 serial;	/* order of making, in memory */
	struct tree_text	*line;		/* its tree file line, or NULL */
	uint32_t		*hashes;	/* of its paths, kept with line */
	TAILQ_ENTRY(branch)	 entry;
};

#define SNAP_FOUND_SLOTS	64
struct snap_tree {
	TAILQ_HEAD(snap_list, snapshot) snapshots; /* parents first */
	TAILQ_HEAD(, branch)	 branches;
	struct snap_file	*bases;		/* images left by deletes */
	size_t			 nbases;
	struct {			/* snap_tree_image()'s recent answers */
		struct snap_file	*f;
		uint64_t		 layout;
	}			 found[SNAP_FOUND_SLOTS];
};

struct snap_tree	*snap_tree_new(void);
void			 snap_tree_free(struct snap_tree *);
struct snap_tree	*snap_tree_from_json(json_t *, char **);
int			 snap_name_is_valid(const char *);
struct snapshot		*snap_find(const struct snap_tree *, const char *);
struct branch		*branch_find(const struct snap_tree *, const char *);
struct branch		*branch_attached(const struct snap_tree *);
struct snapshot		*snap_current(const struct snap_tree *);
struct snapshot		*snap_add(struct snap_tree *, const char *,
			    struct snapshot *);
void			 snap_remove(struct snap_tree *, struct snapshot *);
int			 snap_is_ancestor(const struct snapshot *,
			    const struct snapshot *);
struct branch		*branch_add(struct snap_tree *, const char *,
			    struct snapshot *);
void			 branch_remove(struct snap_tree *, struct branch *);
void			 snap_files_set(struct snap_file **, size_t *,
			    const struct snap_file *, size_t);
void			 snap_files_free(struct snap_file *, size_t);
uint64_t		 file_allocated(const char *);
void			 snap_memory_free(struct snap_memory *);
struct snap_memory	*snap_memory_dup(const struct snap_memory *);
void			 snap_memory_files(const struct snap_memory *,
			    json_t *);
uint64_t		 snap_memory_size(const struct snap_memory *);
struct snap_memory	*snap_memory_from_json(json_t *, char **);
json_t			*snap_memory_json(const struct snap_memory *);
json_t			*snap_memory_all(const struct snap_tree *);
json_t			*snap_memory_gone(const struct snap_tree *, json_t *);
uint32_t		*snap_files_hashes(const struct snap_file *, size_t);
void			 snap_touch(struct snapshot *);
void			 snap_touch_name(struct snap_tree *, struct snapshot *);
void			 branch_touch(struct branch *);
void			 snap_tree_touch_file(struct snap_tree *,
			    const struct snap_file *);
struct branch		*branch_of_overlay(const struct snap_tree *,
			    const char *);
void			 snap_file_take(struct snap_file *,
			    const struct snap_file *);
int			 branch_exclude_disk(struct snap_tree *,
			    struct branch *, const char *, char **);
const struct snap_file	*snap_file_find(const struct snap_file *, size_t,
			    const char *);
json_t			*snap_json(const struct snap_tree *,
			    const struct snapshot *);
json_t			*branch_json(const struct branch *);
char			*snap_default_name(const struct snap_tree *, int64_t);
struct snap_file	*snap_tree_image(struct snap_tree *, const char *);
size_t			 snap_tree_dependants(const struct snap_tree *,
			    const char *, struct snap_file **);
void			 snap_tree_keep_base(struct snap_tree *,
			    const struct snap_file *);
void			 snap_tree_drop_base(struct snap_tree *, const char *);
char			*snap_stem(const char *);

/* tree-file.c: the tree's file form, whole and as a journal of changes. */
struct tree_text {			/* an entry's line, shared */
	int		 refs;
	size_t		 len;
	char		 text[];
};

struct tree_line {			/* one snapshot or branch */
	uint64_t		 serial;
	struct tree_text	*line;
};

struct tree_file {
	struct tree_line	*snaps;
	size_t			 nsnaps;
	struct tree_line	*branches;
	size_t			 nbranches;
	char			*bases;
	size_t			 bases_len;
	uint64_t		 seq;		/* the last change it holds */
};

extern int	 tree_file_check;
void		 tree_text_unref(struct tree_text *);
void		 tree_file_set(struct tree_file *, struct snap_tree *);
void		 tree_file_clear(struct tree_file *);
char		*tree_file_text(const struct tree_file *);
char		*snap_tree_text(struct snap_tree *);
char		*tree_file_change(const struct tree_file *, struct snap_tree *,
		    struct tree_file *, int *);
int		 tree_journal_replay(json_t *, const char *, size_t, size_t *,
		    char **);

/* qcow2-overlay.c: a new overlay's bytes. */
int			 qcow2_overlay_build(uint64_t, const char *,
			    const char *, unsigned char **, size_t *,
			    uint64_t *, char **);

/* orphan-match.c: what the files qbranch makes look like. */
#define ORPHAN_QCOW2_HEAD	20	/* bytes orphan_qcow2_backing() reads */
int			 orphan_name_is_image(const char *, const char *);
int			 orphan_name_is_memory(const char *);
int			 orphan_qcow2_backing(const unsigned char *, size_t,
			    uint64_t *, uint32_t *);

/* snap-store.c: atomic files in the state directory. */
int			 store_prepare(const char *, const char *, const char *,
			    char **);
int			 store_commit(const char *, const char *, char **);
void			 store_abort(const char *, const char *);
json_t			*store_read(const char *, const char *, char **);
#define STORE_PAGE	4096
size_t			 store_record_len(size_t);
int			 store_reserve(const char *, const char *, off_t,
			    size_t, char **);
int			 store_append(const char *, const char *, off_t,
			    const char *, char **);
int			 store_truncate(const char *, const char *, off_t,
			    char **);
char			*store_read_text(const char *, const char *,
			    size_t *, char **);
char			*file_sync(const char *);

/*
 * The daemon's parts below use libevent; the pure parts above do not.
 */
struct event_base;
struct event;
struct evbuffer;
struct evconnlistener;

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
	char			*path;		/* or a description, inherited */
	int			 policy;	/* its rule file (policy.c) */
	int			 fd;
	int			 flags;
#define LISTENER_INHERITED	0x1		/* handed over: never unlinked */
	struct evconnlistener	*evl;
	TAILQ_ENTRY(listener)	 entry;
};
TAILQ_HEAD(listeners, listener);
int		 listener_open(const char *, mode_t, struct listener **,
		    char **);
int		 listener_adopt(int, const char *, struct listener **,
		    char **);
void		 listener_close(struct listener *);
void		 listener_pause(int);
int		 listener_check_path(const char *, char **);

/* client.c: one client session. */
struct pending;
struct client;

/* Takes a client's next local reply in its place (a translation). */
struct reply_hook {
	void		(*take)(struct client *, char *, struct reply_hook *);
	void		(*free)(struct reply_hook *);
};

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
#define CLIENT_BUSY	0x4			/* its snapshot operation runs */
	struct pendings		 replies;	/* in order, in-band */
	u_int			 nreplies;
	unsigned		 uid;		/* the peer's, or -1 */
	unsigned		 gid;
	pid_t			 pid;
	struct reply_hook	*hook;
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
void		 client_broadcast_event(const char *, json_t *);
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
#define PENDING_INTERNAL 0x10			/* the proxy's own command */
#define PENDING_COMMANDS 0x20			/* query-commands */
#define PENDING_JOBS	0x40			/* query-jobs, ours joined */
	void			(*cb)(json_t *, void *);
	void			*cb_arg;
	char			*reply;		/* a local reply, ready */
	TAILQ_ENTRY(pending)	 up_entry;	/* upstream's queue */
	TAILQ_ENTRY(pending)	 client_entry;	/* client's queue */
};
int		 upstream_is_ready(void);
int		 upstream_connected(void);
const char	*upstream_greeting(size_t *);
int		 upstream_has_oob(void);
pid_t		 upstream_pid(void);
void		 upstream_start(const char *);
void		 upstream_start_fd(int);
void		 upstream_when_down(void (*)(void));
void		 upstream_stop(void);
void		 upstream_forward(struct client *, const struct qmp_msg *,
		    const struct qmp_request *);
void		 upstream_forward_text(struct client *, const struct qmp_msg *,
		    const struct qmp_request *, const char *);
void		 upstream_forget_client(struct client *);
void		 pending_free(struct pending *);
void		 upstream_call(const char *, json_t *,
		    void (*)(json_t *, void *), void *);

/* cmd.c: the path every request takes. */
struct cmd_entry {
	const char	*name;
	int		 flags;
#define CMD_NEGOTIATION	0x1		/* exists before qmp_capabilities */
	/* args is borrowed; id is the client's raw id or NULL. */
	void		(*exec)(struct client *, json_t *,
			    const char *, size_t);
};
void		 cmd_dispatch(struct client *, const struct qmp_msg *,
		    const struct qmp_request *);
void		 cmd_dispatch_args(struct client *, const struct qmp_msg *,
		    const struct qmp_request *, json_t *);
int		 cmd_is_own(const char *);
void		 cmd_run(struct client *, const char *, json_t *);
json_t		*cmd_arguments(struct client *, const struct qmp_msg *,
		    const struct qmp_request *);

struct arg_spec {
	const char	*name;
	char		 type;			/* s b a i */
	int		 required;
};
int		 cmd_check_state_dir(json_t *, const char *, char **);
int		 cmd_check_args(json_t *, const struct arg_spec *, char **);
void		 cmd_refuse(struct client *, char *, const char *, size_t);
const char	*cmd_list_json(void);
int		 cmd_run_state(json_t *, int *, int, int, char **);
int		 cmd_query_check(struct client *, json_t *, const char *,
		    size_t);
void		 cmd_reply(struct client *, json_t *, const char *, size_t);

/* cmd-*.c: one proxy-owned command each. */
extern const struct cmd_entry cmd_qmp_capabilities_entry;
extern const struct cmd_entry cmd_snapshot_create_entry;
extern const struct cmd_entry cmd_snapshot_revert_entry;
extern const struct cmd_entry cmd_branch_switch_entry;
extern const struct cmd_entry cmd_snapshot_delete_entry;
extern const struct cmd_entry cmd_branch_delete_entry;
extern const struct cmd_entry cmd_snapshot_edit_entry;
extern const struct cmd_entry cmd_query_snapshots_entry;
extern const struct cmd_entry cmd_query_branches_entry;
extern const struct cmd_entry cmd_query_disks_entry;
extern const struct cmd_entry cmd_query_orphans_entry;
extern const struct cmd_entry cmd_orphans_delete_entry;

/* snap-op.c: the engine under every snapshot operation. */
#define SNAP_TREE_FILE	"tree.json"

struct disk_info {			/* a writable disk as QEMU has it */
	char		*device;
	char		*node;		/* its top node */
	char		*file;
	char		*format;
	int64_t		 size;		/* virtual size */
};

struct op {
	struct client	*client;	/* NULL once it left */
	char		*id;		/* the request's raw id */
	size_t		 idlen;
	json_t		*args;		/* the request's arguments (owned) */
	void		(*step)(struct op *, json_t *);
	void		(*resume)(struct op *, json_t *);
	int		 stage;
	size_t		 i;		/* the disk a loop is at */
	int		 undoing;
	char		*error;
	char		*fail_context;	/* put before the error's text */
	int		 save_on_fail;	/* QEMU changed: write the tree anyway */
	json_t		*undo;		/* what to do to take it back */
	int		 tree_began;	/* op_tree_begin() was called */
	char		*tree_backup;	/* the model then, if not as written */
	struct tree_write *tree_write;	/* the prepared one */
	int		 tree_prepared;	/* the new tree file is written */
	char		*commit_error;	/* the tree file could not replace */
	json_t		*result;
	json_t		*plan;		/* a delete's merges */

	/* discovery */
	char		*run_state;
	int		 was_running;
	struct disk_info *disks;
	size_t		 ndisks;
	json_t		*nodes;		/* query-named-block-nodes */
	json_t		*exports;	/* query-block-exports */

	/* a block job in progress */
	char		 job[32];
	int		 job_started;
	int		 job_concluded;
	int		 job_complete;	/* send job-complete once ready */
	char		*job_error;
	void		(*job_resume)(struct op *, json_t *);
	const char	*progress;	/* QBRANCH_PROGRESS "operation" */
	struct event	*progress_timer;

	char		*s1;		/* an image at hand */

	/* file work in threads (op_io) */
	int		 io_pending;
	int		 io_waiting;
	char		*io_error;
	int		 finish_deferred;

	/* commands sent together (op_call_all) */
	json_t		*replies;
	int		 replies_due;
	int		 sending;
	void		(*all_resume)(struct op *, json_t *);

	/* images being closed */
	json_t		*closing;
	int		 closing_half;
	void		(*close_resume)(struct op *, json_t *);

	/* images being opened */
	json_t		*opening;
	int		 open_pending;
	void		(*open_resume)(struct op *, json_t *);

	/* moving the VM onto other images */
	int		 astage;
	int		 run_after;
	int		 attach_open;	/* 1: existing overlays */
	int		 no_reset;	/* the guest has not run yet */
	int		 chain_after;	/* open what is below after the move */
	size_t		 late;
	int		 reconcile;	/* checking the disks on connect */
	void		(*on_end)(struct op *);
	void		*on_end_arg;
	int		 tolerate;	/* the next call may fail */
	void		(*attach_resume)(struct op *, json_t *);

	/* per-operation scratch */
	char		**paths;	/* new image per disk */
	char		**backings;	/* what a new one goes over */
	char		**devs;		/* the device of each */
	size_t		 npaths;
	void		*subject;	/* the snapshot or branch at hand */
	void		*subject2;
	char		*name;
	int		 flag;
	int		 removing;	/* closing an image: 1 format, 2 file */

	/* a VM state saved or loaded (snap-memory.c) */
	int		 mstage;
	int		 mem_loading;
	int		 mem_checking;	/* other mappers looked for anew */
	json_t		*memdevs;	/* query-memdev */
	void		(*mem_resume)(struct op *, json_t *);
	struct snap_memory *mem;	/* the one at hand */
	struct snap_memory *mem_load;	/* what the attach loads, or NULL */
	struct snap_memory *mem_save;	/* what the attach saves, or NULL */
	int		 mem_made;	/* its files are being made */
	int		 job_tolerate;	/* a job's error goes to job_error */
	json_t		*sync_first;	/* files to sync before the commit */
	json_t		*mem_files;	/* every saved state's, before */
	struct timespec	 mark;		/* op_mark() */

	/* crash safety (intent.c, fault.c) */
	const char	*kind;		/* create, revert...; NULL: none */
	unsigned	 points;	/* fault points passed */
	char		 calling[40];	/* the command last sent */
	int		 intent_written;
	int		 intent_keep;	/* it outlives the operation */
	int		 committed;	/* QEMU changed for good */
	int		 qemu_gone;	/* the QEMU it changed went away */
	char		*answer;	/* the reply's "return", as text */
	int		 answered;	/* the client has its reply */
	int64_t		 intent_seq;	/* the tree file's seq before */
	json_t		*intent_before;	/* {device: file} before */
	json_t		*intent_merge;	/* the merge under way */
	int		 new_overlays;	/* op->paths are files it makes */
	int		 stops_vm;	/* it stops a running VM */
	json_t		*doomed;	/* files it removes once committed */
};

struct snap_state {
	struct snap_tree	*tree;
	struct tree_file	 saved;		/* the tree as last written */
	int			 model_dirty;	/* tree and saved may differ */
	int			 whole_next;	/* the journal is out of step */
	int			 tree_writing;	/* a commit or save is under way */
	off_t			 journal_end;	/* where the next record goes */
	size_t			 file_len;	/* the whole file's length */
	char			*broken;	/* why the tree is unusable */
	struct op		*op;		/* the one running */
	int			 reconciling;	/* clients wait for it */
	int			 reconcile_due;	/* once the operation ends */
	int			 broken_by_vm;	/* not by the tree file */
	json_t			*intent;	/* an operation's, unfinished */
};
extern struct snap_state snap;

/*
 * A piece of an operation's file work: work runs in a thread and returns
 * NULL or an error; after, if set, sees the result in the event loop.
 */
struct op_io {
	struct op	*op;
	char		*(*work)(struct op_io *);
	void		 (*after)(struct op_io *);
	char		*error;
	void		*data;
};

void		 disk_info_free(struct disk_info *, size_t);
int		 snap_op_wants_events(void);
int		 snap_op_blocks(const char *);
void		 snap_op_event(json_t *);
void		 snap_client_gone(struct client *);
void		 snap_upstream_ready(void);
int		 snap_reconciling(void);
struct op	*op_new_internal(void (*)(struct op *, json_t *));
struct op	*op_new(struct client *, json_t *, const char *, size_t,
		    void (*)(struct op *, json_t *));
void		 op_done(struct op *, json_t *);
void		 op_fail(struct op *, const char *, ...)
		    __attribute__((format(printf, 2, 3)));
void		 op_call(struct op *, const char *, json_t *);
void		 op_call_all(struct op *, json_t *);
const char	*op_first_error(json_t *);
void		 op_job(struct op *, const char *, json_t *);
void		 op_job_adopt(struct op *, const char *, const char *, int);
void		 op_undo_call(struct op *, const char *, json_t *);
void		 op_undo_unlink(struct op *, const char *);
void		 op_paths_alloc(struct op *, size_t);
void		 op_mark(struct op *, const char *);
void		 op_io(struct op *, char *(*)(struct op_io *),
		    void (*)(struct op_io *), void *);
void		 op_io_wait(struct op *);
void		 op_unlink(struct op *, json_t *);

/* snap-save.c: the tree in the state directory. */
void		 snap_init(void);
void		 snap_shutdown(void);
void		 op_tree_begin(struct op *);
void		 op_tree_prepare(struct op *);
void		 op_commit(struct op *);
void		 op_tree_preflight(struct op *);
void		 op_tree_save(struct op *);
void		 op_tree_rollback(struct op *);
void		 op_tree_end(struct op *);
int		 op_tree_record(struct op *, const char **, const char **);

/* intent.c: what an operation is about to do, for recover.c. */
void		 op_intent_begin(struct op *);
void		 op_intent(struct op *, const char *);
int		 op_intent_end(struct op *);
void		 intent_load(void);
void		 intent_clear(struct op *);

/* recover.c: an operation cut short, finished or taken back. */
int		 snap_recover(void);

/* fault.c: fault points, for the crash tests. */
void		 fault_init(void);
int		 fault_point(struct op *, const char *, const char *, int);
json_t		*fault_reply(const char *);

/* snap-orphans.c: files qbranch made that nothing uses. */
struct orphan_scan;
struct orphan_scan *orphan_scan_new(const struct snap_tree *, json_t *);
void		 orphan_scan_run(struct orphan_scan *);
json_t		*orphan_scan_list(const struct orphan_scan *);
void		 orphan_scan_free(struct orphan_scan *);
void		 orphan_inuse_nodes(json_t *, json_t *);
void		 orphan_inuse_block(json_t *, json_t *);

/* snap-discover.c: what QEMU has, and the tree checked against it. */
#define DISCOVER_DISKS	0	/* run state, disks, exports */
#define DISCOVER_ALL	1	/* and every open node */
void		 op_discover(struct op *, int);
char		*disk_device_name(json_t *);
void		 op_tree_init(struct op *);
void		 op_node_name(const char *, char *, size_t);
void		 op_file_node_name(const char *, char *, size_t);
const char	*op_node_of(struct op *, const char *);
void		 op_forget_node(struct op *, const char *);
int		 op_node_exported(struct op *, const char *);
struct disk_info *op_disk(struct op *, const char *);
void		 op_open_image(struct op *, const char *);
void		 op_close_unused(struct op *);
void		 op_write_overlays(struct op *);
void		 op_add_overlays(struct op *);

/* snap-memory.c: the VM's RAM and device state saved and loaded. */
void		 snap_memory_shutdown(void);
void		 snap_memory_release(void);
void		 op_memory_probe(struct op *, int);
struct snap_memory *snap_memory_new(const char *, const char *,
		    const char *);
void		 op_memory_files(struct op *, const struct snap_memory *);
int		 op_memory_loadable(struct op *, const struct snap_memory *);
void		 op_memory_open_calls(struct op *, json_t *);
void		 op_memory_opened(struct op *, json_t *, size_t);
void		 op_memory_save(struct op *, struct snap_memory *);
void		 op_memory_load(struct op *, struct snap_memory *);
int		 snap_memory_fast(void);
void		 op_memory_begin(struct op *, const struct snap_memory *);
int		 op_memory_plan(struct op *, const struct snap_memory *, int *);

/* io-thread.c: file work off the event loop. */
void		 io_init(void);
void		 io_drain(void);
void		 io_shutdown(void);
void		 io_run(void (*)(void *), void (*)(void *), void *);

/* snap-attach.c */
void		 op_attach(struct op *, int, int);
void		 op_attach_switched(struct op *, int);

/* cmd-snapshot-delete.c */
void		 merge_apply(const char *, const char *, int, json_t *);
const char	*op_backing_format(struct op *, size_t);
int		 op_path_is_allowed(const char *, const struct snap_tree *);
char		*op_image_path(const struct snap_tree *, const char *,
		    const char *);

/* policy.c: the rules of each listening socket. */
void		 policy_set_dir(const char *);
void		 policy_set_default(const char *);
int		 policy_file(const char *);
int		 policy_load(void);
void		 policy_reload(void);
void		 policy_shutdown(void);
int		 policy_apply(struct client *, const struct qmp_msg *,
		    const struct qmp_request *);

/* audit.c: the audit log. */
int		 audit_init(const char *);
void		 audit_reopen(void);
void		 audit_shutdown(void);
void		 audit_decision(struct client *, const char *,
		    const struct rule_decision *, const struct rule_subject *);

/* translate.c: QEMU's snapshot commands translated into the tree's. */
struct translate_handler {
	const char	*name;
	/* Returns 0 when it answered, 1 to let the request go on. */
	int		(*run)(struct client *, json_t *, json_t *,
			    const char *, size_t);
};
const char *const *translate_handler_names(void);
int		 translate_run(struct client *, const struct qmp_msg *,
		    const struct qmp_request *, json_t *,
		    const struct rule *);
json_t		*translate_args(json_t *, json_t *);

/* snap-job.c: QEMU's snapshot jobs, emulated. */
int		 snap_jobs_exist(void);
char		*snap_jobs_json(void);
int		 snap_job_command(struct client *, const struct qmp_msg *,
		    const struct qmp_request *);
int		 snap_job_save(struct client *, json_t *, json_t *,
		    const char *, size_t);
int		 snap_job_load(struct client *, json_t *, json_t *,
		    const char *, size_t);
int		 snap_job_delete(struct client *, json_t *, json_t *,
		    const char *, size_t);
void		 snap_jobs_shutdown(void);

/* inherit.c: descriptors handed over at start-up. */
struct inherited {
	int		 fd;
	char		*name;		/* systemd's name for it, or NULL */
};
int		 inherit_check(int, int, char **);
int		 inherit_take(int, int, char **);
char		*inherit_describe(int, const char *);
int		 inherit_activation(struct inherited *, int, char **);

/* launch.c: launch mode, QEMU started and supervised by qbranchd. */
int		 launch_check(char **, int, char **);
const char	*launch_start(char **, int *);
void		 launch_stop(void);
int		 launch_signal(int);
int		 launch_hold(void);
int		 launch_holding(void);

/* qbranchd.c */
struct options {
	const char	*qemu;
	const char	*state_dir;
	const char	*image_dir;
	const char	*allow[16];
	size_t		 nallow;
	mode_t		 socket_mode;
	u_int		 max_clients;
	size_t		 max_message;
	u_int		 max_inflight;
	size_t		 max_output;
	int		 verbose;
};
extern struct options	 opts;
extern struct event_base *base;
void		 qbranchd_stop(int);

#endif /* QBRANCH_H */
