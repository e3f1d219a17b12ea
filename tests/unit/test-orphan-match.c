/*
 * test-orphan-match.c: the names qbranch gives the files it makes, as the
 * search of orphans recognises them, and where a qcow2 header keeps its
 * backing file's name; checked against a header qcow2_overlay_build()
 * writes, as qbranchd's own overlays are.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "qbranch.h"
#include "tap.h"

static const struct {
	const char	*name;
	const char	*stem;
	int		 want;
} images[] = {
	{ "vm.s1", "vm", 1 },
	{ "vm.s1-1", "vm", 1 },
	{ "vm.s1-12", "vm", 1 },
	{ "vm.vm-20261122041500", "vm", 1 },
	{ "vm.a.b_c+d", "vm", 1 },
	{ "vm.qcow2", "vm", 1 },	/* a name as good as any */
	{ "vm.disk.s1", "vm.disk", 1 },
	{ "vm.disk.s1", "vm", 1 },
	{ "vm", "vm", 0 },
	{ "vm.", "vm", 0 },
	{ "vm.-s1", "vm", 0 },
	{ "vm._s1", "vm", 0 },
	{ "vm.s 1", "vm", 0 },
	{ "vm.s/1", "vm", 0 },
	{ "vm.sé", "vm", 0 },
	{ "vm-s1", "vm", 0 },
	{ "vmx.s1", "vm", 0 },
	{ "another-disk.qcow2", "vm", 0 },
	{ "foo.txt", "vm", 0 },
	{ "vm.s1", "", 0 },
	{ "vm.s1", "vm.s1", 0 },
	/* 64 characters, a dash and 10 digits: the longest revert name */
	{ "vm.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	    "-1234567890", "vm", 1 },
	{ "vm.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	    "-12345678901", "vm", 0 },
};

static const struct {
	const char	*name;
	int		 want;
} memories[] = {
	{ "snapshot-s1.state", 1 },
	{ "snapshot-s1.2.state", 1 },
	{ "branch-main.state", 1 },
	{ "snapshot-s1.ram0.ram", 1 },
	{ "branch-s1-1.3.pc.ram.ram", 1 },
	{ "snapshot-.state", 0 },
	{ "snapshot-s1.stat", 0 },
	{ "snapshot-s1", 0 },
	{ "snap-s1.state", 0 },
	{ "tree.json", 0 },
	{ "tree.journal", 0 },
	{ "notes.txt", 0 },
	{ "snapshot-s 1.state", 0 },
	{ "branch-.ram", 0 },
	{ ".state", 0 },
};

static void
put(unsigned char *p, uint64_t v, int n)
{
	while (n-- > 0) {
		p[n] = v & 0xff;
		v >>= 8;
	}
}

int
main(void)
{
	unsigned char	 head[128], *built;
	size_t		 i, len;
	uint64_t	 off, file_len;
	uint32_t	 size;
	char		*cause;

	for (i = 0; i < sizeof images / sizeof images[0]; i++)
		ok(orphan_name_is_image(images[i].name, images[i].stem) ==
		    images[i].want, "image name %s, stem %s: %s",
		    images[i].name, images[i].stem, images[i].want ? "yes" :
		    "no");
	for (i = 0; i < sizeof memories / sizeof memories[0]; i++)
		ok(orphan_name_is_memory(memories[i].name) == memories[i].want,
		    "memory name %s: %s", memories[i].name, memories[i].want ?
		    "yes" : "no");

	/* qbranchd's own overlay header. */
	if (qcow2_overlay_build(64 << 20, "/img/vm.qcow2", "qcow2", &built,
	    &len, &file_len, &cause) == -1) {
		ok(0, "qcow2_overlay_build: %s", cause);
		free(cause);
	} else {
		ok(orphan_qcow2_backing(built, len, &off, &size) == 1 &&
		    size == strlen("/img/vm.qcow2") && off + size <= len &&
		    memcmp(built + off, "/img/vm.qcow2", size) == 0,
		    "an overlay qbranchd writes: qcow2, backing file found");
		free(built);
	}

	memset(head, 0, sizeof head);
	memcpy(head, "QFI\xfb", 4);
	put(head + 4, 3, 4);
	ok(orphan_qcow2_backing(head, sizeof head, &off, &size) == 1 &&
	    off == 0 && size == 0, "qcow2 without a backing file");
	put(head + 8, 104, 8);
	put(head + 16, 9, 4);
	ok(orphan_qcow2_backing(head, sizeof head, &off, &size) == 1 &&
	    off == 104 && size == 9, "qcow2 v3 with a backing file");
	put(head + 4, 2, 4);
	ok(orphan_qcow2_backing(head, sizeof head, &off, &size) == 1 &&
	    off == 104 && size == 9, "qcow2 v2 with a backing file");
	ok(orphan_qcow2_backing(head, ORPHAN_QCOW2_HEAD - 1, &off, &size) ==
	    0, "a header cut short is not qcow2");
	put(head + 4, 4, 4);
	ok(orphan_qcow2_backing(head, sizeof head, &off, &size) == 0,
	    "version 4 is not read");
	put(head + 4, 3, 4);
	put(head + 16, 1024, 4);
	ok(orphan_qcow2_backing(head, sizeof head, &off, &size) == 0,
	    "a backing name longer than QEMU allows");
	put(head + 16, 9, 4);
	put(head + 8, 16, 8);
	ok(orphan_qcow2_backing(head, sizeof head, &off, &size) == 0,
	    "a backing name inside the header");
	head[0] = 'X';
	ok(orphan_qcow2_backing(head, sizeof head, &off, &size) == 0,
	    "no magic, not qcow2");
	return tap_done();
}
