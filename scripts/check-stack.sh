#!/usr/bin/env bash
# Fail if any function of a built module has a stack frame over the kernel's CONFIG_FRAME_WARN
# (2048 bytes on 64-bit). rustc has no -Wframe-larger-than, and a Rust value built on the
# stack and moved a few times (a struct returned by value) can silently take a 16 KiB kernel
# stack: the non-debug kernel then hits the stack guard page, while the debug kernel (KASAN
# doubles the stack) does not. Read from the `sub $N,%rsp` of each function's prologue.
# usage: scripts/check-stack.sh <module.ko> [limit]
set -euo pipefail
ko=${1:?usage: $0 <module.ko> [limit]}
limit=${2:-2048}
objdump -d --no-show-raw-insn "$ko" | perl -e '
  my ($limit, $worst, $wf, $bad) = (shift, 0, "", 0);
  while (<STDIN>) {
    $f = $1 if /^[0-9a-f]+ <(.*)>:$/;
    next unless /sub\s+\$0x([0-9a-f]+),%rsp/;
    my $v = hex($1);
    ($worst, $wf) = ($v, $f) if $v > $worst;
    if ($v > $limit) { print "stack frame of $v bytes (limit $limit): $f\n"; $bad = 1 }
  }
  print "stack: largest frame $worst bytes ($wf)\n";
  exit $bad;' "$limit"
