"""Print the size of fp.js raw, minified and minified+gzipped; exit 1 at or over the 2 KB budget.

Run: `.venv/bin/python bench/tracker_size.py`
"""

from __future__ import annotations

import sys

from firstparty.tracker import serve


def main() -> int:
    bundle = serve.build()
    gzipped = len(bundle.gzipped)
    print(f"fp.js raw:               {bundle.raw_size:6d} bytes")
    print(f"fp.js minified:          {len(bundle.minified):6d} bytes")
    print(f"fp.js minified+gzipped:  {gzipped:6d} bytes (budget < {serve.LIMIT_GZIPPED})")
    print(f"versioned path:          {bundle.path}")
    if gzipped >= serve.LIMIT_GZIPPED:
        print("FAIL: fp.js is over its size budget", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
