"""Images of the served dataset, for the rater UI; ids never leave the dataset root."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Response
from starlette.concurrency import run_in_threadpool

from reward_service.api.deps import AnyToken, ServicesDep
from reward_service.api.errors import AUTH, errors
from reward_service.datasets import DatasetError, ImageIdError, UnknownImage

router = APIRouter(prefix="/images", tags=["images"])


@router.get("/{image_id:path}", response_class=Response, responses={200: {"content": {"image/png": {}}},
                                                                              **errors(*AUTH, 400, 404, 422)})
async def read_image(image_id: str, services: ServicesDep, _: AnyToken) -> Response:
    """The image as PNG."""
    try:
        png = await run_in_threadpool(services.dataset.image_png, image_id)
    except ImageIdError as exc:
        raise HTTPException(400, detail=f"{exc}.") from exc
    except UnknownImage as exc:
        raise HTTPException(404, detail=f"{exc}.") from exc
    except DatasetError as exc:
        raise HTTPException(500, detail="The image could not be read from the dataset.") from exc
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})
