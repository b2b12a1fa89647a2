"""What a server announces before the body (size, sha256) is compared with the pins before any byte
is transferred (pipeline.data.download.fetch).

The local server on 127.0.0.1 sends its headers, then holds the body back until the client either
reads on (the body is then sent and counted) or hangs up (nothing sent). So "not transferred" is
measured where it happens: the number of body bytes the server wrote.
"""
from __future__ import annotations

import base64
import hashlib
import select
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Iterator

import pytest

from pipeline.data import download as dl
from pipeline.data.download import Source, fetch
from pipeline.errors import PipelineError

BODY = bytes(range(256)) * 2048  # 512 KiB
SHA = hashlib.sha256(BODY).hexdigest()
OTHER_SHA = hashlib.sha256(b"another file").hexdigest()
PREFIX = 1000  # bytes of an earlier, interrupted download
HOLD_S = 0.5  # how long the server waits for the client to hang up before sending the body


def _b64(hex_digest: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_digest)).decode()


class Handler(BaseHTTPRequestHandler):
    """Serves ``BODY`` (ranges honoured) with the extra headers ``server.extra(status)`` returns and
    the whole-file size ``server.total`` announced; counts the body bytes it writes."""

    def log_message(self, *args: object) -> None:
        pass

    def _client_hung_up(self) -> bool:
        """True when the client closed the connection within ``HOLD_S`` (it sends nothing else)."""
        readable, _, _ = select.select([self.connection], [], [], HOLD_S)
        if not readable:
            return False
        try:
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        server = self.server
        rng = self.headers.get("Range")
        server.requests.append(rng)  # type: ignore[attr-defined]
        total = server.total  # type: ignore[attr-defined]
        start = int(rng.split("=")[1].split("-")[0]) if rng else 0
        if rng and start >= total:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{total}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        status = 206 if rng else 200
        part = BODY[start:]
        self.send_response(status)
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{total - 1}/{total}")
        self.send_header("Content-Length", str(total - start))
        for name, value in server.extra(status).items():  # type: ignore[attr-defined]
            self.send_header(name, value)
        self.end_headers()
        self.wfile.flush()
        if self._client_hung_up():
            return
        try:
            for i in range(0, len(part), 64 * 1024):
                self.wfile.write(part[i:i + 64 * 1024])
                server.served += len(part[i:i + 64 * 1024])  # type: ignore[attr-defined]
        except OSError:
            pass


@pytest.fixture
def serve(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., ThreadingHTTPServer]]:
    """``serve(total=..., extra=...)``: a server announcing ``total`` bytes and ``extra`` headers."""
    monkeypatch.setattr(dl, "BACKOFF_BASE", 0.0)
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    servers: list[ThreadingHTTPServer] = []

    def start(total: int = len(BODY), extra: Callable[[int], dict[str, str]] = lambda status: {}
              ) -> ThreadingHTTPServer:
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        httpd.daemon_threads = True
        httpd.total, httpd.extra, httpd.requests, httpd.served = total, extra, [], 0  # type: ignore[attr-defined]
        threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(httpd)
        return httpd

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


