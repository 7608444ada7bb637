"""``DiskTokenCache``: tokens kept across ``broker token get`` calls, for one user only.

The directory is ``$CAPBROKER_CACHE_DIR``, else ``$XDG_CACHE_HOME/capbroker``, else
``~/.cache/capbroker``; it is created ``0700`` and used only while it is the user's own
and no one else may enter it. Each token is one file, ``0600``, written to a temporary
file and renamed, opened without following links and read only when it is the user's
and ``0600``; anything else is ignored (and, if it is the user's, removed). A file is
named by a hash of the broker, the principal (a client key's hash, or an identity JWT's
issuer and subject: a fresh JWT per call still finds the tokens of the same workload),
the task, scope, resource and action; it holds the token and its times, and is handed
out only while ``fresh``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
from pathlib import Path

from broker.client.cache import CacheKey
from broker.client.freshness import IssuedToken
from broker.token.b64 import Base64Error, b64url_decode

_PRIVATE = 0o077  # no bit for group or others
_MAX_FILE = 64 * 1024


def default_dir() -> Path:
    explicit = os.environ.get("CAPBROKER_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "capbroker"


def principal_of(credential: str) -> str:
    """Who the credential is, for naming cache files (never the credential itself): an
    identity JWT by its (unverified) issuer and subject, anything else by its hash."""
    parts = credential.split(".")
    if len(parts) == 3 and credential.startswith("eyJ"):
        with contextlib.suppress(Base64Error, ValueError, UnicodeDecodeError):
            claims = json.loads(b64url_decode(parts[1]))
            if isinstance(claims, dict) and isinstance(claims.get("sub"), str):
                return f"jwt:{claims.get('iss')}|{claims['sub']}"
    return "sha256:" + hashlib.sha256(credential.encode()).hexdigest()


def _own_and_private(st: os.stat_result) -> bool:
    return st.st_uid == os.getuid() and not (st.st_mode & _PRIVATE)


class DiskTokenCache:
    def __init__(self, broker_url: str, credential: str, directory: Path | None = None) -> None:
        self._dir = directory or default_dir()
        self._scope = f"{broker_url}\n{principal_of(credential)}"
        self.usable = self._prepare()

    def _prepare(self) -> bool:
        try:
            self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            st = os.stat(self._dir, follow_symlinks=False)
        except OSError:
            return False
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
            return False
        if st.st_mode & _PRIVATE:
            try:
                os.chmod(self._dir, 0o700)
            except OSError:
                return False
        return True

    def _path(self, key: CacheKey) -> Path:
        task, scope, resource, action = key
        material = "\n".join([self._scope, task, scope, resource or "", action or ""])
        return self._dir / (hashlib.sha256(material.encode()).hexdigest()[:40] + ".json")

    def get(self, key: CacheKey, now: float) -> IssuedToken | None:
        if not self.usable:
            return None
        path = self._path(key)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return None
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode) or not _own_and_private(st):
                self._drop(path, st)
                return None
            token = _decode(f.read(_MAX_FILE + 1))
        if token is None or token.task != key[0] or not token.fresh(now):
            self._drop(path, st)
            return None
        return token

    def _drop(self, path: Path, st: os.stat_result) -> None:
        if st.st_uid == os.getuid():
            with contextlib.suppress(OSError):
                path.unlink()

    def put(self, key: CacheKey, token: IssuedToken) -> None:
        if not self.usable:
            return
        path = self._path(key)
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        data = json.dumps({**token.to_json(token.issued_at), "issued_at": token.issued_at}).encode()
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(temporary, path)
        except OSError:
            with contextlib.suppress(OSError):
                temporary.unlink()

    def forget_task(self, task: str) -> None:
        if not self.usable:
            return
        for path in self._dir.glob("*.json"):
            with contextlib.suppress(OSError):
                st = os.stat(path, follow_symlinks=False)
                token = _decode(path.read_bytes()[: _MAX_FILE + 1]) if _own_and_private(st) else None
                if token is not None and token.task == task:
                    path.unlink()


def _decode(raw: bytes) -> IssuedToken | None:
    if len(raw) > _MAX_FILE:
        return None
    try:
        entry = json.loads(raw)
        return IssuedToken(
            task=str(entry["task"]),
            audience=str(entry["audience"]),
            token=str(entry["token"]),
            token_id=str(entry["token_id"]),
            issued_at=int(entry["issued_at"]),
            expires_at=int(entry["expires_at"]),
            capabilities=tuple(dict(c) for c in entry["capabilities"]),
        )
    except (ValueError, KeyError, TypeError):
        return None
