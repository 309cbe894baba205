"""What a student hands in, read without trusting it: regular files only, bounded, printable.

Used by ``cnnlab_grade.py`` (collection, reports, the reason of a failure) and by
``cnnlab_nbgrader.py`` (hashing): one place for each rule.

- :func:`read_submission`: a submitted file as bytes, or :class:`Refused` saying why
  (a link, a FIFO, a device, a folder, a hard link, over the size limit); opened without
  following links and without blocking, checked with ``fstat``, read in chunks up to the
  limit and never further, whatever the file claims.
- :func:`notebook_problem`: why a collected file is not a notebook the grader will run
  (not JSON, no cells, more cells than the limit), worded in one short line.
- :func:`sha256_file`: a hash in bounded chunks, links not followed.
- :func:`tail`: the last bytes of a log, never the whole file.
- :func:`printable`: student-controlled text with control and format characters escaped
  (ESC, CR, backspace, bidi overrides...), for every line printed and every report.
- :func:`copy_capped`: a stream copied to another up to a byte budget, the rest drained.
- :func:`output_size`, :func:`shrink`: the size of a kernel message, a shortened copy.
- :func:`unpack`: the regular files of an LMS archive, nothing else.

Only the standard library, so the module can be tested alone.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import unicodedata

CHUNK = 1 << 20
#: what each kind of non-regular file is called in a reason
KINDS = ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a folder"),
         (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
         (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
#: Unicode categories escaped by :func:`printable`: controls, format characters (bidi
#: overrides, zero-width), line and paragraph separators, surrogates
UNPRINTABLE = {"Cc", "Cf", "Zl", "Zp", "Cs"}


class Refused(ValueError):
    """A submitted file the grader will not read; the message says why, in a few words."""


class ArchiveError(ValueError):
    """An archive ``unpack`` cannot read (the message says what to do)."""


def printable(text, limit: int | None = None) -> str:
    """``text`` with every control or format character written as an escape
    (``\\x1b``, ``\\r``, ``\\u202e``), cut to ``limit`` characters with "..." if longer.

    Args:
        text: any value; ``str(text)`` is quoted.
        limit: the most characters kept (None: all).

    Returns:
        One line of text that a terminal shows as it is: it cannot move the cursor, erase,
        change colours or reorder what follows.
    """
    text = str(text)
    if limit is not None and len(text) > limit:
        text = text[:limit] + "..."
    if text.isprintable():
        return text
    return "".join(repr(ch)[1:-1] if unicodedata.category(ch) in UNPRINTABLE else ch
                   for ch in text)


def _kind(mode: int) -> str | None:
    return next((name for test, name in KINDS if test(mode)), None)


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


def open_regular(path, max_bytes: int) -> int:
    """A read-only descriptor of ``path`` if it is a regular file of at most ``max_bytes``
    with one name; else :class:`Refused`. The caller closes it."""
    path = os.fspath(path)
    try:
        before = os.lstat(path)
    except OSError as exc:
        raise Refused(f"cannot be read ({exc.strerror})") from None
    kind = _kind(before.st_mode)
    if kind == "a symbolic link":
        try:
            target = os.readlink(path)
        except OSError:
            target = "?"
        raise Refused(f"a symbolic link (to {printable(target, 120)!r}), not a file")
    if kind:  # a device is never opened: opening one can act on it
        raise Refused(f"{kind}, not a file")
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise Refused(f"cannot be read ({exc.strerror})") from None
    try:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (before.st_dev, before.st_ino):
            raise Refused("replaced while it was being read")
        if not stat.S_ISREG(st.st_mode):
            raise Refused(f"{_kind(st.st_mode) or 'not a regular file'}, not a file")
        if st.st_nlink > 1:
            raise Refused(f"a hard link ({st.st_nlink} names for one file): hand in a copy")
        if st.st_size > max_bytes:
            raise Refused(f"{_mb(st.st_size)}, over the limit of {_mb(max_bytes)}")
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_submission(path, max_bytes: int) -> bytes:
    """The bytes of the regular file ``path`` (at most ``max_bytes``), or :class:`Refused`.

    Read in chunks of 1 MB; a file that grows past the limit while it is read is refused
    without reading further, so memory never exceeds ``max_bytes`` plus one chunk."""
    fd = open_regular(path, max_bytes)
    chunks, total = [], 0
    try:
        while chunk := os.read(fd, min(CHUNK, max_bytes + 1 - total)):
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:
                raise Refused(f"grew past the limit of {_mb(max_bytes)} while it was read")
    except BlockingIOError:
        raise Refused("not a file that can be read at once") from None
    finally:
        os.close(fd)
    return b"".join(chunks)


def write_new(path, data: bytes) -> None:
    """``data`` into a new file ``path`` (an existing file or link there is removed first,
    never written through)."""
    path = os.fspath(path)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def sha256_file(path, max_bytes: int | None = None) -> str:
    """SHA-256 of a regular file, read in 1 MB chunks, links not followed
    (:class:`Refused` for anything else, or past ``max_bytes`` when given)."""
    fd = open_regular(path, max_bytes if max_bytes is not None else 1 << 62)
    digest, total = hashlib.sha256(), 0
    try:
        while chunk := os.read(fd, CHUNK):
            digest.update(chunk)
            total += len(chunk)
            if max_bytes is not None and total > max_bytes:
                raise Refused(f"grew past the limit of {_mb(max_bytes)} while it was read")
    finally:
        os.close(fd)
    return digest.hexdigest()


def notebook_problem(data: bytes, max_cells: int) -> str | None:
    """Why ``data`` is not a notebook to grade (one short line), or None.

    Only the shape the grader relies on is checked: JSON, an object whose ``cells`` is a
    list of at most ``max_cells`` objects (nbgrader validates the rest). Messages never
    quote the file."""
    try:
        nb = json.loads(data)
    except RecursionError:
        return "not a notebook (nested too deep)"
    except UnicodeDecodeError:
        return "not a notebook (not UTF-8 text)"
    except ValueError as exc:
        where = f" at line {exc.lineno}, column {exc.colno}" if hasattr(exc, "lineno") else ""
        return f"not a notebook (not JSON{where})"
    cells = nb.get("cells") if isinstance(nb, dict) else None
    if not isinstance(cells, list) or not all(isinstance(c, dict) for c in cells):
        return "not a notebook (no list of cells)"
    if len(cells) > max_cells:
        return f"{len(cells)} cells, over the limit of {max_cells}"
    return None


def tail(path, max_bytes: int = 64 << 10) -> str:
    """The last ``max_bytes`` of a file as text (undecodable bytes replaced); "" if it
    cannot be read. Links are not followed."""
    try:
        fd = os.open(os.fspath(path), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return ""
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(fd).st_size
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return ""
        f.seek(max(0, size - max_bytes))
        return f.read(max_bytes).decode("utf-8", errors="replace")


def copy_capped(source, dest, max_bytes: int, what: str = "output",
                keep_tail: int = 0) -> int:
    """Copy the binary stream ``source`` into ``dest``: its first ``max_bytes``, then (at
    its end) one line saying how much was cut and its last ``keep_tail`` bytes. The
    middle is read and dropped, so the writer never blocks and memory stays at one chunk
    plus the tail. Returns the number of bytes cut."""
    kept = cut = 0
    last = bytearray()
    while chunk := source.read1(CHUNK) if hasattr(source, "read1") else source.read(CHUNK):
        room = max(0, max_bytes - kept)
        if room:
            dest.write(chunk[:room])
            dest.flush()
            kept += min(room, len(chunk))
        if len(chunk) > room:
            last += chunk[room:]
            if len(last) > keep_tail:
                cut += len(last) - keep_tail
                del last[:len(last) - keep_tail]
    if cut:
        dest.write(f"\n[{what}: {cut} bytes cut here, over the limit of {max_bytes} bytes"
                   f"{f'; its last {len(last)} bytes follow' if last else ''}]\n".encode())
    dest.write(bytes(last))
    dest.flush()
    return cut


def output_size(content, depth: int = 0) -> int:
    """Characters of text in a kernel message's content (stream text, display data,
    traceback lines), the measure of an output's size."""
    if isinstance(content, str):
        return len(content)
    if depth > 4:
        return 0
    if isinstance(content, dict):  # a stream's name is not output
        return sum(output_size(v, depth + 1) for k, v in content.items() if k != "name")
    if isinstance(content, (list, tuple)):
        return sum(output_size(v, depth + 1) for v in content)
    return 0


