# Type stubs for ``etcd.client`` (python-etcd 0.4.5).
#
# Keyword conditions of ``write``/``delete``/``refresh`` (prevValue, prevIndex,
# prevExist, refresh) are typed without ``None``: the client sends any value it is
# given, so ``prevIndex=None`` would reach etcd as the string "None". Read options
# (recursive, wait, waitIndex, sorted, quorum) may be ``None``: the client drops them.
#
# ``timeout`` of ``read``/``watch``: ``None`` means the client's ``read_timeout``;
# ``0`` means wait without limit. A watch that times out raises EtcdWatchTimedOut;
# any other transport failure raises EtcdConnectionFailed.

from collections.abc import Iterator
from typing import Any, ClassVar, NoReturn

import urllib3
from etcd import EtcdResult

class Client:
    http: urllib3.PoolManager | None
    username: str | None
    password: str | None
    expected_cluster_id: str | None
    version_prefix: str
    _MGET: ClassVar[str]
    _MPUT: ClassVar[str]
    _MPOST: ClassVar[str]
    _MDELETE: ClassVar[str]
    def __init__(
        self,
        host: str | tuple[tuple[str, int], ...] = "127.0.0.1",
        port: int = 4001,
        srv_domain: str | None = None,
        version_prefix: str = "/v2",
        read_timeout: float = 60,
        allow_redirect: bool = True,
        protocol: str = "http",
        cert: str | tuple[str, str] | None = None,
        ca_cert: str | None = None,
        username: str | None = None,
        password: str | None = None,
        allow_reconnect: bool = False,
        use_proxies: bool = False,
        expected_cluster_id: str | None = None,
        per_host_pool_size: int = 10,
        lock_prefix: str = "/_locks",
    ) -> None: ...
    @property
    def base_uri(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def protocol(self) -> str: ...
    @property
    def read_timeout(self) -> float: ...
    @property
    def allow_redirect(self) -> bool: ...
    @property
    def lock_prefix(self) -> str: ...
    @property
    def machines(self) -> list[str]: ...
    @property
    def members(self) -> dict[str, dict[str, Any]]: ...
    @property
    def leader(self) -> dict[str, Any]: ...
    @property
    def stats(self) -> dict[str, Any]: ...
    @property
    def leader_stats(self) -> dict[str, Any]: ...
    @property
    def store_stats(self) -> dict[str, Any]: ...
    @property
    def version(self) -> str: ...
    @property
    def cluster_version(self) -> str: ...
    @property
    def key_endpoint(self) -> str: ...
    def __contains__(self, key: str) -> bool: ...
    def write(
        self,
        key: str,
        value: str | None,
        ttl: int | None = None,
        dir: bool = False,
        append: bool = False,
        *,
        prevValue: str = ...,
        prevIndex: int = ...,
        prevExist: bool = ...,
        refresh: bool = ...,
    ) -> EtcdResult: ...
    def refresh(
        self,
        key: str,
        ttl: int,
        *,
        prevValue: str = ...,
        prevIndex: int = ...,
    ) -> EtcdResult: ...
    def update(self, obj: EtcdResult) -> EtcdResult: ...
    def read(
        self,
        key: str,
        *,
        recursive: bool | None = ...,
        wait: bool | None = ...,
        waitIndex: int | None = ...,
        sorted: bool | None = ...,
        quorum: bool | None = ...,
        timeout: float | None = ...,
    ) -> EtcdResult: ...
    def delete(
        self,
        key: str,
        recursive: bool | None = None,
        dir: bool | None = None,
        *,
        prevValue: str = ...,
        prevIndex: int = ...,
    ) -> EtcdResult: ...
    def pop(
        self,
        key: str,
        recursive: bool | None = None,
        dir: bool | None = None,
        *,
        prevValue: str = ...,
        prevIndex: int = ...,
    ) -> EtcdResult: ...
    def test_and_set(
        self, key: str, value: str, prev_value: str, ttl: int | None = None
    ) -> EtcdResult: ...
    def set(self, key: str, value: str, ttl: int | None = None) -> EtcdResult: ...
    def get(self, key: str) -> EtcdResult: ...
    def watch(
        self,
        key: str,
        index: int | None = None,
        timeout: float | None = None,
        recursive: bool | None = None,
    ) -> EtcdResult: ...
    def eternal_watch(
        self, key: str, index: int | None = None, recursive: bool | None = None
    ) -> Iterator[EtcdResult]: ...
    def get_lock(self, *args: Any, **kwargs: Any) -> NoReturn: ...
    @property
    def election(self) -> NoReturn: ...
    def api_execute(
        self,
        path: str,
        method: str,
        params: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> urllib3.BaseHTTPResponse: ...
    # Internals that rdzv.etcd.v2_client uses to send a request to one member of many.
    def _check_cluster_id(self, response: urllib3.BaseHTTPResponse) -> None: ...
    def _handle_server_response(
        self, response: urllib3.BaseHTTPResponse
    ) -> urllib3.BaseHTTPResponse: ...
    def _get_headers(self) -> dict[str, str]: ...
    def api_execute_json(
        self,
        path: str,
        method: str,
        params: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> urllib3.BaseHTTPResponse: ...
