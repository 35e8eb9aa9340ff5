"""Tracking URIs: checks and normalisation, credentials split off and hidden from anything
printed, and the health check of a tracking server (GET /health). Imports no MLflow.
"""

from __future__ import annotations

import os
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from lungsrad.errors import UserError

_SQL_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
HTTP_SCHEMES = ("http", "https")
SUPPORTED_SCHEMES = (*_SQL_SCHEMES, *HTTP_SCHEMES, "file")


def split_credentials(uri: str) -> tuple[str, str | None, str | None]:
    """(uri without user:password@, user, password) for http(s) URIs; others are unchanged."""
    parsed = urllib.parse.urlsplit(uri)
    if parsed.scheme not in HTTP_SCHEMES or "@" not in parsed.netloc:
        return uri, None, None
    userinfo, host = parsed.netloc.rsplit("@", 1)
    user, _, password = userinfo.partition(":")
    clean = urllib.parse.urlunsplit(parsed._replace(netloc=host))
    return clean, urllib.parse.unquote(user) or None, urllib.parse.unquote(password) or None


def redact_uri(uri: str) -> str:
    """The URI with any user:password@ replaced by ***@ (safe to print, tag or log)."""
    parsed = urllib.parse.urlsplit(uri)
    if "@" not in parsed.netloc:
        return uri
    host = parsed.netloc.rsplit("@", 1)[1]
    return urllib.parse.urlunsplit(parsed._replace(netloc=f"***@{host}"))


def redact_text(text: str, uri: str) -> str:
    """`text` with the URI's credentials (and the URI itself) removed."""
    text = text.replace(uri, redact_uri(uri))
    parsed = urllib.parse.urlsplit(uri)
    if "@" in parsed.netloc:
        userinfo = parsed.netloc.rsplit("@", 1)[0]
        password = userinfo.partition(":")[2]
        secrets = {userinfo, password, urllib.parse.unquote(password)} - {""}
        # Longest first: "user:password" before "password", or "user:***" would be left.
        for secret in sorted(secrets, key=len, reverse=True):
            text = text.replace(secret, "***")
    return re.sub(r"//[^/@\s]+:[^/@\s]+@", "//***@", text)


def sqlite_uri(path: str | os.PathLike[str]) -> str:
    """sqlite:////absolute/path.db for a database file."""
    return "sqlite:///" + str(Path(path).expanduser().resolve())


def normalize_tracking_uri(uri: str) -> str:
    """Makes sqlite and file URIs absolute (Ray workers run in other folders) and checks the
    scheme; UserError naming the URI (credentials hidden) when it cannot be used."""
    shown = redact_uri(uri)
    parsed = urllib.parse.urlsplit(uri)
    scheme = parsed.scheme.split("+", 1)[0].lower()
    if scheme not in SUPPORTED_SCHEMES:
        close = [s for s in SUPPORTED_SCHEMES if s[0] == scheme[:1]] if scheme else []
        hint = f" (did you mean {close[0]}://?)" if close else ""
        raise UserError(
            f"tracking URI '{shown}' has unsupported scheme '{parsed.scheme}'{hint}; use "
            "sqlite:////ABS/PATH/mlflow.db, http://HOST:PORT or postgresql://USER@HOST/DB"
        )
    if scheme == "sqlite":
        path = uri[len("sqlite:///") :] if uri.startswith("sqlite:///") else ""
        if not path or path == ":memory:":
            raise UserError(
                f"tracking URI '{shown}' needs a database file: sqlite:////ABS/PATH/mlflow.db"
            )
        return sqlite_uri(path)
    if scheme == "file":
        return Path(urllib.parse.unquote(parsed.path)).expanduser().resolve().as_uri()
    if scheme in HTTP_SCHEMES and not parsed.hostname:
        raise UserError(f"tracking URI '{shown}' has no host; use http://HOST:PORT")
    return uri


def check_server(uri: str, *, timeout_s: float = 5.0) -> None:
    """For http(s) URIs: GET /health must answer 200. UserError naming the URI otherwise."""
    clean, _, _ = split_credentials(uri)
    if urllib.parse.urlsplit(clean).scheme not in HTTP_SCHEMES:
        return
    url = clean.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 (http only)
            status = response.status
    except urllib.error.HTTPError as error:
        status = error.code
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise UserError(
            f"MLflow tracking server '{redact_uri(uri)}' is not reachable ({reason}); start it "
            "(mlflow server --host 127.0.0.1 --port PORT --backend-store-uri ...) or fix "
            "--tracking-uri"
        ) from None
    if status != 200:
        raise UserError(
            f"'{redact_uri(uri)}' answered HTTP {status} on /health: it is not an MLflow "
            "tracking server; fix --tracking-uri"
        )


def sqlite_path(uri: str) -> Path | None:
    """The database file of a sqlite:/// URI, None for other URIs."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///") :])
