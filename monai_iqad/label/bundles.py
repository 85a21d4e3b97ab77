"""Local bundle discovery and loading for the MONAI Label app (no ``monailabel``, no network).

MONAI Label's own bundle app lists the model zoo over the network before it accepts a local folder
(``specs/bundle_conventions.md`` §3.2). This module reads the project's bundle folders directly:

- :func:`discover_bundles`: the SAQM and MKCNet bundles of a ``bundles/`` folder (kind from ``network_def``);
- :class:`BundleSpec`: paths, kind, class names (``metadata.json`` channel_def, config ids, ``IQAD_DATASETS``), weights;
- :func:`load_inference_model`: the network with ``models/model.pt`` loaded, plus the bundle's preprocessing, from
  ``configs/inference.json`` (or, while a bundle has none yet, from ``configs/train.json``).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "BundleError",
    "MissingWeightsError",
    "WeightsMismatchError",
    "BundleSpec",
    "InferenceModel",
    "bundle_kind",
    "discover_bundles",
    "default_bundles_dir",
    "parse_list",
    "read_bundle_config",
    "load_inference_model",
    "mkcnet_class_names",
]

logger = logging.getLogger(__name__)

KINDS = ("saqm", "mkcnet")
WEIGHTS_MISSING = "missing: train the bundle first"


class BundleError(RuntimeError):
    """A bundle folder that cannot be served (no usable config, unknown network)."""


class MissingWeightsError(FileNotFoundError):
    """The bundle has no ``models/model.pt``: inference would run with random weights, so it is refused."""


class WeightsMismatchError(RuntimeError):
    """``models/model.pt`` does not fit the network built from the configs (another width or image size?)."""


def parse_list(value: str | Iterable[str] | None) -> list[str]:
    """``"a, b,c"`` or an iterable → ``["a", "b", "c"]`` (empty items dropped)."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    return [str(v).strip() for v in items if str(v).strip()]


def default_bundles_dir() -> Path:
    """``$MONAI_IQAD_BUNDLES``, else the ``bundles/`` folder beside the ``monai_iqad`` package (a source checkout),
    else ``./bundles``."""
    env = os.environ.get("MONAI_IQAD_BUNDLES")
    if env:
        return Path(env).expanduser().absolute()
    repo = Path(__file__).resolve().parents[2] / "bundles"
    return repo if repo.is_dir() else Path("bundles").absolute()


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise BundleError(f"{path}: cannot read JSON ({e})") from e
    if not isinstance(data, dict):
        raise BundleError(f"{path}: expected a JSON object")
    return data


def _target_text(node: Any) -> str:
    """All ``_target_`` strings of a (nested) config node, joined."""
    if isinstance(node, dict):
        parts = [str(node.get("_target_", ""))]
        parts += [_target_text(v) for k, v in node.items() if k != "_target_"]
        return " ".join(p for p in parts if p)
    if isinstance(node, list):
        return " ".join(_target_text(v) for v in node)
    return ""


def bundle_kind(path: str | os.PathLike) -> str | None:
    """``"saqm"`` or ``"mkcnet"`` from the ``network_def`` of ``configs/inference.json`` or ``configs/train.json``;
    None for another bundle."""
    configs = Path(path) / "configs"
    for name in ("inference.json", "train.json"):
        file = configs / name
        if not file.is_file():
            continue
        try:
            targets = _target_text(_read_json(file).get("network_def"))
        except BundleError:
            continue
        if re.search(r"\bSAQM\b", targets):
            return "saqm"
        if "MKCNet" in targets:
            return "mkcnet"
    return None


