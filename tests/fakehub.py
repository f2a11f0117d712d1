"""A loopback stand-in for the Hugging Face Hub that speaks the parts of its HTTP protocol our code uses.

Real clients (``huggingface_hub.hf_hub_download``, ``HfApi.create_repo/upload_folder``, timm's ``hf-hub:``
loading, transformers' ``from_pretrained``) run against it unchanged. It also serves plain files under
``/static/<name>`` (with ``Content-Length``), standing in for the original checkpoint URLs.

Implemented: ``HEAD|GET /{repo}/resolve/{rev}/{path}`` (``X-Repo-Commit``, ``ETag``, ``Content-Length``, Range;
404 with ``X-Error-Code`` ``RepositoryNotFound``/``RevisionNotFound``/``EntryNotFound``),
``GET /api/models/{repo}[/revision/{rev}]``, ``GET /api/models/{repo}/tree/{rev}[/{path}]``,
``POST /api/repos/create``, ``POST /api/validate-yaml``, ``POST /api/models/{repo}/preupload/{rev}`` (every file
"regular") and ``POST /api/models/{repo}/commit/{rev}`` (ndjson, base64 files).
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
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


class FakeHub:
    """In-memory repos plus static files behind a threaded HTTP server on 127.0.0.1."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.static: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []
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
            return self._send(200, data, {"Content-Type": "application/octet-stream"}, head=head)
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
            etag = f'"{hashlib.sha256(data).hexdigest()}"'
            headers = {"X-Repo-Commit": sha, "ETag": etag, "Content-Type": "application/octet-stream",
                       "Accept-Ranges": "bytes"}
            rng = self.headers.get("Range")
            if rng and not head:
                start = int(re.match(r"bytes=(\d+)-", rng).group(1))
                part = data[start:]
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
                return self._send(206, part, headers)
            headers["Content-Length"] = str(len(data))
            return self._send(200, data, headers, head=head)
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
