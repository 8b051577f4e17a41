"""A local OpenAI-compatible chat endpoint that misbehaves on purpose: it answers each request with
the next step of a plan ("429", "500", "sleep:<s>", "400", "garbage", "ok"), then "ok" forever.
It records every request it saw, so tests can count retries and check headers."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeOpenAI:
    def __init__(self, plan: list[str] | None = None, reply: str = "<think>t</think><answer>42</answer>"):
        self.plan, self.reply, self.seen = list(plan or []), reply, []
        self.inflight = self.max_inflight = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer.lock:
                    outer.seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                    step = outer.plan.pop(0) if outer.plan else "ok"
                    outer.inflight += 1
                    outer.max_inflight = max(outer.max_inflight, outer.inflight)
                try:
                    self._answer(step)
                finally:
                    with outer.lock:
                        outer.inflight -= 1

            def _answer(self, step: str):
                if step.startswith("sleep:"):
                    time.sleep(float(step.split(":")[1]))
                    step = "ok"
                if step in ("429", "500", "503", "400"):
                    self.send_response(int(step))
                    if step == "429":
                        self.send_header("Retry-After", "0")
                    self.end_headers()
                    self.wfile.write(b'{"error": "planned"}')
                    return
                if step == "garbage":
                    payload = b"not json at all"
                else:
                    payload = json.dumps({
                        "choices": [{"message": {"role": "assistant", "content": outer.reply},
                                     "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 11, "completion_tokens": 5}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