@dataclass(frozen=True)
class BundleSpec:
    """One local bundle folder.

    Attributes:
        name: folder name (also the MONAI Label model name).
        path: absolute folder path.
        kind: ``"saqm"`` (image quality score) or ``"mkcnet"`` (diagnosis + quality grade).
    """

    name: str
    path: Path
    kind: str

    @property
    def configs_dir(self) -> Path:
        return self.path / "configs"

    @property
    def inference_config(self) -> Path | None:
        """``configs/inference.json`` when the bundle has one."""
        file = self.configs_dir / "inference.json"
        return file if file.is_file() else None

    @property
    def train_config(self) -> Path:
        return self.configs_dir / "train.json"

    @property
    def weights_path(self) -> Path:
        return self.path / "models" / "model.pt"

    @property
    def has_weights(self) -> bool:
        return self.weights_path.is_file()

    def weights_status(self) -> str:
        """``"models/model.pt"`` (with its recorded validation metric) or ``"missing: train the bundle first"``."""
        if not self.has_weights:
            return WEIGHTS_MISSING
        record = self.weights_path.with_name("model.pt.json")
        text = "models/model.pt"
        if record.is_file():
            try:
                r = json.loads(record.read_text(encoding="utf-8"))
                text += f" (best {r.get('metric')}={float(r.get('value')):.4f} at epoch {r.get('epoch')})"
            except (OSError, ValueError, TypeError):
                pass
        return text

    def metadata(self) -> dict:
        """``configs/metadata.json`` (empty when absent or unreadable)."""
        file = self.configs_dir / "metadata.json"
        if not file.is_file():
            return {}
        try:
            return _read_json(file)
        except BundleError as e:
            logger.warning(str(e))
            return {}

    def description(self) -> str:
        """``metadata.json``'s ``name`` (else the first sentence of its ``description``, else the kind)."""
        meta = self.metadata()
        text = str(meta.get("name") or "").strip() or str(meta.get("description") or "").split(". ")[0].strip()
        if not text:
            text = "SAQM image quality score" if self.kind == "saqm" else "MKCNet quality-aware diagnosis"
        return text

    def config_files(self, stage: str, overlays: Sequence[str] = ()) -> list[Path]:
        """Config files for ``stage`` (``"inference"`` or ``"train"``) followed by the ``overlays`` that exist.

        ``inference`` falls back to ``train.json`` while the bundle has no ``inference.json``. Overlays are file names
        in ``configs/`` (``demo.json``...) merged over the base config; missing ones are skipped.
        """
        if stage == "inference":
            base = self.inference_config or self.train_config
        elif stage == "train":
            base = self.train_config
        else:
            raise ValueError(f"stage must be 'inference' or 'train', got {stage!r}")
        files = [base]
        for name in overlays:
            file = self.configs_dir / Path(name).name  # a file name in configs/, never a path
            if file.is_file() and file not in files:
                files.append(file)
        return files


def discover_bundles(bundles_dir: str | os.PathLike, names: Sequence[str] | None = None) -> dict[str, BundleSpec]:
    """The SAQM and MKCNet bundles in ``bundles_dir``, by folder name (sorted).

    Args:
        bundles_dir: folder holding bundle folders.
        names: keep only these (in this order); ``None``/empty/``["all"]`` keeps all.

    Raises:
        BundleError: ``bundles_dir`` missing, or a requested name that is not a SAQM/MKCNet bundle there.
    """
    root = Path(bundles_dir).expanduser().absolute()
    if not root.is_dir():
        raise BundleError(f"bundles folder not found: {root}")
    found: dict[str, BundleSpec] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and (p / "configs").is_dir()):
        kind = bundle_kind(folder)
        if kind is not None:
            found[folder.name] = BundleSpec(folder.name, folder, kind)
    wanted = [n for n in (names or []) if n != "all"]
    if not wanted:
        return found
    missing = [n for n in wanted if n not in found]
    if missing:
        raise BundleError(f"not a SAQM/MKCNet bundle in {root}: {missing} (available: {sorted(found)})")
    return {n: found[n] for n in wanted}


