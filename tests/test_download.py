"""Downloader against a local HTTP server on 127.0.0.1 serving generated archives.

The server's behaviour (cut connections, ignored ranges, wrong bytes, 404/500) is
scripted per test, and every request is recorded so tests can assert on what the
client asked for (Range headers, number of requests).
"""
from __future__ import annotations

import hashlib
import io
import logging
import random
import tarfile
import threading
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Iterator

import pytest

from pipeline.data import download as dl
from pipeline.data.download import CorruptArchive, MemberNotFound, Source, extract, fetch, verify
from pipeline.errors import PipelineError

DATA = random.Random(0).randbytes(3 * 1024 * 1024 + 17)  # odd size: not a chunk multiple
SHA = hashlib.sha256(DATA).hexdigest()
CHUNK = 64 * 1024
# The cut lands on a chunk boundary: urllib3 drops the partial chunk it was reading when
# the connection dies, so the client resumes from the last whole chunk it wrote.
HALF = (len(DATA) // 2 // CHUNK) * CHUNK


@dataclass
class Script:
    """What the server does; ``behave(n)`` picks the behaviour of the n-th GET (0-based)."""

    body: bytes = DATA
    behave: Callable[[int], str] = lambda n: "ok"
    requests: list[dict[str, str | None]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Handler(BaseHTTPRequestHandler):
    """Serves ``server.script.body`` with Range support, or misbehaves as scripted."""

    def log_message(self, *args: object) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        script: Script = self.server.script  # type: ignore[attr-defined]
        with script.lock:
            n = len(script.requests)
            script.requests.append({"path": self.path, "range": self.headers.get("Range")})
        mode = script.behave(n)
        body = script.body
        if mode in ("404", "500"):
            self.send_response(int(mode))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if mode == "cut":  # announce the whole file, send half, drop the connection
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[:HALF])
            self.wfile.flush()
            self.close_connection = True
            return
        rng = self.headers.get("Range")
        if rng and mode != "ignore-range":
            start = int(rng.split("=")[1].split("-")[0])
            part = body[start:]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            self.send_header("Content-Length", str(len(part)))
            self.end_headers()
            self.wfile.write(part)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Script]]:
    """A ThreadingHTTPServer on 127.0.0.1 (ephemeral port); yields (base URL, script)."""
    monkeypatch.setattr(dl, "BACKOFF_BASE", 0.0)
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    script = Script()
    httpd.script = script  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", script
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def src(base: str, *, size: int | None = len(DATA), sha: str | None = SHA) -> Source:
    return Source(name="val2017.zip", url=f"{base}/val2017.zip", size=size, sha256=sha)


def run(source: Source, dest: Path, **kw: object) -> Path:
    kw.setdefault("progress", False)
    kw.setdefault("timeout", 5.0)
    kw.setdefault("chunk", CHUNK)
    return fetch(source, dest, **kw)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- HTTP
def test_full_download_then_skip(server: tuple[str, Script], tmp_path: Path,
                                 caplog: pytest.LogCaptureFixture) -> None:
    base, script = server
    out = run(src(base), tmp_path)
    assert out == tmp_path / "val2017.zip"
    assert out.read_bytes() == DATA
    assert not (tmp_path / "val2017.zip.part").exists()
    assert len(script.requests) == 1 and script.requests[0]["range"] is None
    with caplog.at_level(logging.INFO, logger=dl.__name__):
        again = run(src(base), tmp_path)
    assert again == out
    assert len(script.requests) == 1  # no network access for a valid present file
    assert "already present" in caplog.text
    assert verify(out, src(base))


def test_resume_after_cut_connection(server: tuple[str, Script], tmp_path: Path) -> None:
    base, script = server
    script.behave = lambda n: "cut" if n == 0 else "ok"
    out = run(src(base), tmp_path)
    assert out.read_bytes() == DATA
    assert len(script.requests) == 2
    assert script.requests[1]["range"] == f"bytes={HALF}-"


def test_resume_existing_part_file(server: tuple[str, Script], tmp_path: Path) -> None:
    base, script = server
    (tmp_path / "val2017.zip.part").write_bytes(DATA[:1000])
    out = run(src(base), tmp_path)
    assert out.read_bytes() == DATA
    assert [r["range"] for r in script.requests] == ["bytes=1000-"]


def test_complete_part_file_needs_no_request(server: tuple[str, Script], tmp_path: Path) -> None:
    base, script = server
    (tmp_path / "val2017.zip.part").write_bytes(DATA)
    assert run(src(base), tmp_path).read_bytes() == DATA
    assert script.requests == []


def test_server_ignoring_range_restarts(server: tuple[str, Script], tmp_path: Path) -> None:
    base, script = server
    script.behave = lambda n: "cut" if n == 0 else "ignore-range"
    out = run(src(base), tmp_path)
    assert out.read_bytes() == DATA
    assert script.requests[1]["range"] == f"bytes={HALF}-"


