"""What OpenAI clients and browsers expect beyond the basics, against a real `glmv serve`: `model` may be left out,
GET /v1/models/{id}, the developer role, stop_token_ids (stop tokens never in the text), and CORS when
--allowed-origins is given (off by default)."""

from __future__ import annotations

import httpx
import openai
import pytest

from glmv.testing.server import serve_process
from glmv.testing.tiny_tokenizer import TINY_VOCAB_SIZE

NAME = "zai-org/tiny-glmv"  # a served name with a slash, as Hugging Face ids have
ORIGIN = "https://app.example"
KEY = "compat-key"


@pytest.fixture(scope="module")
def compat(model_dir):
    with serve_process(model_dir, "--served-model-name", NAME, "--allowed-origins", ORIGIN, api_key=KEY) as s:
        yield s


@pytest.fixture(scope="module")
def client(compat):
    return openai.OpenAI(base_url=compat.url + "/v1", api_key=KEY, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def http(compat):
    with httpx.Client(base_url=compat.url, headers=compat.headers, timeout=60) as h:
        yield h


def hi(role: str = "user") -> list[dict]:
    return [{"role": role, "content": "Be brief."}, {"role": "user", "content": "Hello"}]


def test_model_may_be_left_out(http):
    chat = http.post("/v1/chat/completions", json={"messages": hi(), "max_tokens": 2})
    assert chat.status_code == 200 and chat.json()["model"] == NAME
    done = http.post("/v1/completions", json={"prompt": "The quick", "max_tokens": 2})
    assert done.status_code == 200 and done.json()["model"] == NAME
    wrong = http.post("/v1/chat/completions", json={"model": "tiny-glmv", "messages": hi(), "max_tokens": 2})
    assert wrong.status_code == 404 and wrong.json()["error"]["code"] == "model_not_found"


def test_models_by_id(compat, client, http):
    model = client.models.retrieve(NAME)
    assert (model.id, model.object, model.owned_by) == (NAME, "model", "glmv")
    assert http.get(f"/v1/models/{NAME}").json() == http.get("/v1/models").json()["data"][0]
    with pytest.raises(openai.NotFoundError) as e:
        client.models.retrieve("gpt-4o")
    assert e.value.body["code"] == "model_not_found" and "gpt-4o" in e.value.body["message"]
    r = http.get("/v1/models/zai-org/other")
    assert r.status_code == 404 and set(r.json()["error"]) == {"message", "type", "param", "code"}
    assert httpx.get(compat.url + f"/v1/models/{NAME}").status_code == 401  # behind the key, like the rest


def test_developer_role_is_the_system_role(client):
    def prompt_tokens(role: str) -> int:
        out = client.chat.completions.create(model=NAME, messages=hi(role), max_tokens=1, temperature=0)
        return out.usage.prompt_tokens

    assert prompt_tokens("developer") == prompt_tokens("system")


def test_stop_token_ids_are_honoured_and_never_in_the_text(client):
    def answer(max_tokens: int = 5, **extra):
        return client.chat.completions.create(model=NAME, messages=hi(), max_tokens=max_tokens, temperature=0,
                                              extra_body={"skip_special_tokens": False, **extra})

    token_text = answer(1, ignore_eos=True).choices[0].message.content  # the first token, as text
    every = list(range(TINY_VOCAB_SIZE))  # whatever comes first stops the answer
    stopped = answer(stop_token_ids=every)
    choice = stopped.choices[0]
    assert (choice.finish_reason, stopped.usage.completion_tokens, choice.message.content) == ("stop", 1, "")
    kept = answer(stop_token_ids=every, include_stop_str_in_output=True).choices[0]
    assert kept.message.content == token_text and token_text  # asked for: the stop token's text comes back


@pytest.mark.parametrize("ids, says", [([-1], "stop_token_ids"), (list(range(1025)), "stop_token_ids"),
                                       (["1"], "stop_token_ids"), ([True], "stop_token_ids")])
def test_bad_stop_token_ids_are_400(http, ids, says):
    r = http.post("/v1/chat/completions", json={"messages": hi(), "max_tokens": 2, "stop_token_ids": ids})
    assert r.status_code == 400 and says in r.json()["error"]["message"] + str(r.json()["error"]["param"])


def test_cors_preflight_and_headers_for_allowed_origins(compat):
    preflight = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization, content-type"}
    r = httpx.options(compat.url + "/v1/chat/completions", headers=preflight)  # browsers send no key here
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in r.headers["access-control-allow-methods"]
    assert "authorization" in r.headers["access-control-allow-headers"].lower()
    other = httpx.options(compat.url + "/v1/chat/completions", headers={**preflight, "Origin": "https://evil.example"})
    assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
    answer = httpx.get(compat.url + "/v1/models", headers={**compat.headers, "Origin": ORIGIN})
    assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == ORIGIN
    refused = httpx.get(compat.url + "/v1/models", headers={"Origin": ORIGIN})  # the page can read the 401
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == ORIGIN


def test_cors_is_off_by_default(server):
    preflight = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
    r = httpx.options(server.url + "/v1/chat/completions", headers=preflight)
    assert r.status_code in (401, 405) and "access-control-allow-origin" not in r.headers
    r = httpx.get(server.url + "/v1/models", headers={**server.headers, "Origin": ORIGIN})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
