"""`rnnlab serve` over real HTTP: uvicorn on a free port of 127.0.0.1 in a thread, httpx as the client."""

from __future__ import annotations

import json
import re
import signal
import socket
import threading
import time
from typing import Iterator

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("fastapi", reason="rnnlab serve needs its extra: pip install 'rnnlab[serve]'")
httpx = pytest.importorskip("httpx", reason="the serve tests need httpx: pip install 'rnnlab[serve]'")

import rnnlab  # noqa: E402
from conftest import Forked  # noqa: E402
from rnnlab.errors import RnnlabError  # noqa: E402
from rnnlab.inference.launch import bind, engine_threads, running  # noqa: E402
from rnnlab.inference.serve import Limits, create_app  # noqa: E402

LIMITS = Limits(max_prompt_chars=100, max_tokens=100_000)
LONG = LIMITS.max_tokens  # a stream this long runs for a minute or more: still going when a test is done with it


@pytest.fixture(scope="session")  # session: xdist may interleave modules
def lm(tiny_model) -> rnnlab.LanguageModel:
    """The session's tiny char-level LSTM (vocabulary of single characters: one token, one character)."""
    return rnnlab.load(tiny_model)


@pytest.fixture(scope="session")  # session: xdist may interleave modules
def url(lm) -> Iterator[str]:
    with running(create_app(lm, LIMITS)) as url:
        yield url


@pytest.fixture(scope="session")  # session: xdist may interleave modules
def client(url) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=30) as client:
        yield client


@pytest.fixture
def own_url(lm) -> Iterator[str]:
    """A server of this test's own, for tests that count the generations running on it."""
    with running(create_app(lm, LIMITS)) as url:
        yield url


@pytest.fixture
def own_client(own_url) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=own_url, timeout=30) as client:
        yield client


def events(response: httpx.Response) -> Iterator[tuple[str, dict]]:
    """(event name, JSON data) for each Server-Sent Event, as it arrives."""
    name, data = "message", []
    for line in response.iter_lines():
        if line == "":
            if data:
                yield name, json.loads("\n".join(data))
            name, data = "message", []
        elif line.startswith("event:"):
            name = line.removeprefix("event:").strip()
        elif line.startswith("data:"):
            data.append(line.removeprefix("data:").removeprefix(" "))


