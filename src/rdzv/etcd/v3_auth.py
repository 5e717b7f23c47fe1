"""etcd authentication by username and password for the v3 JSON gateway.

:class:`TokenAuth` asks ``/v3/auth/authenticate`` for a token, puts it in the
``Authorization`` header of every request of the client, and authenticates
again when etcd reports the token expired (or forgot it on a restart).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, MutableMapping
from typing import Any

from rdzv.etcd.v3_wire import EtcdV3Error

__all__ = ["TokenAuth"]

_Request = Callable[[str, dict[str, Any]], dict[str, Any]]


class TokenAuth:
    """The auth token of one client; thread-safe. Without credentials, a no-op.

    Args:
        headers: the headers of the client's every request; the token goes there.
        credentials: ``(username, password)``, or ``None`` for an etcd without auth.
        request: sends a request to the gateway (path, body) as is, without auth.
        endpoint: names etcd in errors.
    """

    def __init__(
        self,
        headers: MutableMapping[str, str],
        credentials: tuple[str, str] | None,
        request: _Request,
        endpoint: Callable[[], str],
    ) -> None:
        self._headers = headers
        self._credentials = credentials
        self._request = request
        self._endpoint = endpoint
        self._lock = threading.Lock()
        self._token: str | None = None

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` to the gateway path; authenticate first, and again once on expiry."""
        self.ensure_token()
        try:
            return self._request(path, body)
        except EtcdV3Error as e:
            if self._credentials is None or "invalid auth token" not in str(e):
                raise
        self._authenticate()
        return self._request(path, body)

    def ensure_token(self) -> None:
        """Authenticate if there are credentials and no token yet."""
        if self._credentials is not None and self._token is None:
            self._authenticate()

    def renew(self) -> bool:
        """Take a new token and return ``True``; ``False`` without credentials."""
        if self._credentials is None:
            return False
        self._authenticate()
        return True

    def _authenticate(self) -> None:
        assert self._credentials is not None
        name, password = self._credentials
        with self._lock:
            self._headers.pop("Authorization", None)
            result = self._request("auth/authenticate", {"name": name, "password": password})
            token = result.get("token")
            if not isinstance(token, str) or not token:
                raise EtcdV3Error(
                    f"etcd at {self._endpoint()} accepted user {name!r} but sent no token; is "
                    "auth enabled there?"
                )
            self._headers["Authorization"] = token
            self._token = token