def test_size_taken_from_server_when_unknown(server: tuple[str, Script], tmp_path: Path) -> None:
    base, script = server
    script.behave = lambda n: "cut" if n == 0 else "ok"
    out = run(src(base, size=None, sha=None), tmp_path)
    assert out.read_bytes() == DATA


def test_bad_checksum(server: tuple[str, Script], tmp_path: Path) -> None:
    base, script = server
    script.body = bytes(len(DATA))  # right size, wrong bytes
    with pytest.raises(PipelineError, match="sha256") as err:
        run(src(base), tmp_path, retries=2)
    assert "val2017.zip" in str(err.value)
    assert len(script.requests) == 3  # first try + 2 retries, each from scratch
    assert all(r["range"] is None for r in script.requests)
    assert not (tmp_path / "val2017.zip").exists()
    assert not (tmp_path / "val2017.zip.part").exists()


def test_404_is_not_retried(server: tuple[str, Script], tmp_path: Path) -> None:
    base, script = server
    script.behave = lambda n: "404"
    with pytest.raises(PipelineError, match="not found"):
        run(src(base), tmp_path)
    assert len(script.requests) == 1
    assert not (tmp_path / "val2017.zip").exists()


def test_500_then_ok_is_retried(server: tuple[str, Script], tmp_path: Path) -> None:
    base, script = server
    script.behave = lambda n: "500" if n < 2 else "ok"
    out = run(src(base), tmp_path, retries=3)
    assert out.read_bytes() == DATA
    assert len(script.requests) == 3


def test_500_always_fails(server: tuple[str, Script], tmp_path: Path) -> None:
    base, script = server
    script.behave = lambda n: "500"
    with pytest.raises(PipelineError, match="500") as err:
        run(src(base), tmp_path, retries=2)
    assert "val2017.zip" in str(err.value)
    assert len(script.requests) == 3
    assert not (tmp_path / "val2017.zip").exists()


def test_connection_refused_fails_cleanly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dl, "BACKOFF_BASE", 0.0)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port = httpd.server_address[1]
    httpd.server_close()  # nothing listens there any more
    with pytest.raises(PipelineError, match="val2017.zip"):
        run(src(f"http://127.0.0.1:{port}"), tmp_path, retries=1)


