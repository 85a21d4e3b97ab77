"""MONAI Label app serving the monai_iqad bundles offline: SAQM quality score, MKCNet diagnosis, triage, fine-tuning.

Start it with ``monai-iqad label start --studies DIR`` (or ``python -m monailabel.main start_server --app <this
folder> --studies DIR --host 127.0.0.1``); MONAI Label finds :class:`IQADLabelApp` in this ``main.py``. Options are
``--conf KEY VALUE`` pairs (:mod:`monai_iqad.label.settings`). See ``docs/monai_label.md``.

What the app changes in MONAI Label's behaviour:

- bundles come from the local ``bundles_dir`` only (no model-zoo listing, no download);
- ``image=`` must be an id of the studies datastore (MONAI Label also accepts any existing server path), and uploads
  are written to a private folder and deleted when the request ends, failed or not;
- errors are HTTP errors with a reason (400 bad id or an infer request with neither image nor file, 404 unknown
  id/model, 409 no trained weights, 413 upload above ``max_upload_mb``, 422 unreadable image or bad parameter) instead
  of a bare 500;
- uploads are read as images before they are stored in the datastore or inferred on (a text file named ``x.png`` is
  refused with 422);
- the datastore lists DICOM (``*.dcm``) and NIfTI as well as PNG/JPEG/BMP/TIFF, and refuses ids that are paths.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import tempfile
from typing import Any

from fastapi import HTTPException
from monailabel.config import settings
from monailabel.datastore.local import LocalDatastore
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import DefaultLabelTag
from monailabel.interfaces.exception import ImageNotFoundException, MONAILabelError, MONAILabelException

import monai_iqad
from monai_iqad.label.bundles import (
    BundleError,
    MissingWeightsError,
    WeightsMismatchError,
    discover_bundles,
)
from monai_iqad.label.infer import (
    BundleDiagnosisInferTask,
    BundleQualityInferTask,
    InvalidInputError,
    TriageInferTask,
    make_infer_task,
)
from monai_iqad.label.labels import LabelError
from monai_iqad.label.safety import (
    DEFAULT_MAX_UPLOAD_MB,
    ImageNotFoundError,
    InvalidImageIdError,
    InvalidParameterError,
    UploadRejectedError,
    check_index_param,
    check_infer_request,
    check_threshold,
    check_upload,
    is_upload_path,
    remove_upload,
    resolve_image,
    sweep_uploads,
    validate_image_id,
    validate_label_tag,
)
from monai_iqad.label.settings import LabelAppSettings
from monai_iqad.label.train import BundleFineTuneTask

logger = logging.getLogger(__name__)

_UPLOAD_PREFIX = "monai_iqad_uploads_"


def private_upload_dir() -> str:
    """Point :mod:`tempfile` (hence MONAI Label's upload endpoints) at a fresh private folder, removed at exit.

    MONAI Label saves each uploaded file as ``tempfile.NamedTemporaryFile(suffix=...).name`` and deletes it only when
    the request succeeds; with a private folder the app can tell uploads from server paths and clean up after
    failed requests.
    """
    current = tempfile.gettempdir()
    if os.path.basename(current).startswith(_UPLOAD_PREFIX):
        return current
    folder = tempfile.mkdtemp(prefix=_UPLOAD_PREFIX, dir=current)  # mode 0700
    tempfile.tempdir = folder
    atexit.register(shutil.rmtree, folder, True)
    return folder


def _http(status: int, message: str) -> HTTPException:
    return HTTPException(status_code=status, detail=message)


def install_infer_request_checks() -> None:
    """Answer malformed ``POST /infer/{model}`` requests with 4xx instead of MONAI Label's 500.

    MONAI Label's endpoint raises ``HTTPException(500)`` when a request has neither ``image`` nor a file, and lets an
    invalid ``params`` JSON escape as a 500; its ``api_run_inference`` looks ``run_inference`` up in its module at
    call time, so wrapping that function (once) is enough: 400 for neither image nor file, 422 for ``params`` that is
    not a JSON object. Everything else is passed to MONAI Label's function unchanged.
    """
    import monailabel.endpoints.infer as endpoint

    original = endpoint.run_inference
    if getattr(original, "_monai_iqad_checked", False):
        return

    def run_inference(background_tasks, model, image="", session_id="", params="{}", file=None, *args, **kwargs):
        try:
            check_infer_request(image, file, session_id)
        except UploadRejectedError as e:
            raise _http(e.status, str(e)) from None
        if isinstance(params, str) and params:
            try:
                parsed = json.loads(params)
            except ValueError as e:
                raise _http(422, f"'params' is not valid JSON ({e})") from None
            if not isinstance(parsed, dict):
                raise _http(422, f"'params' must be a JSON object, got {type(parsed).__name__}")
        return original(background_tasks, model, image, session_id, params, file, *args, **kwargs)

    run_inference._monai_iqad_checked = True  # type: ignore[attr-defined]
    endpoint.run_inference = run_inference


class SafeLocalDatastore(LocalDatastore):
    """MONAI Label's local datastore, refusing ids and label tags that are paths (``../x``, ``/abs``), and removing
    the uploaded temporary file once an image or label is stored (or refused)."""

    def __init__(
        self,
        *args: Any,
        upload_dir: str | None = None,
        max_upload_bytes: int = DEFAULT_MAX_UPLOAD_MB * 2**20,
        **kwargs: Any,
    ) -> None:
        self.upload_dir = upload_dir
        self.max_upload_bytes = max_upload_bytes
        super().__init__(*args, **kwargs)

    def _ext_ok(self, filename: str) -> bool:
        name = os.path.basename(filename).lower()
        return any(name.endswith(p.replace("*", "").lower()) for p in self._extensions)

    def add_image(self, image_id: str, image_filename: str, image_info: dict[str, Any]) -> str:
        try:
            if not self._ext_ok(image_filename):
                raise _http(422, f"unsupported file type; accepted: {', '.join(self._extensions)}")
            image_id = validate_image_id(image_id or self._to_id(os.path.basename(image_filename))[0])
            check_upload(image_filename, self.max_upload_bytes)  # a text file named x.png is never stored
            return super().add_image(image_id, image_filename, image_info)
        except InvalidImageIdError as e:
            raise _http(400, str(e)) from None
        except UploadRejectedError as e:
            raise _http(e.status, str(e)) from None
        finally:
            remove_upload(image_filename, self.upload_dir)

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any]) -> str:
        try:
            validate_image_id(image_id)
            validate_label_tag(label_tag)
            if not self.get_image_uri(image_id):
                raise _http(404, f"image id {image_id!r} is not in the studies datastore")
            if label_filename and os.path.isfile(label_filename):
                check_upload(label_filename, self.max_upload_bytes, read=False)  # the size cap applies to labels too
            return super().save_label(image_id, label_filename, label_tag, label_info)
        except InvalidImageIdError as e:
            raise _http(400, str(e)) from None
        except UploadRejectedError as e:
            raise _http(e.status, str(e)) from None
        finally:
            remove_upload(label_filename, self.upload_dir)

    def get_image_uri(self, image_id: str) -> str:
        try:
            validate_image_id(image_id)
        except InvalidImageIdError:
            return ""
        return super().get_image_uri(image_id)

    def get_image_info(self, image_id: str) -> dict[str, Any]:
        try:
            validate_image_id(image_id)
        except InvalidImageIdError as e:
            raise _http(400, str(e)) from None
        return super().get_image_info(image_id)

    def update_image_info(self, image_id: str, info: dict[str, Any]) -> None:
        try:
            validate_image_id(image_id)
            return super().update_image_info(image_id, info)
        except InvalidImageIdError as e:
            raise _http(400, str(e)) from None
        except ImageNotFoundException:
            raise _http(404, f"image id {image_id!r} is not in the studies datastore") from None

    def remove_image(self, image_id: str) -> None:
        try:
            validate_image_id(image_id)
        except InvalidImageIdError as e:
            raise _http(400, str(e)) from None
        return super().remove_image(image_id)


class IQADLabelApp(MONAILabelApp):
    """MONAI Label app over the monai_iqad bundles (SAQM, MKCNet), fully offline.

    Infer tasks: one per bundle (named after the bundle folder) and ``triage``. Train tasks: one per bundle
    (fine-tuning on the datastore's labels). Options: :class:`monai_iqad.label.settings.LabelAppSettings`.

    Raises:
        MONAILabelException: ``APP_INIT_ERROR`` for a bad option, a missing bundles folder or an unknown bundle name.
    """

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        try:
            self.iqad = LabelAppSettings.from_conf(conf, app_dir)
            self.bundles = discover_bundles(self.iqad.bundles_dir, self.iqad.models)
        except (InvalidParameterError, BundleError) as e:
            raise MONAILabelException(MONAILabelError.APP_INIT_ERROR, str(e)) from e
        if not self.bundles:
            raise MONAILabelException(
                MONAILabelError.APP_INIT_ERROR, f"no SAQM/MKCNet bundle in {self.iqad.bundles_dir}"
            )
        self.upload_dir = private_upload_dir()
        self.max_upload_bytes = int(getattr(self.iqad, "max_upload_mb", DEFAULT_MAX_UPLOAD_MB)) * 2**20
        install_infer_request_checks()
        self.init_errors: dict[str, str] = {}
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="monai_iqad",
            description="Image quality score (SAQM), quality-aware diagnosis (MKCNet) and quality triage, offline",
            version=monai_iqad.__version__,
        )

    # -- datastore ---------------------------------------------------------------------------------------------------
    def init_datastore(self):
        if self.studies.startswith(("http://", "https://")):
            return super().init_datastore()
        return SafeLocalDatastore(
            self.studies,
            extensions=self.iqad.extensions,
            auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
            read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY,
            upload_dir=self.upload_dir,
            max_upload_bytes=self.max_upload_bytes,
        )

    # -- tasks -------------------------------------------------------------------------------------------------------
    def init_infers(self):
        infers: dict[str, Any] = {}
        for name, spec in self.bundles.items():
            try:
                infers[name] = make_infer_task(spec, self.iqad.overlays, patch_scores=self.iqad.patch_scores)
            except Exception as e:  # one broken bundle must not take the others down
                self.init_errors[name] = f"{type(e).__name__}: {e}"
                logger.error("bundle %s not served: %s", name, e)
        if self.iqad.triage:
            quality = self._triage_part(infers, self.iqad.triage_quality, BundleQualityInferTask, "triage_quality")
            diagnosis = self._triage_part(
                infers, self.iqad.triage_diagnosis, BundleDiagnosisInferTask, "triage_diagnosis"
            )
            if quality is not None and diagnosis is not None:
                infers["triage"] = TriageInferTask(quality, diagnosis, self.iqad.quality_threshold)
        return infers

    @staticmethod
    def _triage_part(infers: dict[str, Any], name: str | None, cls: type, key: str):
        if name:
            task = infers.get(name)
            if not isinstance(task, cls):
                raise MONAILabelException(
                    MONAILabelError.APP_INIT_ERROR,
                    f"--conf {key} {name!r}: not a served {'SAQM' if 'Quality' in cls.__name__ else 'MKCNet'} bundle",
                )
            return task
        candidates = [t for t in infers.values() if isinstance(t, cls)]
        trained = [t for t in candidates if t.spec.has_weights]  # prefer a bundle that can answer
        return (trained or candidates or [None])[0]

    def init_trainers(self):
        if self.iqad.skip_trainers:
            return {}
        work = self.iqad.work_dir or os.path.join(self.app_dir, "work")
        return {name: BundleFineTuneTask(spec, self.iqad.overlays, work) for name, spec in self.bundles.items()}

    # -- info --------------------------------------------------------------------------------------------------------
    def info(self):
        meta = super().info()
        meta["monai_iqad"] = {
            **self.iqad.as_info(),
            "version": monai_iqad.__version__,
            "bundles": {
                name: {
                    "kind": spec.kind,
                    "weights": (self._infers[name].weights_status() if name in self._infers else spec.weights_status()),
                    "path": str(spec.path),
                }
                for name, spec in self.bundles.items()
            },
            "errors": dict(self.init_errors),
        }
        return meta

    # -- inference ---------------------------------------------------------------------------------------------------
    def infer(self, request, datastore=None):
        """Run an infer task on a datastore image (by id) or an uploaded file, never on another server path.

        Raises:
            HTTPException: 400 malformed id or server path, 404 unknown model or image id, 409 the model has no
                (usable) trained weights, 422 unreadable image or bad parameter, 500 anything else (with the reason).
        """
        request = dict(request)
        image = request.get("image")
        path, is_upload = None, False
        try:
            model = request.get("model")
            task = self._infers.get(model)
            if task is None:
                raise _http(404, f"unknown model {model!r}; available: {sorted(self._infers)}")
            if not isinstance(image, str) or not image:
                raise _http(400, "pass image=<datastore id> or upload a file")
            store = datastore if datastore is not None else self.datastore()
            path, is_upload = resolve_image(image, store.get_image_uri, self.upload_dir)
            if is_upload:
                check_upload(path, self.max_upload_bytes, read=False)  # the task reads it and reports read errors
            for key in ("frame", "slice"):
                index = check_index_param(request, key)
                if index is not None:
                    request[key] = index
            if request.get("quality_threshold") is not None:
                request["quality_threshold"] = check_threshold(request["quality_threshold"])
            request.update(image=path, description=task.description, save_label=False)
            _, result = task(request)
            return {"label": None, "tag": DefaultLabelTag.ORIGINAL, "file": None, "params": result}
        except HTTPException:
            raise
        except InvalidImageIdError as e:
            raise _http(400, str(e)) from None
        except UploadRejectedError as e:
            raise _http(e.status, str(e)) from None
        except ImageNotFoundError as e:
            raise _http(404, str(e)) from None
        except (MissingWeightsError, WeightsMismatchError) as e:
            raise _http(409, str(e)) from None
        except (InvalidInputError, InvalidParameterError, LabelError) as e:
            raise _http(422, self._hide_path(str(e), path, image, is_upload)) from None
        except MONAILabelException as e:
            status = 422 if e.error == MONAILabelError.INVALID_INPUT else 500
            raise _http(status, self._hide_path(str(e.msg), path, image, is_upload)) from None
        except Exception as e:
            logger.exception("inference failed")
            detail = self._hide_path(f"inference failed: {type(e).__name__}: {e}", path, image, is_upload)
            raise _http(500, detail) from None
        finally:
            if isinstance(image, str) and is_upload_path(image, self.upload_dir):
                remove_upload(image, self.upload_dir)
            sweep_uploads(self.upload_dir)

    @staticmethod
    def _hide_path(message: str, path: str | None, image: Any, is_upload: bool) -> str:
        """Replace the server-side file path in an error message by what the client sent."""
        if path:
            message = message.replace(path, "the uploaded file" if is_upload else f"image {image!r}")
        return message
