"""A request's input files (a storyboard's `keyframe_images`, an upscale's `input_video`): read, checked
and described before anything is queued.

An input arrives as a `data:` URL or an `https` URL in a JSON body, or as a file part of the same name in
a `multipart/form-data` body (read here into a `data:` URL, so both bodies take one path). URLs are
fetched through the egress policy that guards webhooks (app/egress.py): public hosts only (hosts in
`SHOW1_INPUT_ALLOWED_HOSTS` excepted, which may also serve plain http), connecting to the very address
that was checked, no redirects, at most `SHOW1_MAX_INPUT_BYTES` within `SHOW1_INPUT_FETCH_SECONDS`. Every
file is then judged by its content in a bounded child process (app/media.py `inspect`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes, urlsplit

import anyio
import anyio.to_thread
import httpx
from fastapi import Request
from starlette.datastructures import UploadFile

from app import media
from app.egress import EgressPolicy, ForbiddenTarget, GuardedTransport
from app.json_input import UnstorableValue, check_storable, parse_json_body
from app.openai_translate import InvalidRequest, nest_form_fields
from app.schemas import VideoRequest
from app.settings import Settings

# Request fields that carry files, and the kind of file each takes.
INPUT_KINDS = {"keyframe_images": media.IMAGE, "input_video": media.VIDEO}
_READ_CHUNK = 64 * 1024


class InputRejected(Exception):
    """An input that cannot be used; `loc` names the field and the item (`("body", "keyframe_images", 2)`)."""

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc, self.message = loc, message


class UnreadableBody(Exception):
    """A body that is neither a JSON object nor a readable form; `size` is its length in bytes (all of
    it counts against SHOW1_MAX_REQUEST_BYTES: no input was found in it)."""

    def __init__(self, message: str, size: int) -> None:
        super().__init__(message)
        self.size = size


@dataclass(frozen=True)
class RequestBody:
    """A create request's fields, as a JSON body would have them, and its size besides the inputs."""

    fields: dict[str, Any]
    bytes_besides_inputs: int


@dataclass(frozen=True)
class InputFile:
    field: str
    index: int | None  # position in keyframe_images; None for input_video
    data: bytes
    info: media.MediaInfo

    @property
    def loc(self) -> tuple[str | int, ...]:
        return ("body", self.field) if self.index is None else ("body", self.field, self.index)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def describe(self) -> dict[str, Any]:
        """What the job record shows of it: never the bytes."""
        return {"bytes": len(self.data), "sha256": self.sha256, **self.info.to_dict()}


def sources(body: VideoRequest) -> list[tuple[str, int | None, str]]:
    """(field, index, data: or https URL) of every input the request names."""
    found: list[tuple[str, int | None, str]] = []
    for index, source in enumerate(body.keyframe_images or []):
        found.append(("keyframe_images", index, source))
    if body.input_video is not None:
        found.append(("input_video", None, body.input_video))
    return found


