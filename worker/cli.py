"""`show1`: the command line. Each command's work lives in its own module, imported on use, so
`show1 serve` never loads torch."""

from __future__ import annotations

import re
from pathlib import Path

import click

from models.params import KEYFRAME_DROPOUT_MODES

STAGE_STEP_NAMES = ("base", "interp", "sr1_image", "sr1", "sr2")


def parse_size(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", value)
    if not match or min(int(match[1]), int(match[2])) < 1:
        raise click.BadParameter(f"expected HEIGHTxWIDTH such as 40x64, got {value!r}")
    return int(match[1]), int(match[2])


def _per_stage(value: str | None) -> dict[str, str]:
    values: dict[str, str] = {}
    for item in (value or "").split(","):
        if not item.strip():
            continue
        name, _, number = item.partition("=")
        name = name.strip()
        if name not in STAGE_STEP_NAMES:
            raise click.BadParameter(f"unknown stage {name!r}; stages are {', '.join(STAGE_STEP_NAMES)}")
        values[name] = number.strip()
    return values


def parse_steps(ctx: click.Context, param: click.Parameter, value: str | None) -> dict[str, int]:
    steps = _per_stage(value)
    for name, count in steps.items():
        if not count.isdigit() or int(count) < 1:
            raise click.BadParameter(f"{name} needs a positive whole number of steps, got {count!r}")
    return {name: int(count) for name, count in steps.items()}


def parse_guidance(ctx: click.Context, param: click.Parameter, value: str | None) -> dict[str, float]:
    guidance: dict[str, float] = {}
    for name, scale in _per_stage(value).items():
        try:
            guidance[name] = float(scale)
        except ValueError:
            raise click.BadParameter(f"{name} needs a number, got {scale!r}") from None
        if guidance[name] < 1.0:
            raise click.BadParameter(f"{name} guidance must be at least 1, got {scale}")
    return guidance


@click.group()
@click.version_option(package_name="show1-service")
def main() -> None:
    """Show-1 text-to-video: generate locally, or run the video service."""


@main.command()
@click.argument("prompt")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=Path("out.mp4"))
@click.option(
    "--models-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="SHOW1_MODELS_DIR",
    help="Folder holding the five checkpoint folders; default: the tiny random-weights preset.",
)
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), help="Random seed; default: drawn and printed.")
@click.option("--keyframes", type=click.IntRange(2, 64), default=8, show_default=True)
@click.option("--keyframe-size", callback=parse_size, default="40x64", show_default=True, help="HxW.")
@click.option("--output-size", callback=parse_size, default="320x576", show_default=True, help="HxW.")
@click.option(
    "--steps",
    callback=parse_steps,
    help="Per-stage denoising steps, any subset: base=75,interp=75,sr1_image=70,sr1=125,sr2=50",
)
@click.option(
    "--guidance",
    callback=parse_guidance,
    help="Per-stage guidance scales, any subset: base=9,interp=4,sr1_image=4,sr1=7,sr2=15",
)
@click.option(
    "--keyframe-dropout",
    type=click.Choice(KEYFRAME_DROPOUT_MODES),
    envvar="SHOW1_KEYFRAME_DROPOUT",
    default="reference",
    show_default=True,
    help="reference: keyframes as run_inference.py makes them (dropout active); off: eval mode.",
)
@click.option("--negative-prompt", default="", help="Negative prompt of the pixel stages.")
@click.option("--fps", type=click.IntRange(1, 60), default=8, show_default=True)
@click.option("--device", help="torch device; default: cuda if available, else cpu.")
@click.option("--dtype", type=click.Choice(["float16", "bfloat16", "float32"]), help="Default: fp16 on CUDA.")
@click.option(
    "--memory-mode",
    type=click.Choice(["resident", "offload_text_encoder", "model_offload", "sequential_offload"]),
    default="resident",
    show_default=True,
)
@click.option(
    "--save-stages",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write every stage's tensors (golden key names) to this .safetensors file.",
)
def generate(**options: object) -> None:
    """Generate one video from PROMPT and write it as MP4."""
    from worker.generate_cmd import run_generate

    run_generate(**options)


@main.command("make-tiny-preset")
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path), required=False)
@click.option("--seed", type=int, default=0, show_default=True)
def make_tiny_preset(dest: Path | None, seed: int) -> None:
    """Write the tiny random-weights checkpoint set (default: the cache folder)."""
    from models.tiny import default_tiny_preset_dir, make_tiny_preset

    click.echo(make_tiny_preset(dest or default_tiny_preset_dir(), seed=seed))


@main.command("download-weights")
@click.option("--dir", "dest", type=click.Path(file_okay=False, path_type=Path), default=Path("checkpoints"))
@click.option("--token", envvar="HF_TOKEN", help="Hugging Face token (IF-II-L is gated); or set HF_TOKEN.")
def download_weights(dest: Path, token: str | None) -> None:
    """Download the five published checkpoints (only the files the cascade loads); resumable."""
    from models.hub import HubError, download_weights

    try:
        download_weights(dest, token=token, log=click.echo)
    except HubError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"done: set SHOW1_MODELS_DIR={dest.resolve()}")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--workers", type=int, default=1, show_default=True, help="uvicorn worker processes.")