def stream(client: httpx.Client, **body) -> tuple[list[str], dict]:
    """The text pieces of a streamed generation, and its 'done' event."""
    with client.stream("POST", "/v1/generate", json={**body, "stream": True}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        received = list(events(response))
    assert [name for name, _ in received] == ["message"] * (len(received) - 1) + ["done"]
    return [data["text"] for _, data in received[:-1]], received[-1][1]


def health(client: httpx.Client) -> dict:
    return client.get("/healthz").json()


def wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


# -- generating ------------------------------------------------------------------------------------


def test_generate_returns_the_prompt_then_max_tokens_new_tokens(client):
    body = client.post("/v1/generate", json={"prompt": "ROMEO:", "max_tokens": 50, "seed": 1}).json()
    assert body["text"].startswith("ROMEO:")
    assert body["tokens"] == 50 and len(body["text"]) == len("ROMEO:") + 50
    assert body["seed"] == 1 and body["unknown"] == []


def test_same_seed_same_text_and_another_seed_other_text(client):
    def text(seed):
        return client.post("/v1/generate", json={"prompt": "ROMEO:", "max_tokens": 80, "seed": seed}).json()["text"]
    assert text(7) == text(7)
    assert text(7) != text(8)


def test_returned_seed_reproduces_an_unseeded_generation(client):
    first = client.post("/v1/generate", json={"prompt": "ROMEO:", "max_tokens": 80}).json()
    again = client.post("/v1/generate", json={"prompt": "ROMEO:", "max_tokens": 80, "seed": first["seed"]}).json()
    assert again["text"] == first["text"]


def test_greedy_decoding_ignores_the_seed(client):
    def text(seed):
        body = {"prompt": "ROMEO:", "max_tokens": 40, "greedy": True, "seed": seed}
        return client.post("/v1/generate", json=body).json()["text"]
    assert text(1) == text(2)


def test_empty_prompt_starts_from_a_random_vocabulary_word(client, lm):
    body = client.post("/v1/generate", json={"max_tokens": 20, "seed": 3}).json()
    assert body["tokens"] == 20
    assert set(body["text"]) <= set(lm.tokenizer.vocab) | {"\ufffd"}


@pytest.mark.filterwarnings("ignore::rnnlab.RnnlabWarning")  # the library's warning, raised in the server's thread
def test_prompt_characters_not_in_the_vocabulary_are_reported(client):
    body = {"prompt": "ROMEO: ☃", "max_tokens": 5, "seed": 1}
    assert client.post("/v1/generate", json=body).json()["unknown"] == ["☃"]
    assert stream(client, **body)[1]["unknown"] == ["☃"]


def test_stream_sends_the_prompt_then_one_event_per_token_then_done(client):
    pieces, done = stream(client, prompt="ROMEO:", max_tokens=60, seed=5)
    assert pieces[0] == "ROMEO:"
    assert len(pieces) == 1 + 60
    assert done == {"tokens": 60, "seed": 5, "unknown": []}


def test_streamed_pieces_join_to_the_json_text_with_the_same_seed(client, lm):
    body = {"prompt": "JULIET:\n", "max_tokens": 120, "temperature": 0.8, "top_k": 20, "top_p": 0.9, "seed": 11}
    pieces, _ = stream(client, **body)
    text = client.post("/v1/generate", json=body).json()["text"]
    assert "".join(pieces) == text
    # and both are what the library writes with the same options
    assert text == lm.generate("JULIET:\n", length=120, temperature=0.8, top_k=20, top_p=0.9, seed=11)


# -- the other endpoints -----------------------------------------------------------------------------


def test_model_card_has_config_vocabulary_results_and_limits(client, lm):
    card = client.get("/v1/model").json()
    assert card["name"] == "tiny" and card["level"] == "char"
    assert card["vocab_size"] == lm.tokenizer.vocab_size
    assert card["parameters"] == lm.num_parameters()
    assert card["config"]["model"]["hidden"] == 32
    assert card["steps"] == 40 and card["train_seconds"] >= 0
    assert card["results"]["valid"]["perplexity"] > 1
    assert card["limits"] == {"max_prompt_chars": 100, "max_tokens": 100_000, "max_concurrent": 8}


def test_model_card_shows_no_path_and_no_command_line(client, lm, tiny_model):
    # what a served card shows: how the model was made, the corpus by name and size; not the machine's paths
    card = client.get("/v1/model").json()
    assert lm.config["command"] or lm.config["corpus"]["sources"]  # the directory's own config has both
    text = json.dumps(card)
    assert "command" not in card["config"] and "sources" not in card["config"]["corpus"]
    assert str(tiny_model.parent) not in text and "/tmp" not in text and "/home" not in text
    assert card["config"]["corpus"] == {"name": "corpus.txt", "train_tokens": lm.config["corpus"]["train_tokens"],
                                        "valid_tokens": lm.config["corpus"]["valid_tokens"],
                                        "test_tokens": lm.config["corpus"]["test_tokens"]}
    assert card["config"]["train"]["lr"] == lm.config["train"]["lr"]


def test_healthz_is_ok_and_idle(own_client):
    assert health(own_client) == {"status": "ok", "active_generations": 0, "waiting": 0, "tokens_generated": 0,
                                  "longest_wait_s": 0.0}


def test_openapi_schema_documents_the_endpoints_and_this_servers_caps(client):
    schema = client.get("/openapi.json").json()
    assert {"/v1/generate", "/v1/model", "/healthz"} <= set(schema["paths"])
    fields = schema["components"]["schemas"]["GenerateRequest"]["properties"]
    assert fields["prompt"]["maxLength"] == 100
    assert fields["max_tokens"]["maximum"] == 100_000


def test_page_is_html_that_fetches_nothing_from_elsewhere(client):
    response = client.get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert "/v1/completions" in response.text and "/v1/generate" not in response.text   # the OpenAI API
    assert not re.search(r"https?://|//[a-z]", response.text, re.IGNORECASE)


# -- bad requests: a 4xx with a JSON message, never a 500 ---------------------------------------------


@pytest.mark.parametrize("body, field, says", [
    ({"prompt": "x" * 101}, "prompt", "at most 100 characters"),
    ({"max_tokens": 100_001}, "max_tokens", "less than or equal to 100000"),
    ({"max_tokens": -1}, "max_tokens", "greater than or equal to 0"),
    ({"temperature": 0}, "temperature", "greater than or equal to 0.01"),
    ({"top_p": 1.5}, "top_p", "less than or equal to 1"),
    ({"top_p": 0}, "top_p", "greater than 0"),
    ({"top_k": 0}, "top_k", "greater than or equal to 1"),
    ({"seed": -1}, "seed", "greater than or equal to 0"),
    ({"seed": 2**53}, "seed", "less than or equal to 9007199254740991"),  # beyond what JavaScript holds exactly
    ({"prompt": 5}, "prompt", "valid string"),
    ({"max_tokens": "many"}, "max_tokens", "valid integer"),
    ({"max_tokens": "5"}, "max_tokens", "valid integer"),
    ({"max_tokens": 2.5}, "max_tokens", "valid integer"),
    ({"temperature": "hot"}, "temperature", "valid number"),
    ({"stream": "yes"}, "stream", "valid boolean"),
    ({"length": 50}, "length", "not permitted"),
])
def test_invalid_field_is_422_naming_the_field_and_the_rule(client, body, field, says):
    response = client.post("/v1/generate", json={"prompt": "ROMEO:", **body})
    assert response.status_code == 422
    errors = {tuple(e["loc"]): e["msg"] for e in response.json()["detail"]}
    assert says in errors[("body", field)]


@pytest.mark.parametrize("content", [
    b'{"prompt": "ROMEO:"',             # cut short
    b'{"prompt": "ROMEO:",}',           # trailing comma
    b"prompt=ROMEO:",                   # a form, not JSON
])
def test_malformed_json_is_422_saying_it_is_not_json(client, content):
    response = client.post("/v1/generate", content=content, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["msg"].startswith("the body is not valid JSON")


@pytest.mark.parametrize("content", [
    b"", b"[]", b'"ROMEO:"', b"null",                  # no body, or not an object
    b'{"temperature": NaN}', b'{"top_p": Infinity}',   # Python's JSON reader accepts these; we do not
    b'{"temperature": 1e999}',                         # overflows to infinity
    b'{"prompt": "\\ud800"}', b'{"\\udfff": 1}',       # lone surrogates: valid JSON, not text
])
def test_body_that_is_not_a_valid_request_object_is_422_json(client, content):
    response = client.post("/v1/generate", content=content, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["msg"]


def test_body_that_is_not_utf8_is_400_json(client):
    response = client.post("/v1/generate", content=b'{"prompt": "\xff"}', headers={"content-type": "application/json"})
    assert response.status_code == 400 and response.json()["detail"]


def test_body_without_a_json_content_type_is_422(client):
    response = client.post("/v1/generate", content=b'{"prompt": "ROMEO:"}', headers={"content-type": "text/plain"})
    assert response.status_code == 422 and response.json()["detail"]


def test_body_far_over_the_prompt_cap_is_413_json_before_it_is_read(client):
    response = client.post("/v1/generate", json={"prompt": "x" * 100_000})
    assert response.status_code == 413 and "limit of" in response.json()["detail"]
    # the same without a Content-Length (chunked): refused once the bytes that arrived pass the cap
    chunks = (b'{"prompt": "' + b"x" * 10_000 for _ in range(20))
    response = client.post("/v1/generate", content=chunks, headers={"content-type": "application/json"})
    assert response.status_code == 413 and "limit of" in response.json()["detail"]
    assert client.post("/v1/generate", json={"prompt": "ROMEO:", "max_tokens": 3}).status_code == 200


def test_wrong_method_and_unknown_path_are_json_4xx(client):
    assert client.get("/v1/generate").status_code == 405
    assert client.get("/v1/nothing").json() == {"detail": "Not Found"}


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                max_size=3),
                    max_leaves=5)
FIELDS = st.sampled_from(["prompt", "max_tokens", "temperature", "top_k", "top_p", "greedy", "seed", "stream", "x"])


@pytest.fixture(scope="session")  # session: xdist may interleave modules
def small_server(lm) -> Iterator[httpx.Client]:
    with running(create_app(lm, Limits(max_prompt_chars=50, max_tokens=30))) as url:
        with httpx.Client(base_url=url, timeout=30) as client:  # one connection for all the examples
            yield client


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.dictionaries(FIELDS, JSON, max_size=4) | JSON)
def test_no_request_body_gets_a_server_error(small_server, body):
    content = json.dumps(body).encode()  # json.dumps writes NaN and Infinity, as some clients do
    response = small_server.post("/v1/generate", content=content, headers={"content-type": "application/json"})
    assert response.status_code in (200, 422), response.text
    assert response.status_code == 200 or response.json()["detail"]


