/*
 * qcow2-overlay.c: the bytes of a new, empty qcow2 overlay over a backing
 * image. An overlay is four fixed structures, so the proxy writes it
 * itself instead of asking QEMU for two blockdev-create jobs and their
 * flushes: a snapshot costs one file write and one sync.
 *
 * The layout is what qemu-img makes (docs/interop/qcow2.txt, version 3,
 * 64 KiB clusters, 16-bit refcounts): cluster 0 the header with the backing
 * file's format and name, cluster 1 the refcount table, cluster 2 its one
 * refcount block, then the L1 table, all zero: every read falls through
 * to the backing image.
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "qbranch.h"

#define CLUSTER_BITS		16
#define CLUSTER_SIZE		(1u << CLUSTER_BITS)
#define L2_ENTRIES		(CLUSTER_SIZE / 8)
#define REFCOUNT_ORDER		4		/* 16-bit refcounts */
#define REFCOUNTS_PER_BLOCK	(CLUSTER_SIZE * 8 / (1u << REFCOUNT_ORDER))
#define HEADER_LENGTH		112
#define EXT_BACKING_FORMAT	0xe2792acau
#define BACKING_NAME_MAX	1023		/* the format's limit */

static void
put32(unsigned char *p, uint32_t v)
{
	p[0] = v >> 24;
	p[1] = v >> 16;
	p[2] = v >> 8;
	p[3] = v;
}

static void
put64(unsigned char *p, uint64_t v)
{
	put32(p, v >> 32);
	put32(p + 4, v);
}

/*
 * Builds the overlay for a disk of size bytes over backing (an absolute
 * path) in format backing_fmt, or a standalone empty image when backing is
 * NULL (a state image: snap-memory.c). *head gets the first clusters to write
 * (*head_len bytes); the file is then extended with zeros to *file_len.
 * Returns -1 with *cause when the arguments cannot make a valid image.
 */
int
qcow2_overlay_build(uint64_t size, const char *backing,
    const char *backing_fmt, unsigned char **head, size_t *head_len,
    uint64_t *file_len, char **cause)
{
	unsigned char	*h, *p;
	uint64_t	 l1_size, l1_clusters, nclusters, i;
	size_t		 blen, flen, ext_len, off;

	*head = NULL;
	if (size == 0 || size > (UINT64_C(1) << 56)) {
		xasprintf(cause, "cannot make an overlay of %" PRIu64
		    " bytes", size);
		return -1;
	}
	blen = backing != NULL ? strlen(backing) : 0;
	flen = backing != NULL ? strlen(backing_fmt) : 0;
	if (backing != NULL && (blen == 0 || blen > BACKING_NAME_MAX)) {
		xasprintf(cause, "backing file name of %zu bytes: qcow2 takes "
		    "1 to %d", blen, BACKING_NAME_MAX);
		return -1;
	}
	if (backing != NULL && (flen == 0 || flen > 16)) {
		xasprintf(cause, "unknown backing format '%s'", backing_fmt);
		return -1;
	}
	l1_size = (size + (uint64_t)CLUSTER_SIZE * L2_ENTRIES - 1) /
	    ((uint64_t)CLUSTER_SIZE * L2_ENTRIES);
	l1_clusters = (l1_size * 8 + CLUSTER_SIZE - 1) / CLUSTER_SIZE;
	nclusters = 3 + l1_clusters;
	if (nclusters > REFCOUNTS_PER_BLOCK) {
		xasprintf(cause, "cannot make an overlay of %" PRIu64
		    " bytes", size);
		return -1;
	}

	*head_len = 3 * CLUSTER_SIZE;
	h = xcalloc(1, *head_len);

	/* Cluster 0: the header, its extensions, the backing file name. */
	memcpy(h, "QFI\xfb", 4);
	put32(h + 4, 3);				/* version */
	ext_len = 8 + ((flen + 7) & ~(size_t)7) + 8;
	off = HEADER_LENGTH + ext_len;
	if (backing != NULL) {
		put64(h + 8, off);			/* backing_file_offset */
		put32(h + 16, blen);			/* backing_file_size */
	}
	put32(h + 20, CLUSTER_BITS);
	put64(h + 24, size);
	put32(h + 36, l1_size);
	put64(h + 40, (uint64_t)3 * CLUSTER_SIZE);	/* l1_table_offset */
	put64(h + 48, CLUSTER_SIZE);		/* refcount_table_offset */
	put32(h + 56, 1);			/* refcount_table_clusters */
	put32(h + 96, REFCOUNT_ORDER);
	put32(h + 100, HEADER_LENGTH);	/* byte 104: zlib compression */
	p = h + HEADER_LENGTH;
	if (backing != NULL) {
		put32(p, EXT_BACKING_FORMAT);
		put32(p + 4, flen);
		memcpy(p + 8, backing_fmt, flen);
		memcpy(h + off, backing, blen);
	}
	/* The end-of-extensions marker is the zeros that follow. */

	/* Cluster 1: the refcount table, one block. */
	put64(h + CLUSTER_SIZE, (uint64_t)2 * CLUSTER_SIZE);

	/* Cluster 2: every cluster of the file is used once. */
	p = h + 2 * CLUSTER_SIZE;
	for (i = 0; i < nclusters; i++) {
		p[2 * i] = 0;
		p[2 * i + 1] = 1;
	}

	*head = h;
	*file_len = nclusters * CLUSTER_SIZE;
	return 0;
}