def read_bundle_config(spec: BundleSpec, stage: str, overlays: Sequence[str] = (), **overrides: Any):
    """A MONAI ``ConfigParser`` over the bundle's ``stage`` config plus overlays, with ``bundle_root`` set."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([os.fspath(f) for f in spec.config_files(stage, overlays)])
    parser["bundle_root"] = os.fspath(spec.path)
    for key, value in overrides.items():
        parser[key] = value
    return parser


def _get(parser, key: str, default: Any = None) -> Any:
    """Parsed value of ``key`` when the config has it, else ``default``."""
    if key not in parser:
        return default
    try:
        return parser.get_parsed_content(key, instantiate=True)
    except Exception as e:  # an expression that needs files absent at inference (datalists...)
        logger.debug("cannot parse %r: %s", key, e)
        return default


def _channel_names(spec: BundleSpec) -> list[str]:
    """Channel names of ``network_data_format.outputs.pred.channel_def`` in channel order."""
    try:
        outputs = spec.metadata()["network_data_format"]["outputs"]
        pred = outputs.get("pred") or next(iter(outputs.values()))
        channel_def = pred["channel_def"]
    except (KeyError, TypeError, StopIteration, AttributeError):
        return []
    if isinstance(channel_def, list):
        return [str(v) for v in channel_def]
    if isinstance(channel_def, dict):
        try:
            return [str(channel_def[k]) for k in sorted(channel_def, key=lambda k: int(k))]
        except ValueError:
            return [str(v) for v in channel_def.values()]
    return []


_HEAD_PREFIX = re.compile(r"^\s*(diagnosis|quality)\s*[:/=|-]\s*", re.IGNORECASE)


@dataclass
class InferenceModel:
    """A bundle network ready for inference.

    Attributes:
        spec: the bundle.
        network: ``SAQM`` (image score ``(B, 1)``, ``score_map``) or ``MKCNetInference`` (probabilities), in eval mode.
        preprocessing: MONAI ``Compose`` of dict transforms on ``"image"`` (path → ``(C, H, W)`` tensor).
        num_diagnosis: MKCNet only.
        num_quality: MKCNet only.
        diagnosis_names: MKCNet only.
        quality_names: MKCNet only.
        patch_size: SAQM only.
        weights_mtime: ``st_mtime`` of the loaded ``models/model.pt``.
        config_files: the config files the model was built from.
    """

    spec: BundleSpec
    network: torch.nn.Module
    preprocessing: Any
    num_diagnosis: int = 0
    num_quality: int = 0
    diagnosis_names: list[str] | None = None
    quality_names: list[str] | None = None
    patch_size: int | None = None
    weights_mtime: float = 0.0
    config_files: list[str] | None = None


def _mkcnet_names(
    spec: BundleSpec, parser, network: torch.nn.Module | None = None
) -> tuple[int, int, list[str], list[str]]:
    from monai_iqad.data import get_dataset_info

    inner = getattr(network, "net", network)
    nd = _get(parser, "num_diagnosis", getattr(inner, "num_diagnosis", None))
    nq = _get(parser, "num_quality", getattr(inner, "num_quality", None))
    info = None
    dataset = _get(parser, "dataset_name", None)
    if isinstance(dataset, str):
        try:
            info = get_dataset_info(dataset)
        except KeyError:
            info = None
    nd = int(nd if nd is not None else (info.num_diagnosis if info else 0))
    nq = int(nq if nq is not None else (info.num_quality if info else 0))
    d_names = _get(parser, "diagnosis_names", None)
    q_names = _get(parser, "quality_names", None)
    channels = _channel_names(spec)
    if nd and len(channels) == nd + nq:
        heads = [(_HEAD_PREFIX.match(c), _HEAD_PREFIX.sub("", c)) for c in channels]
        d_names, q_names = [h[1] for h in heads[:nd]], [h[1] for h in heads[nd:]]
    if not d_names and info is not None:
        d_names = list(info.diagnosis_names)
    if not q_names and info is not None:
        q_names = list(info.quality_names)
    d_names = [str(n) for n in (d_names or [])]
    q_names = [str(n) for n in (q_names or [])]
    return nd, nq or len(q_names), d_names, q_names


def mkcnet_class_names(spec: BundleSpec, overlays: Sequence[str] = ()) -> tuple[int, int, list[str], list[str]]:
    """``(num_diagnosis, num_quality, diagnosis_names, quality_names)`` of an MKCNet bundle, without building its
    network.

    Names come from ``metadata.json`` (``network_data_format.outputs.pred.channel_def``, diagnosis channels first,
    ``"diagnosis: "``/``"quality: "`` prefixes dropped), else the ``diagnosis_names``/``quality_names`` config ids,
    else :data:`monai_iqad.data.IQAD_DATASETS` of the config's ``dataset_name``.
    """
    return _mkcnet_names(spec, read_bundle_config(spec, "inference", overlays))


def _load_weights(network: torch.nn.Module, spec: BundleSpec, device: torch.device) -> float:
    path = spec.weights_path
    if not path.is_file():
        raise MissingWeightsError(
            f"bundle '{spec.name}' has no trained weights ({path} is missing): train the bundle first"
        )
    mtime = os.stat(path).st_mtime
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:
        raise WeightsMismatchError(f"bundle '{spec.name}': cannot load {path} ({e})") from e
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise WeightsMismatchError(
            f"bundle '{spec.name}': {path} does not fit the network of its configs (trained with another width or "
            f"image size? pass the same config overlays, e.g. --conf overlays demo.json): {' '.join(first[:3])[:400]}"
        ) from e
    return mtime


def load_inference_model(
    spec: BundleSpec, overlays: Sequence[str] = (), device: str | torch.device = "cpu", require_weights: bool = True
) -> InferenceModel:
    """Build the bundle's inference network and preprocessing and load ``models/model.pt``.

    ``configs/inference.json`` is used when present (its ``network_def`` and ``preprocessing``); otherwise
    ``configs/train.json``'s ``network_def`` with ``monai_iqad.transforms.saqm_preprocessing(train=False)`` /
    ``iqad_preprocessing(dataset_name, train=False)``. An MKCNet ``network_def`` that returns a dict is wrapped into
    ``MKCNetInference``.

    Args:
        spec: the bundle.
        overlays: config file names in ``configs/`` merged over the base config (e.g. ``["demo.json"]``, for weights
            trained with the demo overlay).
        device: device to load to.
        require_weights: raise :class:`MissingWeightsError` when ``models/model.pt`` is missing (else keep the random
            initialisation; only for tests of the plumbing).

    Raises:
        MissingWeightsError: no ``models/model.pt``.
        WeightsMismatchError: ``model.pt`` does not load into the network.
        BundleError: the configs do not give a usable network or preprocessing.
    """
    from monai.transforms import Compose

    from monai_iqad.networks import MKCNet, MKCNetInference, VanillaNet
    from monai_iqad.transforms import iqad_preprocessing, saqm_preprocessing

    device = torch.device(device)
    parser = read_bundle_config(spec, "inference", overlays)
    has_inference = spec.inference_config is not None
    try:
        network = parser.get_parsed_content("network_def", instantiate=True)
    except Exception as e:
        raise BundleError(f"bundle '{spec.name}': cannot build 'network_def' ({e})") from e
    if not isinstance(network, torch.nn.Module):
        raise BundleError(f"bundle '{spec.name}': 'network_def' is not a torch module ({type(network).__name__})")
    preprocessing = None
    if has_inference and "preprocessing" in parser:
        try:
            preprocessing = parser.get_parsed_content("preprocessing", instantiate=True)
        except Exception as e:
            raise BundleError(f"bundle '{spec.name}': cannot build 'preprocessing' ({e})") from e
    model = InferenceModel(spec=spec, network=network, preprocessing=None)
    model.config_files = [os.fspath(f) for f in spec.config_files("inference", overlays)]
    if spec.kind == "saqm":
        model.patch_size = int(_get(parser, "patch_size", getattr(network, "patch_size", 32)))
        if preprocessing is None:
            preprocessing = saqm_preprocessing(
                train=False,
                patch_size=model.patch_size,
                source_to_gray=bool(_get(parser, "source_to_gray", False)),
                local_contrast=bool(_get(parser, "local_contrast_normalization", True)),
            )
    else:
        if isinstance(network, (MKCNet, VanillaNet)):
            network = MKCNetInference(network)
        names = _mkcnet_names(spec, parser, network)
        model.num_diagnosis, model.num_quality, model.diagnosis_names, model.quality_names = names
        if model.num_diagnosis < 1:
            raise BundleError(f"bundle '{spec.name}': cannot tell the number of diagnosis classes")
        if preprocessing is None:
            dataset = _get(parser, "dataset_name", None)
            if not isinstance(dataset, str):
                raise BundleError(f"bundle '{spec.name}': no 'preprocessing' and no 'dataset_name' in its configs")
            preprocessing = iqad_preprocessing(dataset, spatial_size=_get(parser, "image_size", None), train=False)
    if not isinstance(preprocessing, Compose):
        preprocessing = Compose(preprocessing if isinstance(preprocessing, (list, tuple)) else [preprocessing])
    network = network.to(device)
    if require_weights or spec.has_weights:
        model.weights_mtime = _load_weights(network, spec, device)
    network.eval()
    model.network = network
    model.preprocessing = preprocessing
    return model
