#!/usr/bin/env bash
# The dependency locks: constraints.txt (.venv) and constraints-paddle.txt (.venv-paddle), every version
# `make install`, `make install-paddle` and CI install.
#
#   scripts/refresh_lock.sh          resolve the newest versions pyproject.toml allows (torch stays at
#                                    its pin), install .venv's set into a throw-away venv layered over
#                                    .venv and run the stop tests against it; the locks are left as they
#                                    are (CI runs this, so a release that breaks a stop is caught early)
#   scripts/refresh_lock.sh --write  the same, then write the new sets into the locks; before committing
#                                    them, rebuild (rm .venv/.installed && make install) and run
#                                    `make test test-slow test-paddle`
#
# Needs `make install` first: the layered venv reuses .venv's torch and every unchanged package.
set -euo pipefail
cd "$(dirname "$0")/.."
write=false
case "${1:-}" in
  --write) write=true ;;
  "") ;;
  *) echo "usage: $0 [--write]" >&2; exit 2 ;;
esac
base=.venv
[ -x "$base/bin/python" ] || { echo "$0: no $base; run make install first" >&2; exit 2; }
work=$(mktemp -d "${TMPDIR:-/tmp}/skinforge-lock.XXXXXX")
trap 'rm -rf "$work"' EXIT
grep -E '^torch==' constraints.txt > "$work/torch.txt"

# resolve EXTRAS OUT HEADER_FILE: the newest allowed versions of the project's closure with EXTRAS.
resolve() {
  "$base/bin/python" -m pip install --quiet --dry-run --ignore-installed --report "$work/report.json" \
    -c "$work/torch.txt" -e ".[$1]"
  "$base/bin/python" - "$work/report.json" "$2" "$3" <<'PY'
import json
import re
import sys
from pathlib import Path

report, out, header = sys.argv[1:]
pins = {}
for item in json.loads(Path(report).read_text(encoding="utf-8"))["install"]:
    name, version = item["metadata"]["name"], item["metadata"]["version"]
    if name.lower() != "skinforge":
        pins[re.sub(r"[-_.]+", "-", name).lower()] = version.split("+")[0]  # torch's +cpu build tag
lines = "".join(f"{name}=={pins[name]}\n" for name in sorted(pins))
Path(out).write_text(Path(header).read_text(encoding="utf-8") + lines, encoding="utf-8")
PY
}
# The locks' headers are kept as they are.
grep '^#' constraints.txt > "$work/header.txt"
grep '^#' constraints-paddle.txt > "$work/header-paddle.txt"
echo "refresh_lock: resolving the newest allowed versions ($(cat "$work/torch.txt"))"
resolve "dev,serve,ray,docs" "$work/constraints.txt" "$work/header.txt"
resolve "dev,paddle" "$work/constraints-paddle.txt" "$work/header-paddle.txt"
echo "refresh_lock: changes against the locks (< locked, > newest):"
diff <(grep -v '^#' constraints.txt) <(grep -v '^#' "$work/constraints.txt") || true
diff <(grep -v '^#' constraints-paddle.txt) <(grep -v '^#' "$work/constraints-paddle.txt") || true

echo "refresh_lock: installing .venv's set over $base into a throw-away venv"
"$base/bin/python" -m venv "$work/venv"
site=$("$work/venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
base_site=$("$base/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
# Read after the venv's own site-packages, so what is installed here wins over .venv's copy.
echo "import site; site.addsitedir('$(realpath "$base_site")')" > "$site/zz-skinforge-base.pth"
"$work/venv/bin/python" -m pip install --quiet -c "$work/constraints.txt" -e ".[dev,serve,ray,docs]"
# The tests start `accelerate` from the venv's bin/, which has it only if it was installed here.
"$work/venv/bin/python" -m pip install --quiet --force-reinstall --no-deps \
  "$(grep -E '^accelerate==' "$work/constraints.txt")"
"$work/venv/bin/python" -m pip check

echo "refresh_lock: the stop tests against the newest versions"
OMP_NUM_THREADS=1 "$work/venv/bin/python" -m pytest -q -p no:cacheprovider tests/test_stop_signals.py
if $write; then
  cp "$work/constraints.txt" constraints.txt
  cp "$work/constraints-paddle.txt" constraints-paddle.txt
  echo "refresh_lock: wrote constraints.txt and constraints-paddle.txt"
fi
