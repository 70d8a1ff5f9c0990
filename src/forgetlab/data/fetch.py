"""Download a pinned file (name, version, filename, sha256 from artifacts.json) from the package index pip is
configured with, by its file name, and check its sha256. pip is never asked to download, so nothing depends on how a
pip version treats a package's metadata (pip >= 25 builds an sdist's metadata even with `--no-deps`, and refuses
bigbench 1.0.0's direct-URL dependency on bleurt).

The indexes are read from pip's own configuration (`pip config list`: PIP_INDEX_URL / PIP_EXTRA_INDEX_URL, the
`[download]` and `[global]` sections of the site, user and global files), default https://pypi.org/simple, then
pip's `find-links` folders. Each index's project page is read through the Simple API: JSON (PEP 691) when the
index offers it, else HTML (PEP 503); `file://` indexes and find-links folders are read from disk.

Downloads go to ${FORGETLAB_CACHE:-${XDG_CACHE_HOME:-~/.cache}/forgetlab}/downloads (a partial file never keeps
the final name) and are reused when their sha256 matches.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import ssl
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

from tqdm import tqdm

PYPI = "https://pypi.org/simple"
ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.1"
CHUNK = 1 << 20


def cache_dir() -> Path:
    """${FORGETLAB_CACHE:-${XDG_CACHE_HOME:-~/.cache}/forgetlab}/downloads"""
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    root = os.environ.get("FORGETLAB_CACHE") or Path(xdg) / "forgetlab"
    return Path(root).expanduser() / "downloads"


def sha256_file(path: str | Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def normalize(name: str) -> str:
    """PEP 503 project name normalization: runs of -, _ and . become one -, lower case."""
    return re.sub(r"[-_.]+", "-", name).lower()


# --------------------------------------------------------------------------------------------------------------------
# pip's configuration


def pip_config() -> dict[str, str]:
    """pip's effective settings as `pip config list` prints them ('section.key' -> value). Reading them through pip's
    command line (not its internals) works with every pip version; an unusable pip gives {} (so: PyPI)."""
    try:
        r = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    config = {}
    for line in r.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            config[key.strip()] = value.strip().strip("'\"")
    return config


def setting(config: dict[str, str], key: str) -> str | None:
    """One pip setting with pip's precedence for `pip download`: environment, then [download], then [global]."""
    for section in (":env:", "download", "global"):
        if f"{section}.{key}" in config:
            return config[f"{section}.{key}"]
    return None


def timeout_of(config: dict[str, str]) -> float:
    """pip's network timeout in seconds (its `timeout` setting; pip's default 15 s is short for 358 MB: 60)."""
    return float(setting(config, "timeout") or setting(config, "default-timeout") or 60)


def sources(config: dict[str, str]) -> list[str]:
    """Where pip would look, in order: index-url (or PyPI), the extra index URLs, the find-links folders/pages.
    `no-index` drops the indexes, as in pip."""
    urls = []
    if (setting(config, "no-index") or "").lower() not in ("1", "true", "yes", "on"):
        urls.append(setting(config, "index-url") or PYPI)
        urls += (setting(config, "extra-index-url") or "").split()
    links = [("find-links", u) for u in (setting(config, "find-links") or "").split()]
    return [("index", u) for u in urls] + links


# --------------------------------------------------------------------------------------------------------------------
# reading an index


class _Links(HTMLParser):
    """The <a href> links of a PEP 503 page, with their text (the file name)."""

    def __init__(self):
        super().__init__()
        self.links, self._href, self._text = [], None, []

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self._href, self._text = dict(attrs).get("href"), []

    def handle_data(self, data):
        if self._href is not None:
            self._text.append(data)

    def handle_endtag(self, tag):
        if tag == "a" and self._href is not None:
            self.links.append((self._href, "".join(self._text).strip()))
            self._href = None


def _split_auth(url: str) -> tuple[str, dict[str, str]]:
    """An index URL may carry user:password@; urllib does not send it by itself."""
    parts = urllib.parse.urlsplit(url)
    if not parts.username:
        return url, {}
    token = base64.b64encode(f"{urllib.parse.unquote(parts.username)}:"
                             f"{urllib.parse.unquote(parts.password or '')}".encode()).decode()
    netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc)), {"Authorization": f"Basic {token}"}


def open_url(url: str, timeout: float, cafile: str | None, accept: str | None = None):
    """urlopen with pip's certificate bundle, credentials in the URL, and a folder's index.html for file:// URLs."""
    if url.startswith("file:"):
        path = Path(urllib.request.url2pathname(urllib.parse.urlsplit(url).path))
        if path.is_dir():
            url = (path / "index.html").as_uri()
    url, headers = _split_auth(url)
    if accept:
        headers["Accept"] = accept
    context = ssl.create_default_context(cafile=cafile) if cafile and url.startswith("https:") else None
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout, context=context)


