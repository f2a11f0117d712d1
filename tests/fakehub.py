"""A loopback stand-in for the Hugging Face Hub that speaks the parts of its HTTP protocol our code uses.

Real clients (``huggingface_hub.hf_hub_download``, ``HfApi.create_repo/upload_folder``, timm's ``hf-hub:``
loading, transformers' ``from_pretrained``) run against it unchanged. It also serves plain files under
``/static/<name>`` (with ``Content-Length``), standing in for the original checkpoint URLs.

Implemented: ``HEAD|GET /{repo}/resolve/{rev}/{path}`` (``X-Repo-Commit``, ``ETag``, ``Content-Length``, Range;
404 with ``X-Error-Code`` ``RepositoryNotFound``/``RevisionNotFound``/``EntryNotFound``),
``GET /api/models/{repo}[/revision/{rev}]``, ``GET /api/models/{repo}/tree/{rev}[/{path}]``,
``POST /api/repos/create``, ``POST /api/validate-yaml``, ``POST /api/models/{repo}/preupload/{rev}`` (every file
"regular") and ``POST /api/models/{repo}/commit/{rev}`` (ndjson, base64 files).

Faults (a per-test switch, ``with hub.fault("close", at=1000, match="model.safetensors"): ...``) apply to file
bodies, Hub (``/resolve/``) and static alike: ``close`` sends the full ``Content-Length`` but drops the connection
once byte ``at`` of the file is reached (a resumed ``Range`` request from ``at`` on gets nothing: the server never
gets further); ``truncate`` serves only the first ``at`` bytes as if that were the whole file (consistent
``Content-Length`` on GET, while HEAD still describes the whole file); ``change`` serves ``data`` instead of the
stored bytes; ``no_length`` sends no ``Content-Length`` and closes after byte ``at`` (a plain HTTP/1.0-style
body whose end cannot be checked).
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse


@dataclass
class Repo:
    commits: list[tuple[str, dict[str, bytes]]] = field(default_factory=list)  # (sha, files), oldest first

    def resolve(self, rev: str) -> tuple[str, dict[str, bytes]] | None:
        if not self.commits:
            return None
        if rev in ("main", "HEAD"):
            return self.commits[-1]
        for sha, files in self.commits:
            if sha == rev:
                return sha, files
        return None


@dataclass
class Fault:
    """How file bodies are served wrong: ``kind`` in close/truncate/change/no_length (see the module doc)."""

    kind: str
    at: int = 0
    data: bytes | None = None
    match: str = ""
    hits: int = 0

    def applies(self, path: str) -> bool:
        return self.match in path


FAULT_KINDS = ("close", "truncate", "change", "no_length")


class FakeHub:
    """In-memory repos plus static files behind a threaded HTTP server on 127.0.0.1."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.static: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []
        self.active_fault: Fault | None = None
        self._counter = 0
        handler = type("Handler", (_Handler,), {"hub": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def commit(self, repo_id: str, files: dict[str, bytes], replace: bool = False) -> str:
        """Add a commit with ``files`` (merged onto the previous one unless ``replace``); returns its sha."""
        repo = self.repos.setdefault(repo_id, Repo())
        base = {} if replace or not repo.commits else dict(repo.commits[-1][1])
        base.update(files)
        self._counter += 1
        sha = hashlib.sha1(f"{repo_id}:{self._counter}".encode() + "".join(sorted(base)).encode()).hexdigest()
        repo.commits.append((sha, base))
        return sha

    @contextmanager
    def fault(self, kind: str, at: int = 0, data: bytes | None = None, match: str = ""):
        """Serve file bodies whose path contains ``match`` wrong (``kind``) inside the block; yields the Fault."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"fault kind must be one of {FAULT_KINDS}, got {kind!r}")
        self.active_fault = Fault(kind, at, data, match)
        try:
            yield self.active_fault
        finally:
            self.active_fault = None

    def tamper(self, repo_id: str, path: str, data: bytes) -> None:
        """Change a file's bytes in place at every commit (a Hub that serves other bytes than it did)."""
        for _, files in self.repos[repo_id].commits:
            if path in files:
                files[path] = data


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    # -- helpers --------------------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False) -> None:
        self.send_response(status)
        headers = dict(headers or {})
        headers.setdefault("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if body and not head:
            self.wfile.write(body)

    def _json(self, status: int, obj, headers: dict | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), {"Content-Type": "application/json", **(headers or {})})

    def _error(self, code: str, message: str, head: bool = False) -> None:
        body = json.dumps({"error": message}).encode()
        self._send(404, body, {"X-Error-Code": code, "X-Error-Message": message,
                               "Content-Type": "application/json"}, head=head)

    @staticmethod
    def _faulty_data(fault: Fault, data: bytes) -> bytes:
        if fault.kind == "truncate":
            return data[:fault.at]
        if fault.kind == "change":
            return fault.data if fault.data is not None else bytes(len(data))
        return data

    def _send_file(self, path: str, data: bytes, headers: dict, head: bool, etag: bool = False) -> None:
        """A file body (with Range support), served wrong when a fault applies to ``path``."""
        fault = self.hub.active_fault
        if fault and not fault.applies(path):
            fault = None
        if fault and not head:
            fault.hits += 1
        if fault and fault.kind == "change":
            data = self._faulty_data(fault, data)
        if etag:  # the Hub's ETag of a regular file: its content hash
            headers["ETag"] = f'"{hashlib.sha256(data).hexdigest()}"'
        if fault and fault.kind == "truncate" and not head:  # HEAD still describes the whole file
            data = self._faulty_data(fault, data)
        start, status = 0, 200
        rng = self.headers.get("Range")
        if rng and not head:
            start = int(re.match(r"bytes=(\d+)-", rng).group(1))
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            status = 206
        body = data[start:]
        if head or not fault or fault.kind not in ("close", "no_length"):
            headers["Content-Length"] = str(len(body))
            return self._send(status, body, headers, head=head)
        self.send_response(status)
        if fault.kind == "close":
            headers["Content-Length"] = str(len(body))
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body[:max(fault.at - start, 0)])
        self.wfile.flush()
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _repo_rev(self, repo_id: str, rev: str, head: bool = False):
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            self._error("RepositoryNotFound", f"Repository {repo_id} not found", head)
            return None
        resolved = repo.resolve(unquote(rev))
        if resolved is None:
            self._error("RevisionNotFound", f"Revision {rev} not found", head)
            return None
        return resolved

    # -- GET / HEAD -----------------------------------------------------------------------------------------
    def do_HEAD(self) -> None:
        self._get(head=True)

    def do_GET(self) -> None:
        self._get(head=False)

    def _get(self, head: bool) -> None:
        path = urlparse(self.path).path
        self.hub.requests.append((self.command, path))
        if path.startswith("/static/"):
            data = self.hub.static.get(path[len("/static/"):])
            if data is None:
                return self._send(404, b"not found", head=head)
            return self._send_file(path, data, {"Content-Type": "application/octet-stream"}, head)
        m = re.match(r"^/api/models/([^/]+/[^/]+)/tree/([^/]+)(?:/(.*))?$", path)
        if m:
            resolved = self._repo_rev(m.group(1), m.group(2), head)
            if resolved:
                prefix = (m.group(3) or "").strip("/")
                items = [{"type": "file", "path": p, "size": len(d), "oid": hashlib.sha1(d).hexdigest()}
                         for p, d in sorted(resolved[1].items()) if not prefix or p.startswith(prefix + "/")]
                if prefix and not items:
                    return self._error("EntryNotFound", f"{prefix} does not exist", head)
                return self._json(200, items)
            return None
        m = re.match(r"^/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?$", path)
        if m:
            resolved = self._repo_rev(m.group(1), m.group(2) or "main", head)
            if resolved:
                sha, files = resolved
                return self._json(200, {"id": m.group(1), "modelId": m.group(1), "sha": sha, "private": False,
                                        "siblings": [{"rfilename": p} for p in sorted(files)]})
            return None
        m = re.match(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", path)
        if m:
            resolved = self._repo_rev(m.group(1), m.group(2), head)
            if not resolved:
                return None
            sha, files = resolved
            data = files.get(unquote(m.group(3)))
            if data is None:
                return self._error("EntryNotFound", f"{m.group(3)} does not exist at {sha}", head)
            headers = {"X-Repo-Commit": sha, "Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"}
            return self._send_file(path, data, headers, head, etag=True)
        return self._send(404, b"unknown route", head=head)

    # -- POST -----------------------------------------------------------------------------------------------
    def do_POST(self) -> None:
        path = urlparse(self.path).path
        self.hub.requests.append(("POST", path))
        body = self._body()
        if path == "/api/repos/create":
            req = json.loads(body)
            repo_id = f"{req['organization']}/{req['name']}" if req.get("organization") else req["name"]
            if repo_id in self.hub.repos:
                return self._json(409, {"error": "You already created this model repo"})
            self.hub.commit(repo_id, {".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"})
            return self._json(200, {"url": f"{self.hub.url}/{repo_id}"})
        if path == "/api/validate-yaml":
            return self._json(200, {"errors": [], "warnings": []})
        m = re.match(r"^/api/models/([^/]+/[^/]+)/preupload/([^/]+)$", path)
        if m:
            files = json.loads(body).get("files", [])
            return self._json(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                                               "oid": None} for f in files]})
        m = re.match(r"^/api/models/([^/]+/[^/]+)/commit/([^/]+)$", path)
        if m:
            repo_id = m.group(1)
            if repo_id not in self.hub.repos:
                return self._error("RepositoryNotFound", f"Repository {repo_id} not found")
            files = {}
            for line in body.splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                elif item["key"] == "lfsFile":
                    return self._json(400, {"error": "this stand-in accepts regular uploads only"})
            sha = self.hub.commit(repo_id, files)
            return self._json(200, {"commitUrl": f"{self.hub.url}/{repo_id}/commit/{sha}", "commitOid": sha,
                                    "pullRequestUrl": None})
        return self._send(404, b"unknown route")
