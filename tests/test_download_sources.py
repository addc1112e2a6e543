"""datasets/download.py against a real HTTP server on 127.0.0.1 (issue 23 item 8): a dead first source is not the
end, bytes with the wrong checksum are rejected, and when every source fails one message lists each source with
its error and the manual route. Also: every planned download has a checksum."""
from __future__ import annotations

import hashlib
import http.server
import io
import tarfile
import threading

import pytest

from datasets import download
from datasets.download import DownloadError, Fetch
from datasets.sources import PLANS

GOOD = b"the archive's real bytes\n" * 100


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}

    def do_GET(self):  # noqa: N802 - http.server's name
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404, "Not Found")
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # keep the test output quiet
        pass


@pytest.fixture
def server(monkeypatch):
    """A local HTTP server; ``url(path)`` names a file it serves (or a 404 when there is none)."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    files: dict[str, bytes] = {}
    handler = type("Handler", (_Handler,), {"files": files})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield files, lambda path: base + path
    httpd.shutdown()
    httpd.server_close()


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def test_a_dead_first_source_falls_through_to_the_second(server, tmp_path):
    files, url = server
    files["/mirror/file.bin"] = GOOD
    item = Fetch("file.bin", (url("/gone/file.bin"), url("/mirror/file.bin")), md5=_md5(GOOD))
    said = []
    download.fetch(item, tmp_path, say=said.append)
    assert (tmp_path / "file.bin").read_bytes() == GOOD
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]          # no .part left
    assert any("404" in line for line in said) and "source 2 of 2" in said[-1] + said[-2]


def test_wrong_bytes_are_rejected_and_the_next_source_is_tried(server, tmp_path):
    files, url = server
    files["/tampered/file.bin"] = b"something else"
    files["/good/file.bin"] = GOOD
    item = Fetch("file.bin", (url("/tampered/file.bin"), url("/good/file.bin")),
                 sha256=hashlib.sha256(GOOD).hexdigest())
    download.fetch(item, tmp_path, say=lambda _: None)
    assert (tmp_path / "file.bin").read_bytes() == GOOD


def test_when_every_source_fails_one_message_names_each_and_the_manual_route(server, tmp_path):
    files, url = server
    files["/tampered/file.bin"] = b"something else"
    item = Fetch("file.bin", (url("/gone/file.bin"), url("/tampered/file.bin")), md5=_md5(GOOD),
                 manual="A mirror that needs a login has it (https://example.org/mirror)")
    with pytest.raises(DownloadError) as exc:
        download.fetch(item, tmp_path, say=lambda _: None)
    msg = str(exc.value)
    assert msg.startswith(f"file.bin: no source gave the file with md5 {_md5(GOOD)}:")
    assert f"  {url('/gone/file.bin')}: HTTP Error 404: Not Found" in msg
    assert f"  {url('/tampered/file.bin')}: md5 {_md5(b'something else')}, expected {_md5(GOOD)}" in msg
    assert "https://example.org/mirror" in msg and f"Put it at {tmp_path / 'file.bin'}" in msg
    assert list(tmp_path.iterdir()) == []                                 # nothing unverified stays


def test_a_copy_placed_by_hand_is_verified_and_extracted(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        info = tarfile.TarInfo("SUN397/a/abbey/sun_1.jpg")
        info.size = 3
        t.addfile(info, io.BytesIO(b"jpg"))
    archive = buf.getvalue()
    item = Fetch("SUN397.tar.gz", ("http://127.0.0.1:9/unreachable",), md5=_md5(archive), done="SUN397")
    (tmp_path / "SUN397.tar.gz").write_bytes(archive)
    download.fetch(item, tmp_path, say=lambda _: None)                     # no source is asked
    assert (tmp_path / "SUN397" / "a" / "abbey" / "sun_1.jpg").read_bytes() == b"jpg"
    assert not (tmp_path / "SUN397.tar.gz").exists()
    (tmp_path / "SUN397.tar.gz").write_bytes(b"a truncated copy")
    with pytest.raises(DownloadError, match="is there but has md5 .* Delete it"):
        download.fetch(item, tmp_path, say=lambda _: None)
    assert (tmp_path / "SUN397.tar.gz").exists()                           # the user's file is not deleted


def test_every_planned_download_has_a_checksum_and_a_source():
    fetches = [f for plan in PLANS.values() for f in plan.fetches]
    assert len(fetches) >= 20
    for f in fetches:
        assert f.sources and (f.md5 or f.sha256 or f.accepted), f.dest
    with pytest.raises(ValueError, match="needs a checksum"):
        Fetch("x.tar", ("https://example.org/x.tar",))
    sun = PLANS["SUN397"]
    assert "opendatalab.com/OpenDataLab/SUN397" in sun.fetches[0].manual and "split_zhou_SUN397.json" in sun.manual
