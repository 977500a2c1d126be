"""Template archives: reading uploads safely and storing them in a canonical, content-addressed form.

Nothing is ever extracted to disk. Members are read into memory with hard caps, so a template archive cannot
write outside a folder, follow a link out of it, or expand into gigabytes.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import posixpath
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path

from dockyard.errors import BadRequest, PayloadTooLarge, Validation, ValidationFailed

MAX_ARCHIVE_BYTES = 10 * 1024 * 1024
MAX_EXPANDED_BYTES = 10 * 1024 * 1024
MAX_FILES = 2000
MANIFEST = "dockyard.yaml"


@dataclass(frozen=True)
class TemplateFile:
    path: str
    mode: int
    data: bytes = b""
    link: str | None = None

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.link.encode() if self.link is not None else self.data).hexdigest()


@dataclass(frozen=True)
class TemplateFiles:
    files: dict[str, TemplateFile]

    @property
    def content_hash(self) -> str:
        digest = hashlib.sha256()
        for path in sorted(self.files):
            item = self.files[path]
            kind = "l" if item.link is not None else "f"
            digest.update(f"{path}\0{kind}\0{item.mode:o}\0{item.sha256}\n".encode())
        return digest.hexdigest()

    @property
    def size(self) -> int:
        return sum(len(f.data) for f in self.files.values())

    def text(self, path: str) -> str:
        item = self.files.get(path)
        if item is None or item.link is not None:
            raise KeyError(path)
        return item.data.decode("utf-8")

    def listing(self) -> list[dict[str, object]]:
        return [
            {"path": f.path, "size": len(f.data), "sha256": f.sha256, "mode": f.mode}
            for f in sorted(self.files.values(), key=lambda f: f.path)
        ]

    def to_tar_gz(self) -> bytes:
        """A deterministic archive: same files, same bytes (sorted, zero times and owners)."""
        buffer = io.BytesIO()
        with (
            gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as gz,
            tarfile.open(fileobj=gz, mode="w") as tar,
        ):
            for path in sorted(self.files):
                item = self.files[path]
                info = tarfile.TarInfo(path)
                info.mode = item.mode
                info.mtime = 0
                if item.link is not None:
                    info.type = tarfile.SYMTYPE
                    info.linkname = item.link
                    tar.addfile(info)
                else:
                    info.size = len(item.data)
                    tar.addfile(info, io.BytesIO(item.data))
        return buffer.getvalue()


def _bad(path: str, problem: str) -> ValidationFailed:
    return ValidationFailed(
        "The template archive is not acceptable.", [Validation("archive", problem, file=path)]
    )


def clean_path(name: str) -> str:
    """Normalise a member name; refuse absolute paths and `..` rather than silently rewriting them."""
    raw = name.replace("\\", "/")
    if raw.startswith("/") or (len(raw) > 1 and raw[1] == ":"):
        raise _bad(name, "absolute paths are not allowed")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise _bad(name, "'..' in a path is not allowed")
    if not parts:
        raise _bad(name, "empty path")
    return "/".join(parts)


def _check_link(path: str, target: str) -> str:
    if target.startswith("/"):
        raise _bad(path, f"link to {target!r} points outside the template folder")
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
    if resolved == ".." or resolved.startswith("../"):
        raise _bad(path, f"link to {target!r} points outside the template folder")
    return target


def _strip_single_root(files: dict[str, TemplateFile]) -> dict[str, TemplateFile]:
    """`tar czf t.tgz mytemplate/` puts everything under one folder; accept that as the template root."""
    if MANIFEST in files or not files:
        return files
    roots = {path.split("/", 1)[0] for path in files}
    if len(roots) == 1:
        root = roots.pop()
        if f"{root}/{MANIFEST}" in files:
            return {
                p.split("/", 1)[1]: TemplateFile(p.split("/", 1)[1], f.mode, f.data, f.link)
                for p, f in files.items()
                if "/" in p
            }
    return files


def _add(files: dict[str, TemplateFile], item: TemplateFile, total: list[int]) -> None:
    if item.path in files:
        raise _bad(item.path, "the same path appears twice")
    if len(files) >= MAX_FILES:
        raise PayloadTooLarge(f"A template may hold at most {MAX_FILES} files.")
    total[0] += len(item.data)
    if total[0] > MAX_EXPANDED_BYTES:
        raise PayloadTooLarge(f"The template's files add up to more than {MAX_EXPANDED_BYTES // 2**20} MB.")
    files[item.path] = item


def read_tar(data: bytes) -> TemplateFiles:
    if len(data) > MAX_ARCHIVE_BYTES:
        raise PayloadTooLarge(f"The template archive is larger than {MAX_ARCHIVE_BYTES // 2**20} MB.")
    files: dict[str, TemplateFile] = {}
    total = [0]
    try:
        # "r:*" detects gzip or plain tar; stream mode reads members in order without seeking.
        with tarfile.open(fileobj=io.BytesIO(data), mode="r|*") as tar:
            for count, member in enumerate(tar):
                if count >= MAX_FILES * 2:
                    raise PayloadTooLarge(f"A template may hold at most {MAX_FILES} files.")
                path = clean_path(member.name)
                if member.isdir():
                    continue
                if member.issym():
                    _add(files, TemplateFile(path, 0o777, link=_check_link(path, member.linkname)), total)
                elif member.islnk():
                    raise _bad(path, "hard links are not allowed")
                elif member.isreg():
                    if total[0] + member.size > MAX_EXPANDED_BYTES:
                        raise PayloadTooLarge(
                            f"The template's files add up to more than {MAX_EXPANDED_BYTES // 2**20} MB."
                        )
                    handle = tar.extractfile(member)
                    content = handle.read() if handle is not None else b""
                    _add(files, TemplateFile(path, 0o755 if member.mode & 0o111 else 0o644, content), total)
                else:
                    raise _bad(path, "only regular files, folders and symbolic links are allowed")
    except (tarfile.TarError, EOFError, OSError, gzip.BadGzipFile) as exc:
        raise BadRequest("The upload is not a tar or tar.gz archive.", detail=str(exc)) from exc
    return TemplateFiles(_strip_single_root(files))


def from_uploads(uploads: list[tuple[str, bytes]]) -> TemplateFiles:
    """Files sent as multipart parts; each part's filename is its path inside the template."""
    files: dict[str, TemplateFile] = {}
    total = [0]
    for name, content in uploads:
        path = clean_path(name)
        _add(files, TemplateFile(path, 0o644, content), total)
    return TemplateFiles(_strip_single_root(files))


def from_directory(root: Path) -> TemplateFiles:
    """Read a template folder (the built-in templates and tests)."""
    files: dict[str, TemplateFile] = {}
    total = [0]
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if path.is_symlink():
            _add(
                files, TemplateFile(relative, 0o777, link=_check_link(relative, str(path.readlink()))), total
            )
        elif path.is_file():
            mode = 0o755 if path.stat().st_mode & stat.S_IXUSR else 0o644
            _add(files, TemplateFile(relative, mode, path.read_bytes()), total)
    return TemplateFiles(files)
