"""RendezvousParameters, RendezvousStoreInfo and the error hierarchy."""

from __future__ import annotations

import pytest

import rdzv
from rdzv import (
    InMemoryStore,
    PrefixStore,
    RendezvousClosedError,
    RendezvousConnectionError,
    RendezvousError,
    RendezvousGracefulExitError,
    RendezvousParameters,
    RendezvousStateError,
    RendezvousStoreInfo,
    RendezvousTimeoutError,
)


def params(**config: object) -> RendezvousParameters:
    return RendezvousParameters("memory", "localhost:1", "job", 1, 2, **config)


def test_parameters_keep_their_values() -> None:
    p = RendezvousParameters("c10d", "host:1", "job", 2, 3, "10.0.0.1", join_timeout=5)
    assert (p.backend, p.endpoint, p.run_id, p.min_nodes, p.max_nodes, p.local_addr) == (
        "c10d",
        "host:1",
        "job",
        2,
        3,
        "10.0.0.1",
    )
    assert p.get("join_timeout") == 5
    assert p.get("missing", "default") == "default"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("", "e", "r", 1, 1), "backend name"),
        (("b", "e", "r", 0, 1), "minimum number"),
        (("b", "e", "r", 3, 2), "maximum number"),
    ],
)
def test_parameters_reject_invalid_values(
    args: tuple[str, str, str, int, int], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        RendezvousParameters(*args)


def test_parameters_reject_a_node_count_that_is_not_an_integer() -> None:
    with pytest.raises(TypeError, match="min_nodes"):
        RendezvousParameters("b", "e", "r", "2", 3)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [True, 1, "1", "true", "T", "yes", "Y"])
def test_get_as_bool_reads_true_spellings(value: object) -> None:
    assert params(flag=value).get_as_bool("flag") is True


@pytest.mark.parametrize("value", [False, 0, "0", "false", "F", "no", "n"])
def test_get_as_bool_reads_false_spellings(value: object) -> None:
    assert params(flag=value).get_as_bool("flag") is False


@pytest.mark.parametrize("value", [2, "maybe", 1.5])
def test_get_as_bool_rejects_other_values_naming_the_option(value: object) -> None:
    with pytest.raises(ValueError, match="'flag'"):
        params(flag=value).get_as_bool("flag")


def test_get_as_bool_returns_default_when_absent() -> None:
    assert params().get_as_bool("flag", True) is True
    assert params().get_as_bool("flag") is None


def test_get_as_int_parses_strings_and_rejects_garbage() -> None:
    assert params(n="42").get_as_int("n") == 42
    assert params().get_as_int("n", 7) == 7
    with pytest.raises(ValueError, match="'n'"):
        params(n="4x").get_as_int("n")
    with pytest.raises(ValueError, match="'n'"):
        params(n=True).get_as_int("n")


def test_get_as_float_accepts_fractions_and_rejects_non_finite() -> None:
    assert params(t="0.5").get_as_float("t") == 0.5
    for bad in ("nan", "inf", "soon", True):
        with pytest.raises(ValueError, match="'t'"):
            params(t=bad).get_as_float("t")


def test_every_error_is_a_rendezvous_error() -> None:
    for error in (
        RendezvousClosedError,
        RendezvousConnectionError,
        RendezvousGracefulExitError,
        RendezvousStateError,
        RendezvousTimeoutError,
    ):
        assert issubclass(error, RendezvousError)


def test_store_info_is_published_by_rank_zero_and_read_by_others() -> None:
    store = PrefixStore("round-3", InMemoryStore())
    published = RendezvousStoreInfo.build(0, store, "10.1.2.3", server_port=29500)
    assert published == RendezvousStoreInfo("10.1.2.3", 29500)
    assert RendezvousStoreInfo.build(1, store, "10.9.9.9") == published


def test_store_info_picks_a_free_port_when_none_is_shared() -> None:
    info = RendezvousStoreInfo.build(0, InMemoryStore(), "127.0.0.1")
    assert 0 < info.master_port < 65536


def test_public_names_resolve() -> None:
    for name in rdzv.__all__:
        assert getattr(rdzv, name) is not None
    with pytest.raises(AttributeError):
        rdzv.NoSuchName  # noqa: B018
