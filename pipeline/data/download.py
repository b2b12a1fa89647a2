"""Resumable, verified, atomic download and extraction of dataset archives.

The COCO 2017 zips and the MPII tarball are tens of GB, fetched over connections
that drop. So a download:

* resumes from a ``<name>.part`` file with an HTTP ``Range`` request instead of
  starting over;
* compares what the server announces before the body is read (the size from
  ``Content-Length`` or ``Content-Range``, a sha256 from ``Repr-Digest`` / ``Digest`` /
  ``Content-Digest``) with the pins, and stops at once, without retrying, when they
  differ: another file does not become the pinned one by downloading it again (for
  COCO's 19 GB archive each try is hours). Only sha256 is pinned, so MD5 headers
  (``Content-MD5``, ``x-goog-hash``) have nothing to be compared with;
* is verified by size and sha256 before it is renamed onto its final name, so a
  file under the final name is always a complete, checked archive (Snakemake/DVC
  may trust it);
* is skipped when a valid copy is already present, and re-fetched (with a warning
  naming the file) when the present copy is corrupt or truncated;
* can be replaced by a local path or ``file://`` URL of an existing copy, which is
  verified in place and used as is (no multi-GB copy).

Every failure the user can act on is a one-line :class:`PipelineError` naming the
file and what failed.
"""
from __future__ import annotations

import base64
import binascii
import gzip
import logging
import os
import posixpath
import re
import tarfile
import time
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

import requests
import urllib3

from ..errors import PipelineError
from ..io import atomic_path, sha256_file
from ..progress import Progress, track

log = logging.getLogger(__name__)

#: Base delay (seconds) of the exponential backoff between attempts; tests set it to 0.
BACKOFF_BASE: float = 1.0
#: Upper bound of one backoff sleep, so a long retry series never stalls for minutes.
BACKOFF_MAX: float = 60.0


@dataclass(frozen=True)
class Source:
    """Where one archive comes from and what it must look like.

    ``url`` is ``http(s)://...``, ``file:///...`` or a plain local path. ``size``
    and ``sha256`` are what verification checks; ``None`` skips that check (with
    both ``None`` over HTTP the size announced by the server is used, so at least
    a truncated transfer is caught).
    """

    name: str
    url: str
    size: int | None = None
    sha256: str | None = None


class CorruptArchive(PipelineError):
    """The archive cannot be read (truncated, damaged, or not an archive); fetching it again may help."""


class MemberNotFound(PipelineError):
    """A member asked for is not in the archive (a configuration error; fetching again will not help)."""


class _Retryable(Exception):
    """An attempt failed in a way another attempt may fix (the message says how)."""


# ----------------------------------------------------------------------------- verify


def verification_problem(path: Path, size: int | None, sha256: str | None) -> str | None:
    """Why ``path`` fails verification, or ``None`` when it passes.

    The size is checked first because it is free and catches truncation without
    reading tens of GB.
    """
    path = Path(path)
    if not path.is_file():
        return "file not found"
    actual = path.stat().st_size
    if size is not None and actual != size:
        return f"size mismatch (expected {size} bytes, got {actual})"
    if sha256 is not None:
        got = sha256_file(path)
        if got.lower() != sha256.strip().lower():
            return f"sha256 mismatch (expected {sha256[:12]}…, got {got[:12]}…)"
    return None


def verify(path: Path, source: Source) -> bool:
    """True when ``path`` exists and matches ``source``'s size and sha256 (when given)."""
    return verification_problem(path, source.size, source.sha256) is None


# ----------------------------------------------------------------------------- announced
#: Longest echo of a URL in a message (signed URLs carry long query strings).
_URL_ECHO_CHARS = 120


def _short_url(url: str) -> str:
    return url if len(url) <= _URL_ECHO_CHARS else url[:_URL_ECHO_CHARS - 1] + "…"


def _announced_size(headers: Any, status: int) -> int | None:
    """The size of the whole file as the server states it before the body: ``Content-Length`` of a
    200, the total of ``Content-Range`` of a 206 (a resumed download) or a 416; None when unstated."""
    if status == 200:
        length = headers.get("Content-Length", "")
        return int(length) if length.isdigit() else None
    if status in (206, 416):
        return _content_range_total(headers.get("Content-Range"))
    return None