# -- many clients --------------------------------------------------------------------------------------


def test_long_stream_does_not_hold_up_a_short_request(own_client, own_url):
    client, url = own_client, own_url
    with client.stream("POST", "/v1/generate", json={"prompt": "ROMEO:", "max_tokens": LONG, "stream": True}) as long:
        long_events = events(long)
        for _ in range(10):
            next(long_events)
        # the long stream's client now stops reading: a slow client, with generation still under way
        # a server that served one request at a time would hold this one until the long stream ended
        # (LONG tokens: a minute or more) and the client's timeout would fail the test
        quick = httpx.post(url + "/v1/generate", json={"prompt": "JULIET:", "max_tokens": 20}, timeout=30)
        assert quick.status_code == 200 and quick.json()["tokens"] == 20
        assert health(client)["active_generations"] == 1  # answered while the long one is still going
        assert next(long_events)[0] == "message"


def test_client_that_hangs_up_mid_stream_stops_its_generation(own_client, own_url):
    client, url = own_client, own_url
    with httpx.stream("POST", url + "/v1/generate", json={"prompt": "ROMEO:", "max_tokens": LONG, "stream": True},
                      timeout=30) as response:
        long_events = events(response)
        for _ in range(10):
            next(long_events)
        assert health(client)["active_generations"] == 1
    # leaving the block closed the connection, LONG tokens before the end of the stream
    wait_until(lambda: health(client)["active_generations"] == 0)
    produced = health(client)["tokens_generated"]
    time.sleep(0.5)
    assert health(client)["tokens_generated"] == produced < LONG


