"""The backend contract's former home, kept so that existing imports still work.

The contract (:class:`RendezvousBackend`, its fencing :data:`Token`, and the
optional :class:`IntentLog` and :class:`HeartbeatBoard`) lives in
:mod:`rdzv.backends.base`, below the handler that uses it; import it from there.
"""

from rdzv.backends.base import *  # noqa: F403 - the whole contract, under its old name
from rdzv.backends.base import __all__  # noqa: F401 - this module re-exports the same names
