"""The downloader's less common server answers (pipeline.data.download.fetch) against a scripted local
server: a short clean stream, an unsatisfiable range, a range answered from the wrong byte, a refusal
(403), a .part that cannot be written or is longer than the archive; and extraction's refusals."""
from __future__ import annotations

import io
import logging
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pipeline.data import download as dl
from pipeline.data.download import Source, extract, fetch
from pipeline.errors import PipelineError

BODY = bytes(range(256)) * 1024  # 256 KiB
HALF = len(BODY) // 2


class Handler(BaseHTTPRequestHandler):
    """HTTP/1.0: a response without Content-Length ends cleanly when the connection closes."""

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        server = self.server
        rng = self.headers.get("Range")
        server.requests.append(rng)  # type: ignore[attr-defined]
        mode = server.modes[min(len(server.requests), len(server.modes)) - 1]  # type: ignore[attr-defined]
        start = int(rng.split("=")[1].split("-")[0]) if rng else 0
        if mode == "short":        # no length announced, half the bytes, a clean end
            self.send_response(200)
            self.end_headers()
            self.wfile.write(BODY[:HALF])
        elif mode == "416":        # the range cannot be served; the real file is longer than asked
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(BODY)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif mode == "wrong-start":  # a 206 from byte 0, whatever was asked
            self.send_response(206)
            self.send_header("Content-Range", f"bytes 0-{len(BODY) - 1}/{len(BODY)}")
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY)
        elif mode == "403":
            self.send_response(403)
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:                      # "ok": ranges honoured
            status, part = (206, BODY[start:]) if rng else (200, BODY)
            self.send_response(status)
            if rng:
                self.send_header("Content-Range", f"bytes {start}-{len(BODY) - 1}/{len(BODY)}")
            self.send_header("Content-Length", str(len(part)))
            self.end_headers()
            self.wfile.write(part)


@pytest.fixture
def serve(monkeypatch):
    """``serve(*modes)``: a server answering the n-th request with modes[n] (the last one repeats)."""
    monkeypatch.setattr(dl, "BACKOFF_BASE", 0.0)
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    servers = []

    def start(*modes: str) -> tuple[str, list]:
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        httpd.daemon_threads = True
        httpd.modes, httpd.requests = list(modes), []  # type: ignore[attr-defined]
        threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}/a.zip", httpd.requests  # type: ignore[attr-defined]

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


def _fetch(url: str, dest: Path, size: int | None = len(BODY), **kw) -> Path:
    return fetch(Source(name="a.zip", url=url, size=size, sha256=None), dest, progress=False, timeout=5.0,
                 chunk=16 * 1024, **kw)


def test_a_short_clean_stream_is_resumed(serve, tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(dl, "BACKOFF_BASE", 0.001)  # a real (tiny) back-off between the attempts
    url, requests = serve("short", "ok")
    with caplog.at_level(logging.WARNING, logger=dl.__name__):
        path = _fetch(url, tmp_path)
    assert path.read_bytes() == BODY and requests == [None, f"bytes={HALF}-"]
    assert any(f"incomplete download ({HALF} of {len(BODY)} bytes); retry 1/3" in m for m in caplog.messages)


def test_an_unsatisfiable_range_starts_over(serve, tmp_path):
    url, requests = serve("416", "ok")
    (tmp_path / "a.zip.part").write_bytes(b"x" * 100)  # not a prefix the server can continue
    assert _fetch(url, tmp_path).read_bytes() == BODY
    assert requests == ["bytes=100-", None]


def test_a_part_longer_than_the_archive_is_garbage(serve, tmp_path):
    url, requests = serve("ok")
    (tmp_path / "a.zip.part").write_bytes(b"x" * (len(BODY) + 1))
    assert _fetch(url, tmp_path).read_bytes() == BODY and requests == [None]


def test_a_range_answered_from_another_byte_is_retried_then_reported(serve, tmp_path):
    url, requests = serve("wrong-start")
    (tmp_path / "a.zip.part").write_bytes(BODY[:10])
    with pytest.raises(PipelineError) as exc:
        _fetch(url, tmp_path, retries=1)
    assert str(exc.value) == (f"{tmp_path / 'a.zip'}: download failed after 2 attempts: server answered range "
                              "from byte 0, asked for 10")
    assert len(requests) == 2 and (tmp_path / "a.zip.part").read_bytes() == BODY[:10]  # kept to resume


def test_a_refusal_is_not_retried(serve, tmp_path):
    url, requests = serve("403")
    with pytest.raises(PipelineError) as exc:
        _fetch(url, tmp_path)
    assert str(exc.value) == f"a.zip: HTTP 403 from {url}" and len(requests) == 1


def test_an_unwritable_part_file_is_one_line(serve, tmp_path):
    url, _ = serve("ok")
    (tmp_path / "a.zip.part").mkdir()  # a folder where the download goes
    with pytest.raises(PipelineError) as exc:
        _fetch(url, tmp_path)
    assert exc.value.where == str(tmp_path / "a.zip.part") and exc.value.what.startswith("cannot write download (")


def test_only_http_file_urls_and_paths_are_sources(tmp_path):
    with pytest.raises(PipelineError, match="unsupported URL scheme 'ftp'"):
        _fetch("ftp://example.org/a.zip", tmp_path)
    assert dl._content_range_start(None) is None and dl._content_range_start("bytes x-9/10") is None
    assert dl._content_range_total("bytes 0-9/*") is None and dl._content_range_total(None) is None
    assert (dl._content_range_start("bytes 5-9/10"), dl._content_range_total("bytes 5-9/10")) == (5, 10)
    assert dl.verification_problem(tmp_path / "none.zip", None, None) == "file not found"


def test_extract_refuses_a_missing_archive_and_special_members(tmp_path):
    with pytest.raises(PipelineError, match="archive not found"):
        extract(tmp_path / "none.tar", tmp_path / "out")
    archive = tmp_path / "fifo.tar"
    with tarfile.open(archive, "w") as tf:
        data = b"hello"
        info = tarfile.TarInfo("images/a.txt")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
        fifo = tarfile.TarInfo("images/pipe")
        fifo.type = tarfile.FIFOTYPE
        tf.addfile(fifo)
    with pytest.raises(PipelineError) as exc:
        extract(archive, tmp_path / "out")
    assert str(exc.value) == f"{archive}: unsupported member type for 'images/pipe'"
    assert not (tmp_path / "out").exists()