def test_corrupt_existing_file_is_refetched(server: tuple[str, Script], tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    base, script = server
    final = tmp_path / "val2017.zip"
    final.write_bytes(bytes(len(DATA)))  # right size, wrong bytes
    with caplog.at_level(logging.WARNING, logger=dl.__name__):
        out = run(src(base), tmp_path)
    assert out == final and out.read_bytes() == DATA
    assert len(script.requests) == 1
    assert "val2017.zip" in caplog.text and "sha256" in caplog.text


def test_truncated_existing_file_is_refetched(server: tuple[str, Script], tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    base, script = server
    (tmp_path / "val2017.zip").write_bytes(DATA[:100])
    with caplog.at_level(logging.WARNING, logger=dl.__name__):
        out = run(src(base), tmp_path)
    assert out.read_bytes() == DATA
    assert "size mismatch" in caplog.text


# ----------------------------------------------------------------------------- local
def test_local_path_used_in_place(tmp_path: Path) -> None:
    copy = tmp_path / "mine" / "val2017.zip"
    copy.parent.mkdir()
    copy.write_bytes(DATA)
    dest = tmp_path / "dest"
    out = fetch(Source("val2017.zip", str(copy), len(DATA), SHA), dest, progress=False)
    assert out == copy
    assert not (dest / "val2017.zip").exists()  # no copy made
    out2 = fetch(Source("val2017.zip", copy.as_uri(), len(DATA), SHA), dest, progress=False)
    assert out2 == copy


def test_local_path_missing_or_corrupt(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "val2017.zip"
    with pytest.raises(PipelineError, match="nowhere"):
        fetch(Source("val2017.zip", str(missing), None, None), tmp_path)
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"x" * len(DATA))
    with pytest.raises(PipelineError, match="sha256") as err:
        fetch(Source("val2017.zip", bad.as_uri(), len(DATA), SHA), tmp_path)
    assert str(bad) in str(err.value)


# ----------------------------------------------------------------------------- extract
FILES = {"a/one.txt": b"hello", "a/b/two.bin": bytes(range(256)), "three.json": b"{}"}


def _check_tree(root: Path) -> None:
    for name, data in FILES.items():
        assert (root / name).read_bytes() == data


def test_extract_zip_round_trip(tmp_path: Path) -> None:
    arc = tmp_path / "x.zip"
    with zipfile.ZipFile(arc, "w") as zf:
        for name, data in FILES.items():
            zf.writestr(name, data)
    out = extract(arc, tmp_path / "out")
    assert out == tmp_path / "out"
    _check_tree(out)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left


def _tar(path: Path, files: dict[str, bytes], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def test_extract_tar_gz_round_trip_served(server: tuple[str, Script], tmp_path: Path) -> None:
    """Download a generated tar.gz over HTTP, then extract it."""
    base, script = server
    arc = _tar(tmp_path / "built.tar.gz", FILES)
    script.body = arc.read_bytes()
    source = Source("mpii.tar.gz", f"{base}/mpii.tar.gz", len(script.body),
                    hashlib.sha256(script.body).hexdigest())
    got = run(source, tmp_path / "dl")
    _check_tree(extract(got, tmp_path / "mpii"))
    _check_tree(extract(_tar(tmp_path / "plain.tar", FILES, "w"), tmp_path / "plain"))


def test_extract_refuses_path_traversal(tmp_path: Path) -> None:
    arc = _tar(tmp_path / "evil.tar.gz", {"ok.txt": b"fine", "../evil": b"gotcha"})
    with pytest.raises(PipelineError, match="evil"):
        extract(arc, tmp_path / "out" / "target")
    assert not (tmp_path / "out" / "target").exists()
    assert not (tmp_path / "out" / "evil").exists() and not (tmp_path / "evil").exists()

    zarc = tmp_path / "evil.zip"
    with zipfile.ZipFile(zarc, "w") as zf:
        zf.writestr("/abs/evil", b"x")
    with pytest.raises(PipelineError, match="escapes"):
        extract(zarc, tmp_path / "zout")
    assert not (tmp_path / "zout").exists()


def test_extract_refuses_escaping_symlink(tmp_path: Path) -> None:
    arc = tmp_path / "link.tar"
    with tarfile.open(arc, "w") as tf:
        info = tarfile.TarInfo("inside/link")
        info.type = tarfile.SYMTYPE
        info.linkname = "../../etc/passwd"
        tf.addfile(info)
    with pytest.raises(PipelineError, match="escapes"):
        extract(arc, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_extract_failure_is_atomic(tmp_path: Path) -> None:
    """A truncated archive fails mid-extraction and leaves neither target nor temp dir."""
    big = {f"f{i}.bin": random.Random(i).randbytes(50_000) for i in range(4)}
    arc = _tar(tmp_path / "big.tar.gz", big)
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(arc.read_bytes()[: arc.stat().st_size * 3 // 4])
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(PipelineError, match="cut.tar.gz"):
        extract(cut, dest / "target")
    assert list(dest.iterdir()) == []
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"this is not an archive" * 10)
    with pytest.raises(PipelineError, match="not a zip or tar"):
        extract(junk, dest / "target2")
    assert list(dest.iterdir()) == []


def test_extract_interrupted_midway_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Members already written when extraction dies must not appear under the target."""
    arc = tmp_path / "x.zip"
    with zipfile.ZipFile(arc, "w") as zf:
        for name, data in FILES.items():
            zf.writestr(name, data)
    original = zipfile.ZipFile.extract

    def extract_all_then_fail(self: zipfile.ZipFile, path: str, members: object = None,
                              pwd: object = None) -> None:
        original(self, self.namelist()[0], path)  # one member lands in the temp dir
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(zipfile.ZipFile, "extractall", extract_all_then_fail)
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(PipelineError, match="No space left"):
        extract(arc, dest / "target")
    assert list(dest.iterdir()) == []


def test_resume_with_unaligned_cut(server: tuple[str, Script], tmp_path: Path) -> None:
    """With the cut mid-chunk the client resumes from its last whole chunk, still correct."""
    base, script = server
    script.behave = lambda n: "cut" if n == 0 else "ok"
    out = run(src(base), tmp_path, chunk=1000)
    assert out.read_bytes() == DATA
    start = int(str(script.requests[1]["range"]).split("=")[1].rstrip("-"))
    assert 0 < start <= HALF


def test_extract_only_the_members_asked_for(tmp_path: Path) -> None:
    """``members`` picks files or whole folders (zip and tar alike); a missing one is named."""
    arc = tmp_path / "x.zip"
    with zipfile.ZipFile(arc, "w") as zf:
        for name, data in FILES.items():
            zf.writestr(name, data)
    out = extract(arc, tmp_path / "zout", members=["a", "three.json"])
    _check_tree(out)
    tout = extract(_tar(tmp_path / "x.tar.gz", FILES), tmp_path / "tout", members=["./a/b"])
    assert sorted(p.relative_to(tout).as_posix() for p in tout.rglob("*") if p.is_file()) == ["a/b/two.bin"]
    with pytest.raises(MemberNotFound, match="x.zip: has no member 'val2017'"):
        extract(arc, tmp_path / "missing", members=["a", "val2017"])
    assert not (tmp_path / "missing").exists()
    junk = tmp_path / "junk.zip"
    junk.write_bytes(arc.read_bytes()[:-30])  # end of central directory cut off
    with pytest.raises(CorruptArchive, match="junk.zip"):
        extract(junk, tmp_path / "junk")
