"""Images of the served dataset, for the rater UI; ids never leave the dataset root."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Response
from starlette.concurrency import run_in_threadpool
from starlette.convertors import PathConvertor, register_url_convertor

from reward_service.api.deps import AnyToken, ServicesDep
from reward_service.api.errors import AUTH, errors
from reward_service.datasets import ImageIdError, UnknownImage, UnreadableImage

router = APIRouter(prefix="/images", tags=["images"])


class ImagePathConvertor(PathConvertor):
    """The whole rest of the path, newlines included. Starlette's `path` (`.*`, matched with `$`) drops a
    trailing newline, so `/v1/images/train/000003%0a` served `train/000003`; this hands the id as sent to
    `check_image_id`, which refuses it (400)."""

    regex = r"[\s\S]*"


register_url_convertor("image_path", ImagePathConvertor())


@router.get("/{image_id:image_path}", response_class=Response,
            responses={200: {"content": {"image/png": {}}}, **errors(*AUTH, 400, 404, 422)})
async def read_image(image_id: str, services: ServicesDep, _: AnyToken) -> Response:
    """The image as PNG."""
    try:
        png = await run_in_threadpool(services.dataset.image_png, image_id)
    except ImageIdError as exc:
        raise HTTPException(400, detail=f"{exc}.") from exc
    except UnknownImage as exc:
        raise HTTPException(404, detail=f"{exc}.") from exc
    except UnreadableImage as exc:
        raise HTTPException(422, detail=f"{exc}.") from exc
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})