def _hex_sha256(encoded: str) -> str | None:
    """A sha256 given in base64 (RFC 3230 / RFC 9530) or, as some servers do, in hex; None otherwise."""
    if re.fullmatch(r"[0-9a-fA-F]{64}", encoded):
        return encoded.lower()
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw.hex() if len(raw) == 32 else None


def _sha256_in_field(value: str) -> str | None:
    """The sha-256 of a digest field: ``sha-256=<base64>`` (``Digest``) or ``sha-256=:<base64>:``
    (``Repr-Digest``, ``Content-Digest``), among other algorithms separated by commas."""
    for item in value.split(","):
        algorithm, sep, encoded = item.strip().partition("=")
        if sep and algorithm.strip().lower() == "sha-256":
            return _hex_sha256(encoded.split(";")[0].strip().strip(":"))
    return None


def _announced_sha256(headers: Any, status: int) -> tuple[str, str] | None:
    """(hex sha256, header) of the whole file as the server states it, or None.

    ``Repr-Digest`` and ``Digest`` describe the whole file on a 206 too; ``Content-Digest`` describes
    the bytes of this response, so it counts on a 200 only.
    """
    if status == 200:
        names: tuple[str, ...] = ("Repr-Digest", "Digest", "Content-Digest")
    elif status == 206:
        names = ("Repr-Digest", "Digest")
    else:
        return None
    for name in names:
        value = headers.get(name)
        sha = _sha256_in_field(value) if value else None
        if sha is not None:
            return sha, name
    return None


def _announced_problem(headers: Any, status: int, source: Source) -> str | None:
    """How the size or sha256 the server announces differs from ``source``'s pins, or None (also when
    the server announces nothing, or nothing is pinned: the bytes are checked once they are here)."""
    size = _announced_size(headers, status)
    if source.size is not None and size is not None and size != source.size:
        header = "Content-Length" if status == 200 else "Content-Range"
        return f"the server announces {size} bytes ({header}) but the pinned size is {source.size}"
    announced = _announced_sha256(headers, status)
    pinned = source.sha256.strip().lower() if source.sha256 is not None else None
    if pinned is not None and announced is not None and announced[0] != pinned:
        sha, header = announced
        return f"the server announces sha256 {sha[:16]}… ({header}) but the pinned sha256 is {pinned[:16]}…"
    return None


def _refuse_announced(resp: Any, source: Source, part: Path) -> None:
    """Stop before the body when the server announces another size or sha256 than the pins.

    A mismatch is a :class:`PipelineError` (never retried: the server would send the same other file
    again) naming the URL, the announced and the pinned value; the ``.part`` goes too, its bytes
    belonging to a file that is not the pinned one.
    """
    problem = _announced_problem(resp.headers, resp.status_code, source)
    if problem is None:
        return
    part.unlink(missing_ok=True)
    raise PipelineError(_short_url(source.url), f"{source.name}: {problem}; nothing downloaded and not retried "
                                                "(another file stays another file): check the url and the pin")


# ----------------------------------------------------------------------------- fetch
def _local_path(url: str) -> Path | None:
    """The filesystem path a ``file://`` URL or plain path names; ``None`` for HTTP(S)."""
    parsed = urlparse(url)
    scheme = parsed.scheme.lower()
    if scheme in ("http", "https"):
        return None
    if scheme == "file":
        return Path(url2pathname(unquote(parsed.path)))
    if scheme and len(scheme) > 1:  # one letter is a Windows drive, not a scheme
        raise PipelineError(url, f"unsupported URL scheme {scheme!r} (use http(s)://, file:// or a path)")
    return Path(url).expanduser()


def _verified_local(source: Source, local: Path) -> Path:
    """A local source is used where it is, never copied: it must exist and pass verification."""
    if not local.is_file():
        raise PipelineError(str(local), f"{source.name}: local copy not found")
    problem = verification_problem(local, source.size, source.sha256)
    if problem is not None:
        raise PipelineError(str(local), f"{source.name}: {problem}")
    log.info("%s: using local copy %s", source.name, local)
    return local


