"""What works without the optional extras: no etcd code needs etcd3gw any more."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

_WITHOUT = textwrap.dedent(
    """
    import sys
    for name in {blocked!r}:
        sys.modules[name] = None  # as if the package were not installed
    import importlib
    importlib.import_module({module!r})
    print("imported")
    """
)


def _imports_without(module: str, blocked: tuple[str, ...]) -> None:
    """Import ``module`` in a fresh interpreter where ``blocked`` cannot be imported."""
    result = subprocess.run(
        [sys.executable, "-c", _WITHOUT.format(module=module, blocked=blocked)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.stdout == "imported\n", result.stderr


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
    _imports_without(module, ("etcd3gw",))


def test_the_etcd_v3_code_imports_without_etcd3gw_or_requests() -> None:
    """The v3 client speaks the JSON gateway over urllib3, which python-etcd needs anyway:
    the etcd3 extra (etcd3gw, requests) is no longer needed."""
    for module in ("rdzv.store.etcd_v3", "rdzv.backends.etcd_v3", "rdzv.etcd.v3_client"):
        _imports_without(module, ("etcd3gw", "requests"))
