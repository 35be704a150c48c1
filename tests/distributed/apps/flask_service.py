"""A Flask service for the distributed tests, served by werkzeug in its own process."""

from __future__ import annotations

import sys
from typing import Any

from flask import Flask, request

import dashfrog
from dashfrog import flow, step, with_flask

app = Flask(__name__)
with_flask(app)


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/work")
def work() -> dict[str, Any]:
    with step.start("flask_work", items=len(request.get_json(silent=True) or {})):
        pass
    dashfrog.flush(10)
    return {
        "flow_id": flow.current_id(),
        "tenant": flow.current_tenant(),
        "ignored": dashfrog.stats()["ignored_remote_contexts"],
    }


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(sys.argv[1]), threaded=True)
