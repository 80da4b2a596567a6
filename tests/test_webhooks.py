"""Webhooks end to end in one process: the outbox, the delivery thread and a local sink."""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from decimal import Decimal

import pytest

from tests.helpers import AUTH, MASTER_KEY, assert_openai_error, chat_body
from tests.test_webhook_events import SEED_KEYS, verify
from tests.webhook_sink import WebhookSink
from webhooks import dispatcher as dispatch

SECRET = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="


@pytest.fixture
def sink():
    with WebhookSink() as running:
        yield running


@pytest.fixture
def hooked(make_app, environ, sink):
    """An app with webhooks on; its delivery thread is stopped after the test."""
    apps = []

    def make(**sections):
        environ.update({"WEBHOOK_URL": sink.url, "WEBHOOK_SECRET": SECRET, "WEBHOOK_RETRY_MAX_SECONDS": "0.2"})
        general = {"alerting": ["webhook"], **sections.pop("general_settings", {})}
        app = make_app(general_settings=general, **sections)
        apps.append(app)
        return app

    yield make
    for app in apps:
        if app.extensions["tollgate"].dispatcher:
            app.extensions["tollgate"].dispatcher.stop()


def chat(client, user="krrish12", **extra):
    response = client.post("/chat/completions", json=chat_body(user=user, model="mock-model", **extra), headers=AUTH)
    assert response.status_code == 200, response.get_json()
    return response


def test_spend_tracked_event_carries_the_seed_payload(hooked, sink):
    client = hooked().test_client()
    response = chat(client)
    [event] = sink.wait_for(1)
    cost = float(response.headers["x-litellm-response-cost"])
    assert list(event)[: len(SEED_KEYS)] == SEED_KEYS
    assert event["spend"] == cost
    assert event["token"] == hashlib.sha256(MASTER_KEY.encode()).hexdigest()
    assert (event["customer_id"], event["event"], event["event_group"]) == ("krrish12", "spend_tracked", "customer")
    assert (
        event["event_message"]
        == f"Customer spend tracked. Customer=krrish12, spend={response.headers['x-litellm-response-cost']}"
    )
    assert all(
        event[key] is None
        for key in (
            "max_budget",
            "user_id",
            "team_id",
            "user_email",
            "key_alias",
            "projected_exceeded_date",
            "projected_spend",
        )
    )


