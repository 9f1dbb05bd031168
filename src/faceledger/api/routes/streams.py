"""Cameras and video: live streams watched for faces, uploaded videos analysed in a batch, their events and
webhook deliveries."""

from __future__ import annotations

import shutil
from typing import Annotated

from fastapi import APIRouter, Path as PathParam, Query, Request, Response

from faceledger.api import schemas as S
from faceledger.api.deps import Caller, Token, in_thread, operation
from faceledger.api.errors import AUTH_ERRORS, responses
from faceledger.api.inputs import budget_of, openapi_body
from faceledger.errors import InvalidArgument, UnsupportedMediaType
from faceledger.service.streams import StreamService, upload_path

router = APIRouter(tags=["streams"])
VIDEO_TYPES = ("video/", "application/octet-stream")
ID = r"^[0-9a-fA-F-]{1,64}$"  # stream and video ids are UUIDs
StreamId = Annotated[str, PathParam(pattern=ID, description="The stream's or video's id (a UUID).")]


def streams_of(request: Request) -> StreamService:
    return request.app.state.streams


@router.post("/v1/streams", response_model=S.StreamCreated, status_code=201,
             responses=AUTH_ERRORS | responses(404, 413, 415), openapi_extra=openapi_body(S.StreamCreate))
async def create_stream(request: Request, token: Token):
    """Watch a live source (RTSP, HTTP MJPEG/HLS) on an allow-listed host: faces are tracked, each person-track
    identified once in the collection (identify mode; detect-only and count-only never search), events kept for
    polling and POSTed to the webhook. The webhook secret is shown only in this answer. Scope: admin."""
    async with operation(request, token, "stream.create") as op:
        params, _ = await op.body(S.StreamCreate)
        info, secret = await op.call(streams_of(request).register, op.actor, source=params.source,
                                     purpose=params.purpose, collection=params.collection, mode=params.mode,
                                     fps=params.fps, identify_per_hour=params.identify_per_hour,
                                     webhook_url=params.webhook_url)
    return {**info.to_dict(), "webhook_secret": secret}


@router.get("/v1/streams", response_model=list[S.StreamOut], responses=AUTH_ERRORS)
async def list_streams(request: Request, caller: Caller):
    """This tenant's streams and videos. Scope: admin, identify or detect."""
    service = streams_of(request)
    service.fl.authorize(caller, "streams.read")
    return [s.to_dict() for s in await in_thread(service.list, caller)]


@router.get("/v1/streams/{stream_id}", response_model=S.StreamOut, responses=AUTH_ERRORS | responses(404))
async def get_stream(stream_id: StreamId, request: Request, caller: Caller):
    """A stream and its live status (connecting, live, reconnecting with the last error, ended). Scope: admin,
    identify or detect."""
    service = streams_of(request)
    service.fl.authorize(caller, "streams.read")
    return (await in_thread(service.get, caller, stream_id)).to_dict()


@router.delete("/v1/streams/{stream_id}", status_code=204, responses=AUTH_ERRORS | responses(404))
async def delete_stream(stream_id: StreamId, request: Request, token: Token):
    """Stop watching and delete the stream with its events and pending deliveries (the audit records stay).
    Scope: admin."""
    async with operation(request, token, "stream.delete") as op:
        await op.call(streams_of(request).delete, op.actor, stream_id)
    return Response(status_code=204)


@router.get("/v1/streams/{stream_id}/events", response_model=S.StreamEventsOut,
            responses=AUTH_ERRORS | responses(404))
async def stream_events(stream_id: StreamId, request: Request, caller: Caller,
                        after: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
                        limit: Annotated[int, Query(ge=1, le=1000)] = 100):
    """Events after the id `after`, oldest first: track.started, track.identified, track.unknown, track.ended.
    Scope: admin, identify or detect."""
    service = streams_of(request)
    service.fl.authorize(caller, "streams.read")
    events = await in_thread(service.events, caller, stream_id, after=after, limit=limit)
    return {"stream_id": stream_id, "events": events, "next_after": events[-1]["id"] if events else after}


@router.post("/v1/videos", response_model=S.StreamCreated, status_code=202,
             responses=AUTH_ERRORS | responses(404, 413, 415),
             openapi_extra={"requestBody": {"required": True, "content": {
                 "video/mp4": {"schema": {"type": "string", "format": "binary"}},
                 "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}})
async def submit_video(request: Request, token: Token,
                       purpose: Annotated[str, Query(min_length=1, max_length=512)],
                       collection: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
                       mode: Annotated[S.STREAM_MODES, Query()] = "identify",
                       fps: Annotated[float, Query(gt=0, le=30)] = 5.0,
                       filename: Annotated[str, Query(max_length=256)] = "video.mp4",
                       webhook_url: Annotated[str | None, Query(max_length=2048, pattern=S.WEBHOOK_URL)] = None):
    """A video file as the request body (MP4, MKV, AVI, MOV) for batch analysis: persons with their times and
    matches at `GET /v1/videos/{id}` once its state is `ended`. The file is deleted once analysed; no frame is
    kept. Scope: identify (detect for detect-only or count-only)."""
    async with operation(request, token, "video.create", collection=collection) as op:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if not ctype.startswith(VIDEO_TYPES):
            raise UnsupportedMediaType("send the video as the request body (Content-Type video/* or "
                                       "application/octet-stream)")
        service = streams_of(request)
        budget_of(request).allow(service.settings.max_video_bytes)
        path = upload_path(filename)
        folder = path.parent
        try:
            with path.open("wb") as out:  # streamed to disk, counted against the limit as it arrives
                async for chunk in request.stream():
                    out.write(chunk)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        if path.stat().st_size == 0:
            shutil.rmtree(folder, ignore_errors=True)
            raise InvalidArgument("the video is empty")
        info, secret = await op.call(service.analyse_video, op.actor, path, filename=filename, purpose=purpose,
                                     collection=collection, mode=mode, fps=fps, webhook_url=webhook_url)
    return {**info.to_dict(), "webhook_secret": secret}


@router.get("/v1/videos/{video_id}", response_model=S.VideoResultsOut, responses=AUTH_ERRORS | responses(404))
async def video_results(video_id: StreamId, request: Request, caller: Caller,
                        offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
                        limit: Annotated[int, Query(ge=1, le=1000)] = 50):
    """A video's persons (one per face track): start and end times, best frame time, decision, matched subject
    and candidates; paginated. Scope: admin, identify or detect."""
    service = streams_of(request)
    service.fl.authorize(caller, "streams.read")
    return await in_thread(service.persons, caller, video_id, offset=offset, limit=limit)


@router.get("/v1/webhooks/deliveries", response_model=list[S.DeliveryOut], responses=AUTH_ERRORS | responses(404))
async def webhook_deliveries(request: Request, caller: Caller, stream_id: Annotated[str | None, Query(pattern=ID)] = None,
                             state: Annotated[str | None, Query(pattern="^(pending|delivered|dead)$")] = None):
    """Webhook deliveries: pending (with attempts so far), delivered, dead letters. Scope: admin."""
    return await in_thread(streams_of(request).deliveries, caller, stream_id=stream_id, state=state)


@router.post("/v1/webhooks/replay", responses=AUTH_ERRORS | responses(404))
async def replay_webhooks(request: Request, token: Token, stream_id: Annotated[str | None, Query(pattern=ID)] = None):
    """Send the dead letters again (of one stream, or all of this tenant's). Scope: admin."""
    async with operation(request, token, "webhooks.replay") as op:
        n = await op.call(streams_of(request).replay, op.actor, stream_id=stream_id)
    return {"replayed": n}
