"""The browser side: JsSIP bundled from node_modules with esbuild, served on loopback, driven in headless Chromium.

The page (rig/web/phone.html + phone.js) is a small JsSIP softphone; tests
drive ``window.phone`` through Playwright with Debian's Chromium (never a
downloaded browser), fake audio devices, and the rig's self-signed
certificate accepted.
"""

from __future__ import annotations

import functools
import http.server
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Optional

from .gateway import REPO

WEB = Path(__file__).resolve().parent / "web"
NODE_MODULES = REPO / "node_modules"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--ignore-certificate-errors",
    "--allow-loopback-in-peer-connection",
    "--autoplay-policy=no-user-gesture-required",
    "--no-sandbox",
]


class MissingTool(RuntimeError):
    pass


def bundle_jssip(folder: Path) -> Path:
    """node_modules/jssip (CommonJS) as one browser script, window.JsSIP."""
    entry = NODE_MODULES / "jssip" / "lib" / "JsSIP.js"
    esbuild = NODE_MODULES / ".bin" / "esbuild"
    if not entry.exists() or not esbuild.exists():
        raise MissingTool("jssip/esbuild not in node_modules (bin/setup runs npm ci)")
    target = folder / "jssip.js"
    subprocess.run(
        [str(esbuild), str(entry), "--bundle", "--format=iife", "--global-name=JsSIP", f"--outfile={target}",
         "--log-level=warning"],
        check=True, timeout=60, capture_output=True,
    )  # fmt: skip
    return target


def site(folder: Path) -> Path:
    """The pages in ``folder``: phone.html + phone.js + jssip.js (JsSIP), sipjs.html + sipjs/ (SIP.js as shipped)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("phone.html", "phone.js", "sipjs.html"):
        shutil.copy(WEB / name, folder / name)
    bundle_jssip(folder)
    sipjs = NODE_MODULES / "sip.js" / "lib"
    if not sipjs.is_dir():
        raise MissingTool("sip.js not in node_modules (bin/setup runs npm ci)")
    shutil.copytree(sipjs, folder / "sipjs", dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.d.ts"))
    return folder


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


class Server:
    """A static HTTP server on 127.0.0.1 (a page on loopback is a secure context for getUserMedia)."""

    def __init__(self, folder: Path, port: int = 0) -> None:
        handler = functools.partial(_Quiet, directory=str(folder))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.port = int(self.httpd.server_address[1])
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="web", daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/phone.html"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=2)


def chromium_path() -> Optional[str]:
    return CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
