"""Progress bar, latent preview and interrupt support for the pack's sampling loops."""
from __future__ import annotations

import comfy.model_management
import latent_preview


def sampling_callback(model, steps: int):
    """A sampler callback that updates the progress bar and preview and honours Cancel."""
    preview = latent_preview.prepare_callback(model, steps)

    def callback(step, denoised, x, total_steps):
        comfy.model_management.throw_exception_if_processing_interrupted()
        preview(step, denoised, x, total_steps)

    return callback