def serve(host: str, port: int, workers: int) -> None:
    """Run the HTTP API (no models: it only validates, enqueues and reports)."""
    import uvicorn

    from app.logs import configure_logging
    from app.settings import get_settings

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    # Forwarded headers are the app's to apply, from SHOW1_TRUSTED_PROXIES only (app/proxies.py).
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_config=None,
        proxy_headers=False,
    )


@main.command()
@click.option("--burst", is_flag=True, help="Exit once the queue is empty.")
@click.option(
    "--gpus",
    help="'all' or a list such as 0,1: one resident worker process per GPU (CUDA_VISIBLE_DEVICES).",
)
def worker(burst: bool, gpus: str | None) -> None:
    """Run a GPU worker: load the cascade once, then render queued videos."""
    from app.logs import configure_logging
    from app.settings import get_settings

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    if gpus:
        from worker.supervisor import supervise_gpu_workers

        raise SystemExit(supervise_gpu_workers(gpus, burst=burst))
    from models.errors import CheckpointError
    from worker.rq_worker import run_worker
    from worker.supervisor import EXIT_BAD_CHECKPOINTS

    try:
        run_worker(settings, burst=burst)
    except CheckpointError as error:
        # Before any job was taken: an operator's mistake, said in one line, not a traceback.
        click.secho(f"Error: cannot load the checkpoints: {error}", fg="red", err=True)
        raise SystemExit(EXIT_BAD_CHECKPOINTS) from error


@main.command()
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="SHOW1_DATA_DIR",
    default=Path("var"),
    show_default=True,
    help="Embedded Redis and local storage; or SHOW1_DATA_DIR (the image sets /data).",
)
def up(port: int, host: str, data_dir: Path) -> None:
    """Everything on one machine: Redis (embedded if none), local storage, the API and a worker."""
    from worker.up import run_up

    raise SystemExit(run_up(host=host, port=port, data_dir=data_dir))


@main.command()
@click.option(
    "--role",
    type=click.Choice(["auto", "serve", "worker", "up"]),
    default="auto",
    show_default=True,
    help="What to check; auto: the container's main command (/proc/1/cmdline).",
)
@click.option("--port", type=int, help="The API's port; default: the command's --port, else 8000.")
def healthcheck(role: str, port: int | None) -> None:
    """Exit 0 when this container's role is healthy: the API's /healthz, a worker's alive file, or both."""
    from app.settings import get_settings
    from worker.health import main_process_command, problems, role_of

    arguments: list[str] = []
    if role == "auto":
        detected, arguments = role_of(main_process_command())
        role = detected or ""
    if port is not None:
        arguments = [*arguments, "--port", str(port)]
    settings = get_settings()
    found = problems(role or None, arguments, settings.worker_alive_file, settings.heartbeat_seconds)
    for problem in found:
        click.echo(f"unhealthy: {problem}", err=True)
    if found:
        raise SystemExit(1)
    click.echo(f"healthy ({role or 'no service role to check'})")


@main.command(name="storage-lifecycle")
@click.option("--apply", is_flag=True, help="Set the rules on SHOW1_S3_BUCKET (others there are kept).")
def storage_lifecycle(apply: bool) -> None:
    """Print the S3 lifecycle rules that expire a job's files with its record; --apply sets them and
    prints what the bucket then holds, read back."""
    import json

    from app.retention import lifecycle_rules, merged_rules
    from app.settings import get_settings
    from app.storage import S3Storage, StorageError

    settings = get_settings()
    rules = lifecycle_rules(settings)
    if not apply:
        click.echo(json.dumps({"Rules": rules}, indent=2))
        return
    if settings.storage_backend != "s3":
        raise click.ClickException(
            "SHOW1_STORAGE_BACKEND is not s3: on local storage the workers' janitor deletes expired files"
        )
    storage = S3Storage(settings)
    try:
        storage.put_lifecycle_rules(merged_rules(storage.lifecycle_rules(), rules))
        applied = storage.lifecycle_rules()
    except StorageError as error:
        raise click.ClickException(str(error)) from error
    click.echo(json.dumps({"Bucket": settings.s3_bucket, "Rules": applied}, indent=2, default=str))


@main.command(name="webhook-secret")
def webhook_secret() -> None:
    """Print a new Standard Webhooks secret for SHOW1_WEBHOOK_SECRET (whsec_ + base64 of 32 bytes)."""
    import base64
    import secrets

    click.echo("whsec_" + base64.b64encode(secrets.token_bytes(32)).decode())


@main.command(name="secrets")
def fresh_secrets() -> None:
    """Print fresh values of every secret setting, as .env lines (`show1 secrets >> .env`, then remove the
    placeholders): an API key, the webhook signing secret and the S3/MinIO secret key."""
    import base64
    import secrets

    click.echo(f"SHOW1_API_KEYS={secrets.token_urlsafe(32)}")
    click.echo("SHOW1_WEBHOOK_SECRET=whsec_" + base64.b64encode(secrets.token_bytes(32)).decode())
    click.echo(f"SHOW1_S3_SECRET_ACCESS_KEY={secrets.token_hex(32)}")


if __name__ == "__main__":
    main()
