"""The OpenAI <-> Show-1 mapping on its own: form fields, seconds, sizes, statuses, progress."""

from __future__ import annotations

import pytest

from app.jobs import CANCELED, QUEUED, RUNNING, SUCCEEDED, JobRecord
from app.openai_schemas import SDK_SIZES
from app.openai_translate import (
    InvalidRequest,
    nest_form_fields,
    poll_after_ms,
    render_video,
    sdk_size,
    to_video_request,
    video_event,
)
from app.settings import Settings

SETTINGS = Settings(openai_extra_sizes="112x64")


def test_bracketed_form_fields_nest_like_json():
    fields = nest_form_fields(
        [("prompt", "a cat"), ("steps[sr1]", "2"), ("steps[base]", "3"), ("keyframe_size[height]", "16")]
    )
    assert fields == {
        "prompt": "a cat",
        "steps": {"sr1": "2", "base": "3"},
        "keyframe_size": {"height": "16"},
    }
    request = to_video_request({**fields, "keyframe_size": {"height": "16", "width": "24"}}, SETTINGS)
    assert request.steps.sr1 == 2 and request.steps.base == 3 and request.keyframe_size.width == 24


@pytest.mark.parametrize(
    ("seconds", "fps", "keyframes"),
    [("4", 8, 9), ("1", 8, 3), ("0.1", 8, 2), ("2", 8, 5), ("7.5", 8, 16), ("4", 4, 5)],
)
def test_seconds_become_keyframes(seconds: str, fps: int, keyframes: int):
    request = to_video_request({"prompt": "a", "seconds": seconds, "fps": fps}, SETTINGS)
    assert request.num_keyframes == keyframes


def test_defaults_follow_openai_and_portrait_keyframes_stay_portrait():
    request = to_video_request({"prompt": "a"}, SETTINGS)
    assert (request.output_size.width, request.output_size.height) == (1280, 720)
    assert request.num_keyframes == 9  # OpenAI's default 4 seconds at 8 fps: 33 frames
    portrait = to_video_request({"prompt": "a", "size": "720x1280"}, SETTINGS)
    assert (portrait.keyframe_size.height, portrait.keyframe_size.width) == (64, 40)


@pytest.mark.parametrize(
    ("fields", "param", "code"),
    [
        ({"model": "sora-2"}, "model", "model_not_found"),
        ({"size": "1000x1000"}, "size", "invalid_value"),
        ({"size": "big"}, "size", "invalid_value"),
        ({"seconds": "12"}, "seconds", "invalid_value"),
        ({"seconds": "-1"}, "seconds", "invalid_value"),
        ({"seconds": "4", "num_keyframes": 3}, "seconds", "invalid_value"),
        ({"steps": {"sr1": "0"}}, "steps[sr1]", "invalid_value"),
        ({"nonsense": 1}, "nonsense", "invalid_value"),
        ({"input_reference": "x"}, "input_reference", "unsupported"),
    ],
)
def test_invalid_requests_name_the_parameter(fields: dict, param: str, code: str):
    with pytest.raises(InvalidRequest) as caught:
        to_video_request({"prompt": "a", **fields}, SETTINGS)
    assert (caught.value.param, caught.value.code) == (param, code)


def test_any_size_only_when_settings_allow():
    assert to_video_request({"prompt": "a", "size": "112x64"}, SETTINGS).output_size.width == 112
    request = to_video_request({"prompt": "a", "size": "200x96"}, Settings(openai_extra_sizes="*"))
    assert (request.output_size.width, request.output_size.height) == (200, 96)


def record(status: str, progress: float, **fields: object) -> JobRecord:
    params = {"prompt": "a", "seed": 1, "num_keyframes": 8, "output_size": [720, 1280], "fps": 8}
    return JobRecord(
        {
            "id": "abc",
            "status": status,
            "progress": progress,
            "params": params,
            "created_at": "2026-11-25T10:00:00.000Z",
            "finished_at": "2026-11-25T10:01:00.000Z" if status in (SUCCEEDED, CANCELED) else None,
            "eta_seconds": None,
            **fields,
        }
    )


@pytest.mark.parametrize(
    ("width", "height", "shown"),
    [
        (1280, 720, "1280x720"),
        (1792, 1024, "1792x1024"),
        (576, 320, "1280x720"),
        (112, 64, "1792x1024"),  # 7:4, exactly 1792x1024's ratio
        (64, 64, "1792x1024"),  # square: landscape, the widest of the landscape sizes
        (320, 576, "720x1280"),
        (1000, 1800, "720x1280"),
        (1024, 1800, "1024x1792"),
        (2048, 1152, "1280x720"),
    ],
)
def test_a_size_outside_the_sdk_types_shows_as_the_nearest(width: int, height: int, shown: str):
    assert sdk_size(width, height) == shown
    assert shown in SDK_SIZES


def test_statuses_progress_and_times():
    running = render_video(record(RUNNING, 0.999), SETTINGS, "http://api.test")
    assert (running.status, running.progress, running.completed_at) == ("in_progress", 99, None)
    assert (running.seconds, running.size, running.created_at) == ("3.625", "1280x720", 1795600800)
    done = render_video(record(SUCCEEDED, 1.0, result={"frames": 29}), SETTINGS, "http://api.test")
    assert (done.status, done.progress, done.completed_at) == ("completed", 100, 1795600860)
    assert done.expires_at == done.completed_at + SETTINGS.job_record_ttl_seconds
    canceled = render_video(record(CANCELED, 0.5), SETTINGS, "http://api.test")
    assert canceled.status == "failed" and canceled.error.code == "canceled"
    assert render_video(record(QUEUED, 0.0), SETTINGS, "http://api.test").status == "queued"


def test_poll_interval_follows_the_eta():
    assert poll_after_ms(record(RUNNING, 0.5, eta_seconds=10.0)) == 2000
    assert poll_after_ms(record(RUNNING, 0.5, eta_seconds=0.1)) == 500
    assert poll_after_ms(record(RUNNING, 0.5, eta_seconds=3600.0)) == 10_000
    assert poll_after_ms(record(QUEUED, 0.0)) == 2000


def test_events_only_for_ended_jobs():
    assert video_event("abc", RUNNING) is None
    event = video_event("abc", CANCELED)
    assert event["type"] == "video.failed" and event["object"] == "event" and event["data"] == {"id": "abc"}
    assert video_event("abc", SUCCEEDED)["type"] == "video.completed"


@pytest.mark.parametrize("name", ["", "[]", "steps[", "steps]x[", "a b"])
def test_malformed_form_field_names_are_invalid(name: str):
    with pytest.raises(InvalidRequest):
        nest_form_fields([(name, "1")])