def shrink(content, limit: int = 1000, lines: int = 20, depth: int = 0):
    """A copy of ``content`` with every string cut to ``limit`` characters and every list
    to its last ``lines`` items (a kept error or result, over the output budget)."""
    if isinstance(content, str):
        return content if len(content) <= limit else content[:limit] + "...[cut]"
    if isinstance(content, dict) and depth <= 4:
        return {k: shrink(v, limit, lines, depth + 1) for k, v in content.items()}
    if isinstance(content, list) and depth <= 4:
        return [shrink(v, limit, lines, depth + 1) for v in content[-lines:]]
    return content


def _safe_parts(name: str) -> tuple[str, ...] | None:
    """The path parts of an archive entry's name, or None if it would leave the folder."""
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts or name.startswith(("/", "\\")) or ".." in parts or ":" in parts[0]:
        return None
    return tuple(parts)


def _archive_entries(archive):
    """(name, kind, open) for each entry of a zip or tar archive; kind is "file", "folder"
    or the name of what else it is."""
    import tarfile
    import zipfile

    if not os.path.isfile(archive):
        raise ArchiveError(f"no archive at {printable(archive)}: give the .zip or .tar file")
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            for info in z.infolist():
                mode = info.external_attr >> 16
                kind = ("folder" if info.is_dir() else "file" if stat.S_IFMT(mode) in (
                    0, stat.S_IFREG) else _kind(mode) or "not a regular file")
                yield info.filename, kind, lambda info=info: z.open(info)
        return
    try:
        tar = tarfile.open(archive)
    except tarfile.TarError:
        raise ArchiveError(f"{printable(archive)} is neither a .zip nor a .tar archive "
                           "(.tar.gz, .tgz, .tar.bz2, .tar.xz): unpack it with its own "
                           "tool, then collect the folder") from None
    with tar:
        for m in tar:
            kind = ("file" if m.isreg() else "folder" if m.isdir() else
                    "a symbolic link" if m.issym() else "a hard link" if m.islnk() else
                    "a device or FIFO")
            yield m.name, kind, lambda m=m: tar.extractfile(m)


