/*
 * fuzz-rules.c: the rule-file parser and the matcher. The input is a rule
 * file; when it loads, a fixed set of requests, plain, in a transaction
 * and through HMP, is decided by it.
 */
#include <sys/mman.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "qbranch.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static const char *const handlers[] = {
	"savevm", "loadvm", "delvm", "info-snapshots", "snapshot-save",
	"snapshot-load", "snapshot-delete", NULL
};

static const char *const requests[] = {
	"{\"execute\": \"query-status\"}",
	"{\"execute\": \"stop\"}",
	"{\"execute\": \"blockdev-del\", \"arguments\": {\"node-name\": "
	    "\"vda\"}}",
	"{\"execute\": \"transaction\", \"arguments\": {\"actions\": ["
	    "{\"type\": \"blockdev-snapshot-sync\", \"data\": {\"node-name\": "
	    "\"vda\", \"snapshot-file\": \"/x\"}}, {\"type\": 5}]}}",
	"{\"execute\": \"human-monitor-command\", \"arguments\": "
	    "{\"command-line\": \"  s\"}}",
	"{\"execute\": \"human-monitor-command\", \"arguments\": "
	    "{\"command-line\": \"savevm/a \\\"b c\\\"\"}}",
	"{\"execute\": \"device_add\", \"arguments\": {\"driver\": "
	    "\"virtio-blk\", \"id\": [1, {\"a\": null}]}}",
};

static void
decide(struct rule_set *set, json_t *req, unsigned uid)
{
	struct rule_subject	*subjects;
	struct rule_decision	 d;
	struct rule_peer	 peer = { uid, uid, "/run/qbranchd/vm.sock" };
	json_t			*args = json_object_get(req, "arguments");
	const char		*name;
	char			**names;
	size_t			 n, i;

	name = json_string_value(json_object_get(req, "execute"));
	n = rules_count_subjects(name, args);
	subjects = calloc(n, sizeof *subjects);
	names = calloc(n, sizeof *names);
	n = rules_subjects(name, args, subjects, names);
	(void)rules_need_args(set, name);
	rules_decide(set, subjects, n, &peer, &d);
	rules_decision_clear(&d);
	for (i = 1; i < n; i++)
		free(names[i]);
	free(names);
	free(subjects);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct rule_set	*set;
	json_t		*req;
	char		 path[64], *cause;
	size_t		 i;
	int		 fd;

	/* rules_load() reads a path: an in-memory file has one. */
	if ((fd = memfd_create("rules", MFD_CLOEXEC)) == -1)
		abort();
	if (write(fd, data, size) != (ssize_t)size)
		abort();
	snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
	if ((set = rules_load(path, handlers, &cause)) == NULL)
		free(cause);
	else {
		for (i = 0; i < sizeof requests / sizeof requests[0]; i++) {
			req = json_loads(requests[i], 0, NULL);
			decide(set, req, 0);
			decide(set, req, 1000);
			json_decref(req);
		}
		rules_free(set);
	}
	close(fd);
	return 0;
}
