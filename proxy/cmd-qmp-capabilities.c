/*
 * cmd-qmp-capabilities.c: capabilities negotiation, per client. QEMU is
 * negotiated once by the proxy; each client negotiates with the proxy, which
 * answers exactly as QEMU would, argument errors included.
 */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "qbranch.h"

static void	cmd_qmp_capabilities_exec(struct client *, json_t *,
		    const char *, size_t);

const struct cmd_entry cmd_qmp_capabilities_entry = {
	.name = "qmp_capabilities",
	.flags = CMD_NEGOTIATION,
	.exec = cmd_qmp_capabilities_exec,
};

static void
cmd_qmp_capabilities_exec(struct client *c, json_t *args, const char *id,
    size_t idlen)
{
	json_t		*enable, *v;
	const char	*key;
	char		*desc = NULL;
	size_t		 i;
	int		 oob = 0;

	/* QEMU's input visitor: the known member first, then the rest. */
	if ((enable = json_object_get(args, "enable")) != NULL) {
		if (!json_is_array(enable)) {
			desc = xstrdup("Invalid parameter type for 'enable', "
			    "expected: array");
			goto fail;
		}
		json_array_foreach(enable, i, v) {
			if (!json_is_string(v)) {
				xasprintf(&desc, "Invalid parameter type for "
				    "'enable[%zu]', expected: string", i);
				goto fail;
			}
			if (strcmp(json_string_value(v), "oob") != 0) {
				/* Sic: QEMU 7.2 to 10.0 say 'null' here. */
				xasprintf(&desc, "Parameter 'null' does not "
				    "accept value '%s'", json_string_value(v));
				goto fail;
			}
			oob = 1;
		}
	}
	json_object_foreach(args, key, v) {
		if (strcmp(key, "enable") != 0) {
			xasprintf(&desc, "Parameter '%s' is unexpected", key);
			goto fail;
		}
	}
	if (c->state == CLIENT_COMMAND) {
		client_send_error(c, "CommandNotFound", "Capabilities "
		    "negotiation is already complete, command ignored", id,
		    idlen);
		return;
	}
	if (oob && !upstream_has_oob()) {
		desc = xstrdup("Capability oob not available");
		goto fail;
	}
	c->state = CLIENT_COMMAND;
	if (oob)
		c->flags |= CLIENT_OOB;
	client_reply_local(c, qmp_return_reply("{}", id, idlen));
	return;
fail:
	client_send_error(c, "GenericError", desc, id, idlen);
	free(desc);
}
