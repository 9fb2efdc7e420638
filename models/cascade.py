"""The Show-1 cascade: text -> keyframes -> interpolation -> pixel SR -> latent SR, models loaded once."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
from accelerate import cpu_offload

from models.chunking import WorkingMemory
from models.loading import CascadeModels, checkpoint_info, load_models
from models.memory import MEMORY_MODES, TEXT_ENCODERS, ModelProfile, default_pairs_per_batch, profile_of
from models.params import GenerationParams, sr_window_starts, steps_per_stage
from models.pipelines.first_frame_sr import upscale_first_frame
from models.pipelines.interpolation import interpolate_keyframes
from models.pipelines.keyframes import generate_keyframes
from models.pipelines.latent_sr import latent_super_resolve, resize_frames, to_uint8_frames
from models.pipelines.pixel_diffusion import StepCallback
from models.pipelines.pixel_sr import super_resolve_video
from models.stage_outputs import (
    FINAL_FRAMES,
    FIRST_FRAME_SR,
    INTERPOLATION,
    KEYFRAMES,
    LATENT_SR,
    PIXEL_SR,
    STORED_STAGES,
    ResumePoint,
    StageOutputs,
    window_output,
)
from models.text import PromptEmbeddings, encode_clip, encode_t5

ProgressCallback = Callable[[str, int, int], None]
StageOutputCallback = Callable[[str, torch.Tensor], None]


@dataclass
class GenerationResult:
    frames: np.ndarray
    timings: dict[str, float]
    stages: dict[str, torch.Tensor] = field(default_factory=dict)
    # Where the run started when it found stored stage outputs (None: from the prompt).
    resumed_from: ResumePoint | None = None


class Show1Cascade:
    """All five checkpoints in one dtype on one device (or offloaded as `memory_mode` says)."""

    def __init__(
        self,
        models: CascadeModels,
        *,
        device: torch.device,
        dtype: torch.dtype,
        memory_mode: str = "resident",
        model_info: dict[str, dict[str, str]] | None = None,
        interpolation_pairs_per_batch: int | None = None,
        working_memory: WorkingMemory | None = None,
    ) -> None:
        if memory_mode not in MEMORY_MODES:
            raise ValueError(f"memory_mode must be one of {', '.join(MEMORY_MODES)}; got {memory_mode!r}")
        self.models = models
        self.device = torch.device(device)
        self.dtype = dtype
        self.memory_mode = memory_mode
        self.model_info = model_info or {}
        self.interpolation_pairs_per_batch = interpolation_pairs_per_batch or default_pairs_per_batch(
            self.device.type, memory_mode
        )
        # One budget for every chunked layer of every video UNet (models/chunking.py).
        self.working_memory = working_memory or WorkingMemory()
        for unet in (models.base_unet, models.interp_unet, models.sr1_unet, models.sr2_unet):
            if hasattr(unet, "set_working_memory"):  # diffusers' UNet3D (old golden sets) has none
                unet.set_working_memory(self.working_memory)
        # The text encoders run on the CPU in this mode: on the device they would sit beside the UNets.
        self._text_device = torch.device("cpu") if memory_mode == "offload_text_encoder" else self.device
        self._offloaded = self._modules_kept_off_device()
        self._place_models()
        models.vae.enable_slicing()  # the VAE a frame at a time: the same numbers, a frame's memory

    @classmethod
    def from_pretrained(
        cls,
        models_dir: str | Path,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        memory_mode: str = "resident",
        interpolation_pairs_per_batch: int | None = None,
        working_memory: WorkingMemory | None = None,
    ) -> Show1Cascade:
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = dtype or (torch.float16 if device.type == "cuda" else torch.float32)
        return cls(
            load_models(Path(models_dir), dtype),
            device=device,
            dtype=dtype,
            memory_mode=memory_mode,
            model_info=checkpoint_info(Path(models_dir)),
            interpolation_pairs_per_batch=interpolation_pairs_per_batch,
            working_memory=working_memory,
        )

    def memory_profile(self) -> ModelProfile:
        """What models/memory.py needs to estimate any request's memory on these models, this way."""
        return profile_of(
            self.models,
            element_size=torch.finfo(self.dtype).bits // 8,
            device_type=self.device.type,
            working_bytes=self.working_memory.bytes,
            interpolation_pairs_per_batch=self.interpolation_pairs_per_batch,
        )

    def generate(
        self,
        params: GenerationParams,
        *,
        progress: ProgressCallback | None = None,
        on_stage_output: StageOutputCallback | None = None,
        keep_stages: bool = False,
        stored: StageOutputs | None = None,
        last_stage: str = LATENT_SR,
        on_resume: Callable[[ResumePoint], None] | None = None,
        keyframes: torch.Tensor | None = None,
        clip: np.ndarray | None = None,
    ) -> GenerationResult:
        """Run the cascade up to `last_stage` (a draft stops after interpolation; its frames are then
        the low-resolution video). A `progress` callback may raise GenerationCancelled to stop it.

        With `stored`, every output is saved there as it is made (each stage's, each pixel-SR
        window's, the final frames), and the run starts after the last output found there: the frames
        are the same as without it (models/stage_outputs.py); `on_resume` hears where it starts.

        Given `keyframes` ((1, 3, K, H, W) in model space at the keyframe size: a storyboard), the run
        starts at interpolation with them in place of the keyframe stage's output. Given `clip`
        ((F, h, w, 3) uint8: an upscale), it is the latent stage alone on those frames.
        """
        run = _Run(steps_per_stage(params), self.device, progress, on_stage_output, keep_stages, stored)
        run.on_resume = on_resume
        if clip is not None:
            return self._upscale(params, clip, run)
        self.check_sizes(params)
        with torch.inference_mode():
            if last_stage == LATENT_SR and (frames := run.load(FINAL_FRAMES)) is not None:
                return run.result(frames.cpu().numpy())
            with run.timed("text"):
                pixel_prompt, latent_prompt = self._encode_prompts(params)
            run.keep("prompt_embeds", pixel_prompt.positive)
            run.keep("negative_prompt_embeds", pixel_prompt.negative)

            video = run.load(INTERPOLATION)
            if video is None:
                if keyframes is not None:
                    keyframes = keyframes.to(self.device, self.dtype)
                else:
                    keyframes = run.load(KEYFRAMES)
                if keyframes is None:
                    keyframes = run.stage(KEYFRAMES, lambda tick: self._keyframes(params, pixel_prompt, tick))
                run.keep("keyframes", keyframes)
                video = run.stage(
                    INTERPOLATION, lambda tick: self._interpolate(params, pixel_prompt, keyframes, tick)
                )
            run.keep("interpolated", video)
            if last_stage == INTERPOLATION:
                return run.result(to_uint8_frames(video))

            window_count = len(sr_window_starts(params.num_frames, params.window, params.stride))
            windows = run.load_windows(window_count)
            first = None
            if not windows:  # only the first window takes the IF-II frame
                first = run.load(FIRST_FRAME_SR)
                if first is None:
                    first = run.stage(
                        FIRST_FRAME_SR, lambda tick: self._first_frame(params, pixel_prompt, video, tick)
                    )
                run.keep("first_frame_sr", first[:, :, 0])
            super_resolve = partial(self._pixel_sr, params, pixel_prompt, video, first, windows, run)
            if len(windows) < window_count:
                video = run.stage(
                    PIXEL_SR,
                    super_resolve,
                    windows_done=len(windows),
                    steps_done=len(windows) * params.steps.sr1,
                )
            else:  # every window stored: they are only put together
                video = super_resolve(lambda: None)
            run.keep("sr1", video)
            frames = self._latent_stage(params, latent_prompt, to_uint8_frames(video), run)
        return run.result(frames)

    def _upscale(
        self,
        params: GenerationParams,
        clip: np.ndarray,
        run: _Run,
    ) -> GenerationResult:
        """The latent expert stage on a user's clip: only the CLIP text encoder, sr2 and the VAE run."""
        with torch.inference_mode():
            if (frames := run.load(FINAL_FRAMES)) is not None:
                return run.result(frames.cpu().numpy())
            with run.timed("text"):
                latent_prompt = self._encode_latent_prompt(params)
            frames = self._latent_stage(params, latent_prompt, clip, run)
        return run.result(frames)

    def _latent_stage(
        self, params: GenerationParams, prompt: PromptEmbeddings, frames: np.ndarray, run: _Run
    ) -> np.ndarray:
        """uint8 frames at any size -> the final uint8 frames at the output size, stored as FINAL_FRAMES."""
        final = run.stage(LATENT_SR, lambda tick: self._latent_sr(params, prompt, frames, run, tick))
        run.keep("final", final)
        output = to_uint8_frames(final)
        run.save(FINAL_FRAMES, torch.from_numpy(output))
        run.keep("final_uint8", torch.from_numpy(output))
        return output

    def check_sizes(self, params: GenerationParams) -> None:
        """ValueError unless every UNet can take the sizes: each block after the first halves them."""
        m = self.models
        for name, unet, size in (
            ("keyframe_size", m.base_unet, params.keyframe_size),
            ("keyframe_size", m.interp_unet, params.keyframe_size),
            ("keyframe_size (x4 for IF-II)", m.if_unet, params.sr1_size),
            ("keyframe_size (x4 for sr1)", m.sr1_unet, params.sr1_size),
        ):
            factor = 2 ** (len(unet.config.block_out_channels) - 1)
            if any(side % factor for side in size):
                raise ValueError(f"{name} {size} must be a multiple of {factor} for these models")

    def _encode_prompts(self, params: GenerationParams) -> tuple[PromptEmbeddings, PromptEmbeddings]:
        m = self.models
        with self._on_device(m.t5_encoder):
            pixel = encode_t5(
                m.t5_tokenizer,
                m.t5_encoder,
                params.prompt,
                params.negative_prompt,
                self._text_device,
                self.dtype,
            )
        return pixel.to(self.device), self._encode_latent_prompt(params)

    def _encode_latent_prompt(self, params: GenerationParams) -> PromptEmbeddings:
        m = self.models
        with self._on_device(m.clip_encoder):
            latent = encode_clip(
                m.clip_tokenizer,
                m.clip_encoder,
                params.prompt,
                params.latent_negative_prompt,
                self._text_device,
                self.dtype,
            )
        return latent.to(self.device)

    def _keyframes(
        self, params: GenerationParams, prompt: PromptEmbeddings, tick: StepCallback
    ) -> torch.Tensor:
        with self._on_device(self.models.base_unet):
            return generate_keyframes(
                self.models.base_unet,
                self.models.base_scheduler,
                prompt,
                num_frames=params.num_keyframes,
                size=params.keyframe_size,
                num_inference_steps=params.steps.base,
                guidance_scale=params.guidance.base,
                seed=params.seed,
                dropout=params.keyframe_dropout == "reference",
                on_step=tick,
            )

    def _interpolate(
        self, params: GenerationParams, prompt: PromptEmbeddings, keyframes: torch.Tensor, tick: StepCallback
    ) -> torch.Tensor:
        with self._on_device(self.models.interp_unet):
            return interpolate_keyframes(
                self.models.interp_unet,
                self.models.interp_scheduler,
                prompt,
                keyframes,
                num_inference_steps=params.steps.interp,
                guidance_scale=params.guidance.interp,
                seed=params.seed,
                on_step=tick,
                max_pairs_per_batch=self.interpolation_pairs_per_batch,
            )

    def _first_frame(
        self, params: GenerationParams, prompt: PromptEmbeddings, video: torch.Tensor, tick: StepCallback
    ) -> torch.Tensor:
        """IF-II output as a one-frame video (1, 3, 1, H, W), the shape every stage output has."""
        m = self.models
        with self._on_device(m.if_unet):
            image = upscale_first_frame(
                m.if_unet,
                m.if_scheduler,
                m.if_noising_scheduler,
                prompt,
                video[:, :, 0],
                size=params.sr1_size,
                num_inference_steps=params.steps.sr1_image,
                guidance_scale=params.guidance.sr1_image,
                noise_level=params.noise_level_sr1_image,
                seed=params.seed,
                on_step=tick,
            )
        return image.unsqueeze(2)

    def _pixel_sr(
        self,
        params: GenerationParams,
        prompt: PromptEmbeddings,
        video: torch.Tensor,
        first_frame: torch.Tensor | None,
        windows_done: list[torch.Tensor],
        run: _Run,
        tick: StepCallback,
    ) -> torch.Tensor:
        m = self.models
        with self._on_device(m.sr1_unet):
            return super_resolve_video(
                m.sr1_unet,
                m.sr1_scheduler,
                m.sr1_noising_scheduler,
                prompt,
                video,
                None if first_frame is None else first_frame[:, :, 0],
                size=params.sr1_size,
                window=params.window,
                stride=params.stride,
                num_inference_steps=params.steps.sr1,
                guidance_scale=params.guidance.sr1,
                noise_level=params.noise_level_sr1,
                seed=params.seed,
                on_step=tick,
                windows_done=windows_done,
                on_window=run.save_window,
            )

    def _latent_sr(
        self,
        params: GenerationParams,
        prompt: PromptEmbeddings,
        frames: np.ndarray,
        run: _Run,
        tick: StepCallback,
    ) -> torch.Tensor:
        frames = resize_frames(frames, params.output_size)
        run.keep("sr2_input_uint8", torch.from_numpy(frames))
        m = self.models
        with self._on_device(m.sr2_unet, m.vae):
            return latent_super_resolve(
                m.sr2_unet,
                m.vae,
                m.sr2_scheduler,
                prompt,
                frames,
                num_inference_steps=params.steps.sr2,
                strength=params.sr2_strength,
                guidance_scale=params.guidance.sr2,
                seed=params.seed,
                on_step=tick,
            )

    def _modules_kept_off_device(self) -> set[torch.nn.Module]:
        m = self.models
        if self.memory_mode == "model_offload":
            return set(m.modules())
        return set()

    def _place_models(self) -> None:
        if self.memory_mode == "sequential_offload":
            # accelerate keeps the weights in CPU memory and streams each submodule in for its forward.
            for module in self.models.modules():
                cpu_offload(module, execution_device=self.device)
            return
        text_encoders = {getattr(self.models, name) for name in TEXT_ENCODERS}
        for module in self.models.modules():
            if module not in self._offloaded:
                module.to(self._text_device if module in text_encoders else self.device)

    @contextmanager
    def _on_device(self, *modules: torch.nn.Module) -> Iterator[None]:
        """Bring offloaded modules to the device for one stage; back to the CPU even if it is cancelled."""
        moved = [module for module in modules if module in self._offloaded]
        for module in moved:
            module.to(self.device)
        try:
            yield
        finally:
            for module in moved:
                module.to("cpu")