def unpack(archive, dest, max_file_bytes: int, max_files: int = 10_000
           ) -> tuple[list[str], list[str]]:
    """Extract the regular files of a zip or tar ``archive`` into ``dest``: no link,
    device or FIFO is made, no path leaves ``dest``, no file is written past
    ``max_file_bytes`` and at most ``max_files`` are. Returns (written, skipped), the
    second as "name: why" lines (printable)."""
    from pathlib import Path

    root = Path(dest)
    root.mkdir(parents=True, exist_ok=True)
    root = root.resolve()
    written, skipped = [], []
    for name, kind, open_entry in _archive_entries(os.fspath(archive)):
        shown = printable(name, 200)
        parts = _safe_parts(name)
        if kind == "folder":
            continue
        if parts is None:
            skipped.append(f"{shown}: its path leaves the folder")
            continue
        if kind != "file":
            skipped.append(f"{shown}: {kind}, not a file")
            continue
        if len(written) >= max_files:
            skipped.append(f"{shown}: over {max_files} files")
            continue
        target = root.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.parent.resolve() != root.joinpath(*parts[:-1]):
            skipped.append(f"{shown}: its folder is a link")
            continue
        data, total = bytearray(), 0
        with open_entry() as src:
            while chunk := src.read(CHUNK):
                total += len(chunk)
                if total > max_file_bytes:
                    break
                data += chunk
        if total > max_file_bytes:
            skipped.append(f"{shown}: over the limit of {_mb(max_file_bytes)}")
            continue
        write_new(target, bytes(data))
        written.append(str(target.relative_to(root)))
    return written, skipped