def _url(httpd: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{httpd.server_address[1]}/val2017.zip"


def _fetch(httpd: ThreadingHTTPServer, dest: Path, *, size: int | None = len(BODY),
           sha256: str | None = None) -> Path:
    return fetch(Source("val2017.zip", _url(httpd), size, sha256), dest, progress=False, timeout=5.0,
                 chunk=16 * 1024)


def _refused(httpd: ThreadingHTTPServer, dest: Path, *needles: str, **pins: object) -> str:
    """The fetch fails at once: one request, no body byte served, nothing left in ``dest``."""
    with pytest.raises(PipelineError) as info:
        _fetch(httpd, dest, **pins)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(_url(httpd)), message
    for needle in needles:
        assert needle in message, message
    assert len(httpd.requests) == 1, httpd.requests  # type: ignore[attr-defined]
    assert httpd.served == 0  # type: ignore[attr-defined]
    assert sorted(p.name for p in dest.iterdir()) == []
    return message


def test_a_content_length_other_than_the_pinned_size_stops_before_the_body(serve, tmp_path):
    httpd = serve(total=len(BODY) + 1)
    message = _refused(httpd, tmp_path, "val2017.zip", f"{len(BODY) + 1} bytes (Content-Length)",
                       f"pinned size is {len(BODY)}", "not retried")
    assert "sha256" not in message


def test_a_resumed_download_compares_the_content_range_total(serve, tmp_path):
    (tmp_path / "val2017.zip.part").write_bytes(BODY[:PREFIX])
    httpd = serve(total=len(BODY) - 1)
    _refused(httpd, tmp_path, f"{len(BODY) - 1} bytes (Content-Range)", f"pinned size is {len(BODY)}")
    assert httpd.requests == [f"bytes={PREFIX}-"]  # type: ignore[attr-defined]


def test_an_unsatisfiable_range_of_a_shorter_file_is_not_taken_as_complete(serve, tmp_path):
    (tmp_path / "val2017.zip.part").write_bytes(BODY[:PREFIX])
    httpd = serve(total=PREFIX)  # the server's file ends where the .part ends: not the pinned file
    _refused(httpd, tmp_path, f"{PREFIX} bytes (Content-Range)", f"pinned size is {len(BODY)}")


@pytest.mark.parametrize("header, value", [
    ("Repr-Digest", f"sha-256=:{_b64(OTHER_SHA)}:"),
    ("Digest", f"MD5=abc, SHA-256={_b64(OTHER_SHA)}"),
    ("Digest", f"sha-256={OTHER_SHA}"),  # hex, as some servers send it
    ("Content-Digest", f"sha-256=:{_b64(OTHER_SHA)}:"),
])
def test_an_announced_sha256_other_than_the_pin_stops_before_the_body(serve, tmp_path, header, value):
    httpd = serve(extra=lambda status: {header: value})
    _refused(httpd, tmp_path, f"sha256 {OTHER_SHA[:16]}… ({header})", f"pinned sha256 is {SHA[:16]}…",
             sha256=SHA.upper())


def test_matching_announcements_and_md5_headers_let_the_download_through(serve, tmp_path):
    """No false refusal: the right size and sha256, and MD5 headers (nothing pinned to compare them with)."""
    httpd = serve(extra=lambda status: {
        "Repr-Digest": f"sha-256=:{_b64(SHA)}:", "Content-MD5": _b64(hashlib.md5(b"x").hexdigest()),
        "x-goog-hash": "crc32c=AAAAAA==,md5=AAAAAAAAAAAAAAAAAAAAAA=="})
    out = _fetch(httpd, tmp_path, sha256=SHA)
    assert out.read_bytes() == BODY
    assert httpd.served == len(BODY)  # type: ignore[attr-defined]


def test_the_content_digest_of_a_resumed_download_is_not_the_files(serve, tmp_path):
    """A 206's Content-Digest hashes the bytes of that answer (the rest of the file): not compared."""
    (tmp_path / "val2017.zip.part").write_bytes(BODY[:PREFIX])
    rest = hashlib.sha256(BODY[PREFIX:]).hexdigest()
    httpd = serve(extra=lambda status: {"Content-Digest": f"sha-256=:{_b64(rest)}:"})
    assert _fetch(httpd, tmp_path, sha256=SHA).read_bytes() == BODY
    assert httpd.served == len(BODY) - PREFIX  # type: ignore[attr-defined]


def test_nothing_pinned_nothing_compared(serve, tmp_path):
    httpd = serve(extra=lambda status: {"Repr-Digest": f"sha-256=:{_b64(OTHER_SHA)}:"})
    assert _fetch(httpd, tmp_path, size=None).read_bytes() == BODY