def test_client_that_hangs_up_on_a_json_request_stops_its_generation(own_client, own_url):
    # a non-streamed request: the server would otherwise generate all LONG tokens for nobody
    host, port = own_url.removeprefix("http://").split(":")
    body = json.dumps({"prompt": "ROMEO:", "max_tokens": LONG}).encode()
    with socket.create_connection((host, int(port))) as conn:
        conn.sendall(b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        wait_until(lambda: health(own_client)["tokens_generated"] > 50)
    wait_until(lambda: health(own_client)["active_generations"] == 0, timeout=5)
    produced = health(own_client)["tokens_generated"]
    time.sleep(0.5)
    assert health(own_client)["tokens_generated"] == produced < LONG


def test_at_most_max_concurrent_generations_run_and_the_others_wait_their_turn(lm):
    with running(create_app(lm, Limits(max_prompt_chars=100, max_tokens=2000, max_concurrent=2))) as url:
        codes, peak, waited = [], 0, 0

        def one(seed: int) -> None:
            # 2000 tokens: the tiny model writes 300 in ~15 ms, which the 5 ms polling below could miss
            response = httpx.post(url + "/v1/generate", json={"prompt": "A", "max_tokens": 2000, "seed": seed},
                                  timeout=120)
            codes.append((response.status_code, response.json()["tokens"]))

        threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        with httpx.Client(base_url=url, timeout=30) as client:
            while any(t.is_alive() for t in threads):
                h = health(client)
                peak, waited = max(peak, h["active_generations"]), max(waited, h["waiting"])
                time.sleep(0.005)
        for t in threads:
            t.join()
        longest = health(httpx.Client(base_url=url))["longest_wait_s"]
    assert codes == [(200, 2000)] * 6
    assert peak == 2 and waited >= 1 and longest > 0  # 6 requests, 2 slots: someone waited, and it was timed


def test_every_stream_shares_one_copy_of_the_arranged_weights(lm, monkeypatch):
    # a Stepper holds a copy of the recurrent weights and the folded embedding table: one per model,
    # not one per request (200 requests once took a server from 291 MB to 1.6 GB)
    from rnnlab.inference import sampling
    made = []
    real_init = sampling.Stepper.__init__
    monkeypatch.setattr(sampling.Stepper, "__init__",
                        lambda self, net, precision="fp32": (made.append(1), real_init(self, net, precision))[1])
    sampling._SHARED.clear()
    streams = [lm.stream("A", length=5, seed=i) for i in range(20)]
    texts = ["".join(s) for s in streams]
    assert len(made) == 1 and len(set(texts)) > 1
    with torch.no_grad():  # new weights (an optimiser step, a load): a new stepper, not stale tables
        lm.net.decoder.bias.add_(0.0)
    lm.generate("A", length=5, seed=0)
    assert len(made) == 2


# -- starting and stopping -------------------------------------------------------------------------------


def test_busy_port_is_a_one_line_error():
    with bind("127.0.0.1", 0) as taken:
        with pytest.raises(RnnlabError, match=r"cannot listen on 127\.0\.0\.1:\d+: .*--port"):
            bind("127.0.0.1", taken.getsockname()[1])


def test_port_out_of_range_is_a_one_line_error():
    with pytest.raises(RnnlabError, match=r"--port must be in 0\.\.65535"):
        bind("127.0.0.1", 70_000)


def test_threads_default_to_the_cores_and_one_fewer_when_busy():
    cores = torch.get_num_threads()
    assert engine_threads(None) == (cores, max(1, cores - 1))
    assert engine_threads(3) == (3, 3)  # a count the user gives is kept, busy or not
    with pytest.raises(RnnlabError, match="--threads must be at least 1"):
        engine_threads(0)


def test_the_apps_own_engine_steps_on_one_thread_whatever_the_callers_count(lm):
    # the caller's thread has likely run torch on several threads; an engine thread on several too was 2x slower
    # than on one (engine.py), so the engine create_app makes itself keeps to one, and leaves the caller's alone
    before = torch.get_num_threads()
    engine = create_app(lm, LIMITS).state.engine
    try:
        assert engine.threads == 1
        assert len(list(engine.submit(lm.encode_prompt("ROMEO:"), length=20, seed=1))) == 20
        assert engine.threads_now == 1 and torch.get_num_threads() == before
    finally:
        engine.close()


def test_limits_below_one_token_are_refused():
    with pytest.raises(RnnlabError, match="--max-tokens must be at least 1"):
        Limits(max_tokens=0)


def test_serve_prints_its_url_serves_and_stops_on_ctrl_c(lm):
    server = Forked("serve", lm.path, "--port", "0")  # a process of its own, to send SIGINT to
    try:
        deadline = time.monotonic() + 60
        while not (url := re.search(r"http://127\.0\.0\.1:\d+", server.output()[0])):
            assert server.poll() is None and time.monotonic() < deadline, server.output()
            time.sleep(0.01)
        body = {"prompt": "ROMEO:", "max_tokens": 10}
        assert httpx.post(url.group() + "/v1/generate", json=body, timeout=60).json()["tokens"] == 10
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=30) == 0
    finally:
        server.kill()


