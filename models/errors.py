"""Exceptions shared by the cascade and its callers (importable without torch)."""


class GenerationCancelled(Exception):
    """Raised by a progress callback to stop a generation between denoising steps."""


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be loaded as published: missing, incomplete or not fitting."""