def _valid_existing(source: Source, final: Path) -> bool:
    """Whether an earlier run's download at ``final`` passes verification; an invalid one is removed,
    so that the download starts afresh instead of trusting it."""
    if not final.exists():
        return False
    problem = verification_problem(final, source.size, source.sha256)
    if problem is None:
        log.info("%s: already present at %s", source.name, final)
        return True
    log.warning("%s: existing file %s is invalid (%s); downloading it again", source.name, final, problem)
    final.unlink()
    return False


def _part_problem(source: Source, part: Path, expected: int | None) -> str | None:
    """What is wrong with the ``.part`` after one attempt (``None``: complete and verified). A short one
    is kept for the next attempt to resume; a corrupt one is deleted, as resuming would keep bad bytes."""
    if expected is not None and part.stat().st_size < expected:
        # Stream ended cleanly but short: keep the bytes, resume next time.
        return f"incomplete download ({part.stat().st_size} of {expected} bytes)"
    problem = verification_problem(part, expected, source.sha256)
    if problem is not None:
        part.unlink(missing_ok=True)  # corrupt: resuming would keep the bad bytes
    return problem


def fetch(
    source: Source,
    dest_dir: Path,
    *,
    retries: int = 3,
    chunk: int = 1 << 20,
    progress: bool = True,
    timeout: float = 30.0,
) -> Path:
    """Return a verified copy of ``source``, downloading it into ``dest_dir`` if needed.

    A local path or ``file://`` source is verified in place and its own path is
    returned. An HTTP(S) source lands at ``dest_dir / source.name`` only after it
    passed verification; up to ``retries`` further attempts resume a cut transfer
    or restart a corrupt one. Raises :class:`PipelineError` naming the file.
    """
    local = _local_path(source.url)
    if local is not None:
        return _verified_local(source, local)

    dest_dir = Path(dest_dir)
    final = dest_dir / source.name
    if _valid_existing(source, final):
        return final

    dest_dir.mkdir(parents=True, exist_ok=True)
    part = dest_dir / (source.name + ".part")
    last_error = "no attempt made"
    attempts = max(0, retries) + 1
    with requests.Session() as session:
        for attempt in range(attempts):
            if attempt:
                delay = min(BACKOFF_MAX, BACKOFF_BASE * 2 ** (attempt - 1))
                log.warning("%s: %s; retry %d/%d in %.0fs", source.name, last_error, attempt, retries, delay)
                if delay > 0:
                    time.sleep(delay)
            try:
                expected = _download(session, source, part, chunk=chunk, progress=progress, timeout=timeout)
            except _Retryable as exc:
                last_error = str(exc)
                continue
            problem = _part_problem(source, part, expected)
            if problem is not None:
                last_error = problem
                continue
            os.replace(part, final)
            log.info("%s: downloaded and verified (%s)", source.name, final)
            return final
    # A .part still here holds a valid prefix (corrupt ones were deleted): the next run resumes it.
    raise PipelineError(str(final), f"download failed after {attempts} attempts: {last_error}")


