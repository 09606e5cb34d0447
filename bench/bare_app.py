"""The ceiling: a bare FastAPI app with one route returning a small JSON body.

Served by the bench under the same uvicorn flags as the real app, so every figure of the real
app can be read as a share of what any FastAPI service can do on the same machine in the same run.
"""

from __future__ import annotations

from fastapi import FastAPI

app = FastAPI()


@app.get("/")
async def root() -> dict[str, str]:
    return {"status": "ok", "service": "bare", "version": "0.1.0"}
