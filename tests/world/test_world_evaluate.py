"""evaluate() with glmv's engine on a tiny random checkpoint, with the OpenAI backend against a loopback server
that answers from the ground truth, the CLI (world list/show, eval --endpoint), reports and the
multiple-choice loader."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import av
import numpy as np
import pytest
from PIL import Image

from glmv.cli import main
from glmv.errors import GlmvError, InputError
from glmv.world import sample
from glmv.world.evaluate import (
    bar_chart,
    evaluate,
    glmv_backend,
    load_multiple_choice,
    openai_backend,
    openai_messages,
    table,
)

SERVED = ("count", "gui_action", "dialogue", "doc_form", "video_order")  # image, GUI, multi-turn, JSON, video
LIMIT = 3


def key(messages: list[dict]) -> str:
    return hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()


@pytest.fixture(scope="module")
def server():
    """An OpenAI-compatible server on 127.0.0.1 that answers each request with the target of the sample whose
    converted messages (text, images, videos, history) it received, and records the requests."""
    answers = {key(openai_messages(s.messages())): s.target
               for t in SERVED for s in (sample(t, "test", i) for i in range(LIMIT))}
    seen: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append({"path": self.path, "auth": self.headers.get("Authorization"), **body})
            target = answers.get(key(body["messages"]))
            reply = {"choices": [{"message": {"role": "assistant", "content": target}}]}
            data = json.dumps(reply).encode()
            self.send_response(200 if target is not None else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    httpd.shutdown()
    httpd.server_close()


def test_openai_messages_carry_png_and_mp4_data_urls():
    s = sample("video_order", "test", 0)
    (part, text), = [m["content"] for m in openai_messages(s.messages())]
    assert part["type"] == "video_url" and text == {"type": "text", "text": s.prompt}
    mp4 = base64.b64decode(part["video_url"]["url"].removeprefix("data:video/mp4;base64,"))
    with av.open(io.BytesIO(mp4)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == len(s.frames) and frames[0].shape == (*s.frames[0].size[::-1], 3)
    img = sample("count", "test", 0)
    (part, _), = [m["content"] for m in openai_messages(img.messages())]
    png = base64.b64decode(part["image_url"]["url"].removeprefix("data:image/png;base64,"))
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), np.asarray(img.image))  # lossless


def test_openai_backend_scores_one_when_the_server_is_right(server):
    url, seen = server
    seen.clear()
    answer = openai_backend(url + "/v1/", "glm-test", api_key="k123", max_tokens=64, enable_thinking=False)
    results = evaluate(answer, list(SERVED), split="test", limit=LIMIT, progress=False)
    assert results["score"] == 1.0 and results["reward"] == 1.0
    assert all(r["count"] == LIMIT and r["score"] == 1.0 for r in results["tasks"].values())
    assert len(seen) == LIMIT * len(SERVED)
    assert {(r["path"], r["auth"], r["model"], r["temperature"], r["max_tokens"]) for r in seen} == \
        {("/v1/chat/completions", "Bearer k123", "glm-test", 0, 64)}
    assert all(r["chat_template_kwargs"] == {"enable_thinking": False} for r in seen)
    assert any(len(r["messages"]) > 1 for r in seen)  # the dialogue's history went as turns


def test_openai_backend_errors_are_glmv_errors(server):
    url, _ = server
    with pytest.raises(GlmvError, match="answered 404"):
        openai_backend(url, "m")([sample("count", "train", 0)])  # a sample the server does not know


def test_evaluate_scores_wrong_answers_and_checks_batch_sizes():
    results = evaluate(lambda batch: ["<|begin_of_box|>99<|end_of_box|>"] * len(batch), ["count"], limit=4,
                       progress=False, batch_size=3)
    assert results["tasks"]["count"]["score"] == 0.0 and results["tasks"]["count"]["count"] == 4
    with pytest.raises(GlmvError, match="returned 1 outputs for 2"):
        evaluate(lambda batch: ["x"], ["count"], limit=2, progress=False, batch_size=2)
    with pytest.raises(InputError, match="unknown task"):
        evaluate(lambda batch: [], ["nope"], progress=False)


def test_table_and_bar_chart(tmp_path):
    results = evaluate(lambda batch: [s.target if s.index % 2 == 0 else "" for s in batch], ["color", "ocr"],
                       limit=4, progress=False)
    assert results["tasks"]["color"]["score"] == 0.5
    text = table(results)
    assert text.splitlines()[0].split() == ["task", "n", "score", "reward"]
    assert "color" in text and "0.500" in text and text.splitlines()[-1].split()[:2] == ["mean", "8"]
    bar_chart(results, tmp_path / "chart.png")
    chart = Image.open(tmp_path / "chart.png")
    assert chart.width > 300 and chart.height >= 26 + 2 * 18


def test_glmv_backend_end_to_end_on_a_tiny_checkpoint(tmp_path):
    from glmv.testing.tiny_checkpoint import make_tiny_model_dir

    answer = glmv_backend(str(make_tiny_model_dir(tmp_path)), max_tokens=4, batch_size=2)
    results = evaluate(answer, ["count", "dialogue", "video_count"], limit=1, progress=False)
    for r in results["tasks"].values():  # random weights: any score, but real outputs, scored
        assert r["count"] == 1 and isinstance(r["samples"][0]["output"], str) and 0 <= r["score"] <= 1


def test_multiple_choice_loader(tmp_path):
    Image.new("RGB", (32, 24), (255, 0, 0)).save(tmp_path / "red.png")
    buf = io.BytesIO()
    Image.new("RGB", (20, 20), (0, 0, 255)).save(buf, format="PNG")
    b64 = base64.b64encode(buf.getvalue()).decode()
    records = [
        {"question": "Colour?", "image": "red.png", "options": ["red", "blue"], "answer": "A"},
        {"question": "Colour?", "image": "data:image/png;base64," + b64, "A": "red", "B": "blue", "C": "", "answer": 1},
        {"question": "Colour?", "image": b64, "choices": json.dumps(["green", "blue"]), "answer": "blue"},
        {"question": "Sky?", "options": ["up", "down", "left"], "answer": "a"},
    ]
    (tmp_path / "bench.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    bench = load_multiple_choice(tmp_path / "bench.jsonl")
    assert bench.name == "bench" and [s.truth["answer"] for s in bench.samples] == ["A", "B", "B", "A"]
    assert bench.samples[0].image.size == (32, 24) and bench.samples[1].image.getpixel((0, 0)) == (0, 0, 255)
    assert bench.samples[3].image is None and bench.samples[1].truth["options"] == ["red", "blue"]
    assert bench.samples[0].prompt == "Colour?\nA. red\nB. blue\nAnswer with the option's letter."
    results = evaluate(lambda batch: ["A"] * len(batch), [bench], progress=False)
    assert results["tasks"]["bench"]["score"] == 0.5  # right on records 0 and 3
    (tmp_path / "bad.jsonl").write_text(json.dumps({"question": "?", "options": ["x"], "answer": "Q"}) + "\n")
    with pytest.raises(InputError, match="record 0"):
        load_multiple_choice(tmp_path / "bad.jsonl")


def test_cli_world_list_and_show(tmp_path, capsys):
    assert main(["world", "list"]) == 0
    listing = capsys.readouterr().out
    assert all(t in listing for t in ("gui_action", "doc_receipt", "dialogue", "retrieve_image", "video_order"))
    out = tmp_path / "grid.png"
    assert main(["world", "show", "--task", "video_order", "--n", "3", "--split", "test", "--out", str(out)]) == 0
    assert Image.open(out).width == 3 * 240
    assert main(["world", "show", "--task", "nope", "--out", str(out)]) == 1


def test_cli_eval_against_an_endpoint(server, tmp_path, capsys):
    url, _ = server
    out, chart = tmp_path / "results.json", tmp_path / "scores.png"
    code = main(["eval", "--endpoint", url, "--api-key", "k", "--tasks", "count,gui_action", "--limit", str(LIMIT),
                 "--out", str(out), "--chart", str(chart), "--no-think"])
    assert code == 0
    results = json.loads(out.read_text())
    assert results["score"] == 1.0 and set(results["tasks"]) == {"count", "gui_action"}
    assert "gui_action" in capsys.readouterr().out and Image.open(chart).size[0] > 0
    assert main(["eval", "--endpoint", url, "--tasks", "count,nope"]) == 1
