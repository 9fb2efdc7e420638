"""The page at `/` in a real browser (Debian's Chromium, driven by Playwright) against `show1 up`:
submit, live stage bars, the keyframe preview, the video playing, cancel; screenshots at two widths;
the page's own SSE reading (frames cut anywhere, a dropped stream resumed with Last-Event-ID); a
storyboard (images picked and dropped, reordered, removed, a refused one shown on its item) and an
upscale (a clip picked, a refused one shown on it), both sent as multipart/form-data.

Screenshots go to SHOW1_SCREENSHOTS_DIR when set (the README's come from docs/screenshots that way),
else to the test's temporary folder.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.video import decode_mp4, encode_mp4
from tests.conftest import REPO, free_port, service_env, wait_for

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")

DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


@contextlib.contextmanager
def show1_up(tiny_preset: Path, tmp: Path, **extra: str) -> Iterator[str]:
    """`show1 up` as a user starts it, reusing the session's tiny preset through the cache folder."""
    port = free_port()
    env = service_env("unused", tiny_preset, tmp, **extra)
    for name in ("SHOW1_MODELS_DIR", "SHOW1_LOCAL_STORAGE_DIR"):
        env.pop(name)
    # Its own queue as well as its own keys: every `show1 up` on this Redis (other tests, other
    # services at once) would otherwise drain the one default queue and take each other's jobs.
    env["SHOW1_KEY_PREFIX"] = env["SHOW1_QUEUE_NAME"] = f"page{port}"
    env["SHOW1_CACHE_DIR"] = str(tiny_preset.parent)
    log = tmp / "up.log"
    command = [sys.executable, "-m", "worker.cli", "up", "--port", str(port), "--data-dir", str(tmp / "var")]
    up = subprocess.Popen(command, env=env, cwd=REPO, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: b"Show-1 is up" in log.read_bytes(), 120, "show1 up to start")
        yield f"http://127.0.0.1:{port}"
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(timeout=40)


