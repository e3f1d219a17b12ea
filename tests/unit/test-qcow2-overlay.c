/*
 * test-qcow2-overlay.c: the overlays qbranchd writes itself. The header
 * fields are checked byte by byte; then, with qemu-img and qemu-io at hand
 * (QBRANCH_QEMU_IMG, QBRANCH_QEMU_IO, else from PATH), real images are
 * checked by QEMU itself: qemu-img check finds no error, qemu-img info
 * reports what qemu-img create would, and data reads through to the
 * backing image and writes land in the overlay.
 */
#include <sys/stat.h>

#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "qbranch.h"
#include "tap.h"

#define MiB	(UINT64_C(1) << 20)
#define TiB	(UINT64_C(1) << 40)

static char	dir[] = "/tmp/qb-qcow2.XXXXXX";

static uint64_t
get(const unsigned char *p, int n)
{
	uint64_t	v = 0;
	int		i;

	for (i = 0; i < n; i++)
		v = v << 8 | p[i];
	return v;
}

static const char *
tool(const char *env, const char *name)
{
	const char	*v = getenv(env);

	return v != NULL && *v != '\0' ? v : name;
}

/* Runs a shell command; returns its exit status, output in out. */
static int
run(char *out, size_t outlen, const char *fmt, ...)
{
	va_list	 ap;
	char	*cmd;
	FILE	*f;
	size_t	 n = 0;
	int	 status;

	va_start(ap, fmt);
	if (vasprintf(&cmd, fmt, ap) == -1)
		return -1;
	va_end(ap);
	if ((f = popen(cmd, "r")) == NULL) {
		free(cmd);
		return -1;
	}
	if (out != NULL)
		n = fread(out, 1, outlen - 1, f);
	else {
		char	sink[4096];

		while (fread(sink, 1, sizeof sink, f) > 0)
			;
	}
	if (out != NULL)
		out[n] = '\0';
	status = pclose(f);
	free(cmd);
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* Writes an overlay as qbranchd does: the head, then zeros to the end. */
static int
write_overlay(const char *path, uint64_t size, const char *backing,
    const char *fmt)
{
	unsigned char	*head;
	size_t		 len;
	uint64_t	 file_len;
	char		*cause;
	int		 fd, ret = -1;

	if (qcow2_overlay_build(size, backing, fmt, &head, &len, &file_len,
	    &cause) == -1) {
		diag("%s", cause);
		free(cause);
		return -1;
	}
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
	if (fd != -1 && write(fd, head, len) == (ssize_t)len &&
	    ftruncate(fd, file_len) == 0)
		ret = 0;
	if (fd != -1)
		close(fd);
	free(head);
	return ret;
}

static void
test_header(void)
{
	unsigned char	*h;
	size_t		 len;
	uint64_t	 file_len, off;
	char		*cause;
	const char	*backing = "/var/lib/vm/disk.qcow2";

	ok(qcow2_overlay_build(64 * MiB, backing, "qcow2", &h, &len,
	    &file_len, &cause) == 0, "64 MiB overlay builds");
	ok(memcmp(h, "QFI\xfb", 4) == 0, "magic");
	ok(get(h + 4, 4) == 3, "version 3");
	ok(get(h + 20, 4) == 16, "64 KiB clusters");
	ok(get(h + 24, 8) == 64 * MiB, "virtual size");
	ok(get(h + 32, 4) == 0, "not encrypted");
	ok(get(h + 36, 4) == 1, "one L1 entry covers 64 MiB");
	ok(get(h + 40, 8) == 3 * 65536, "L1 table in cluster 3");
	ok(get(h + 48, 8) == 65536 && get(h + 56, 4) == 1,
	    "refcount table: cluster 1, one cluster");
	ok(get(h + 60, 4) == 0 && get(h + 72, 8) == 0,
	    "no snapshots, no incompatible features (not dirty)");
	ok(get(h + 96, 4) == 4 && get(h + 100, 4) == 112,
	    "16-bit refcounts, 112-byte header");
	ok(get(h + 112, 4) == 0xe2792aca && get(h + 116, 4) == 5 &&
	    memcmp(h + 120, "qcow2", 5) == 0,
	    "backing format extension says qcow2");
	ok(get(h + 128, 8) == 0, "end of extensions");
	off = get(h + 8, 8);
	ok(get(h + 16, 4) == strlen(backing) &&
	    memcmp(h + off, backing, strlen(backing)) == 0 &&
	    off + strlen(backing) <= 65536, "backing name in cluster 0");
	ok(get(h + 65536, 8) == 2 * 65536, "refcount block in cluster 2");
	ok(get(h + 2 * 65536, 2) == 1 && get(h + 2 * 65536 + 6, 2) == 1 &&
	    get(h + 2 * 65536 + 8, 2) == 0,
	    "clusters 0-3 counted once, nothing after");
	ok(file_len == 4 * 65536 && len == 3 * 65536,
	    "file of four clusters");
	free(h);

	ok(qcow2_overlay_build(5 * TiB, backing, "raw", &h, &len, &file_len,
	    &cause) == 0, "5 TiB overlay builds");
	ok(get(h + 36, 4) == 10240 && file_len == 5 * 65536,
	    "its L1 table takes two clusters");
	ok(get(h + 2 * 65536 + 8, 2) == 1 && get(h + 2 * 65536 + 10, 2) == 0,
	    "both L1 clusters counted");
	free(h);
}

static void
test_refused(void)
{
	unsigned char	*h;
	size_t		 len;
	uint64_t	 file_len;
	char		*cause = NULL, name[1100];

	ok(qcow2_overlay_build(0, "/a", "qcow2", &h, &len, &file_len,
	    &cause) == -1 && cause != NULL && h == NULL, "size 0 refused");
	free(cause);
	memset(name, 'a', sizeof name - 1);
	name[0] = '/';
	name[sizeof name - 1] = '\0';
	cause = NULL;
	ok(qcow2_overlay_build(MiB, name, "qcow2", &h, &len, &file_len,
	    &cause) == -1 && cause != NULL,
	    "backing name over 1023 bytes refused: %s", cause);
	free(cause);
	cause = NULL;
	ok(qcow2_overlay_build(MiB, "/a", "", &h, &len, &file_len,
	    &cause) == -1 && cause != NULL, "empty format refused");
	free(cause);
}

static int
has(const char *out, const char *text)
{
	return strstr(out, text) != NULL;
}

/* The overlay as QEMU sees it, over a base of format fmt. */
static void
test_with_qemu(const char *fmt, uint64_t size)
{
	const char	*img = tool("QBRANCH_QEMU_IMG", "qemu-img");
	const char	*io = tool("QBRANCH_QEMU_IO", "qemu-io");
	char		 basepath[256], over[256], out[8192], want[64];

	snprintf(basepath, sizeof basepath, "%s/base-%s-%" PRIu64, dir, fmt, size);
	snprintf(over, sizeof over, "%s/over-%s-%" PRIu64, dir, fmt, size);
	ok(run(NULL, 0, "%s create -q -f %s %s %" PRIu64 " 2>&1", img, fmt,
	    basepath, size) == 0, "%s base of %" PRIu64 " bytes", fmt, size);
	ok(run(NULL, 0, "%s -f %s -c 'write -P 0x5a 0 64k' -c "
	    "'write -P 0xa5 1m 4k' %s >/dev/null 2>&1", io, fmt, basepath) == 0,
	    "patterns written to the base");
	ok(write_overlay(over, size, basepath, fmt) == 0, "overlay written");
	ok(run(out, sizeof out, "%s check %s 2>&1", img, over) == 0,
	    "qemu-img check: no errors (%s)", strtok(out, "\n"));
	ok(run(out, sizeof out, "%s info --output=json %s 2>&1", img,
	    over) == 0, "qemu-img info");
	snprintf(want, sizeof want, "\"virtual-size\": %" PRIu64, size);
	ok(has(out, want), "info: %s", want);
	ok(has(out, "\"format\": \"qcow2\"") &&
	    has(out, "\"cluster-size\": 65536") &&
	    has(out, "\"compat\": \"1.1\"") &&
	    has(out, "\"refcount-bits\": 16") &&
	    has(out, "\"corrupt\": false"),
	    "info: qcow2 v3, 64 KiB clusters, 16-bit refcounts, not corrupt");
	ok(has(out, "\"backing-filename\": \"") && has(out, basepath),
	    "info: backing file is the base");
	snprintf(want, sizeof want, "\"backing-filename-format\": \"%s\"",
	    fmt);
	ok(has(out, want), "info: %s", want);
	ok(run(NULL, 0, "%s -c 'read -P 0x5a 0 64k' -c 'read -P 0xa5 1m 4k' "
	    "-c 'read -P 0 64k 64k' %s 2>&1 | grep -q 'Pattern verification "
	    "failed'", io, over) != 0 &&
	    run(NULL, 0, "%s -c 'read -P 0x5a 0 64k' %s >/dev/null 2>&1", io,
	    over) == 0, "the base's data reads through the overlay");
	ok(run(NULL, 0, "%s -c 'write -P 0x33 0 4k' %s >/dev/null 2>&1", io,
	    over) == 0 &&
	    run(out, sizeof out, "%s -c 'read -P 0x33 0 4k' -c 'read -P 0x5a "
	    "4k 60k' %s 2>&1", io, over) == 0 &&
	    !has(out, "verification failed"),
	    "a write lands in the overlay over the base's data");
	ok(run(out, sizeof out, "%s -f %s -c 'read -P 0x5a 0 64k' %s 2>&1",
	    io, fmt, basepath) == 0 && !has(out, "verification failed"),
	    "the base is untouched");
	ok(run(out, sizeof out, "%s check %s 2>&1", img, over) == 0,
	    "qemu-img check after the write: no errors");
}

/* A standalone image (a state image): no backing, checked by QEMU. */
static void
test_standalone(void)
{
	const char	*img = tool("QBRANCH_QEMU_IMG", "qemu-img");
	const char	*io = tool("QBRANCH_QEMU_IO", "qemu-io");
	unsigned char	*h;
	size_t		 len;
	uint64_t	 file_len;
	char		*cause, path[256], out[8192];

	ok(qcow2_overlay_build(MiB, NULL, NULL, &h, &len, &file_len,
	    &cause) == 0, "standalone 1 MiB image builds");
	ok(get(h + 8, 8) == 0 && get(h + 16, 4) == 0,
	    "no backing file");
	ok(get(h + 112, 4) == 0, "no extensions");
	free(h);
	snprintf(path, sizeof path, "%s/state", dir);
	ok(write_overlay(path, MiB, NULL, NULL) == 0, "state image written");
	ok(run(out, sizeof out, "%s check %s 2>&1", img, path) == 0,
	    "qemu-img check: no errors (%s)", strtok(out, "\n"));
	ok(run(out, sizeof out, "%s info --output=json %s 2>&1", img,
	    path) == 0 && !has(out, "backing-filename") &&
	    has(out, "\"virtual-size\": 1048576"), "info: 1 MiB, no backing");
	ok(run(out, sizeof out, "%s -c 'read -P 0 0 1m' %s 2>&1", io,
	    path) == 0 && !has(out, "verification failed"), "reads zeros");
}

int
main(void)
{
	char	out[256];

	test_header();
	test_refused();
	if (run(out, sizeof out, "%s --version 2>&1",
	    tool("QBRANCH_QEMU_IMG", "qemu-img")) != 0) {
		diag("no qemu-img: the images are not checked by QEMU");
		ok(0, "qemu-img is needed to check the images");
		return tap_done();
	}
	if (mkdtemp(dir) == NULL) {
		ok(0, "mkdtemp");
		return tap_done();
	}
	test_with_qemu("qcow2", 64 * MiB);
	test_with_qemu("raw", 64 * MiB);
	test_with_qemu("qcow2", 5 * TiB);
	test_with_qemu("qcow2", 64 * MiB + 512);
	test_standalone();
	run(NULL, 0, "rm -rf %s", dir);
	return tap_done();
}
