/*
 * request.c: the checks QEMU makes of a command's shape before dispatching
 * it (qmp_dispatch_check_obj), with QEMU's own error texts, and the splicing
 * of ids into raw messages.
 */
#include <stdlib.h>
#include <string.h>

#include "qbranch.h"

/*
 * Checks a framed message as a command. allow_oob says whether the client
 * negotiated out-of-band execution. Returns 0 and fills req, or -1 with an
 * allocated QEMU error text (class GenericError) in *cause; req->id is set
 * even then, when the message had one.
 */
int
request_parse(const struct qmp_msg *msg, int allow_oob,
    struct qmp_request *req, char **cause)
{
	const struct qmp_member	*m, *exec = NULL;
	size_t			 i;

	memset(req, 0, sizeof *req);
	*cause = NULL;
	if (msg->type != QMP_T_OBJECT) {
		*cause = xstrdup("QMP input must be a JSON object");
		return -1;
	}
	req->id = qmp_msg_member(msg, "id");
	for (i = 0; i < msg->nmembers; i++) {
		m = &msg->members[i];
		if (strcmp(m->key, "execute") == 0 ||
		    (strcmp(m->key, "exec-oob") == 0 && allow_oob)) {
			if (m->val_type != QMP_T_STRING) {
				xasprintf(cause,
				    "QMP input member '%s' must be a string",
				    m->key);
				return -1;
			}
			if (exec != NULL) {
				*cause = xstrdup("QMP input member 'execute' "
				    "clashes with 'exec-oob'");
				return -1;
			}
			exec = m;
		} else if (strcmp(m->key, "arguments") == 0) {
			if (m->val_type != QMP_T_OBJECT) {
				*cause = xstrdup("QMP input member "
				    "'arguments' must be an object");
				return -1;
			}
			req->args = m;
		} else if (strcmp(m->key, "id") != 0) {
			xasprintf(cause, "QMP input member '%s' is unexpected",
			    m->key);
			return -1;
		}
	}
	if (exec == NULL) {
		*cause = xstrdup("QMP input lacks member 'execute'");
		return -1;
	}
	/* A name too long to decode is no command of QEMU's or ours. */
	req->name = exec->str != NULL ? exec->str : "";
	req->oob = strcmp(exec->key, "exec-oob") == 0;
	return 0;
}

/* Replaces the value of the id member. */
void
splice_id_replace(const struct qmp_member *id, struct splice *sp)
{
	sp->head = id->val_off;
	sp->skip = id->val_end - id->val_off;
}

/* Inserts a first member (a whole `"id": N, `) right after the '{'. */
void
splice_id_insert(struct splice *sp)
{
	sp->head = 1;
	sp->skip = 0;
}

/*
 * Removes the id member with its comma. Returns -1 when it is the only
 * member, which no reply or command can be.
 */
int
splice_id_remove(const struct qmp_msg *msg, const struct qmp_member *id,
    struct splice *sp)
{
	size_t	i = id - msg->members;

	if (msg->nmembers < 2)
		return -1;
	if (i > 0) {
		/* From the end of the previous value: `, "id": 5`. */
		sp->head = msg->members[i - 1].val_end;
		sp->skip = id->val_end - sp->head;
	} else {
		/* Up to the next key: `"id": 5, `. */
		sp->head = id->key_off;
		sp->skip = msg->members[1].key_off - id->key_off;
	}
	return 0;
}

/* Appends the message p (len bytes) to b with the splice applied. */
void
splice_apply(struct buf *b, const char *p, size_t len,
    const struct splice *sp, const char *ins, size_t inslen)
{
	buf_add(b, p, sp->head);
	buf_add(b, ins, inslen);
	buf_add(b, p + sp->head + sp->skip, len - sp->head - sp->skip);
}