def test_calls_do_not_wait_for_a_receiver_that_never_answers(make_app, environ):
    """The delivery thread is stuck on a post the receiver took and never answers (for up to
    its 30 s read timeout): calls go on being served and charged meanwhile."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        environ["WEBHOOK_URL"] = f"http://127.0.0.1:{listener.getsockname()[1]}/hook"
        app = make_app(general_settings={"alerting": ["webhook"]})
        client = app.test_client()
        try:
            costs = [Decimal(chat(client).headers["x-litellm-response-cost"])]
            listener.settimeout(dispatch.HANDOFF_SECONDS + 10)
            receiver, _ = listener.accept()
            with receiver:
                receiver.settimeout(10)
                assert receiver.recv(65536).startswith(b"POST /hook HTTP/1.1")
                # Served while the post is still waiting for its answer: before its read times out.
                calls = threading.Thread(
                    target=lambda: costs.extend(
                        Decimal(chat(client).headers["x-litellm-response-cost"]) for _ in range(20)
                    )
                )
                calls.start()
                calls.join(dispatch.READ_TIMEOUT / 2)
                assert not calls.is_alive() and len(costs) == 21
                info = client.get("/customer/info?end_user_id=krrish12", headers=AUTH).get_json()
                assert Decimal(str(info["spend"])) == sum(costs) > 0
                events = client.get("/webhooks/events?status=pending", headers=AUTH).get_json()
                assert len(events) == 21  # the one in flight too: nothing is settled yet
                assert all(event["attempts"] == 0 and event["last_error"] is None for event in events)
        finally:
            app.extensions["tollgate"].dispatcher.stop()


def test_two_hundred_calls_give_two_hundred_distinct_events(hooked, sink):
    client = hooked().test_client()
    for n in range(200):
        chat(client, user=f"c{n % 7}")
    events = sink.wait_for(200)
    assert len(events) == 200
    assert len({event["event_id"] for event in events}) == 200
    assert {event["event"] for event in events} == {"spend_tracked"}


def test_every_post_is_signed(hooked, sink):
    client = hooked().test_client()
    chat(client)
    sink.wait_for(1)
    [(headers, body)] = sink.accepted_with_headers()
    assert headers["webhook-id"] == json.loads(body)["event_id"]
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 60
    assert verify(SECRET, headers, body)
    assert not verify("whsec_" + "A" * 44, headers, body)


def test_failed_posts_are_retried_until_delivered(hooked, sink):
    sink.fail_first = 3
    client = hooked().test_client()
    for n in range(5):
        chat(client, user=f"retry-{n}")
    events = sink.wait_for(5)
    assert sorted(event["customer_id"] for event in events) == [f"retry-{n}" for n in range(5)]
    assert len([post for post in sink.posts if post[2] == 500]) == 3
    assert len({event["event_id"] for event in events}) == 5


def test_budget_alerts_fire_once_per_threshold_and_window(hooked, sink):
    client = hooked(general_settings={"budget_alert_thresholds": [0.5]}).test_client()
    client.post("/customer/new", json={"user_id": "alerted", "max_budget": 0.1, "soft_budget": 0.07}, headers=AUTH)
    while True:
        response = client.post("/chat/completions", json=chat_body(user="alerted", model="mock-model"), headers=AUTH)
        if response.status_code != 200:
            break
    sink.wait_for(1)
    time.sleep(1.5)
    budget_events = [event["event"] for event in sink.accepted if event["event"] != "spend_tracked"]
    assert sorted(budget_events) == ["budget_crossed", "soft_budget_crossed", "threshold_crossed"]
    crossed = next(event for event in sink.accepted if event["event"] == "budget_crossed")
    assert crossed["max_budget"] == 0.1 and crossed["soft_budget"] == 0.07 and crossed["spend"] >= 0.1


@pytest.mark.parametrize(
    ("types", "expected"), [(["spend_tracked"], {"spend_tracked"}), (["budget_alerts"], {"budget_crossed"})]
)
def test_alert_types_select_the_events(hooked, sink, types, expected):
    client = hooked(general_settings={"alert_types": types, "budget_alert_thresholds": [1]}).test_client()
    client.post("/customer/new", json={"user_id": "picky", "max_budget": 0.01}, headers=AUTH)
    chat(client, user="picky")
    sink.wait_for(1)
    time.sleep(1.2)
    assert {event["event"] for event in sink.accepted} == expected


def test_health_services_sends_a_test_event(hooked, sink):
    client = hooked().test_client()
    response = client.get("/health/services?service=webhook", headers=AUTH)
    assert response.status_code == 200
    [event] = sink.wait_for(1)
    assert event["event_id"] == response.get_json()["event_id"] and event["event"] == "webhook_test"


def test_health_services_reports_an_unreachable_endpoint(hooked, sink):
    client = hooked().test_client()
    sink.stop()
    assert_openai_error(client.get("/health/services?service=webhook", headers=AUTH), 502, "upstream_error")


def test_events_past_their_retry_window_are_dead_listed_and_requeued(hooked, sink):
    app = hooked()
    gateway = app.extensions["tollgate"]
    client = app.test_client()
    sink.stop()
    chat(client, user="doomed")
    later = time.time() + 25 * 3600  # the delivery thread's next attempt comes after the 24-hour window
    gateway.dispatcher.clock = lambda: later

    def dead():
        return client.get("/webhooks/events?status=dead", headers=AUTH).get_json()

    deadline = time.monotonic() + 10
    while not dead() and time.monotonic() < deadline:
        time.sleep(0.05)
    [event] = dead()
    assert (event["customer_id"], event["status"]) == ("doomed", "dead") and event["attempts"] >= 1
    assert event["last_error"] == "ConnectionRefusedError"

    sink.start()
    assert client.post("/webhooks/requeue", json={"status": "dead"}, headers=AUTH).get_json() == {"requeued": 1}
    assert [event["customer_id"] for event in sink.wait_for(1)] == ["doomed"]
    assert dead() == []


def test_without_webhook_url_spend_is_tracked_and_no_event_written(make_app, caplog):
    app = make_app(general_settings={"alerting": ["webhook"]})
    assert "WEBHOOK_URL is not set" in caplog.text
    client = app.test_client()
    chat(client, user="quiet")
    assert client.get("/customer/info?end_user_id=quiet", headers=AUTH).get_json()["spend"] > 0
    assert app.extensions["tollgate"].store.outbox.list(None, 10) == []


@pytest.mark.parametrize("query", ["?status=lost", "?limit=0"])
def test_bad_event_queries_are_400(hooked, query):
    assert_openai_error(hooked().test_client().get(f"/webhooks/events{query}", headers=AUTH), 400)


def test_a_worker_taking_requests_counts_as_serving_even_when_they_write_no_event(hooked, sink):
    app = hooked()
    dispatcher = app.extensions["tollgate"].dispatcher
    assert not dispatcher.serving()
    response = app.test_client().get("/customer/list", headers=AUTH)
    assert response.status_code == 200
    assert dispatcher.serving()
    time.sleep(dispatch.SERVING_SECONDS + 0.1)
    assert not dispatcher.serving()
