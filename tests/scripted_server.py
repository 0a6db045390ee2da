"""A real HTTP server on 127.0.0.1 that speaks the OpenAI chat-completions API
with scripted answers, so integration tests run the real ``vf-eval`` and the
real OpenAI client end to end without a model.

The server knows GSM8K's gold answers, recognises base, self-improve and
self-diverge prompts, and asks a *policy* what to answer. Every response it
serves is logged with its behaviour, so a test can check every reported
number against what was actually sent.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from self_improve import gsm8k_data

BEHAVIOURS = ("correct", "wrong", "unboxed", "empty", "long", "error", "refused", "blank", "null", "hang",
              "pathological")
HANG_S: float = 30.0
"""How long a ``hang`` request waits before it answers (correctly): past any test's ``--timeout``."""


@dataclass(frozen=True)
class ChatRequest:
    """What the policy sees of one request."""

    question: str
    gold: str
    kind: str  # base | improve | diverge
    previous_response: str
    index_for_question: int  # 0 for the first request about this question
    seed: int | None
    body: dict[str, Any]


@dataclass
class Served:
    question: str
    kind: str
    behaviour: str
    text: str


Policy = Callable[[ChatRequest], str]

_REQUEST = re.compile(r"## Request:\n(.*?)\n\n## Current response:\n(.*?)(?:\n\n## Your new response format:|$)", re.S)


def parse_prompt(user: str) -> tuple[str, str, str]:
    """(kind, question, previous_response) of a user message built by ``prompts``."""
    match = _REQUEST.search(user)
    if match is None:
        return "base", user, ""
    kind = "diverge" if "SIGNIFICANTLY DIFFERS" in user else "improve"
    return kind, match.group(1), match.group(2)


def render(behaviour: str, gold: str, tag: str) -> str:
    """The response text for a behaviour; ``tag`` makes every text unique."""
    wrong = str(int(float(gold)) + 7) if gold.lstrip("-").replace(".", "").isdigit() else "0"
    if behaviour == "correct":
        return f"Working it out ({tag}). The answer is \\boxed{{{gold}}}."
    if behaviour == "wrong":
        return f"Working it out ({tag}). The answer is \\boxed{{{wrong}}}."
    if behaviour == "unboxed":
        return f"Working it out ({tag}). The answer is {gold}."
    if behaviour in ("empty", "null"):
        return ""
    if behaviour == "blank":
        return " \n\t "
    if behaviour == "pathological":
        return f"Working it out ({tag}). So \\boxed{{10^{{10^{{10}}}} + 1}}"
    if behaviour == "hang":
        return f"Working it out slowly ({tag}). The answer is \\boxed{{{gold}}}."
    if behaviour == "long":
        return f"({tag}) " + "Let me think about this again. " * 3000 + f"\\boxed{{{wrong}}}"
    raise ValueError(f"behaviour: unknown {behaviour!r}")


def cycle_policy(pattern: tuple[str, ...] = ("correct", "wrong", "unboxed", "correct")) -> Policy:
    """The k-th request about a question gets ``pattern[k % len(pattern)]``: any
    group of ``len(pattern)`` rollouts of one prompt sees every behaviour once."""

    def policy(request: ChatRequest) -> str:
        return pattern[request.index_for_question % len(pattern)]

    return policy


class _Server(ThreadingHTTPServer):
    """Threaded server with a listen backlog deep enough for hundreds of concurrent clients."""

    daemon_threads = True
    request_queue_size = 512