def test_a_served_model_of_many_files_stops_at_the_end_of_a_document(tmp_path):
    from conftest import QUIET, TINY, shakespeare
    text = shakespeare(24_000)
    for i in range(6):
        (tmp_path / f"{i}.txt").write_text(text[i * 4000:(i + 1) * 4000])
    lm = rnnlab.train(str(tmp_path), tmp_path / "m", max_steps=3, **TINY, **QUIET)
    with torch.no_grad():
        lm.net.decoder.bias[lm.tokenizer.doc_id] += 8.0                # documents end often now
    with running(create_app(lm, LIMITS)) as url:
        for seed in range(3):
            body = {"prompt": "ROMEO", "max_tokens": 300, "seed": seed}
            served = httpx.post(url + "/v1/generate", json=body, timeout=60).json()["text"]
            assert served == lm.generate("ROMEO", length=300, seed=seed) and "\x1e" not in served


def test_a_process_manager_builds_the_app_from_the_environment(tiny_model, monkeypatch):
    from rnnlab.inference.launch import app_from_env
    monkeypatch.delenv("RNNLAB_MODEL", raising=False)
    with pytest.raises(RnnlabError, match="set RNNLAB_MODEL"):
        app_from_env()
    monkeypatch.setenv("RNNLAB_MODEL", str(tiny_model))
    monkeypatch.setenv("RNNLAB_MAX_CONCURRENT", "3")
    with running(app_from_env()) as url:
        model = httpx.get(url + "/v1/model").json()
        text = httpx.post(url + "/v1/completions", json={"prompt": "A", "max_tokens": 5, "seed": 1}).json()
    assert model["limits"]["max_concurrent"] == 3 and text["usage"]["completion_tokens"] == 5


def test_connections_are_accepted_with_nagles_algorithm_off():
    # asyncio turns TCP_NODELAY on only for sockets made with proto=IPPROTO_TCP, which bind's are not; without
    # it each response on a kept-alive connection waited ~40 ms for the client's delayed ACK
    import socket
    from rnnlab.inference.launch import bind
    with bind("127.0.0.1", 0) as listener, socket.create_connection(listener.getsockname()[:2]):
        connection, _ = listener.accept()
        with connection:
            assert connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
