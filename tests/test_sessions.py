"""Upstream sessions honour a configured proxy, and skip the environment lookup otherwise."""

from __future__ import annotations

import pytest

from providers.base import SessionPool

PROXY_VARIABLES = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy", "all_proxy")


@pytest.fixture
def no_proxy_env(monkeypatch):
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_sessions_skip_the_environment_without_a_proxy(no_proxy_env):
    assert SessionPool().session().trust_env is False


def test_sessions_use_a_configured_proxy(no_proxy_env):
    no_proxy_env.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    session = SessionPool().session()
    assert session.trust_env is True
    assert session.get_adapter("https://api.openai.com").poolmanager is not None


def test_each_thread_has_its_own_session():
    import threading

    pool, seen = SessionPool(), []
    threads = [threading.Thread(target=lambda: seen.append(pool.session())) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(session) for session in seen}) == 3  # all alive, so their ids differ
    assert pool.session() is pool.session()
