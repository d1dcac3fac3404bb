"""The JavaScript worker process: one QuickJS runtime (jsbox) per run, driven over stdin/stdout.

An agent starts it with ``python -m qualgent.flows.js_worker`` and sends one JSON request per line;
each gets one JSON answer per line. Running scripts in their own process keeps a runaway or hostile
script from holding the agent's interpreter (QuickJS keeps Python's GIL while it computes): the agent
kills the process when a script overstays its time, and the next run gets a new one.

Requests (``id`` is echoed back):
- ``{"op": "open", "platform": "android", "variables": {...}, "memory_mb": 64, "http_timeout_s": 30}``
  starts a fresh runtime with Maestro's globals (``output``, ``maestro``, ``json``, ``http``, ``console``).
- ``{"op": "eval", "code": "...", "timeout_s": 10}`` runs a script in the global scope and answers
  ``{"value": <JSON value or null>, "text": <String(value)>, "type": <typeof>, "logs": [...]}`` or
  ``{"error": {"name", "message", "line", "column"}, "logs": [...]}``.
- ``{"op": "set", "variables": {"NAME": "value" | null}}`` sets (or, with null, deletes) globals.
- ``{"op": "maestro", "values": {"copiedText": "..."}}`` sets fields of the ``maestro`` object.
"""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Any

PRELUDE = r"""
var output = {};
var maestro = {copiedText: null, platform: __qg_platform};
function json(text) { return JSON.parse(text); }
function __qg_str(value) {
  if (value === undefined) return 'undefined';
  if (value === null) return 'null';
  if (typeof value === 'object') { try { return JSON.stringify(value); } catch (e) { return String(value); } }
  return String(value);
}
var console = (function () {
  function log() { __qg_log(Array.prototype.map.call(arguments, __qg_str).join(' ')); }
  return {log: log, info: log, warn: log, error: log, debug: log};
})();
var http = (function () {
  function request(url, options) {
    options = options || {};
    if (options.multipartForm !== undefined) {
      throw new Error('http: multipartForm is not supported; send a body instead');
    }
    var body = options.body;
    if (body !== undefined && body !== null && typeof body !== 'string') body = JSON.stringify(body);
    var answer = __qg_http(String(options.method || 'GET').toUpperCase(), String(url),
                           options.headers || {}, body === undefined ? null : body);
    if (answer.error) throw new Error(answer.error);
    return answer;
  }
  function method(name) {
    return function (url, options) {
      var merged = {};
      for (var key in (options || {})) merged[key] = options[key];
      merged.method = name;
      return request(url, merged);
    };
  }
  return {request: request, get: method('GET'), post: method('POST'), put: method('PUT'),
          delete: method('DELETE'), patch: method('PATCH'), head: method('HEAD')};
})();
// As in Maestro (GraalJS): a name nobody defined reads as undefined instead of throwing, so
// `${USER || 'guest'}` works; `var`s of a script stay in that script; only `output`, `maestro` and the
// run's variables outlive it (globals a script makes by assignment are removed after it).
Object.setPrototypeOf(globalThis, new Proxy(Object.getPrototypeOf(globalThis), {
  has: function () { return true; },
  get: function (target, key, receiver) { return Reflect.get(target, key, receiver); }
}));
var __qg_keep = {};
globalThis.__qg_define = function (name, value) {
  if (value === null) { delete __qg_keep[name]; delete globalThis[name]; }
  else { __qg_keep[name] = true; globalThis[name] = value; }
};
globalThis.__qg_run = function (__qg_code) {
  try {
    var value = eval(__qg_code);
    var plain = null;
    try { plain = value === undefined ? null : JSON.parse(JSON.stringify(value)); } catch (e) { plain = null; }
    return {value: plain === undefined ? null : plain, text: __qg_str(value), type: typeof value};
  } finally {
    Object.getOwnPropertyNames(globalThis).forEach(function (name) {
      if (!__qg_keep[name]) delete globalThis[name];
    });
  }
};
Object.getOwnPropertyNames(globalThis).forEach(function (name) { __qg_keep[name] = true; });
0
"""

MAX_BODY_BYTES = 5 * 1024 * 1024  # an answer body kept for a script
MAX_LOG_LINES = 1000
_WHERE = re.compile(r"<input>:(\d+)(?::(\d+))?")


