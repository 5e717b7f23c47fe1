"""What works without the optional extras: the v2 etcd code needs no etcd3gw."""

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


def test_the_etcd_v3_code_without_etcd3gw_says_what_to_install() -> None:
    script = _WITHOUT_ETCD3GW.format(module="rdzv.store.etcd_v3")
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode != 0
    assert "pip install 'rdzv[etcd3]'" in result.stderr