class _Run:
    """Bookkeeping of one generation: timings, progress ticks, stage outputs stored and loaded."""

    def __init__(
        self,
        totals: dict[str, int],
        device: torch.device,
        progress: ProgressCallback | None,
        on_stage_output: StageOutputCallback | None,
        keep_stages: bool,
        stored: StageOutputs | None,
    ) -> None:
        self.totals = totals
        self.device = device
        self.progress = progress
        self.on_stage_output = on_stage_output
        self.keep_stages = keep_stages
        self.stored = stored
        self.timings: dict[str, float] = {}
        self.stages: dict[str, torch.Tensor] = {}
        self.loaded: list[str] = []
        self.resumed_from: ResumePoint | None = None
        self.on_resume: Callable[[ResumePoint], None] | None = None
        self._computed_any = False

    def result(self, frames: np.ndarray) -> GenerationResult:
        if self.loaded and not self._computed_any:  # everything was stored: only the encoding is left
            self._resumed(ResumePoint(FINAL_FRAMES))
        return GenerationResult(frames, self.timings, self.stages, self.resumed_from)

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        if self.device.type == "cuda":
            # Kernels are queued asynchronously; a stage ends when its last kernel does.
            torch.cuda.synchronize(self.device)
        self.timings[name] = time.perf_counter() - start

    def stage(
        self,
        name: str,
        run: Callable[[StepCallback], torch.Tensor],
        *,
        windows_done: int = 0,
        steps_done: int = 0,
    ) -> torch.Tensor:
        if not self._computed_any:
            self._computed_any = True
            if self.loaded:  # the first stage computed after stored ones: where this run resumed
                self._resumed(ResumePoint(name, windows_done))
        if self.progress is not None:
            # The stage shows from its first moment, not from its first denoising step.
            self.progress(name, steps_done, self.totals[name])
        with self.timed(name):
            output = run(self._ticker(name, steps_done))
        if self.on_stage_output is not None:
            self.on_stage_output(name, output)
        if name in STORED_STAGES:  # pixel SR is stored window by window, the latent stage as FINAL_FRAMES
            self.save(name, output)
        return output

    def _resumed(self, point: ResumePoint) -> None:
        self.resumed_from = point
        if self.on_resume is not None:
            self.on_resume(point)

    def load(self, name: str) -> torch.Tensor | None:
        output = self.stored.load(name) if self.stored is not None else None
        if output is not None:
            self.loaded.append(name)
            output = output.to(self.device)
        return output

    def load_windows(self, count: int) -> list[torch.Tensor]:
        """The stored pixel-SR windows from the first on, up to the first one missing."""
        windows = []
        for index in range(count):
            window = self.load(window_output(index))
            if window is None:
                break
            windows.append(window)
        return windows

    def save(self, name: str, output: torch.Tensor) -> None:
        if self.stored is not None:
            self.stored.save(name, output)

    def save_window(self, index: int, output: torch.Tensor) -> None:
        self.save(window_output(index), output)

    def keep(self, key: str, tensor: torch.Tensor) -> None:
        if self.keep_stages:
            self.stages[key] = tensor.to("cpu", copy=True)

    def _ticker(self, stage: str, steps_done: int) -> StepCallback:
        total, counter, progress = self.totals[stage], itertools.count(steps_done + 1), self.progress

        def tick() -> None:
            step = next(counter)
            if progress is not None:
                progress(stage, step, total)

        return tick
