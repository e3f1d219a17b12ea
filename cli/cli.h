/*
 * cli.h: structures and prototypes shared by the files of qbranch, the
 * command-line client, grouped by the file that defines them. Allocation
 * (xmalloc, xasprintf, struct buf) comes from the pure library in proxy/.
 */
#ifndef CLI_H
#define CLI_H

#include <getopt.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "qbranch.h"

#ifndef QBRANCH_RUN_DIR
#define QBRANCH_RUN_DIR		"/run/qbranchd"	/* qbranchd@NAME listens here */
#endif
#define QBRANCH_DEFAULT_NAME	"qbranchd"	/* QBRANCH_RUN_DIR/NAME.sock */

/* Exit statuses, as qbranch(1) documents them. */
#define EXIT_OK			0
#define EXIT_FAILED		1	/* the proxy said no, or a step failed */
#define EXIT_USAGE		2
#define EXIT_UNREACHABLE	3	/* no qbranchd on the socket */

/* qbranch.c */
struct verb;

/* One run of the program: the socket, the verb, its connection. */
struct cli {
	char			*socket;	/* -c as given, or NULL */
	char			*path;		/* the socket path resolved */
	const struct verb	*verb;
	char			*prog;		/* "qbranch VERB", for messages */
	struct option		*longopts;	/* the verb's plus -c and -h */
	struct qmp_client		*client;	/* connected on first use */
	int			 flags;
#define CLI_PROGRESS		0x1		/* a bar for QBRANCH_PROGRESS */
};

/* A verb: its options (getopt_long) and what it runs. */
struct verb {
	const char		*name;
	const char		*synopsis;	/* what follows the name */
	const char		*summary;
	const struct option	*longopts;
	int			(*exec)(struct cli *, int, char **);
	int			 flags;
#define VERB_HIDDEN		0x1		/* not in help (__complete) */
};

extern const struct verb *const verbs[];
const struct verb *verb_find(const char *);
void	 verb_usage(const struct verb *, FILE *);
int	 cli_getopt(struct cli *, int, char **);
int	 cli_bad_option(struct cli *, int);
int	 cli_usage_error(struct cli *, const char *, ...)
	    __attribute__((format(printf, 2, 3)));
json_t	*cli_string(struct cli *, const char *, const char *);
const char *cli_socket_path(struct cli *);
int	 cli_connect(struct cli *);
int	 cli_request(struct cli *, json_t *, json_t **, char **);
int	 cli_call(struct cli *, const char *, json_t *, json_t **, char **);
void	 cli_print_json(json_t *);
void	 cli_print_raw(const char *);

/* qmp-client.c */
struct qmp_client_error {
	char	*class;
	char	*desc;
};
#define QMPC_OK		0
#define QMPC_ERROR		1	/* the reply was an error */
#define QMPC_LOST		3	/* connection or protocol failure */
#define QMPC_INTR		4	/* a signal asked us to stop */
struct qmp_client	*qmp_client_open(const char *, char **, const char **);
void	 qmp_client_close(struct qmp_client *);
void	 qmp_client_set_event_cb(struct qmp_client *,
	    void (*)(json_t *, const char *, void *), void *);
int	 qmp_client_call(struct qmp_client *, const char *, json_t *, json_t **,
	    char **, struct qmp_client_error *, char **);
int	 qmp_client_request(struct qmp_client *, json_t *, json_t **, char **,
	    struct qmp_client_error *, char **);
int	 qmp_client_next_event(struct qmp_client *, char **, char **);
void	 qmp_client_error_clear(struct qmp_client_error *);
void	 qmp_client_stop_on_signals(void);

/* progress.c */
void	 progress_start(void);
void	 progress_event(json_t *, const char *, void *);
void	 progress_end(int);

/* format.c */
#define FORMAT_SIZE_LEN		8	/* "1023.9K" at most, with the NUL */
#define FORMAT_AGE_LEN		8
#define FORMAT_TIME_LEN		32
#define FORMAT_SIZE_WIDTH	5	/* columns are this wide, right-aligned */
#define FORMAT_AGE_WIDTH	4
void	 format_size(uint64_t, char *, size_t);
void	 format_age(int64_t, char *, size_t);
void	 format_time(int64_t, char *, size_t);
size_t	 format_width(const char *);
char	*format_clean(const char *);
int	 format_utf8(void);

struct table;
struct table	*table_new(size_t);
void	 table_align_right(struct table *, size_t);
void	 table_min_width(struct table *, size_t, size_t);
void	 table_add(struct table *, ...);
void	 table_add_span(struct table *, const char *);
void	 table_print(struct table *, FILE *);
void	 table_free(struct table *);

/* hint.c */
const char *hint_for(const char *, const char *);
void	 hint_print_error(const char *, const char *);

/* query.c */
json_t	*query_snapshot(json_t *, const char *);
const char *query_str(json_t *, const char *);
int	 query_is_descendant(json_t *, json_t *, const char *);
int	 query_size(json_t *, uint64_t *);
int	 query_age(json_t *, int64_t, int64_t *);

/* tree-view.c */
void	 tree_view_print(json_t *, json_t *, const char *, FILE *);
void	 tree_view_dot(json_t *, json_t *, FILE *);
int	 tree_view_svg(json_t *, json_t *, const char *, char **);
int	 tree_view_has_dot(void);

/* verb-change.c */
extern const struct verb	verb_create_entry;
extern const struct verb	verb_revert_entry;
extern const struct verb	verb_switch_entry;
extern const struct verb	verb_delete_entry;
extern const struct verb	verb_branch_delete_entry;
extern const struct verb	verb_edit_entry;

/* verb-show.c */
extern const struct verb	verb_list_entry;
extern const struct verb	verb_tree_entry;
extern const struct verb	verb_branches_entry;
extern const struct verb	verb_info_entry;
extern const struct verb	verb_current_entry;
extern const struct verb	verb_parent_entry;
extern const struct verb	verb_disks_entry;
extern const struct verb	verb_status_entry;

/* verb-orphans.c */
extern const struct verb	verb_orphans_entry;

/* verb-qmp.c */
extern const struct verb	verb_qmp_entry;
extern const struct verb	verb_events_entry;

/* complete.c */
extern const struct verb	verb_complete_entry;

#endif /* CLI_H */
