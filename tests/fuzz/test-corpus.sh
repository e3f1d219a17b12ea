#!/bin/sh
# Each fuzz harness, built with the plain driver, over its corpus: the
# seeds and every input that once crashed it. TAP, one point per file.
top=${srcdir:-.}
n=0
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for h in qmp rules tree; do
	for f in "$top/tests/fuzz/corpus/$h"/*; do
		[ -f "$f" ] || continue
		n=$((n + 1))
		if ./tests/fuzz/fuzz-$h "$f" >"$out" 2>&1 &&
		    grep -q '^ok 1 ' "$out"; then
			echo "ok $n - fuzz-$h: ${f##*/}"
		else
			echo "not ok $n - fuzz-$h: ${f##*/}"
			sed 's/^/# /' "$out"
		fi
	done
done
echo "1..$n"