@pytest.fixture(scope="module")
def service(tiny_preset: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with show1_up(tiny_preset, tmp_path_factory.mktemp("page")) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # Root in a container: Chromium's sandbox needs user namespaces it does not have here.
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("SHOW1_SCREENSHOTS_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def wait_until_playing(page: object) -> None:
    """Decoded and playing (H.264 High, yuv420p, as the worker writes it): frames decoded
    (readyState >= 2), a known duration, and the clock moving; paused then, for a steady screenshot."""
    page.wait_for_function(
        "(v => v.readyState >= 2 && v.duration > 0 && v.videoWidth > 0)(document.getElementById('video'))",
        timeout=120_000,
    )
    page.evaluate("document.getElementById('video').play()")
    page.wait_for_function("document.getElementById('video').currentTime > 0.3", timeout=30_000)
    page.evaluate("(v => { v.pause(); v.currentTime = 1; })(document.getElementById('video'))")
    page.wait_for_function("(v => !v.seeking && v.readyState >= 2)(document.getElementById('video'))")


def counts(page: object) -> list[int]:
    """Steps done per stage bar, as the page shows them."""
    return page.eval_on_selector_all("#stages progress", "bars => bars.map(bar => bar.value)")


def test_a_video_from_the_page(service: str, browser: object, shots: Path) -> None:
    page = browser.new_page(viewport=DESKTOP)
    page.goto(service)
    assert page.get_by_label("Prompt").is_visible()
    assert not page.locator("#key-row").is_visible(), "show1 up runs without keys: no key field"
    page.get_by_label("Prompt").fill("A panda taking a selfie")
    page.get_by_label("Seed").fill("7")
    page.locator("summary").click()
    page.locator("#steps-sr1").fill("6")  # long enough to watch the bars move
    page.get_by_role("button", name="Generate").click()

    page.wait_for_selector("#status:text-matches('running')", timeout=60_000)
    seen = [counts(page)]
    wait_for(lambda: seen.append(counts(page)) or seen[-1][3] > 0, 60, "pixel SR to move", interval=0.1)
    wait_for(lambda: seen.append(counts(page)) or seen[-1][3] > seen[-2][3], 60, "it to go on", interval=0.1)
    page.wait_for_function("document.getElementById('preview').naturalWidth > 0", timeout=60_000)
    page.screenshot(path=str(shots / "desktop-running.png"), full_page=True)
    assert any(sum(after) > sum(before) for before, after in zip(seen, seen[1:], strict=False))

    wait_until_playing(page)
    assert "succeeded" in page.locator("#status").inner_text()
    assert page.locator("#download").get_attribute("download").endswith(".mp4")
    page.screenshot(path=str(shots / "desktop-done.png"), full_page=True)
    assert page.locator("#recent li").count() >= 1
    page.close()


def test_the_page_at_phone_width_and_cancel(service: str, browser: object, shots: Path) -> None:
    page = browser.new_page(viewport=PHONE, is_mobile=True, has_touch=True)
    page.goto(service)
    page.get_by_label("Prompt").fill("A lighthouse in a storm")
    page.get_by_role("button", name="Generate").click()
    wait_until_playing(page)
    page.screenshot(path=str(shots / "phone-done.png"), full_page=True)

    page.get_by_label("Prompt").fill("A very long video to cancel")
    page.locator("summary").click()
    page.locator("#steps-sr1").fill("60")
    page.get_by_role("button", name="Generate").click()
    page.wait_for_selector("#status:text-matches('running')", timeout=60_000)
    wait_for(lambda: sum(counts(page)) > 0, 60, "the job to make progress", interval=0.1)
    page.screenshot(path=str(shots / "phone-running.png"), full_page=True)
    page.get_by_role("button", name="Cancel", exact=True).click()
    page.wait_for_selector("#status:text-matches('canceled')", timeout=60_000)
    assert not page.locator("#cancel").is_visible()
    page.close()


def test_a_draft_from_the_page_and_its_finish(service: str, browser: object, shots: Path) -> None:
    page = browser.new_page(viewport=DESKTOP)
    page.goto(service)
    page.get_by_label("Prompt").fill("A sailboat at sunset")
    page.get_by_label("Seed").fill("3")
    page.get_by_role("button", name="Draft", exact=True).click()
    page.wait_for_selector("#status:text-matches('draft succeeded')", timeout=90_000)
    wait_until_playing(page)
    assert page.locator("#stages li").count() == 2, "a draft's bars: keyframes and interpolation"
    draft_id = page.locator("#job-id").inner_text()
    page.screenshot(path=str(shots / "desktop-draft.png"), full_page=True)

    page.get_by_role("button", name="Finish this draft").click()
    page.wait_for_function(f"document.getElementById('job-id').textContent !== {draft_id!r}", timeout=30_000)
    assert f"finishing draft {draft_id[:8]}" in page.locator("#status").inner_text()
    page.wait_for_selector("#status:text-matches('succeeded')", timeout=90_000)
    wait_until_playing(page)
    # A finishing job's bars: the three stages it runs (job_stages), from the draft's interpolation on.
    assert page.locator("#stages li").count() == 3 and not page.locator("#finish-draft").is_visible()
    page.screenshot(path=str(shots / "desktop-finished-draft.png"), full_page=True)
    page.close()


def test_the_page_reads_frames_cut_anywhere(service: str, browser: object) -> None:
    """The stream arrives in chunks cut wherever the network cuts it, CRLF or LF, with comments."""
    page = browser.new_page(viewport=DESKTOP)
    page.goto(service)
    stream = (
        ': keep-alive\r\nevent: snapshot\r\nid: 1-0\r\ndata: {"id": "a", "status": "queued"}\r\n\r\n'
        'event: progress\nid: 1-1\ndata: {"progress": 0.5,\ndata:  "stage": "keyframes"}\n\n'
    )
    runs = page.evaluate(
        """stream => {
          const runs = [];
          for (let cut = 0; cut <= stream.length; cut++) {
            const seen = [];
            let buffer = "";
            for (const chunk of [stream.slice(0, cut), stream.slice(cut)]) {
              buffer = parseFrames(normalize(buffer + chunk), (...event) => seen.push(event));
            }
            runs.push(seen);
          }
          return runs;
        }""",
        stream,
    )
    expected = [
        ["snapshot", "1-0", {"id": "a", "status": "queued"}],
        ["progress", "1-1", {"progress": 0.5, "stage": "keyframes"}],
    ]
    assert len(runs) == len(stream) + 1
    for cut, seen in enumerate(runs):
        assert seen == expected, f"cut at {cut}: {json.dumps(seen)}"
    page.close()


def test_a_dropped_stream_resumes_after_the_last_event_id(service: str, browser: object) -> None:
    """The first connection ends after one event (as a dropped one would); the page reconnects and
    asks the real endpoint for what came after that event."""
    page = browser.new_page(viewport=DESKTOP)
    asked_after: list[str | None] = []

    def events(route: object) -> None:
        asked_after.append(route.request.headers.get("last-event-id"))
        if len(asked_after) > 1:
            route.continue_()
            return
        job = urllib.request.urlopen(route.request.url.removesuffix("/events"), timeout=10).read().decode()
        body = f"event: snapshot\nid: 0-1\ndata: {job}\n\n"
        route.fulfill(status=200, content_type="text/event-stream", body=body)

    page.route("**/v1/videos/*/events", events)
    page.goto(service)
    page.get_by_label("Prompt").fill("A river seen from above")
    page.get_by_role("button", name="Generate").click()
    page.wait_for_selector("#status:text-matches('succeeded')", timeout=120_000)
    assert asked_after[:2] == [None, "0-1"]
    page.close()


def test_with_keys_the_page_asks_for_one_and_keeps_it_out_of_urls(
    tiny_preset: Path, tmp_path: Path, browser: object
) -> None:
    """A server with keys: the key field shows, a job without a key is refused on the page, and with
    one the stream, the preview and the video all load, the key travelling only in a header."""
    key = "page-test-key-0123456789"
    with show1_up(tiny_preset, tmp_path, SHOW1_API_KEYS=key) as url:
        page = browser.new_page(viewport=DESKTOP)
        seen: list[tuple[str, str | None]] = []
        page.on("request", lambda request: seen.append((request.url, request.headers.get("authorization"))))
        page.goto(url)
        assert page.get_by_label("API key").is_visible()
        page.get_by_label("Prompt").fill("A cat guarding a key")
        page.get_by_role("button", name="Generate").click()
        page.wait_for_function("document.getElementById('form-error').textContent.length > 0")
        assert page.locator("#job").is_hidden()

        page.get_by_label("API key").fill(key)
        page.get_by_role("button", name="Generate").click()
        wait_until_playing(page)
        page.wait_for_function("document.getElementById('preview').naturalWidth > 0")
        assert page.locator("#recent li").count() == 1
        page.close()
    assert not [address for address, _ in seen if key in address], "the key must never be in a URL"
    keyed = {address.split("/v1/videos/")[-1].split("/")[-1] for address, auth in seen if auth}
    assert {"events", "preview", "content"} <= keyed, keyed


def png_file(name: str, color: tuple[int, int, int], size: tuple[int, int] = (48, 32)) -> dict:
    """A Playwright file payload: a PNG of one colour with a white stripe (so each image is its own)."""
    pixels = np.zeros((size[1], size[0], 3), np.uint8)
    pixels[:] = color
    pixels[size[1] // 3 : size[1] // 2] = 255
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return {"name": name, "mimeType": "image/png", "buffer": buffer.getvalue()}


def drop_files(page: object, selector: str, files: list[dict]) -> None:
    """Drop files onto `selector` as a user dragging them from the desktop would (a DataTransfer of Files)."""
    payload = [{**file, "buffer": base64.b64encode(file["buffer"]).decode()} for file in files]
    page.evaluate(
        """([selector, files]) => {
          const transfer = new DataTransfer();
          for (const file of files) {
            const bytes = Uint8Array.from(atob(file.buffer), (c) => c.charCodeAt(0));
            transfer.items.add(new File([bytes], file.name, { type: file.mimeType }));
          }
          const target = document.querySelector(selector);
          for (const type of ["dragenter", "dragover", "drop"]) {
            const init = { bubbles: true, cancelable: true, dataTransfer: transfer };
            target.dispatchEvent(new DragEvent(type, init));
          }
        }""",
        [selector, payload],
    )


def keyframe_names(page: object) -> list[str]:
    return page.eval_on_selector_all("#keyframe-list .name", "names => names.map(n => n.textContent)")


def test_a_storyboard_from_the_page(service: str, browser: object, shots: Path) -> None:
    """Images picked and dropped, reordered, one refused by the API (shown on that image) and removed;
    the job gets the images in the page's order, as a multipart body, and succeeds."""
    red, green = png_file("red.png", (200, 0, 0)), png_file("green.png", (0, 160, 0))
    blue = png_file("blue.png", (0, 0, 200))
    broken = {"name": "broken.png", "mimeType": "image/png", "buffer": red["buffer"][:60]}  # truncated
    page = browser.new_page(viewport=DESKTOP)
    sent: list[str] = []
    page.on("request", lambda r: r.method == "POST" and sent.append(r.headers.get("content-type", "")))
    page.goto(service)
    page.get_by_label("Prompt").fill("A storyboard of three colours")
    page.get_by_label("Seed").fill("11")
    assert not page.locator("#storyboard").is_visible()
    page.get_by_label("Storyboard: your keyframe images").check()
    assert page.locator("#storyboard").is_visible() and not page.locator("#num-keyframes").is_visible()

    page.get_by_role("button", name="Generate").click()
    assert "at least 2" in page.locator("#keyframe-images-error").inner_text(), "nothing sent without images"
    page.locator("#keyframe-files").set_input_files([blue, red])
    drop_files(page, "#drop-zone", [broken, green])
    assert keyframe_names(page) == ["1. blue.png", "2. red.png", "3. broken.png", "4. green.png"]
    page.get_by_label("Move keyframe 1 down").click()  # red, blue, broken, green
    assert page.get_by_label("Move keyframe 1 up").is_disabled()
    assert page.get_by_label("Move keyframe 4 down").is_disabled()
    assert keyframe_names(page) == ["1. red.png", "2. blue.png", "3. broken.png", "4. green.png"]

    page.get_by_role("button", name="Generate").click()
    page.wait_for_function("document.getElementById('keyframe-error-2').textContent.length > 0")
    assert page.locator("#keyframe-list li").nth(2).evaluate("li => li.classList.contains('refused')")
    assert page.locator("#keyframe-error-0").inner_text() == ""
    assert page.locator("#job").is_hidden() and page.locator("#form-error").inner_text() == ""
    page.screenshot(path=str(shots / "desktop-storyboard-refused.png"), full_page=True)
    page.get_by_label("Remove keyframe 3").click()
    assert page.locator("#keyframe-error-2").inner_text() == "", "the refusal goes with the image"
    page.get_by_label("Move keyframe 3 up").click()  # red, green, blue
    assert keyframe_names(page) == ["1. red.png", "2. green.png", "3. blue.png"]
    assert "9 frames" in page.locator("#keyframe-hint").inner_text()
    page.screenshot(path=str(shots / "desktop-storyboard.png"), full_page=True)

    page.get_by_role("button", name="Generate").click()
    page.wait_for_selector("#status:text-matches('succeeded')", timeout=120_000)
    wait_until_playing(page)
    assert page.locator("#stages li").count() == 4, "a storyboard starts at interpolation"
    assert all(content.startswith("multipart/form-data") for content in sent[:2]), sent
    job_id = page.locator("#job-id").inner_text()
    job = json.loads(urllib.request.urlopen(f"{service}/v1/videos/{job_id}", timeout=10).read())
    digests = [item["sha256"] for item in job["inputs"]["keyframe_images"]]
    assert digests == [hashlib.sha256(f["buffer"]).hexdigest() for f in (red, green, blue)]
    assert job["params"]["prompt"] == "A storyboard of three colours" and job["params"]["seed"] == 11
    assert job["result"]["frames"] == 9
    page.screenshot(path=str(shots / "desktop-storyboard-done.png"), full_page=True)
    page.close()


def test_an_upscale_from_the_page(service: str, browser: object, shots: Path) -> None:
    """A clip picked in upscale mode: a file that is no clip is refused on the picker, a real MP4
    (PyAV) is upscaled to the page's output size, keeping its frames and rate."""
    frames = np.random.default_rng(5).integers(0, 256, (5, 32, 48, 3), dtype=np.uint8)
    clip = {"name": "clip.mp4", "mimeType": "video/mp4", "buffer": encode_mp4(frames, fps=10)}
    fake = b"\x00\x00\x00\x18ftypmp42" + bytes(64)  # an MP4's first box, then nothing
    not_a_clip = {"name": "fake.mp4", "mimeType": "video/mp4", "buffer": fake}
    page = browser.new_page(viewport=PHONE, is_mobile=True, has_touch=True)
    page.goto(service)
    page.get_by_label("Prompt").fill("Sharper, please")
    page.get_by_label("Upscale a clip").check()
    assert page.locator("#clip-file").is_visible() and not page.locator("#draft").is_visible()
    page.locator("summary").click()
    assert not page.locator("#kf-height").is_visible() and not page.locator("#steps-sr1").is_visible()
    page.locator("#out-height").fill("48")
    page.locator("#out-width").fill("64")
    page.locator("#steps-sr2").fill("2")
    page.get_by_label("Strength").fill("0.6")

    page.locator("#clip-file").set_input_files([not_a_clip])
    page.get_by_role("button", name="Generate").click()
    page.wait_for_function("document.getElementById('input-video-error').textContent.length > 0")
    assert page.locator("#job").is_hidden()
    page.screenshot(path=str(shots / "phone-upscale-refused.png"), full_page=True)

    page.locator("#clip-file").set_input_files([clip])
    assert page.locator("#input-video-error").inner_text() == ""
    assert "clip.mp4" in page.locator("#clip-name").inner_text()
    page.get_by_role("button", name="Generate").click()
    page.wait_for_selector("#status:text-matches('succeeded')", timeout=120_000)
    wait_until_playing(page)
    assert page.locator("#stages li").count() == 1, "an upscale runs the latent stage alone"
    job_id = page.locator("#job-id").inner_text()
    job = json.loads(urllib.request.urlopen(f"{service}/v1/videos/{job_id}", timeout=10).read())
    assert job["job_stages"] == ["latent_sr"] and job["params"]["sr2_strength"] == 0.6
    result = job["result"]
    assert (result["frames"], result["height"], result["width"], result["fps"]) == (5, 48, 64, 10)
    video = urllib.request.urlopen(f"{service}/v1/videos/{job_id}/content", timeout=10).read()
    assert decode_mp4(video).shape == (5, 48, 64, 3)
    page.screenshot(path=str(shots / "phone-upscale-done.png"), full_page=True)
    page.close()
