"""fal.ai queue API: images, video, upscaling, background removal, image-to-image.

Every function submits to ``POST <queue>/<model>`` (``Authorization: Key <key>``), then polls
the request's ``status_url`` until ``COMPLETED`` and fetches its ``response_url``. Only URLs on
the configured queue's origin are followed (a reply cannot send the worker, with its key,
elsewhere)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field

from shared.contract import ErrorCode
from shared.errors import ExecutionFailed
from shared.functions import ExecutionContext, builtin
from workers.providers import (
    NUMBER_AS_TEXT,
    CatalogInput,
    LaxInt,
    call_json,
    clients_of,
    numeric_options_schema,
    provider_failure,
    unexpected_response,
)

__all__ = ["generate_image", "generate_video", "image_to_image", "remove_background", "upscale_image"]

PROVIDER = "fal"
KEY = "FAL_API_KEY"
DOMAIN = "ai"
PENDING = frozenset({"IN_QUEUE", "IN_PROGRESS"})


def _headers(key: str) -> dict[str, str]:
    return {"Authorization": f"Key {key}"}


def _same_origin(url: Any, base: str) -> str:
    if not isinstance(url, str):
        raise unexpected_response(PROVIDER, None, "no status/response url")
    got, want = urlsplit(url), urlsplit(base)
    if (got.scheme, got.netloc) != (want.scheme, want.netloc):
        raise unexpected_response(PROVIDER, None, "status/response url on another host")
    return url


async def run_queue(
    ctx: ExecutionContext, key: str, model: str, payload: dict[str, Any], *, interval: float, max_polls: int
) -> Any:
    """Submit ``payload`` to ``model``'s queue and wait for its result."""
    settings = clients_of(ctx).settings
    base = settings.provider_base_url(PROVIDER)
    interval = settings.fal_poll_interval if settings.fal_poll_interval is not None else interval
    headers = _headers(key)
    submitted = await call_json(
        ctx, PROVIDER, "POST", f"/{model}", headers=headers, json=payload, secrets=[key]
    )
    if not isinstance(submitted, dict):
        raise unexpected_response(PROVIDER, None, "submit answer is not an object")
    if submitted.get("status") not in PENDING and "status_url" not in submitted:
        return submitted  # answered synchronously
    status_url = _same_origin(submitted.get("status_url"), base)
    response_url = _same_origin(submitted.get("response_url"), base)
    for _ in range(max_polls):
        status = await call_json(ctx, PROVIDER, "GET", "", url=status_url, headers=headers, secrets=[key])
        state = status.get("status") if isinstance(status, dict) else None
        if state == "COMPLETED":
            if isinstance(status, dict) and status.get("error"):
                raise provider_failure(PROVIDER, 200, "", retryable=False, message=str(status["error"]))
            return await call_json(ctx, PROVIDER, "GET", "", url=response_url, headers=headers, secrets=[key])
        if state not in PENDING:
            raise unexpected_response(PROVIDER, None, f"queue status {state!r}")
        await asyncio.sleep(interval)
    raise ExecutionFailed(
        f"fal request did not complete after {max_polls} polls",
        code=ErrorCode.TIMEOUT,
        retryable=True,
        details={"provider": PROVIDER, "request_id": submitted.get("request_id")},
    )


class ImageData(BaseModel):
    imageUrl: str
    width: int | None = None
    height: int | None = None


class ImageOutput(BaseModel):
    success: bool = True
    data: ImageData


class UrlData(BaseModel):
    imageUrl: str


class UrlOutput(BaseModel):
    success: bool = True
    data: UrlData


def _image(result: Any, *, first_of: str | None = "images") -> dict[str, Any]:
    image: Any = None
    if isinstance(result, dict):
        if first_of and isinstance(result.get(first_of), list) and result[first_of]:
            image = result[first_of][0]
        elif isinstance(result.get("image"), dict):
            image = result["image"]
    if not isinstance(image, dict) or not isinstance(image.get("url"), str):
        raise unexpected_response(PROVIDER, None, "no image url")
    return image


def _image_output(result: Any) -> ImageOutput:
    image = _image(result)
    return ImageOutput(
        data=ImageData(imageUrl=image["url"], width=image.get("width"), height=image.get("height"))
    )


# ------------------------------------------------------------------------- generate-image
class GenerateImageInput(CatalogInput):
    model: Literal[
        "fal-ai/flux/schnell",
        "fal-ai/flux/dev",
        "fal-ai/flux-pro/v1.1",
        "fal-ai/flux-pro/v1.1-ultra",
        "fal-ai/flux-lora",
        "fal-ai/stable-diffusion-v3-medium",
        "fal-ai/recraft-v3",
    ] = Field(default="fal-ai/flux/schnell", title="Model")
    prompt: str = Field(title="Prompt")
    imageSize: Literal[
        "landscape_16_9", "square", "square_hd", "portrait_4_3", "portrait_16_9", "landscape_4_3"
    ] = Field(default="landscape_16_9", title="Image size")
    numImages: LaxInt = Field(default=1, ge=1, le=8, title="Number of images")


@builtin(
    "fal/generate-image",
    domain=DOMAIN,
    name="Generate Image",
    description="Generates an image with a fal.ai model; returns the first image's URL.",
    input_model=GenerateImageInput,
    output_model=ImageOutput,
    credentials=(KEY,),
    timeout_seconds=900,
)
async def generate_image(data: GenerateImageInput, ctx: ExecutionContext) -> ImageOutput:
    result = await run_queue(
        ctx,
        ctx.credentials[KEY],
        data.model,
        {"prompt": data.prompt, "image_size": data.imageSize, "num_images": data.numImages},
        interval=1.0,
        max_polls=600,
    )
    return _image_output(result)


