#!/usr/bin/env bash
# Documentation/ is reStructuredText (the kernel's form): every file must parse with
# docutils without a warning (broken tables, bad indentation, unknown roles, dangling
# references), and every file but index.rst must be in index.rst's toctree.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python3 -c 'import docutils' 2>/dev/null; then
    if command -v apt-get >/dev/null; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-docutils >/dev/null ||
            { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-docutils >/dev/null; }
    fi
fi
python3 - <<'PY'
import glob, io, sys
import docutils.core, docutils.utils
bad = 0
for f in sorted(glob.glob("Documentation/*.rst")):
    err = io.StringIO()
    # toctree is Sphinx's: docutils alone does not know it.
    text = open(f).read().replace(".. toctree::", ".. note::").replace("   :maxdepth: 2\n", "")
    docutils.core.publish_doctree(text, source_path=f, settings_overrides={
        "report_level": 2, "halt_level": 5, "warning_stream": err})
    if err.getvalue():
        bad += 1
        print(err.getvalue(), end="")
idx = open("Documentation/index.rst").read()
for f in sorted(glob.glob("Documentation/*.rst")):
    name = f.split("/")[-1][:-4]
    if name != "index" and f"\n   {name}\n" not in idx:
        bad += 1
        print(f"{f}: not in Documentation/index.rst's toctree")
print(f"docs: {len(glob.glob('Documentation/*.rst'))} files, {'FAIL' if bad else 'ok'}")
sys.exit(1 if bad else 0)
PY