def _download(
    session: requests.Session,
    source: Source,
    part: Path,
    *,
    chunk: int,
    progress: bool,
    timeout: float,
) -> int | None:
    """One attempt: append the rest of ``source`` to ``part``; return the expected total size.

    Raises :class:`_Retryable` for failures worth another attempt (connection
    errors, cut streams, 5xx) and :class:`PipelineError` for those that are not
    (404 and other client errors).
    """
    have = part.stat().st_size if part.exists() else 0
    if source.size is not None and have > source.size:
        part.unlink()  # longer than the archive can be: garbage, not a prefix
        have = 0
    if source.size is not None and have == source.size:
        return source.size  # complete from an earlier run that stopped before the rename
    # identity: a server gzip-encoding a .tar.gz on the fly would break size and checksum.
    headers = {"Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    url = source.url
    try:
        resp = session.get(url, headers=headers, stream=True, timeout=timeout)
    except requests.RequestException as exc:
        raise _Retryable(f"connection to {url} failed ({type(exc).__name__})") from None
    with resp:
        if _already_complete(resp, source, part, have):
            return have  # the .part already holds every byte (a run stopped before renaming it)
        total, have, mode = _body_plan(resp, source, have)

        # a bar on a terminal; a log file gets a line at the start and one at the end
        with Progress(source.name, total=total, initial=have, unit="B", enabled=progress) as shown:
            _write_body(resp, part, mode, chunk, shown)
    return total


def _already_complete(resp: requests.Response, source: Source, part: Path, have: int) -> bool:
    """Sort the answer's status: ``True`` when a 416 says the ``.part`` already holds the whole file;
    raises :class:`_Retryable` for statuses worth another attempt and :class:`PipelineError` for the
    others that bring no body (404, client errors, an announced wrong size)."""
    url = source.url
    status = resp.status_code
    if status == 404:
        raise PipelineError(source.name, f"not found at {url} (HTTP 404)")
    _refuse_announced(resp, source, part)
    if status == 416 and have:
        if _content_range_total(resp.headers.get("Content-Range")) == have:
            return True
        part.unlink(missing_ok=True)  # our prefix is not a prefix of theirs: start over
        raise _Retryable(f"HTTP 416 from {url} (range {have}- not satisfiable)")
    if status >= 500 or status in (408, 429):
        raise _Retryable(f"HTTP {status} from {url}")
    if status not in (200, 206):
        raise PipelineError(source.name, f"HTTP {status} from {url}")
    return False


def _body_plan(resp: requests.Response, source: Source, have: int) -> tuple[int | None, int, str]:
    """``(expected total, bytes kept, file mode)``: a 206 appends to the ``.part`` (and must start where
    it ends), a 200 rewrites it (the server ignored or got no Range)."""
    total = source.size
    if resp.status_code == 206:
        start = _content_range_start(resp.headers.get("Content-Range"))
        if start != have:
            raise _Retryable(f"server answered range from byte {start}, asked for {have}")
        mode = "ab"
        if total is None:
            total = _content_range_total(resp.headers.get("Content-Range"))
    else:  # 200: the server sent the whole file (ignored or got no Range)
        have, mode = 0, "wb"
        if total is None and resp.headers.get("Content-Length", "").isdigit():
            total = int(resp.headers["Content-Length"])
    return total, have, mode


def _write_body(resp: requests.Response, part: Path, mode: str, chunk: int, progress_bar: Any) -> None:
    """Stream the answer's body into ``part``, advancing ``progress_bar`` (a bar, or its log lines); a cut
    connection is worth another attempt, a write failure (full disk, permissions) is the user's to fix."""
    try:
        with part.open(mode) as fh:
            # The bytes as sent, never decoded: a server labelling a .tar.gz "Content-Encoding: gzip"
            # (Apache's AddEncoding) still sends the archive itself, which must land as it is.
            for block in resp.raw.stream(chunk, decode_content=False):
                if block:
                    fh.write(block)
                    progress_bar.update(len(block))
    except (requests.RequestException, urllib3.exceptions.HTTPError, ConnectionError) as exc:
        # network errors (requests', urllib3's, the socket's) before OSError, which some of them subclass
        raise _Retryable(f"connection lost at byte {part.stat().st_size} ({type(exc).__name__})") from None
    except OSError as exc:
        raise PipelineError(str(part), f"cannot write download ({exc})") from None


def _content_range_start(value: str | None) -> int | None:
    """First byte of a ``Content-Range: bytes a-b/total`` header (None if unparsable)."""
    try:
        return int(value.split()[1].split("-")[0])  # type: ignore[union-attr]
    except (AttributeError, IndexError, ValueError):
        return None


def _content_range_total(value: str | None) -> int | None:
    """Total size of a ``Content-Range`` header (None when unknown ``*`` or unparsable)."""
    try:
        return int(value.rsplit("/", 1)[1])  # type: ignore[union-attr]
    except (AttributeError, IndexError, ValueError):
        return None


# ----------------------------------------------------------------------------- extract
def _check_member(archive: Path, name: str) -> None:
    """Refuse a member name that would land outside the extraction directory."""
    posix = PurePosixPath(name.replace("\\", "/"))
    if posix.is_absolute() or ".." in posix.parts or (posix.parts and ":" in posix.parts[0]):
        raise PipelineError(str(archive), f"unsafe member {name!r} escapes the target directory")


def _norm(name: str) -> str:
    """A member name as a plain relative POSIX path: no ``./`` prefix, no trailing slash."""
    name = name.replace("\\", "/")
    while name.startswith("./"):
        name = name[2:]
    return name.rstrip("/")


def _select(archive: Path, items: list, name_of, members: Sequence[str] | None) -> list:
    """The entries of ``items`` at or below one of ``members`` (all of them when ``members`` is None).

    Raises :class:`MemberNotFound` naming the archive and the first member it lacks.
    """
    if members is None:
        return items
    wanted = [_norm(m) for m in members]
    found: set[str] = set()
    chosen = []
    for item in items:
        name = _norm(name_of(item))
        hit = next((w for w in wanted if name == w or name.startswith(w + "/")), None)
        if hit is not None:
            found.add(hit)
            chosen.append(item)
    for w in wanted:
        if w not in found:
            raise MemberNotFound(str(archive), f"has no member {w!r}")
    return chosen


def _bar(items: list, archive: Path, progress: bool) -> Iterable:
    return track(items, f"extract {archive.name}", unit="file", enabled=progress)


def extract(archive: Path, into: Path, *, members: Sequence[str] | None = None, progress: bool = False) -> Path:
    """Unpack a .zip / .tar / .tar.gz ``archive`` into ``into`` and return ``into``.

    Extraction goes to a temporary directory beside ``into`` that is renamed onto it
    only when every member is out, so an interrupted or refused extraction never
    leaves a half-filled dataset directory. Members escaping the target (absolute
    paths, ``..``, links pointing outside, device files) are refused up front.
    ``members`` limits extraction to those paths (a file, or a folder and everything
    under it); one missing from the archive raises :class:`MemberNotFound`. An
    unreadable archive raises :class:`CorruptArchive`; ``progress`` shows a bar
    counting the members written.
    """
    archive, into = Path(archive), Path(into)
    if not archive.is_file():
        raise PipelineError(str(archive), "archive not found")
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                infos = zf.infolist()
                for info in infos:
                    _check_member(archive, info.filename)
                chosen = _select(archive, infos, lambda i: i.filename, members)
                with atomic_path(into) as tmp:
                    tmp.mkdir()
                    zf.extractall(tmp, members=_bar(chosen, archive, progress))
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive, "r:*") as tf:
                tmembers = tf.getmembers()
                for m in tmembers:
                    _check_member(archive, m.name)
                    if m.issym() or m.islnk():
                        target = m.linkname if m.islnk() else str(PurePosixPath(m.name).parent / m.linkname)
                        _check_member(archive, posixpath.normpath(target))
                    elif not (m.isfile() or m.isdir()):
                        raise PipelineError(str(archive), f"unsupported member type for {m.name!r}")
                chosen = _select(archive, tmembers, lambda m: m.name, members)
                with atomic_path(into) as tmp:
                    tmp.mkdir()
                    if hasattr(tarfile, "data_filter"):
                        tf.extractall(tmp, members=_bar(chosen, archive, progress), filter="data")
                    else:  # pragma: no cover - Python < 3.11.4; members already checked
                        tf.extractall(tmp, members=_bar(chosen, archive, progress))
        else:
            raise CorruptArchive(str(archive), "not a zip or tar archive")
    except getattr(tarfile, "FilterError", ()) as exc:
        raise PipelineError(str(archive), f"unsafe member refused ({exc})") from None
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise CorruptArchive(str(archive), f"corrupt archive ({exc})") from None
    except OSError as exc:  # disk full, permissions: name the archive, keep one line
        raise PipelineError(str(archive), f"cannot extract into {into} ({exc})") from None
    return into


__all__ = ["Source", "fetch", "verify", "extract", "sha256_file", "CorruptArchive", "MemberNotFound",
           "BACKOFF_BASE"]
