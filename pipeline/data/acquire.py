"""The ``download`` data source: put every archive and file of a dataset into HRNet's layout.

``profiles.<p>.data.archives.<dataset>`` lists entries (see params.yaml and the schema). Each
entry is an archive whose ``extract`` mapping says which of its members go where in
``data/<p>/<dataset>``, or a plain file whose ``place`` says where it goes. Where the bytes
come from, in this order:

* ``path``: an existing copy, used in place. A file (an archive, or the plain file itself) is
  verified by size and sha256 where given; an archive is then extracted from where it lies, a
  plain file is linked. A folder is an already extracted copy of the archive (the folder holding
  its members, e.g. ``/datasets/coco`` holding ``val2017/``): each mapped member is linked into
  the layout. Nothing is copied.
* ``url``: ``http(s)://`` is fetched into the cache (resumable, verified, see
  :mod:`.download`); ``file://`` or a plain path behaves like a file ``path``.
* neither (``url: null``): a file that cannot be fetched non-interactively. The user puts it at
  its place in the layout (or sets ``path``); missing, the stage stops before downloading
  anything, with one line naming the file and the entry's ``manual`` instructions.

Every name in the layout appears complete or not at all: archives are extracted into a
staging folder inside the dataset folder and their members renamed into place; plain files are
copied to a temporary name and renamed; links are made under a temporary name and renamed.
Just before an entry's first target goes into the layout (every target being free, a link, or the
stage's own), its marker ``<dataset>/.fetched/<name>.json`` says "installing": targets placed by a
stage killed from there on are the next run's to install again, not a copy put there by hand. When
the entry is done, the marker records what was installed
(and the size and sha256 measured on the archive), so a rerun checks only that the targets
exist and that the params still describe the same bytes: it needs no network and reads no
archive, and the cache may be deleted once the stage has succeeded. Layout entries that are
already present without a marker (a copy put there by hand) are adopted as they are, never
overwritten.
"""
from __future__ import annotations

import errno
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import io
from ..errors import PipelineError
from . import download
from .download import CorruptArchive, Source

log = logging.getLogger(__name__)

MARKERS = ".fetched"


@dataclass(frozen=True)
class Entry:
    """One item of ``profiles.<p>.data.archives.<dataset>`` (validated by the schema)."""

    key: str                      # e.g. "profiles.paper.data.archives.coco.0", for messages
    name: str
    url: str | None
    path: str | None
    size: int | None
    sha256: str | None
    manual: str | None
    extract: dict[str, str] | None
    place: str | None

    @classmethod
    def from_params(cls, key: str, spec: dict[str, Any]) -> "Entry":
        sha = spec.get("sha256")
        return cls(key=key, name=spec["name"], url=spec.get("url"), path=spec.get("path"),
                   size=spec.get("size"), sha256=sha.lower() if sha else None, manual=spec.get("manual"),
                   extract=dict(spec["extract"]) if spec.get("extract") else None, place=spec.get("place"))

    @property
    def is_archive(self) -> bool:
        return self.extract is not None

    @property
    def targets(self) -> dict[str, str]:
        """Source (archive member, or the file's name) -> destination relative to the dataset root."""
        return dict(self.extract) if self.extract is not None else {self.name: str(self.place)}


# ----------------------------------------------------------------------------- markers
def _marker(root: Path, e: Entry) -> Path:
    return root / MARKERS / f"{e.name}.json"


def _read_marker(root: Path, e: Entry) -> dict[str, Any] | None:
    p = _marker(root, e)
    if not p.is_file():
        return None
    try:
        return io.read_json(p)
    except PipelineError:
        return None  # unreadable marker: treat the entry as not done


def _done(root: Path, e: Entry, marker: dict[str, Any] | None) -> bool:
    """True when ``marker`` says this very entry was installed and its targets are still there."""
    if not marker or marker.get("name") != e.name or marker.get("targets") != e.targets:
        return False
    if marker.get("installing"):
        return False  # stopped while its targets went into place
    if marker.get("origin") != "found":
        if marker.get("path") != e.path:
            return False
        # The params may have gained the size / sha256 measured at the first run: same bytes.
        if e.size is not None and marker.get("size") is not None and marker["size"] != e.size:
            return False
        if e.sha256 is not None and marker.get("sha256") is not None and marker["sha256"] != e.sha256:
            return False
    return all((root / dest).exists() for dest in e.targets.values())