class Worker:
    def __init__(self) -> None:
        self.runtime: Any = None
        self.logs: list[str] = []
        self.http_timeout_s = 30.0
        self._http: Any = None

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "open":
            return self.open(request)
        if self.runtime is None:
            return {"error": {"name": "Error", "message": "no runtime: open one first"}}
        if op == "eval":
            return self.eval(str(request["code"]), float(request.get("timeout_s") or 10))
        if op == "set":
            self.set_globals(request.get("variables") or {})
            return {}
        if op == "maestro":
            for key, value in (request.get("values") or {}).items():
                self.runtime.eval(f"maestro[{json.dumps(key)}] = {json.dumps(value)}; 0")
            return {}
        return {"error": {"name": "Error", "message": f"unknown op {op!r}"}}

    def open(self, request: dict[str, Any]) -> dict[str, Any]:
        import jsbox

        self.http_timeout_s = float(request.get("http_timeout_s") or 30)
        runtime = jsbox.Runtime(memory_limit=int(request.get("memory_mb") or 64) * 1024 * 1024)
        runtime.bind_function("__qg_log", self._log)
        runtime.bind_function("__qg_http", self._http_call)
        runtime.bind_object("__qg_platform", str(request.get("platform") or ""))
        runtime.eval(PRELUDE)
        self.runtime = runtime
        self.set_globals(request.get("variables") or {})
        return {}

    def set_globals(self, variables: dict[str, Any]) -> None:
        statements = []
        for name, value in variables.items():
            if not re.fullmatch(r"[A-Za-z_$][A-Za-z0-9_$]*", name):
                continue  # not a JavaScript name: reachable through ${} only as written, never as code
            statements.append(f"__qg_define({json.dumps(name)}, {json.dumps(value)});")
        if statements:
            self.runtime.eval("".join(statements) + "0")

    def eval(self, code: str, timeout_s: float) -> dict[str, Any]:
        import jsbox

        self.logs = []
        try:
            result = self.runtime.eval(f"__qg_run({json.dumps(code)})", timeout=timeout_s)
        except jsbox.JsTimeoutError:
            return {
                "error": {"name": "TimeoutError", "message": f"the script ran longer than {timeout_s:g} s"},
                "logs": self.logs,
            }
        except jsbox.JavaScriptError as exc:
            return {"error": _error(exc), "logs": self.logs}
        except (TypeError, ValueError) as exc:
            return {"error": {"name": "TypeError", "message": str(exc)}, "logs": self.logs}
        return {**result, "logs": self.logs}

    def _log(self, text: str) -> None:
        if len(self.logs) < MAX_LOG_LINES:
            self.logs.append(str(text)[:10_000])

    def _http_call(self, method: str, url: str, headers: Any, body: str | None) -> dict[str, Any]:
        # Errors go back as a value: an exception raised here reaches JavaScript without its message.
        try:
            import httpx

            if self._http is None:
                self._http = httpx.Client(follow_redirects=True)
            if not isinstance(headers, dict):
                headers = {}
            with self._http.stream(
                method,
                url,
                headers={str(k): str(v) for k, v in headers.items()},
                content=body.encode() if body is not None else None,
                timeout=self.http_timeout_s,
            ) as response:
                data = bytearray()
                for chunk in response.iter_bytes():
                    data += chunk
                    if len(data) > MAX_BODY_BYTES:
                        return {
                            "error": f"http: the answer from {url} is larger than {MAX_BODY_BYTES // 1024 // 1024} MB"
                        }
                text = bytes(data).decode(response.encoding or "utf-8", errors="replace")
                return {
                    "ok": response.is_success,
                    "status": response.status_code,
                    "body": text,
                    "headers": dict(response.headers.items()),
                }
        except Exception as exc:
            return {"error": f"http {method} {url} failed: {exc or type(exc).__name__}"}


def _error(exc: Exception) -> dict[str, Any]:
    name = getattr(exc, "name", None) or "Error"
    message = getattr(exc, "message", None) or str(exc).splitlines()[0]
    found = _WHERE.search(getattr(exc, "stack", None) or str(exc))
    line = int(found.group(1)) if found else None
    column = int(found.group(2)) if found and found.group(2) else None
    return {"name": str(name), "message": str(message), "line": line, "column": column}


def main() -> None:
    # Answers go to the real stdout; anything else that prints (a library) goes to stderr.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    sys.stdout = sys.stderr
    worker = Worker()
    for line in sys.stdin:
        try:
            request = json.loads(line)
            answer = worker.handle(request)
        except Exception as exc:  # a broken request must not end the worker
            request = {}
            answer = {"error": {"name": "Error", "message": f"worker: {exc}"}}
        answer["id"] = request.get("id") if isinstance(request, dict) else None
        out.write(json.dumps(answer) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