# ------------------------------------------------------------------------- generate-video
class GenerateVideoInput(CatalogInput):
    model: Literal[
        "fal-ai/minimax-video",
        "fal-ai/kling-video/v1/standard/text-to-video",
        "fal-ai/kling-video/v1.5/pro/text-to-video",
        "fal-ai/hunyuan-video",
        "fal-ai/luma-dream-machine",
        "fal-ai/runway-gen3/turbo/image-to-video",
    ] = Field(default="fal-ai/minimax-video", title="Model")
    prompt: str = Field(title="Prompt")
    imageUrl: str | None = Field(default=None, title="Image URL", description="For image-to-video models.")


class VideoData(BaseModel):
    videoUrl: str


class VideoOutput(BaseModel):
    success: bool = True
    data: VideoData


@builtin(
    "fal/generate-video",
    domain=DOMAIN,
    name="Generate Video",
    description="Generates a video with a fal.ai model.",
    input_model=GenerateVideoInput,
    output_model=VideoOutput,
    credentials=(KEY,),
    timeout_seconds=900,
)
async def generate_video(data: GenerateVideoInput, ctx: ExecutionContext) -> VideoOutput:
    payload: dict[str, Any] = {"prompt": data.prompt}
    if data.imageUrl:
        payload["image_url"] = data.imageUrl
    result = await run_queue(ctx, ctx.credentials[KEY], data.model, payload, interval=2.0, max_polls=300)
    video = result.get("video") if isinstance(result, dict) else None
    if not isinstance(video, dict) or not isinstance(video.get("url"), str):
        raise unexpected_response(PROVIDER, None, "no video url")
    return VideoOutput(data=VideoData(videoUrl=video["url"]))


# ------------------------------------------------------------------------- upscale-image
class UpscaleImageInput(CatalogInput):
    model: Literal["fal-ai/creative-upscaler", "fal-ai/clarity-upscaler", "fal-ai/real-esrgan"] = Field(
        default="fal-ai/creative-upscaler", title="Model"
    )
    imageUrl: str = Field(title="Image URL")
    scale: Annotated[Literal["2", "4"], NUMBER_AS_TEXT, numeric_options_schema("2", "4")] = Field(
        default="2", title="Scale"
    )


@builtin(
    "fal/upscale-image",
    domain=DOMAIN,
    name="Upscale Image",
    description="Upscales an image with a fal.ai upscaler.",
    input_model=UpscaleImageInput,
    output_model=ImageOutput,
    credentials=(KEY,),
    timeout_seconds=900,
)
async def upscale_image(data: UpscaleImageInput, ctx: ExecutionContext) -> ImageOutput:
    result = await run_queue(
        ctx,
        ctx.credentials[KEY],
        data.model,
        {"image_url": data.imageUrl, "scale": int(data.scale)},
        interval=1.0,
        max_polls=600,
    )
    image = _image(result, first_of=None)
    return ImageOutput(
        data=ImageData(imageUrl=image["url"], width=image.get("width"), height=image.get("height"))
    )


# ------------------------------------------------------------------------- remove-background
class RemoveBackgroundInput(CatalogInput):
    imageUrl: str = Field(title="Image URL")


@builtin(
    "fal/remove-background",
    domain=DOMAIN,
    name="Remove Background",
    description="Removes an image's background (fal-ai/birefnet).",
    input_model=RemoveBackgroundInput,
    output_model=UrlOutput,
    credentials=(KEY,),
    timeout_seconds=900,
)
async def remove_background(data: RemoveBackgroundInput, ctx: ExecutionContext) -> UrlOutput:
    result = await run_queue(
        ctx,
        ctx.credentials[KEY],
        "fal-ai/birefnet",
        {"image_url": data.imageUrl},
        interval=1.0,
        max_polls=600,
    )
    return UrlOutput(data=UrlData(imageUrl=_image(result, first_of=None)["url"]))


# ------------------------------------------------------------------------- image-to-image
class ImageToImageInput(CatalogInput):
    model: Literal["fal-ai/flux/dev/image-to-image", "fal-ai/flux-pro/v1/redux"] = Field(
        default="fal-ai/flux/dev/image-to-image", title="Model"
    )
    imageUrl: str = Field(title="Image URL")
    prompt: str = Field(title="Prompt")
    strength: Annotated[
        Literal["0.25", "0.5", "0.75", "0.9"],
        NUMBER_AS_TEXT,
        numeric_options_schema("0.25", "0.5", "0.75", "0.9"),
    ] = Field(default="0.75", title="Strength", description="How far to move from the source image.")


@builtin(
    "fal/image-to-image",
    domain=DOMAIN,
    name="Image to Image",
    description="Transforms an image guided by a prompt.",
    input_model=ImageToImageInput,
    output_model=ImageOutput,
    credentials=(KEY,),
    timeout_seconds=900,
)
async def image_to_image(data: ImageToImageInput, ctx: ExecutionContext) -> ImageOutput:
    result = await run_queue(
        ctx,
        ctx.credentials[KEY],
        data.model,
        {"image_url": data.imageUrl, "prompt": data.prompt, "strength": float(data.strength)},
        interval=1.0,
        max_polls=600,
    )
    return _image_output(result)