async def read_request(request: Request) -> RequestBody:
    """A create body, JSON or multipart (file parts as `data:` URLs of their bytes; bracketed names,
    `steps[sr1]=2`, nested as JSON would nest them; a repeated input name is a list, in order)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in ("multipart/form-data", "application/x-www-form-urlencoded"):
        raw = await request.body()
        try:
            fields = parse_json_body(raw or b"null")
        except UnstorableValue:
            raise  # a value no record or answer could carry: the face names its field
        except ValueError as error:  # json's errors and UnicodeDecodeError are ValueErrors
            raise UnreadableBody(f"body is not JSON: {error}", len(raw)) from error
        if not isinstance(fields, dict):
            raise UnreadableBody("send a JSON object (or a multipart form)", len(raw))
        inputs = fields.get("keyframe_images"), fields.get("input_video")
        input_chars = sum(len(item) for item in _strings(inputs))
        return RequestBody(fields, len(raw) - input_chars)
    try:
        form = await request.form(max_files=64, max_fields=256)
    except Exception as error:  # noqa: BLE001 - any unparsable form is the client's error
        raise UnreadableBody(f"unreadable form body: {error}", 0) from error
    text_bytes, items, files = 0, [], {}
    for name, value in form.multi_items():
        field = name.removesuffix("[]")
        if isinstance(value, UploadFile):
            data = await value.read()
            content_type = value.content_type or "application/octet-stream"
            value = f"data:{content_type};base64,{base64.b64encode(data).decode()}"
        else:
            text_bytes += len(name) + len(value.encode())
        if field in INPUT_KINDS:
            files.setdefault(field, []).append(value)
        else:
            items.append((name, value))
    try:
        fields = nest_form_fields(items)
    except InvalidRequest as error:
        raise UnreadableBody(error.message, text_bytes) from error
    check_storable(fields)
    if "keyframe_images" in files:
        fields["keyframe_images"] = files["keyframe_images"]
    if "input_video" in files:
        videos = files["input_video"]
        fields["input_video"] = videos[0] if len(videos) == 1 else videos  # a list: the schema refuses it
    return RequestBody(fields, text_bytes)


def _strings(values: tuple[Any, ...]) -> list[str]:
    found = []
    for value in values:
        items = value if isinstance(value, list) else [value]
        found += [item for item in items if isinstance(item, str)]
    return found


async def receive(body: VideoRequest, settings: Settings) -> list[InputFile]:
    """Every input of `body`, read and judged; InputRejected names the first one refused."""
    named = sources(body)
    if not named:
        return []
    budget = settings.max_inputs_bytes
    loaded: list[tuple[str, int | None, bytes]] = []
    for field, index, source in named:
        loc = ("body", field) if index is None else ("body", field, index)
        data = await _read(source, loc, settings)
        budget -= len(data)
        if budget < 0:
            raise InputRejected(loc, f"the inputs together are over {settings.max_inputs_bytes} bytes")
        loaded.append((field, index, data))
    limits = media.MediaLimits(
        settings.max_input_pixels, settings.max_input_frames, settings.max_input_seconds
    )
    bounds = media.ProcessBounds(settings.input_decode_seconds, settings.input_decode_memory_bytes)
    size = (body.output_size.height, body.output_size.width)
    if body.input_video is None:
        size = (body.keyframe_size.height, body.keyframe_size.width)
    files = [(data, INPUT_KINDS[field]) for field, _, data in loaded]
    try:
        infos = await anyio.to_thread.run_sync(media.inspect, files, size, limits, bounds)
    except media.MediaRejected as error:
        field, index, _ = loaded[error.index]  # type: ignore[attr-defined]
        loc = ("body", field) if index is None else ("body", field, index)
        raise InputRejected(loc, str(error)) from error
    return [
        InputFile(field, index, data, info) for (field, index, data), info in zip(loaded, infos, strict=True)
    ]


async def _read(source: str, loc: tuple[str | int, ...], settings: Settings) -> bytes:
    if source.startswith("data:"):
        data = _data_url_bytes(source, loc)
    else:
        data = await _fetch(source, loc, settings)
    if len(data) > settings.max_input_bytes:
        raise InputRejected(loc, f"{len(data)} bytes; at most {settings.max_input_bytes} bytes per input")
    if not data:
        raise InputRejected(loc, "the file is empty")
    return data


def _data_url_bytes(source: str, loc: tuple[str | int, ...]) -> bytes:
    header, comma, payload = source.partition(",")
    if not comma:
        raise InputRejected(loc, "a data: URL needs a comma before its data")
    if header.endswith(";base64"):
        try:
            return base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as error:
            raise InputRejected(loc, f"invalid base64 in the data: URL: {error}") from error
    return unquote_to_bytes(payload)


async def _fetch(url: str, loc: tuple[str | int, ...], settings: Settings) -> bytes:
    policy = EgressPolicy.from_hosts(settings.input_allowed_hosts)
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme != "https" and not (parts.scheme == "http" and host in policy.allowed_hosts):
        raise InputRejected(loc, "an input is a data: URL or an https URL")
    try:
        await anyio.to_thread.run_sync(policy.check_url, url)
    except ForbiddenTarget as error:
        raise InputRejected(loc, f"input URLs must name public hosts: {error}") from error
    limit, seconds = settings.max_input_bytes, settings.input_fetch_seconds
    try:
        with anyio.fail_after(seconds):
            async with (
                httpx.AsyncClient(
                    transport=GuardedTransport(policy), follow_redirects=False, timeout=seconds
                ) as client,
                client.stream("GET", url) as response,
            ):
                if response.is_redirect:
                    raise InputRejected(
                        loc, f"the URL answered {response.status_code}; redirects are not followed"
                    )
                if response.status_code != 200:
                    raise InputRejected(loc, f"the URL answered {response.status_code}")
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > limit:
                    raise InputRejected(
                        loc, f"the URL serves {declared} bytes; at most {limit} bytes per input"
                    )
                data = bytearray()
                async for chunk in response.aiter_bytes(_READ_CHUNK):
                    data += chunk
                    if len(data) > limit:
                        raise InputRejected(loc, f"the URL serves more than {limit} bytes per input")
                return bytes(data)
    except TimeoutError as error:
        raise InputRejected(loc, f"the URL did not deliver the file within {seconds:g} s") from error
    except httpx.HTTPError as error:
        raise InputRejected(loc, f"the URL could not be fetched: {error}") from error
