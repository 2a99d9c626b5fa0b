"""A stand-in for the Hugging Face Hub on 127.0.0.1: the endpoints `huggingface_hub` calls to
create a repository, commit files (regular uploads, base64 in the commit) and download them.

Tests point `HF_ENDPOINT` at it. Repositories live in memory: each commit is a full snapshot of
the files, a branch names a commit. Writes need a token (any), as on the Hub.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler
from urllib.parse import unquote, urlsplit

_RESOLVE = re.compile(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")
_API = re.compile(r"^/api/models/([^/]+/[^/]+)/(preupload|commit)/([^/]+)$")


class HubState:
    """Repositories, commits and every request seen."""

    def __init__(self) -> None:
        self.repos: dict[str, dict] = {}  # repo -> {"commits": {sha: {path: bytes}}, "refs": {branch: sha}}
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.url = ""

    def commit(self, repo: str, files: dict[str, bytes], branch: str = "main") -> str:
        """Add a commit holding `files` on top of `branch` (the repository is created if needed)."""
        with self.lock:
            entry = self.repos.setdefault(repo, {"commits": {}, "refs": {}})
            parent = entry["refs"].get(branch)
            snapshot = dict(entry["commits"][parent]) if parent else {}
            snapshot.update(files)
            sha = hashlib.sha1(
                json.dumps([parent, sorted((k, hashlib.sha256(v).hexdigest()) for k, v in snapshot.items())]).encode()
            ).hexdigest()
            entry["commits"][sha] = snapshot
            entry["refs"][branch] = sha
            return sha

    def files(self, repo: str, revision: str = "main") -> dict[str, bytes]:
        entry = self.repos[repo]
        return entry["commits"][entry["refs"].get(revision, revision)]


class HubHandler(BaseHTTPRequestHandler):
    timeout = 10

    @property
    def state(self) -> HubState:
        return self.server.state  # type: ignore[attr-defined]

    def _json(self, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _error(self, status: int, code: str) -> None:
        self._json(status, {"error": code}, {"X-Error-Code": code})

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _record(self) -> str:
        path = unquote(urlsplit(self.path).path)
        with self.state.lock:
            self.state.requests.append((self.command, path))
        return path

    def do_HEAD(self) -> None:  # noqa: N802 (the stdlib's name)
        self._resolve(self._record())

    def do_GET(self) -> None:  # noqa: N802
        self._resolve(self._record())

    def _resolve(self, path: str) -> None:
        match = _RESOLVE.match(path)
        if not match:
            return self._error(404, "NotFound")
        repo, revision, filename = match.groups()
        entry = self.state.repos.get(repo)
        if entry is None:
            return self._error(401, "RepoNotFound")
        commit = entry["refs"].get(revision, revision)
        if commit not in entry["commits"]:
            return self._error(404, "RevisionNotFound")
        files = entry["commits"][commit]
        if filename not in files:
            return self._json(
                404, {"error": "EntryNotFound"}, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit}
            )
        body = files[filename]
        start = 0
        requested = self.headers.get("Range")
        if requested and self.command == "GET":
            start = int(re.fullmatch(r"bytes=(\d+)-\d*", requested).group(1))
        payload = body[start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("ETag", '"' + hashlib.sha256(body).hexdigest() + '"')
        self.send_header("X-Repo-Commit", commit)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.end_headers()
        if self.command == "GET":
            self.wfile.write(payload)

    def do_POST(self) -> None:  # noqa: N802
        path = self._record()
        body = self._body()
        if not self.headers.get("Authorization", "").startswith("Bearer "):
            return self._json(
                401,
                {"error": "Invalid credentials in Authorization header"},
                {"X-Error-Message": "Invalid credentials in Authorization header"},
            )
        if path == "/api/repos/create":
            data = json.loads(body)
            repo = f"{data['organization']}/{data['name']}"
            with self.state.lock:
                self.state.repos.setdefault(repo, {"commits": {}, "refs": {}})
            return self._json(200, {"url": f"{self.state.url}/{repo}", "name": repo})
        if path == "/api/validate-yaml":
            return self._json(200, {"errors": [], "warnings": []})
        match = _API.match(path)
        if not match:
            return self._error(404, "NotFound")
        repo, action, revision = match.groups()
        if repo not in self.state.repos:
            return self._error(404, "RepoNotFound")
        if action == "preupload":
            files = json.loads(body)["files"]
            return self._json(
                200,
                {
                    "files": [
                        {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None} for f in files
                    ]
                },
            )
        added = {}
        for line in body.decode().splitlines():
            item = json.loads(line)
            if item["key"] == "file":
                added[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            elif item["key"] != "header":
                return self._json(400, {"error": f"unsupported operation {item['key']}"})
        sha = self.state.commit(repo, added, branch=revision)
        return self._json(
            200, {"commitUrl": f"{self.state.url}/{repo}/commit/{sha}", "commitOid": sha, "pullRequestUrl": None}
        )

    def log_message(self, format: str, *args) -> None:  # keep test output quiet
        pass
