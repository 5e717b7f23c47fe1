"""MemberPool: which member of an etcd cluster is asked, in what order, within what time."""

from __future__ import annotations

import logging
import time

import pytest

from rdzv.etcd import members
from rdzv.etcd.members import MemberPool

URLS = ["http://a:1", "http://b:2", "http://c:3"]


class Down(Exception):
    """A member failure in these tests."""


class Answer(Exception):
    """The cluster's answer (not a member failure)."""


def pool(urls: list[str] = URLS) -> MemberPool:
    return MemberPool(
        urls,
        lambda e: isinstance(e, Down),
        lambda failures: ConnectionError(f"all down: {[url for url, _ in failures]}"),
    )


def failing(down: set[str], asked: list[tuple[str, float]]) -> object:
    def attempt(url: str, timeout: float) -> str:
        asked.append((url, timeout))
        if url in down:
            raise Down(url)
        return url

    return attempt


def test_a_failed_member_hands_the_request_to_the_next_and_is_then_asked_last() -> None:
    members_ = pool()
    asked: list[tuple[str, float]] = []
    assert members_.call(failing({"http://a:1"}, asked), 3.0, split=True) == "http://b:2"
    assert [url for url, _ in asked] == ["http://a:1", "http://b:2"]
    assert members_.order() == [1, 2, 0]


def test_each_member_gets_an_equal_share_of_the_budget_or_all_of_it_for_a_watch() -> None:
    asked: list[tuple[str, float]] = []
    pool().call(failing({"http://a:1", "http://b:2"}, asked), 3.0, split=True)
    assert [round(timeout, 1) for _, timeout in asked] == [1.0, 1.0, 1.0]
    asked.clear()
    pool().call(failing({"http://a:1"}, asked), 3.0, split=False)
    assert asked[0][1] == pytest.approx(3.0, abs=0.05)


def test_every_member_failing_raises_the_exhausted_error_naming_them() -> None:
    with pytest.raises(ConnectionError, match="all down") as caught:
        pool().call(failing(set(URLS), []), 0.3, split=True)
    assert all(url in str(caught.value) for url in URLS)
    assert isinstance(caught.value.__cause__, Down)


def test_members_that_all_failed_are_asked_again_while_the_budget_lasts() -> None:
    """A leader killed: the others answer "no leader" (or nothing) until they elect one.
    One pass over them would fail a store operation that had seconds left."""
    electing = set(URLS)
    asked: list[tuple[str, float]] = []
    started = time.monotonic()

    def attempt(url: str, timeout: float) -> str:
        asked.append((url, timeout))
        if time.monotonic() - started > 0.35:
            electing.discard("http://b:2")  # b has a leader again
        if url in electing:
            raise Down(url)
        return url

    assert pool().call(attempt, 3.0, split=True) == "http://b:2"
    assert len(asked) > len(URLS)  # more than one pass
    assert time.monotonic() - started < 2.0


def test_members_that_keep_failing_are_given_up_once_the_budget_is_spent() -> None:
    asked: list[tuple[str, float]] = []
    started = time.monotonic()
    with pytest.raises(ConnectionError, match="all down"):
        pool().call(failing(set(URLS), asked), 0.5, split=True)
    elapsed = time.monotonic() - started
    assert 0.5 - members.PASS_PAUSE <= elapsed < 1.0
    assert len(asked) >= 2 * len(URLS)


def test_one_member_raises_its_own_failure_as_before() -> None:
    with pytest.raises(Down):
        pool(["http://a:1"]).call(failing({"http://a:1"}, []), 3.0, split=True)


def test_an_answer_of_the_cluster_is_raised_without_asking_another_member() -> None:
    asked: list[str] = []

    def attempt(url: str, timeout: float) -> None:
        asked.append(url)
        raise Answer

    with pytest.raises(Answer):
        pool().call(attempt, 3.0, split=True)
    assert asked == ["http://a:1"]


def test_a_move_is_logged_once_however_many_requests_fail_on_the_member(
    caplog: pytest.LogCaptureFixture,
) -> None:
    members_ = pool()
    with caplog.at_level(logging.WARNING, logger="rdzv.etcd.members"):
        members_.call(failing({"http://a:1"}, []), 3.0, split=True)
        members_.call(failing({"http://a:1"}, []), 3.0, split=True)
    moves = [r.getMessage() for r in caplog.records if "moving to" in r.getMessage()]
    assert moves == [moves[0]] and "http://a:1 failed" in moves[0] and "http://b:2" in moves[0]


def test_a_failed_member_is_asked_first_again_once_the_avoidance_passes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(members, "AVOID_SECONDS", 0.05)
    members_ = pool()
    members_.call(failing({"http://a:1", "http://b:2"}, []), 3.0, split=True)
    assert members_.order() == [2, 0, 1]
    time.sleep(0.1)
    assert members_.order() == [2, 0, 1]  # the one that answered stays first
    members_.call(failing({"http://c:3"}, []), 3.0, split=True)
    assert members_.order()[0] == 0