def project_files(index: str, name: str, timeout: float, cafile: str | None) -> dict[str, tuple[str, str | None]]:
    """{filename: (absolute url, sha256 or None)} on one index's page for a project (PEP 691 JSON or PEP 503 HTML).
    Raises urllib.error.URLError/OSError when the page cannot be read (HTTPError 404: the project is not there)."""
    page = index.rstrip("/") + f"/{normalize(name)}/"
    with open_url(page, timeout, cafile, ACCEPT) as r:
        kind, body, base = r.headers.get("Content-Type", ""), r.read(), r.geturl()
    if "json" in kind:
        return {f["filename"]: (urllib.parse.urljoin(base, f["url"]), f.get("hashes", {}).get("sha256"))
                for f in json.loads(body)["files"]}
    return links_of(body.decode("utf-8", "replace"), base)


def links_of(html: str, base: str) -> dict[str, tuple[str, str | None]]:
    """{filename: (url, sha256 from the #sha256= fragment or None)} of an HTML page's links."""
    parser = _Links()
    parser.feed(html)
    files = {}
    for href, text in parser.links:
        url, _, fragment = urllib.parse.urljoin(base, href).partition("#")
        filename = urllib.parse.unquote(url.rstrip("/").rsplit("/", 1)[-1]) or text
        sha = fragment[len("sha256="):] if fragment.startswith("sha256=") else None
        files[filename] = (url, sha)
    return files


def locate(art: dict, config: dict[str, str]) -> tuple[str, list[str]]:
    """The URL of the artifact's file on the first source that lists it, and what each source said on the way.
    An index that pins a different sha256 for the same file name is skipped (and said so)."""
    timeout, cafile, tried = timeout_of(config), setting(config, "cert"), []
    for kind, src in sources(config):
        if kind == "find-links" and not src.startswith(("http:", "https:")):  # a local folder, as pip allows
            local = Path(urllib.request.url2pathname(urllib.parse.urlsplit(src).path) if "://" in src else src)
            if (local / art["filename"]).is_file():
                return (local / art["filename"]).as_uri(), tried
            tried.append(f"{src}: no {art['filename']}")
            continue
        try:
            files = (project_files(src, art["name"], timeout, cafile) if kind == "index"
                     else links_of(open_url(src, timeout, cafile).read().decode("utf-8", "replace"), src))
        except urllib.error.HTTPError as e:
            tried.append(f"{src}: HTTP {e.code} for project {normalize(art['name'])!r}")
            continue
        except (urllib.error.URLError, OSError, ValueError) as e:
            tried.append(f"{src}: cannot be read ({getattr(e, 'reason', e)})")
            continue
        if art["filename"] not in files:
            tried.append(f"{src}: lists no {art['filename']}")
            continue
        url, sha = files[art["filename"]]
        if sha is not None and sha != art["sha256"]:
            tried.append(f"{src}: lists {art['filename']} with sha256 {sha}, not the pinned one")
            continue
        return url, tried
    return "", tried


# --------------------------------------------------------------------------------------------------------------------
# download


def download(url: str, dest: Path, desc: str, timeout: float = 60, cafile: str | None = None) -> str:
    """Stream url into dest (a temporary name, renamed by the caller) with a progress bar; return its sha256."""
    digest = hashlib.sha256()
    with open_url(url, timeout, cafile) as r, open(dest, "wb") as f:
        total = int(r.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, mininterval=1,
                  file=sys.stderr, leave=False) as bar:
            while chunk := r.read(CHUNK):
                f.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
    return digest.hexdigest()


def fetch(art: dict, cache: str | Path | None = None, config: dict[str, str] | None = None) -> Path:
    """The verified local file of one artifact: from the cache when its sha256 matches, else downloaded from pip's
    configured index. Raises RuntimeError naming the artifact, the URLs tried and what to do; a failed or
    mismatching download leaves no file behind."""
    spec = f"{art['name']}=={art['version']}"
    cache = Path(cache) if cache is not None else cache_dir()
    path = cache / art["filename"]
    if path.is_file() and sha256_file(path) == art["sha256"]:
        return path
    config = pip_config() if config is None else config
    url, tried = locate(art, config)
    fix = (f"Check the network and pip's index (`pip config list`; PIP_INDEX_URL), or put {art['filename']} "
           f"(sha256 {art['sha256']}) into {cache} (FORGETLAB_CACHE sets its parent).")
    if not url:
        raise RuntimeError(f"artifact {spec}: {art['filename']} was not found.\n  " + "\n  ".join(tried) + f"\n{fix}")
    cache.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache, prefix=f".{art['filename']}.", suffix=".part")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; the cache may be shared like any download folder
    try:
        actual = download(url, Path(tmp), art["filename"], timeout_of(config), setting(config, "cert"))
        if actual != art["sha256"]:
            raise RuntimeError(f"artifact {spec}: sha256 mismatch for {art['filename']} from {url} (expected "
                               f"{art['sha256']}, got {actual}); the file was deleted")
        os.replace(tmp, path)
    except (urllib.error.URLError, OSError) as e:
        raise RuntimeError(f"artifact {spec}: downloading {url} failed ({getattr(e, 'reason', e)}).\n{fix}") from e
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path
