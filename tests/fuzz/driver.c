/*
 * driver.c: runs a fuzz harness over the files it is given, without
 * libFuzzer: how the seed corpora and every crash once found run as
 * regression tests in an ordinary build. Prints TAP, one point per file.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

int
main(int argc, char **argv)
{
	FILE	*f;
	uint8_t	*data;
	long	 len;
	int	 i;

	printf("1..%d\n", argc - 1);
	for (i = 1; i < argc; i++) {
		if ((f = fopen(argv[i], "rb")) == NULL ||
		    fseek(f, 0, SEEK_END) == -1 || (len = ftell(f)) < 0 ||
		    fseek(f, 0, SEEK_SET) == -1) {
			printf("not ok %d - %s: cannot read\n", i, argv[i]);
			if (f != NULL)
				fclose(f);
			continue;
		}
		data = malloc(len > 0 ? len : 1);
		if (data == NULL || fread(data, 1, len, f) != (size_t)len) {
			printf("not ok %d - %s: cannot read\n", i, argv[i]);
			free(data);
			fclose(f);
			continue;
		}
		fclose(f);
		LLVMFuzzerTestOneInput(data, len);
		free(data);
		/* Reached only if it did not crash. */
		printf("ok %d - %s\n", i, argv[i]);
	}
	return 0;
}
