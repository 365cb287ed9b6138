"""Routes for /v1/datasets: thin, each calls one service function."""

from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from app.datasets import service, uploads
from app.datasets.schemas import UPLOAD_FORM, DatasetOut, DatasetPage, Kind
from app.deps import (
    PAGE_LIMIT_DEFAULT,
    OwnerDep,
    PageCursor,
    PageLimit,
    SessionDep,
    SettingsDep,
    StoreDep,
)

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])
DatasetId = Annotated[str, "the dataset's id"]

UPLOAD_DESCRIPTION = """Upload a dataset as `multipart/form-data`: `file`, `format`, and
optionally `name` and the format's own fields. The body is streamed to disk and checked
completely before anything is recorded.

- `text`: a UTF-8 corpus for character models (or `encoding`); the last 10% is held out.
- `npz`: arrays `x` (N, features), (N, H, W) or (N, C, H, W), uint8 pixels (divided by
  255) or finite floats (used as they are, e.g. standardized features); `y` integer labels;
  optional `classes` (strings), `x_test` and `y_test`. Loaded without pickle.
- `idx`: MNIST IDX images and labels, raw or gzipped: either `file` = images and `labels` =
  labels, or `file` = a tar (or .tar.gz) holding both, plus optionally a `t10k`/`test` pair.
- `cifar10-bin`: CIFAR-10 binary records (1 label byte + 3,072 pixel bytes), one batch file
  or the tar.gz of `data_batch_*.bin`, `test_batch.bin` and `batches.meta.txt`.
- `csv`: one label column (`label_column`) and numeric features, used as they are;
  optionally `shape` to make each row an image.

Images are fixed at 10% validation (a shuffled, fixed split). The same bytes in the same
format with the same options (`encoding`, `label_column`, `shape`) uploaded again by the same
owner answer `200` with the dataset made the first time. An owner's datasets together may
take `TRAINSERVE_OWNER_STORAGE_BYTES` once stored; past that the upload is a `413`."""


@router.get("/builtin", summary="List the built-in datasets")
def builtins(_: OwnerDep) -> dict[str, list[dict[str, Any]]]:
    return {"items": service.list_builtins()}


@router.post("", status_code=201, summary="Upload a dataset", description=UPLOAD_DESCRIPTION,
             openapi_extra=UPLOAD_FORM, response_model_exclude_unset=True,
             responses={200: {"description": "already uploaded: the existing dataset"},
                        413: {"description": "over the upload limit or the owner's "
                              "storage quota"},
                        415: {"description": "not multipart/form-data"},
                        422: {"description": "malformed; the detail says what is wrong"}})
async def upload(request: Request, session: SessionDep, settings: SettingsDep, store: StoreDep,
                 owner: OwnerDep, response: Response) -> DatasetOut:
    async with uploads.receive(request, settings=settings) as received:
        row, created = await run_in_threadpool(partial(
            service.create_dataset, session=session, settings=settings, store=store,
            owner=owner, upload=received))
    response.status_code = 201 if created else 200
    response.headers["Location"] = f"/v1/datasets/{row.id}"
    return service.to_out(row)


@router.get("", summary="List uploaded datasets, newest first",
            response_model_exclude_unset=True)
def list_(session: SessionDep, owner: OwnerDep, kind: Kind | None = None,
          limit: PageLimit = PAGE_LIMIT_DEFAULT, cursor: PageCursor = None) -> DatasetPage:
    rows, next_cursor = service.list_datasets(session=session, owner=owner, kind=kind,
                                              limit=limit, cursor=cursor)
    return DatasetPage(items=[service.to_out(r) for r in rows], next_cursor=next_cursor)


@router.get("/{dataset_id}", summary="Get an uploaded dataset", response_model_exclude_unset=True,
            responses={404: {"description": "no such dataset"}})
def get(dataset_id: DatasetId, session: SessionDep, owner: OwnerDep) -> DatasetOut:
    return service.to_out(service.get_dataset(session=session, owner=owner,
                                              dataset_id=dataset_id))


@router.delete("/{dataset_id}", status_code=204, summary="Delete an uploaded dataset",
               responses={409: {"description": "a queued or running job uses it"}})
def delete(dataset_id: DatasetId, session: SessionDep, store: StoreDep,
           owner: OwnerDep) -> Response:
    service.delete_dataset(session=session, store=store, owner=owner, dataset_id=dataset_id)
    return Response(status_code=204)
