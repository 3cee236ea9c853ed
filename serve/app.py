"""The FastAPI app: ``POST /generate``, ``GET /checkpoints``, ``GET /healthz``, ``GET /metrics``.

Handlers never touch the models: they parse, hand the job to the service's queue and wait for its
future while watching the client (a disconnect cancels the job) and the deadline (504). CPU work
on images (decode, Canny, PNG encode) runs in the thread pool, not on the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from serve.config import ServeConfig
from serve.errors import DeadlineExceeded, RequestError, ServeError
from serve.images import png_bytes
from serve.jobqueue import QueueFull
from serve.jobs import Job, JobResult
from serve.schema import GenerateRequest, parse_fields
from serve.service import Service

logger = logging.getLogger(__name__)

__all__ = ["create_app"]

POLL_S = 0.05
"""How often a waiting handler checks the client and the deadline."""
METADATA_HEADER = "X-Skinforge-Metadata"
UI_PATH = "/ui"
CLIENT_CLOSED = 499  # nginx's "client closed request"; nobody reads it, the metrics do


def _error(err: ServeError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=headers)


async def _body(request: Request, max_body: int) -> bytes:
    """The raw body, refused (413) as soon as it grows past ``max_body``, with or without Content-Length."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > max_body:
        raise RequestError("body", f"{length} bytes is larger than {max_body}", 413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_body:
            raise RequestError("body", f"larger than {max_body} bytes", 413)
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_request(request: Request, max_body: int) -> GenerateRequest:
    """A GenerateRequest from a JSON or multipart body (parsed off the event loop: base64 is CPU work)."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_body:
            raise RequestError("body", f"{length} bytes is larger than {max_body}", 413)
        form = await request.form()
        fields: dict[str, Any] = {}
        for key, value in form.multi_items():
            fields[key] = await value.read() if isinstance(value, UploadFile) else value
        return await run_in_threadpool(parse_fields, fields)
    raw = await _body(request, max_body)
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RequestError("body", f"not valid JSON ({err}); send JSON or multipart/form-data", 400) from err
    if not isinstance(body, dict):
        raise RequestError("body", "must be a JSON object")
    return await run_in_threadpool(parse_fields, body)


async def _wait(service: Service, job: Job, request: Request) -> JobResult | None:
    """The job's result; None when the client left or the deadline passed (the job is cancelled)."""
    waiter = asyncio.wrap_future(job.future)
    while True:
        done, _ = await asyncio.wait({waiter}, timeout=POLL_S)
        if done:
            return waiter.result()
        if await request.is_disconnected():
            reason = "client_disconnected"
        elif time.monotonic() > job.deadline:
            reason = "deadline"
        else:
            continue
        service.cancel(job, reason)
        waiter.cancel()
        return None


def _png_response(result: JobResult) -> Response:
    metadata = result.metadata
    headers = {
        METADATA_HEADER: json.dumps(metadata, ensure_ascii=True, sort_keys=True),
        "X-Seed": str(metadata["seed"]),
        "X-Checkpoint": metadata["checkpoint"],
        "X-Steps-Run": str(metadata["steps_run"]),
        "X-Fallbacks": ",".join(metadata["fallbacks"]),
    }
    return Response(png_bytes(result.image, metadata), media_type="image/png", headers=headers)


def _json_response(result: JobResult) -> JSONResponse:
    image = base64.b64encode(png_bytes(result.image, result.metadata)).decode("ascii")
    return JSONResponse({"image": image, "metadata": result.metadata})


def create_app(config: ServeConfig, service: Service | None = None) -> FastAPI:
    """The app serving ``config``'s checkpoints (loading starts with the app's lifespan)."""
    service = service or Service(config)
    max_body = 3 * config.limits.max_image_bytes + 1024 * 1024  # two images, base64, plus fields

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.start()
        yield
        await run_in_threadpool(service.stop)

    app = FastAPI(title="skinforge ControlNet service", lifespan=lifespan)
    app.state.service = service

    @app.post("/generate")
    async def generate(request: Request) -> Response:
        began = time.monotonic()
        response = await _generate(request)
        service.metrics.request_seconds.labels(str(response.status_code)).observe(time.monotonic() - began)
        return response

    async def _generate(request: Request) -> Response:
        try:
            parsed = await _read_request(request, max_body)
            job = await run_in_threadpool(service.submit, parsed)
        except QueueFull as err:
            service.metrics.errors.labels("queue_full").inc()
            body = {"error": str(err), "field": None, "kind": "queue_full"}
            return JSONResponse(body, status_code=429, headers={"Retry-After": str(err.retry_after)})
        except ServeError as err:
            service.metrics.errors.labels(err.kind).inc()
            headers = {"Retry-After": "5"} if err.status == 503 else None
            return _error(err, headers)
        try:
            result = await _wait(service, job, request)
        except ServeError as err:
            return _error(err, {"Retry-After": "10"} if err.status == 503 else None)
        if result is None:
            if job.cancel_reason == "deadline":
                return _error(DeadlineExceeded("the request's deadline passed"))
            return Response(status_code=CLIENT_CLOSED)
        if "application/json" in request.headers.get("accept", ""):
            return await run_in_threadpool(_json_response, result)
        return await run_in_threadpool(_png_response, result)

    @app.get("/checkpoints")
    async def checkpoints() -> JSONResponse:
        if not service.ready.is_set():
            return JSONResponse(
                {"checkpoints": [{"name": n, "loaded": False} for n in service.registry.names]}
            )
        return JSONResponse(service.registry.describe())

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        status, body = service.health()
        return JSONResponse(body, status_code=status)

    @app.get("/metrics")
    async def metrics() -> Response:
        service.metrics.queue_depth.set(len(service.queue))
        return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    if config.history_dir is not None:
        return _mount_playground(app, service, config.history_dir)
    return app


def _mount_playground(app: FastAPI, service: Service, history_dir: Path) -> FastAPI:
    """The Gradio playground at /ui (imported here: gradio is heavy and only the playground needs it)."""
    import gradio as gr

    from serve.history import History
    from serve.playground import CSS, build_playground

    blocks = build_playground(service, History(history_dir))
    return gr.mount_gradio_app(app, blocks, path=UI_PATH, ssr_mode=False, footer_links=[], css=CSS)
