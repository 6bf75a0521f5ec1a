#!/bin/bash
# Copy agent/src production code (tests excluded) into $2 for measurement.
# Excluded: files named tests.rs, *_tests.rs, testutil.rs, files under tests/ dirs,
# and inline `#[cfg(test)] mod NAME {` blocks (from that line to the end of the block by brace depth).
src=$1; out=$2
rm -rf "$out"; mkdir -p "$out"
cd "$src"
find . -name '*.rs' | while read f; do
  case "$f" in */tests.rs|*_tests.rs|*/testutil.rs|*/tests/*) continue;; esac
  mkdir -p "$out/$(dirname $f)"
  python3 - "$f" "$out/$f" <<'PY'
import sys,re
src=open(sys.argv[1]).read().split('\n')
out=[];i=0
while i<len(src):
    l=src[i]
    if l.strip()=='#[cfg(test)]' and i+1<len(src) and re.match(r'\s*(pub(\(.*\))?\s+)?mod\s+\w+\s*\{',src[i+1]):
        depth=0;j=i+1
        while j<len(src):
            depth+=src[j].count('{')-src[j].count('}')
            j+=1
            if depth<=0: break
        i=j;continue
    out.append(l);i+=1
open(sys.argv[2],'w').write('\n'.join(out))
PY
done