def _write_marker(root: Path, e: Entry, origin: str, source: str | None, size: int | None,
                  sha256: str | None) -> dict[str, Any]:
    info = {"name": e.name, "origin": origin, "source": source, "path": e.path, "size": size,
            "sha256": sha256, "targets": e.targets}
    io.write_json(_marker(root, e), info)
    return info


# ----------------------------------------------------------------------------- placing
def _owned(marker: dict[str, Any] | None) -> bool:
    """Targets recorded by a marker of ours (not adopted from the user) may be replaced."""
    return bool(marker) and marker.get("origin") != "found"


def _begin_placing(root: Path, e: Entry, owned: bool) -> None:
    """Before the first of ``e``'s targets goes into the layout: refuse if any target is in the way
    and not ours to replace (so none is placed), then mark the entry as being installed, so that
    targets placed by a stage killed before its marker are its own to the next run."""
    for dest in e.targets.values():
        p = root / dest
        if p.exists() and not p.is_symlink() and not owned:
            raise PipelineError(str(p), "exists but was not made by the data stage; "
                                        "move it away to let the stage replace it")
    io.write_json(_marker(root, e), {"name": e.name, "installing": True, "targets": e.targets})


def _clear(dest: Path, owned: bool) -> None:
    """Make room at ``dest``: links always go; real files and folders only when the stage made them."""
    if dest.is_symlink():
        dest.unlink()
    elif dest.exists():
        if not owned:
            raise PipelineError(str(dest), "exists but was not made by the data stage; "
                                           "move it away to let the stage replace it")
        if dest.is_dir():
            shutil.rmtree(dest)
        else:
            dest.unlink()


def _move_into_place(src: Path, dest: Path, owned: bool) -> None:
    """Rename ``src`` (extracted in the staging folder) onto ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    _clear(dest, owned)
    try:
        os.replace(src, dest)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise PipelineError(str(dest), f"cannot move extracted {src.name} into place ({exc})") from None
        with io.atomic_path(dest) as tmp:  # another filesystem (e.g. a linked folder): copy beside, rename
            shutil.move(str(src), str(tmp))


def _copy_into_place(src: Path, dest: Path, owned: bool) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with io.atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)
        _clear(dest, owned)


def _link_into_place(target: Path, dest: Path, owned: bool) -> None:
    """Make ``dest`` a symlink to ``target`` (absolute), created under a temporary name, then renamed."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.{os.getpid()}.link"
    tmp.unlink(missing_ok=True)
    os.symlink(target.resolve(), tmp, target_is_directory=target.is_dir())
    try:
        if dest.exists() and not dest.is_symlink():
            _clear(dest, owned)  # a real file or folder: ours only (a link is replaced by the rename)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- one entry
def _measure(path: Path, e: Entry) -> tuple[int, str]:
    """Size and sha256 of the archive or file used; hashes only when the params do not pin it."""
    size = path.stat().st_size
    if e.sha256 is not None:
        return size, e.sha256  # download.fetch verified it
    log.info("%s: hashing %s (sha256 not pinned in params)", e.name, path)
    sha = download.sha256_file(path)
    log.info("%s: sha256 %s (set %s.sha256 to it to pin this file)", e.name, sha, e.key)
    return size, sha


def _unpack(e: Entry, archive: Path, root: Path, owned: bool, progress: bool) -> None:
    """Extract the mapped members into a staging folder in ``root``, then rename each into place."""
    staging = root / f".{e.name}.staging"
    log.info("%s: extracting %s into %s", e.name, ", ".join(e.targets), root)
    try:
        download.extract(archive, staging, members=list(e.targets), progress=progress)
        _begin_placing(root, e, owned)
        for member, dest in e.targets.items():
            _move_into_place(staging / member, root / dest, owned)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _from_path(e: Entry, root: Path, owned: bool, progress: bool) -> dict[str, Any]:
    """Use the user's copy named by ``path``: verify, then link (file or folder) or extract (archive)."""
    given = Path(e.path).expanduser()  # type: ignore[arg-type]
    if not given.exists():
        raise PipelineError(str(given), f"{e.name}: local copy not found (set by {e.key}.path)")
    if given.is_dir():
        if not e.is_archive:
            raise PipelineError(str(given), f"{e.name}: is a folder; {e.key}.path must name the file itself")
        for member in e.targets:
            if not (given / member).exists():
                raise PipelineError(str(given / member),
                                    f"not found in the extracted copy of {e.name} (set by {e.key}.path)")
        _begin_placing(root, e, owned)
        for member, dest in e.targets.items():
            _link_into_place(given / member, root / dest, owned)
        log.info("%s: linked from the extracted copy %s", e.name, given)
        return {"origin": "local", "source": str(given.resolve()), "size": None, "sha256": None}
    copy = download.fetch(Source(e.name, given.resolve().as_uri(), e.size, e.sha256), root, progress=progress)
    size, sha = _measure(copy, e)
    if e.is_archive:
        _unpack(e, copy, root, owned, progress)
    else:
        _begin_placing(root, e, owned)
        _link_into_place(copy, root / str(e.place), owned)
    return {"origin": "local", "source": str(copy.resolve()), "size": size, "sha256": sha}


