from collections.abc import Callable, Iterator
from typing import Any, Literal

import requests

from etcd3gw.lease import Lease

_SortOrder = Literal["none", "ascend", "descend"]
_SortTarget = Literal["key", "version", "create", "mod", "value"]

class Etcd3Client:
    host: str
    port: int
    protocol: str
    session: requests.Session
    timeout: float | None
    def __init__(
        self,
        host: str = "localhost",
        port: int = 2379,
        protocol: str = "http",
        ca_cert: str | None = None,
        cert_key: str | None = None,
        cert_cert: str | None = None,
        timeout: float | None = None,
        api_path: str | None = ...,
        session: requests.Session | None = None,
    ) -> None: ...
    @property
    def api_path(self) -> str: ...
    @property
    def base_url(self) -> str: ...
    def get_url(self, path: str) -> str: ...
    # The parsed JSON body; raises etcd3gw.exceptions on failure.
    def post(self, url: str, *args: Any, json: Any = None, **kwargs: Any) -> Any: ...
    def status(self) -> dict[str, Any]: ...
    def members(self) -> list[dict[str, Any]]: ...
    def lease(self, ttl: int = 30) -> Lease: ...
    def create(self, key: str | bytes, value: str | bytes, lease: Lease | None = None) -> bool: ...
    def put(self, key: str | bytes, value: str | bytes, lease: Lease | None = None) -> bool: ...
    def get(
        self,
        key: str | bytes,
        metadata: bool = False,
        sort_order: _SortOrder | None = None,
        sort_target: _SortTarget | None = None,
        **kwargs: Any,
    ) -> list[Any]: ...
    def get_prefix(
        self,
        key_prefix: str | bytes,
        sort_order: _SortOrder | None = None,
        sort_target: _SortTarget | None = None,
    ) -> list[tuple[bytes, dict[str, Any]]]: ...
    def replace(
        self, key: str | bytes, initial_value: str | bytes, new_value: str | bytes
    ) -> bool: ...
    def delete(self, key: str | bytes, **kwargs: Any) -> bool: ...
    def delete_prefix(self, key_prefix: str | bytes) -> bool: ...
    def transaction(self, txn: dict[str, Any]) -> dict[str, Any]: ...
    def watch(
        self, key: str | bytes, **kwargs: Any
    ) -> tuple[Iterator[dict[str, Any]], Callable[[], None]]: ...
    def watch_prefix(
        self, key_prefix: str | bytes, **kwargs: Any
    ) -> tuple[Iterator[dict[str, Any]], Callable[[], None]]: ...
    def watch_once(
        self, key: str | bytes, timeout: float | None = None, **kwargs: Any
    ) -> dict[str, Any]: ...

def client(
    host: str = "localhost",
    port: int = 2379,
    ca_cert: str | None = None,
    cert_key: str | None = None,
    cert_cert: str | None = None,
    timeout: float | None = None,
    protocol: str = "http",
    api_path: str | None = ...,
    session: requests.Session | None = None,
) -> Etcd3Client: ...