@dataclass
class ScriptedServer:
    """Start with ``start()``; ``url`` is the OpenAI base URL (``.../v1``)."""

    policy: Policy = field(default_factory=cycle_policy)
    delay_s: float = 0.0
    served: list[Served] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0
    """Port on 127.0.0.1; 0: a free one."""
    most_in_flight: int = 0
    """The most chat requests this server was answering at once."""
    golds: dict[str, str] = field(default_factory=dict)
    """Gold answers of other tasksets' requests (request text -> gold), on top of GSM8K's."""
    renderer: Callable[[str, str, str], str] = render
    """``(behaviour, gold, tag) -> text``: how a behaviour reads (GSM8K's ``\\boxed{}`` by default)."""
    honour_n: bool = True
    """Answer ``n`` choices (each one the policy's next answer about the question), as llama.cpp and
    vLLM do; False: one choice whatever ``n`` asks, as a server without ``n`` does."""
    stream_choices: int | None = None
    """A streamed reply ends (the connection closes) after this many choices; None: all of them."""
    finish_reason: str = "stop"
    """Every choice's ``finish_reason`` (another value tests a reply OpenAI's types refuse)."""

    def __post_init__(self) -> None:
        self._gold = {row["question"]: gsm8k_data.gold_number(row["answer"])
                      for split in gsm8k_data.SPLITS for row in gsm8k_data.load_raw(split)}
        self._gold.update(self.golds)
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._in_flight = 0
        self._httpd: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def start(self) -> ScriptedServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                if self.path.rstrip("/") in ("/v1/models", "/health"):
                    self._send(200, {"object": "list", "data": [{"id": "scripted", "object": "model"}]})
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                with server._lock:
                    server._in_flight += 1
                    server.most_in_flight = max(server.most_in_flight, server._in_flight)
                try:
                    status, payload = server.answer(body)
                    if server.delay_s:
                        time.sleep(server.delay_s)
                finally:
                    with server._lock:
                        server._in_flight -= 1
                if body.get("stream") and status == 200:
                    self._send_stream(payload, bool((body.get("stream_options") or {}).get("include_usage")))
                else:
                    self._send(status, payload)

            def _send_stream(self, payload: dict[str, Any], include_usage: bool) -> None:
                """The completion as server-sent chunks, as llama.cpp streams ``n`` choices: each
                choice's text, then its ``finish_reason``, then the usage; ``stream_choices`` may
                end the stream early."""
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                head = {key: payload[key] for key in ("id", "created", "model")} | {"object": "chat.completion.chunk"}

                def event(choices: list[dict[str, Any]], **extra: Any) -> None:
                    self.wfile.write(f"data: {json.dumps(head | {'choices': choices} | extra)}\n\n".encode())
                    self.wfile.flush()

                choices = payload["choices"]
                for number, choice in enumerate(choices):
                    if server.stream_choices is not None and number >= server.stream_choices:
                        return  # the connection closes mid-stream
                    delta = {key: value for key, value in choice["message"].items() if value is not None}
                    event([{"index": choice["index"], "delta": delta, "finish_reason": None,
                            "logprobs": choice.get("logprobs")}])
                    event([{"index": choice["index"], "delta": {}, "finish_reason": choice["finish_reason"]}])
                if include_usage:
                    event([], usage=payload["usage"])
                self.wfile.write(b"data: [DONE]\n\n")

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._httpd = _Server(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    def answer(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """One chat completion: ``n`` choices (one unless ``honour_n``), or the error of the first
        choice whose behaviour is one. Usage counts the first choice, as llama.cpp's does."""
        messages = body.get("messages", [])
        user = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
        kind, question, previous = parse_prompt(user if isinstance(user, str) else "")
        gold = self._gold.get(question, "0")
        with self._lock:
            self.requests.append(body)
            request_number = len(self.requests)
        choices, texts = [], []
        for choice in range(int(body.get("n") or 1) if self.honour_n else 1):
            with self._lock:
                index = self._counts[question]
                self._counts[question] += 1
            behaviour = self.policy(ChatRequest(question, gold, kind, previous, index, body.get("seed"), body))
            if behaviour == "error":
                with self._lock:
                    self.served.append(Served(question, kind, behaviour, ""))
                return 500, {"error": {"message": "scripted server error", "type": "server_error"}}
            if behaviour == "refused":  # a client error: not retried
                with self._lock:
                    self.served.append(Served(question, kind, behaviour, ""))
                return 400, {"error": {"message": "the request exceeds the context size",
                                       "type": "invalid_request_error"}}
            text = self.renderer(behaviour, gold, f"r{request_number}" + (f"c{choice}" if choice else ""))
            with self._lock:
                self.served.append(Served(question, kind, behaviour, text))
            if behaviour == "hang":
                time.sleep(HANG_S)
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if behaviour == "null":
                message = {"role": "assistant", "content": None, "reasoning_content": "thinking, but no answer"}
            entry: dict[str, Any] = {"index": choice, "finish_reason": self.finish_reason, "message": message}
            if body.get("logprobs"):
                entry["logprobs"] = {"content": [{"token": word, "logprob": -1.0, "bytes": None, "top_logprobs": []}
                                                 for word in text.split()]}
            choices.append(entry)
            texts.append(text)
        return 200, {
            "id": f"chatcmpl-{request_number}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "scripted"),
            "choices": choices,
            "usage": {"prompt_tokens": len(user.split()), "completion_tokens": len(texts[0].split()),
                      "total_tokens": len(user.split()) + len(texts[0].split())},
        }

    def behaviour_of(self, text: str) -> str:
        """The behaviour under which ``text`` was served."""
        for served in self.served:
            if served.text == text:
                return served.behaviour
        raise KeyError(f"text was never served: {text[:80]!r}")
