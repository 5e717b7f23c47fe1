"""What works without the optional extras: no etcd code needs etcd3gw any more."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

_WITHOUT_ETCD3GW = textwrap.dedent(
    """
    import sys
    sys.modules["etcd3gw"] = None  # as if the etcd3 extra were not installed
    import importlib
    importlib.import_module({module!r})
    print("imported")
    """
)


@pytest.mark.parametrize(
    "module",
    [
        "rdzv.store.etcd",
        "rdzv.backends.etcd",
        "rdzv.legacy",
        "rdzv.etcd.kv",
        "rdzv.etcd.store",
        "rdzv.etcd.backend",
        "rdzv.dynamic.wiring",
        "rdzv.registry",
        "rdzv.cli",
    ],
)
def test_the_v2_etcd_code_imports_without_etcd3gw(module: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _WITHOUT_ETCD3GW.format(module=module)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.stdout == "imported\n", result.stderr


def test_the_etcd_v3_code_imports_without_etcd3gw_or_requests() -> None:
    """The v3 client speaks the JSON gateway over urllib3, which python-etcd needs anyway:
    the etcd3 extra (etcd3gw, requests) is no longer needed."""
    script = _WITHOUT_ETCD3GW.replace(
        'sys.modules["etcd3gw"] = None', 'sys.modules["etcd3gw"] = sys.modules["requests"] = None'
    )
    for module in ("rdzv.store.etcd_v3", "rdzv.backends.etcd_v3", "rdzv.etcd.v3_client"):
        result = subprocess.run(
            [sys.executable, "-c", script.format(module=module)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.stdout == "imported\n", result.stderr
