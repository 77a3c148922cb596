"""Render a clt_gen ``report.html`` in headless Chromium at a laptop width.

    python docs/screenshot_report.py runs/demo/report.html --out runs/demo/first-screen.png

Needs Debian's ``chromium`` (``apt-get install -y chromium``). The first screen (the
window height) is what a reader sees before scrolling; ``--full`` renders the whole page.
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import subprocess
import sys


def screenshot(html: pathlib.Path, out: pathlib.Path, width: int, height: int) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        sys.exit("chromium not found: apt-get install -y chromium")
    cmd = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        f"--window-size={width},{height}",
        f"--screenshot={out.resolve()}",
        html.resolve().as_uri(),
    ]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("html", type=pathlib.Path)
    ap.add_argument("--out", type=pathlib.Path, default=pathlib.Path("report.png"))
    ap.add_argument("--width", type=int, default=1366)
    ap.add_argument("--height", type=int, default=900)
    ap.add_argument("--full", action="store_true", help="the whole page, not the first screen")
    args = ap.parse_args()
    height = 12000 if args.full else args.height
    screenshot(args.html, args.out, args.width, height)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