def _from_url(e: Entry, root: Path, cache: Path, owned: bool, progress: bool) -> dict[str, Any]:
    """Fetch into the cache (or verify a local URL in place), then extract or place."""
    src = Source(e.name, str(e.url), e.size, e.sha256)
    got = download.fetch(src, cache, progress=progress)
    local = got != cache / e.name  # a file:// URL or plain path: the user's copy, used in place
    size, sha = _measure(got, e)
    if e.is_archive:
        try:
            _unpack(e, got, root, owned, progress)
        except CorruptArchive as exc:
            if local or e.sha256 is not None:
                raise  # the pinned bytes or the user's own file: fetching again cannot help
            log.warning("%s; downloading %s again", exc, e.name)
            got.unlink()
            got = download.fetch(src, cache, progress=progress)
            size, sha = _measure(got, e)
            _unpack(e, got, root, owned, progress)
    elif local:
        _begin_placing(root, e, owned)
        _link_into_place(got, root / str(e.place), owned)
    else:
        _begin_placing(root, e, owned)
        _copy_into_place(got, root / str(e.place), owned)
    return {"origin": "local" if local else "download", "source": str(got.resolve()) if local else e.url,
            "size": size, "sha256": sha}


def _adopt(e: Entry, root: Path) -> dict[str, Any]:
    """Targets already in the layout without a marker: a copy put there by hand, taken as it is."""
    size = sha = None
    if not e.is_archive:
        placed = root / str(e.place)
        problem = download.verification_problem(placed, e.size, e.sha256)
        if problem is not None:
            raise PipelineError(str(placed), f"{e.name}: {problem}")
        size = placed.stat().st_size
        sha = e.sha256 or download.sha256_file(placed)
    log.info("%s: already in place in %s (put there by hand; kept as it is)", e.name, root)
    return {"origin": "found", "source": None, "size": size, "sha256": sha}


# ----------------------------------------------------------------------------- the dataset
def install(specs: list[dict[str, Any]], root: Path, cache: Path, *, key: str,
            progress: bool = True) -> dict[str, Any]:
    """Make every entry of ``specs`` present under ``root``; return ``{name: marker}`` for the manifest.

    ``key`` is the params key of the list (``profiles.<p>.data.archives.<dataset>``), used to
    name entries in messages. Entries already done cost a stat per target.
    """
    root, cache = Path(root), Path(cache)
    entries = [Entry.from_params(f"{key}.{i}", s) for i, s in enumerate(specs)]
    markers = {e.name: _read_marker(root, e) for e in entries}
    todo = [e for e in entries if not _done(root, e, markers[e.name])]
    todo_names = {e.name for e in todo}

    # Files nobody can fetch for the user: stop before spending hours on the others.
    manual = [(e, d) for e in todo if e.url is None and e.path is None
              for d in e.targets.values() if not (root / d).exists()]
    if manual:
        e, dest = manual[0]
        how = e.manual or "no url, path or manual instructions in params"
        more = f"; also missing: {', '.join(d for _, d in manual[1:])}" if len(manual) > 1 else ""
        raise PipelineError(str(root / dest), f"not found; {how} (or set {e.key}.path to a copy elsewhere){more}")

    result: dict[str, Any] = {}
    for e in entries:
        marker = markers[e.name]
        if e.name not in todo_names:
            log.info("%s: done (%s)", e.name, _marker(root, e))
            result[e.name] = marker
            continue
        root.mkdir(parents=True, exist_ok=True)
        owned = _owned(marker)
        if not owned and all((root / d).exists() for d in e.targets.values()):
            info = _adopt(e, root)
        elif e.path is not None:
            info = _from_path(e, root, owned, progress)
        elif e.url is not None:
            info = _from_url(e, root, cache, owned, progress)
        else:  # manual entry whose targets are all present
            info = _adopt(e, root)
        result[e.name] = _write_marker(root, e, **info)
    return result
