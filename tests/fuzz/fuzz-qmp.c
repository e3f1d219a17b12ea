/*
 * fuzz-qmp.c: the QMP framer and the request checks, on what a client may
 * send. The first byte picks the size of the pieces the rest arrives in,
 * so messages split at every point are framed too; every framed message
 * goes through request_parse() and its id, when it has one, is requoted.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "qbranch.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct qmp_framer	*fr;
	const struct qmp_msg	*msg;
	struct qmp_request	 req;
	struct buf		 b = { NULL, 0, 0 };
	char			*cause;
	size_t			 piece, off = 0, n, used;

	if (size == 0)
		return 0;
	piece = data[0] == 0 ? size : data[0];
	data++;
	size--;
	fr = qmp_framer_new(4096);
	while (off < size) {
		n = size - off < piece ? size - off : piece;
		used = qmp_framer_feed(fr, (const char *)data + off, n, &msg);
		/* The stream is the input: a message's bytes are in it. */
		if (msg != NULL && msg->start + msg->len <= size) {
			if (request_parse(msg, 1, &req, &cause) == -1)
				free(cause);
			if (req.id != NULL && req.id->val_end <= msg->len) {
				qmp_requote(&b, (const char *)data + msg->start +
				    req.id->val_off, req.id->val_end -
				    req.id->val_off);
				b.len = 0;
			}
		}
		off += used > 0 ? used : n;
	}
	buf_free(&b);
	qmp_framer_free(fr);
	return 0;
}
