"""Downloading the files a dataset needs: several sources per file, one checksum for all of them.

A :class:`Fetch` names a file, the sources it may come from (tried in order: a dead host is not the end) and the
checksum every source's bytes must have (md5, sha256, or, for a canonical split file, its accepted sha256s and
the sha256 of its parsed content). A source without a checksum does not exist here: bytes nobody can verify never
reach a dataset folder. When every source fails, one :class:`DownloadError` lists each source with its error and
the manual route (a copy placed at the file's path is verified and used like a download).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from common.errors import UserError

from .common import canonical_sha256

GDRIVE = "gdrive:"  # a source "gdrive:<file id>" is fetched with gdown


class DownloadError(UserError):
    """No source gave the file with its checksum; the message lists every source, its error and the manual route."""


@dataclass(frozen=True)
class Fetch:
    """One file of a dataset. ``dest``: its name in the dataset folder; ``sources``: URLs (or ``gdrive:<id>``)
    tried in order; the checksum: ``md5``, ``sha256``, or ``accepted`` file sha256s plus ``content_sha256`` (the
    sha256 of the parsed JSON, which any re-formatting keeps). ``done``: a path (relative to the dataset folder)
    whose presence means the fetch is not needed; archives are extracted into the dataset folder (``strip``: an
    archive folder whose contents go there instead) and then removed; ``then`` post-processes the folder.
    ``manual``: where else a copy can be had, for the message when every source fails."""

    dest: str
    sources: tuple[str, ...]
    md5: str | None = None
    sha256: str | None = None
    accepted: frozenset[str] = frozenset()
    content_sha256: str | None = None
    done: str = ""
    strip: str = ""
    then: Callable[[Path], None] | None = None
    manual: str = ""

    def __post_init__(self):
        if not self.sources:
            raise ValueError(f"{self.dest}: a download needs at least one source")
        if not (self.md5 or self.sha256 or self.accepted or self.content_sha256):
            raise ValueError(f"{self.dest}: a download needs a checksum (md5, sha256 or accepted sha256s); a "
                             "source nobody can verify is a manual step, not a download")

    @property
    def is_archive(self) -> bool:
        return self.dest.endswith((".tar", ".tar.gz", ".tgz", ".zip"))

    @property
    def checksum(self) -> str:
        """The checksum in words, for messages."""
        if self.md5:
            return f"md5 {self.md5}"
        if self.sha256:
            return f"sha256 {self.sha256}"
        return f"sha256 {sorted(self.accepted)[0] if self.accepted else self.content_sha256} (or the same content)"


def source_url(source: str) -> str:
    return f"https://drive.google.com/uc?id={source[len(GDRIVE):]}" if source.startswith(GDRIVE) else source


def file_digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(path: Path, item: Fetch) -> str | None:
    """None when ``path`` holds the bytes ``item``'s checksum describes, else what differs (one line)."""
    if item.md5:
        got = file_digest(path, "md5")
        return None if got == item.md5 else f"md5 {got}, expected {item.md5}"
    digest = file_digest(path, "sha256")
    if item.sha256:
        return None if digest == item.sha256 else f"sha256 {digest}, expected {item.sha256}"
    if digest in item.accepted:
        return None
    if item.content_sha256:
        try:
            with open(path, encoding="utf-8") as f:
                if canonical_sha256(json.load(f)) == item.content_sha256:
                    return None
        except (OSError, ValueError) as exc:
            return f"not valid JSON ({exc})"
    expected = sorted(item.accepted)[0][:12] if item.accepted else item.content_sha256[:12]
    return f"differs from the canonical file (sha256 {digest[:12]}, expected {expected})"


def download_url(url: str, dest: Path, timeout: float = 60) -> None:
    from tqdm import tqdm

    request = urllib.request.Request(url, headers={"User-Agent": "calib-prompt/prepare_data"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        with open(dest, "wb") as f, tqdm(total=total, unit="B", unit_scale=True, desc=dest.name) as bar:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                f.write(chunk)
                bar.update(len(chunk))


def download_gdrive(file_id: str, dest: Path) -> None:
    import gdown

    result = gdown.download(id=file_id, output=str(dest), quiet=False)
    if not result or not dest.is_file():
        raise OSError("Google Drive gave no file (it may be rate-limiting: try again later)")


def _download(source: str, dest: Path) -> None:
    if source.startswith(GDRIVE):
        download_gdrive(source[len(GDRIVE):], dest)
    else:
        download_url(source, dest)


def _error(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, (OSError, UserError)) else f"{type(exc).__name__}: {text}"


def fetch(item: Fetch, dataset_path: Path, say: Callable[[str], None] = print) -> None:
    """Get ``item`` into ``dataset_path``: a copy already at its path (the manual route) if it verifies, else each
    source in order until one gives the checksum's bytes; then extract and post-process. Raises
    :class:`DownloadError` (every source and its error, and the manual route) when none does; no partial file
    stays behind."""
    dest = dataset_path / item.dest
    if dest.is_file():
        problem = verify(dest, item)
        if problem:
            raise DownloadError(f"{dest} is there but has {problem}: it is not the expected file. Delete it (this "
                                f"command then downloads it) or replace it with the right file.")
        say(f"Using {dest} (verified: {item.checksum})")
    else:
        failures = []
        part = dataset_path / f"{item.dest}.part"
        for i, source in enumerate(item.sources, 1):
            say(f"Downloading {item.dest} from {source_url(source)}"
                + (f" (source {i} of {len(item.sources)})" if len(item.sources) > 1 else ""))
            try:
                _download(source, part)
                problem = verify(part, item)
            except Exception as exc:  # noqa: BLE001 - network, HTTP and disk errors vary; each is reported
                problem = _error(exc)
            if problem is None:
                os.replace(part, dest)
                break
            part.unlink(missing_ok=True)
            failures.append(f"  {source_url(source)}: {problem}")
            say(f"  failed: {problem}")
        else:
            raise DownloadError(all_failed(item, dest, failures))
    if item.is_archive:
        extract(dest, dataset_path, item.strip)
        dest.unlink()
    if item.then is not None:
        item.then(dataset_path)


def all_failed(item: Fetch, dest: Path, failures: list[str]) -> str:
    elsewhere = f" {item.manual.rstrip('.')}." if item.manual else ""
    return (f"{item.dest}: no source gave the file with {item.checksum}:\n" + "\n".join(failures)
            + f"\nBy hand: get {item.dest} (from one of these, or another copy of the same file).{elsewhere} Put "
              f"it at {dest} and run this command again: the file is verified against the checksum"
            + (" and extracted." if item.is_archive else "."))


def extract(archive: Path, target: Path, strip: str = "") -> None:
    """Extract ``archive`` into ``target``; with ``strip``, the contents of that archive folder land in target."""
    print(f"Extracting {archive.name} ...")
    staging = target / f".extract-{archive.name}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        if archive.name.endswith(".zip"):
            with zipfile.ZipFile(archive) as z:
                z.extractall(staging)
        else:
            with tarfile.open(archive) as t:
                t.extractall(staging, filter="data")
        top = staging / strip if strip else staging
        if not top.is_dir():
            raise UserError(f"{archive} has no folder {strip}/; the archive changed, extract it by hand.")
        for entry in top.iterdir():
            dest = target / entry.name
            if dest.exists():
                shutil.rmtree(dest) if dest.is_dir() else dest.unlink()
            shutil.move(str(entry), str(dest))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
