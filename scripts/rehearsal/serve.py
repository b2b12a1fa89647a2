"""A local HTTP server for the rehearsal's downloads (the folder :mod:`scripts.rehearsal.archives` writes).

The rehearsal profile's data entries point at http://127.0.0.1:8641/...; this serves a folder there
the way the real dataset servers serve files: a plain GET gets ``200`` with ``Content-Length`` and
``Accept-Ranges: bytes``; the downloader's resume request (``Range: bytes=<have>-``, also
``bytes=a-b`` and ``bytes=-n``) gets ``206`` with ``Content-Range``, or ``416`` with
``Content-Range: bytes */<size>`` when it starts at or past the end; a missing file or a folder gets
``404``. Files are sent as they are; ``gzip_encoding`` labels ``.gz`` files ``Content-Encoding: gzip``,
as an Apache with ``AddEncoding x-gzip .gz`` does (the bytes are still the file's own). HTTP/1.1 with
keep-alive, one thread per connection, no request log unless asked for. Every request is recorded
in ``server.requests`` (tests use it).

    python -m scripts.rehearsal.serve ROOT [--port 8641] [--build [--seed 0]] [--verbose] [--gzip-encoding]

``--build`` first writes the rehearsal's downloads into ROOT.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import os
import re
import shutil
import sys
import threading
from dataclasses import dataclass
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import BinaryIO, Iterator

HOST = "127.0.0.1"
PORT = 8641

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


@dataclass(frozen=True)
class Request:
    """One request as the server saw it."""

    method: str
    path: str
    range: str | None
    status: int


class _Limited:
    """A file object that reads at most ``length`` bytes (the body of a 206)."""

    def __init__(self, fh: BinaryIO, length: int) -> None:
        self.fh, self.left = fh, length

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        data = self.fh.read(n) if n > 0 else b""
        self.left -= len(data)
        return data

    def close(self) -> None:
        self.fh.close()


class Handler(SimpleHTTPRequestHandler):
    """Static files of the server's ``root`` with single byte-range requests; folders are 404."""

    protocol_version = "HTTP/1.1"
    server: "Server"

    def __init__(self, request, client_address, server: "Server") -> None:  # noqa: ANN001 - socketserver's
        super().__init__(request, client_address, server, directory=str(server.root))

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        if self.server.verbose:
            sys.stderr.write(f"serve: {self.address_string()} {format % args}\n")

    def send_response(self, code: int, message: str | None = None) -> None:
        self._status = int(code)
        super().send_response(code, message)

    def end_headers(self) -> None:
        # recorded before the headers leave: a client that has its answer finds the request in the log
        self.server.requests.append(Request(self.command, self.path, self.headers.get("Range"),
                                            getattr(self, "_status", 0)))
        super().end_headers()

    def do_GET(self) -> None:  # noqa: N802
        body = self.send_head()
        if body is not None:
            try:
                shutil.copyfileobj(body, self.wfile)
            except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
                pass  # the client went away (a test cutting a transfer short)
            finally:
                body.close()

    def do_HEAD(self) -> None:  # noqa: N802
        body = self.send_head()
        if body is not None:
            body.close()

    def send_head(self):  # type: ignore[override]
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(HTTPStatus.NOT_FOUND, "File not found")
            return None
        fh = path.open("rb")
        try:
            size = os.fstat(fh.fileno()).st_size
            first, last = 0, size - 1
            match = _RANGE.fullmatch((self.headers.get("Range") or "").strip())
            ranged = match is not None and (match[1] or match[2])  # anything else: the whole file, as RFC 9110 allows
            if ranged:
                if match[1]:
                    first = int(match[1])
                    last = min(int(match[2]), size - 1) if match[2] else size - 1
                else:  # bytes=-n: the last n bytes
                    first = max(0, size - int(match[2]))
                if first >= size or first > last:
                    fh.close()
                    self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None
                self.send_response(HTTPStatus.PARTIAL_CONTENT)
                self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
            else:
                self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "application/octet-stream")
            if self.server.gzip_encoding and path.name.endswith((".gz", ".tgz")):
                self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(last - first + 1))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Last-Modified", self.date_time_string(int(os.fstat(fh.fileno()).st_mtime)))
            self.end_headers()
            fh.seek(first)
            return _Limited(fh, last - first + 1)
        except BaseException:
            fh.close()
            raise


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path, address: tuple[str, int], verbose: bool = False,
                 gzip_encoding: bool = False) -> None:
        self.root = Path(root).resolve()
        self.verbose = verbose
        self.gzip_encoding = gzip_encoding
        self.requests: list[Request] = []
        super().__init__(address, Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


@contextlib.contextmanager
def serve(root: Path, host: str = HOST, port: int = PORT, *, verbose: bool = False,
          gzip_encoding: bool = False) -> Iterator[Server]:
    """Serve ``root`` at http://host:port/ in a background thread while the block runs.

    ``port=0`` picks a free port (``server.url`` says which). Yields the server: ``server.url``,
    ``server.requests`` (every request, in order). ``gzip_encoding``: label ``.gz`` files
    ``Content-Encoding: gzip`` (see the module's docstring).
    """
    if not Path(root).is_dir():
        raise FileNotFoundError(errno.ENOENT, "no such folder to serve", str(root))
    httpd = Server(Path(root), (host, port), verbose=verbose, gzip_encoding=gzip_encoding)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              name=f"serve {httpd.url}", daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m scripts.rehearsal.serve", description=__doc__.split("\n\n")[0])
    ap.add_argument("root", type=Path, help="the folder to serve (built by python -m scripts.rehearsal.archives)")
    ap.add_argument("--host", default=HOST)
    ap.add_argument("--port", type=int, default=PORT)
    ap.add_argument("--build", action="store_true", help="first write the rehearsal's downloads into ROOT")
    ap.add_argument("--seed", type=int, default=0, help="with --build: the synthetic data's seed")
    ap.add_argument("--verbose", action="store_true", help="log every request")
    ap.add_argument("--gzip-encoding", action="store_true",
                    help="label .gz files Content-Encoding: gzip, as some Apache servers do")
    args = ap.parse_args(argv)
    if args.build:
        from .archives import build_archives

        for name, path in build_archives(args.root, args.seed).items():
            print(f"built {name}: {path}")
    with contextlib.ExitStack() as stack:
        try:
            httpd = stack.enter_context(serve(args.root, args.host, args.port, verbose=args.verbose,
                                              gzip_encoding=args.gzip_encoding))
        except OSError as exc:  # the port taken (another rehearsal's server?), no such folder
            sys.exit(f"serve: cannot serve {args.root} at {args.host}:{args.port} ({exc.strerror or exc})")
        print(f"serving {httpd.root} at {httpd.url}/ (Ctrl-C stops)", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
