"""HTTP downloads into a `.part` file: resume by Range, follow redirects, time out with a clear
message, refuse an HTML or error page served in place of the file, check free space first and
report a full disk in one line. The `.part` never takes the final name here (fetch.py lands it
after its checks). Standard library only (urllib)."""

from __future__ import annotations

import http.client
import shutil
import sys
import urllib.error
import urllib.request
from pathlib import Path

from lungsrad.errors import UserError, disk_full_is_user_error

CHUNK_BYTES = 1 << 20
DEFAULT_TIMEOUT_S = 60.0
# Drops of the connection a download survives (each resumes where the last one stopped).
MAX_RESUMES = 3
# Room kept free beside a download, so a fetch never fills a disk to the last byte.
FREE_SPACE_MARGIN_BYTES = 64 << 20
_USER_AGENT = "lungsrad-fetch"
_HTML_STARTS = (b"<!doctype", b"<html")


class _Dropped(Exception):
    """The connection ended before the whole body came."""


class _NotTheFile(UserError):
    """The server answered with something else than the file (its bytes are not kept)."""


def looks_like_html(head: bytes) -> bool:
    """True when a body starts like an HTML page (a login, error or interstitial page)."""
    return head.lstrip()[:16].lower().startswith(_HTML_STARTS)


def source_note_path(part: Path) -> Path:
    """Beside a `.part`: the URL its bytes came from (a part resumes only from that URL)."""
    return part.with_name(part.name + ".source")


def discard_part(part: Path) -> None:
    """Removes a `.part` and its source note."""
    part.unlink(missing_ok=True)
    source_note_path(part).unlink(missing_ok=True)


def check_free_space(folder: Path, needed_bytes: int, what: str) -> None:
    """A UserError when `folder`'s file system has less than `needed_bytes` (plus a margin)."""
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if needed_bytes + FREE_SPACE_MARGIN_BYTES > free:
        raise UserError(
            f"no space for {what}: it needs {_size(needed_bytes)} and {folder} has "
            f"{_size(free)} free; free some space or pass --dir DIR on a larger disk"
        )


def _size(num_bytes: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if num_bytes < 1024 or unit == "GiB":
            return f"{num_bytes} B" if unit == "B" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1024  # type: ignore[assignment]
    return str(num_bytes)


def format_size(num_bytes: int) -> str:
    """1_978_998_275 -> '1.8 GiB'."""
    return _size(num_bytes)


def download(
    url: str,
    part: Path,
    *,
    expected_size: int | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    show_progress: bool = True,
) -> int:
    """Downloads `url` into `part`, resuming what an earlier try left there (from the same URL).

    Returns:
        the byte offset the download resumed from (0: from the start).

    Raises:
        UserError: HTTP error, unreachable host, timeout, HTML page, size other than
            `expected_size`, no space; one line. A dropped or timed-out transfer keeps `part`
            so the same command resumes it.
    """
    note = source_note_path(part)
    if part.exists() and (not note.is_file() or note.read_text(encoding="utf-8") != url):
        discard_part(part)  # bytes of another source (or unknown): never mixed with these
    part.parent.mkdir(parents=True, exist_ok=True)
    first_offset = part.stat().st_size if part.exists() else 0
    for _ in range(MAX_RESUMES + 1):
        offset = part.stat().st_size if part.exists() else 0
        if expected_size is not None and offset == expected_size:
            return first_offset
        try:
            _transfer(url, part, offset, expected_size, timeout_s, show_progress)
            return first_offset
        except _NotTheFile:
            discard_part(part)
            raise
        except _Dropped:
            if (part.stat().st_size if part.exists() else 0) <= offset:
                break  # no progress: do not loop on a server that drops at once
    have = part.stat().st_size if part.exists() else 0
    raise UserError(
        f"{url}: the connection kept dropping ({have} bytes kept in {part}); run the same "
        "command again to resume"
    )


def _open(url: str, offset: int, timeout_s: float) -> http.client.HTTPResponse:
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        return urllib.request.urlopen(request, timeout=timeout_s)  # follows redirects
    except urllib.error.HTTPError as error:
        raise UserError(f"{url}: HTTP {error.code} {error.reason}") from None
    except urllib.error.URLError as error:
        if isinstance(error.reason, TimeoutError):
            raise UserError(_timeout_message(url, timeout_s)) from None
        raise UserError(f"cannot reach {url}: {error.reason}") from None
    except TimeoutError:
        raise UserError(_timeout_message(url, timeout_s)) from None
    except (ConnectionError, http.client.HTTPException) as error:
        raise UserError(f"cannot reach {url}: {error}") from None


def _timeout_message(url: str, timeout_s: float) -> str:
    return (
        f"{url}: no data for {timeout_s:g} s (timed out); the partial download is kept, so run "
        "the same command again to resume, or pass --timeout SECONDS"
    )


def _transfer(
    url: str,
    part: Path,
    offset: int,
    expected_size: int | None,
    timeout_s: float,
    show_progress: bool,
) -> None:
    """One request: appends the body to `part` (from `offset` when the server honours Range)."""
    with _open(url, offset, timeout_s) as response:
        if offset and response.status != 206:
            offset = 0  # the server ignored Range: start over
        if response.headers.get_content_type() == "text/html":
            raise _NotTheFile(
                f"{url} served an HTML page (content-type text/html), not the file; open it in "
                "a browser, download the file and pass it with --from FILE"
            )
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        if expected_size is not None and total is not None and total != expected_size:
            raise _NotTheFile(
                f"{url}: wrong size: the server announces {total} bytes, the file has "
                f"{expected_size}"
            )
        remaining = (total or expected_size or 0) - offset
        check_free_space(part.parent, max(remaining, 0), part.name.removesuffix(".part"))
        _copy_body(response, part, offset, total, url, timeout_s, show_progress)


def _copy_body(
    response: http.client.HTTPResponse,
    part: Path,
    offset: int,
    total: int | None,
    url: str,
    timeout_s: float,
    show_progress: bool,
) -> None:
    from tqdm import tqdm

    written = offset
    progress = tqdm(
        total=total,
        initial=offset,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=part.name.removesuffix(".part"),
        file=sys.stderr,
        disable=not (show_progress and sys.stderr.isatty()),
    )
    if not offset:
        source_note_path(part).write_text(url, encoding="utf-8")
    with disk_full_is_user_error(
        lambda: f"writing {part} ({written} bytes kept); free some space and run the same "
        "command again to resume"
    ), progress, open(part, "ab" if offset else "wb") as stream:
        while True:
            chunk = _read(response, url, timeout_s)
            if not chunk:
                break
            if written == 0 and looks_like_html(chunk[:64]):
                raise _NotTheFile(
                    f"{url} served an HTML page, not the file; download it in a browser and "
                    "pass it with --from FILE"
                )
            stream.write(chunk)
            written += len(chunk)
            progress.update(len(chunk))
    if total is not None and written < total:
        raise _Dropped


def _read(response: http.client.HTTPResponse, url: str, timeout_s: float) -> bytes:
    try:
        # read1: what has arrived (read() would wait for a whole chunk, losing it on a timeout).
        return response.read1(CHUNK_BYTES)
    except TimeoutError:
        raise UserError(_timeout_message(url, timeout_s)) from None
    except (http.client.IncompleteRead, ConnectionError):
        raise _Dropped from None
