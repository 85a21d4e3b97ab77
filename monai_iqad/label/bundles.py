"""Local bundle discovery and loading for the MONAI Label app (no ``monailabel``, no network).

MONAI Label's own bundle app lists the model zoo over the network before it accepts a local folder
(``specs/bundle_conventions.md`` §3.2). This module reads the project's bundle folders directly:

- :func:`discover_bundles`: the SAQM and MKCNet bundles of a ``bundles/`` folder (kind from the class of
  ``network_def``: :func:`bundle_kind`);
- :class:`BundleSpec`: paths, kind, weights; :func:`mkcnet_class_names`: class names from ``metadata.json`` only;
- :func:`load_inference_model`: the network with ``models/model.pt`` loaded, plus the bundle's preprocessing, from
  ``configs/inference.json`` (or, while a bundle has none yet, from ``configs/train.json``).
"""

from __future__ import annotations

import json
import logging
import os
import pydoc
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from monai_iqad.networks import SAQM, MKCNet, MKCNetInference, SAQMEnsemble, SAQMRouter, VanillaNet
from monai_iqad.utils.config import as_bool

from .results import HEADS

__all__ = [
    "BundleError",
    "MissingWeightsError",
    "WeightsMismatchError",
    "BundleSpec",
    "InferenceModel",
    "bundle_kind",
    "network_kind",
    "discover_bundles",
    "default_bundles_dir",
    "parse_list",
    "read_bundle_config",
    "load_inference_model",
    "mkcnet_class_names",
]

logger = logging.getLogger(__name__)

#: Bundle kind of each network class served: SAQM (or an ensemble or a modality router of SAQMs) → image quality
#: score, MKCNet (and its baselines) → diagnosis + quality grade. A ``network_def`` whose class derives from one of
#: these gets that kind.
NETWORK_KINDS: dict[str, tuple[type, ...]] = {
    "saqm": (SAQM, SAQMEnsemble, SAQMRouter),
    "mkcnet": (MKCNet, VanillaNet, MKCNetInference),
}
KINDS = tuple(NETWORK_KINDS)
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


def network_kind(network: type | torch.nn.Module | None) -> str | None:
    """``"saqm"`` or ``"mkcnet"`` for a network class or instance (:data:`NETWORK_KINDS`), else None."""
    cls = network if isinstance(network, type) else type(network) if network is not None else None
    if cls is None:
        return None
    return next((kind for kind, bases in NETWORK_KINDS.items() if issubclass(cls, bases)), None)


def _network_class(node: Any, file: Path, bundle_root: Path) -> type | None:
    """The class of a ``network_def`` config node: its ``_target_`` resolved like MONAI does and imported (not
    instantiated); for an expression (``"$..."``), the type of the network the bundle's config builds. None when
    neither gives a class."""
    from monai.bundle import ConfigComponent, ConfigParser

    if ConfigComponent.is_instantiable(node):
        try:
            name = ConfigComponent(node, id="network_def").resolve_module_name()
        except Exception:  # an unknown short name
            name = None
        cls = pydoc.locate(name) if isinstance(name, str) else None
        if not isinstance(cls, type):
            logger.warning("%s: 'network_def' names no importable class (%r)", file, node.get("_target_"))
            return None
        return cls
    parser = ConfigParser()
    parser.read_config(os.fspath(file))
    parser["bundle_root"] = os.fspath(bundle_root.absolute())
    try:
        return type(parser.get_parsed_content("network_def", instantiate=True))
    except Exception as e:
        logger.warning("%s: cannot build 'network_def' (%s)", file, e)
        return None


def bundle_kind(path: str | os.PathLike) -> str | None:
    """``"saqm"`` or ``"mkcnet"`` from the network class of ``network_def`` in ``configs/inference.json`` (else
    ``configs/train.json``), by type (:func:`network_kind`); None for another bundle."""
    configs = Path(path) / "configs"
    for name in ("inference.json", "train.json"):
        file = configs / name
        if not file.is_file():
            continue
        try:
            node = _read_json(file).get("network_def")
        except BundleError:
            continue
        if node is not None:
            return network_kind(_network_class(node, file, Path(path)))
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
    """A MONAI ``ConfigParser`` over the bundle's ``stage`` config plus overlays, with ``bundle_root`` set.

    Overlays are merged id by id as MONAI merges config files, except that a nested id whose parent the config lacks
    does not apply to this stage and is skipped (``demo.json``'s ``train#lr_scheduler#step_size`` over
    ``inference.json``, which has no ``train``); MONAI would raise a ``KeyError`` there.
    """
    from monai.bundle import ConfigParser
    from monai.bundle.utils import merge_kv

    base, *extra = spec.config_files(stage, overlays)
    merged = ConfigParser(config={})
    merged.read_config(os.fspath(base))
    for file in extra:
        for key, value in ConfigParser.load_config_file(os.fspath(file)).items():
            parent = key.lstrip("+").replace("::", "#").rpartition("#")[0]
            if parent and parent not in merged:
                logger.debug("%s: %r does not apply to %s (no %r there)", file.name, key, base.name, parent)
                continue
            merge_kv(merged, key, value)
    parser = ConfigParser()
    parser.read_config(merged.get())
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


def mkcnet_class_names(spec: BundleSpec) -> tuple[int, int, list[str], list[str]]:
    """``(num_diagnosis, num_quality, diagnosis_names, quality_names)`` of an MKCNet bundle, from its
    ``metadata.json`` alone (``network_data_format.outputs``; the network is not built).

    Two layouts are read: one output per head (``outputs.diagnosis`` and ``outputs.quality``, each with a
    ``channel_def``), or one output whose ``channel_def`` holds ``"diagnosis: <name>"`` channels then
    ``"quality: <name>"`` channels.

    Raises:
        BundleError: ``metadata.json`` does not name the classes of both heads.
    """
    file = spec.configs_dir / "metadata.json"
    data_format = spec.metadata().get("network_data_format")
    outputs = data_format.get("outputs") if isinstance(data_format, Mapping) else None
    names: dict[str, list[str]] = {head: [] for head in HEADS}
    for key, output in outputs.items() if isinstance(outputs, Mapping) else ():
        channel_def = output.get("channel_def") if isinstance(output, Mapping) else None
        if isinstance(channel_def, Mapping):  # {"0": name, "1": name, ...} in channel order
            try:
                channels = [str(channel_def[k]) for k in sorted(channel_def, key=int)]
            except ValueError:
                channels = [str(v) for v in channel_def.values()]
        else:
            channels = [str(v) for v in channel_def or ()]
        for channel in channels:
            prefix, sep, rest = channel.partition(":")
            if key in HEADS:
                names[key].append(channel.strip())
            elif sep and prefix.strip().lower() in HEADS:
                names[prefix.strip().lower()].append(rest.strip())
    if not names["diagnosis"] or not names["quality"]:
        raise BundleError(
            f"{file}: network_data_format.outputs must name the diagnosis and quality classes (outputs 'diagnosis' and "
            "'quality' with a channel_def each, or one channel_def of 'diagnosis: <name>' and 'quality: <name>')"
        )
    return len(names["diagnosis"]), len(names["quality"]), names["diagnosis"], names["quality"]


@dataclass
class InferenceModel:
    """A bundle network ready for inference.

    Attributes:
        spec: the bundle.
        network: ``SAQM`` (image score ``(B, 1)``, ``score_map``) or ``MKCNetInference`` (probabilities), in eval mode.
        preprocessing: MONAI ``Compose`` of dict transforms on ``"image"`` (path → ``(C, H, W)`` tensor).
        postprocessing: MKCNet only: MONAI ``Compose`` on ``{"pred": network output of one image}`` that puts each
            head under ``<head>_pred`` (``diagnosis_pred``, ``quality_pred``): the bundle's own ``postprocessing``,
            else ``SplitHeadsd`` with the class counts of ``metadata.json``.
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
    postprocessing: Any = None
    num_diagnosis: int = 0
    num_quality: int = 0
    diagnosis_names: list[str] | None = None
    quality_names: list[str] | None = None
    patch_size: int | None = None
    weights_mtime: float = 0.0
    config_files: list[str] | None = None


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

    from monai_iqad.transforms import SplitHeadsd, iqad_preprocessing, saqm_preprocessing

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
                source_to_gray=as_bool(_get(parser, "source_to_gray", False)),
                local_contrast=as_bool(_get(parser, "local_contrast_normalization", True)),
            )
    else:
        if isinstance(network, (MKCNet, VanillaNet)):
            network = MKCNetInference(network)
        names = mkcnet_class_names(spec)
        model.num_diagnosis, model.num_quality, model.diagnosis_names, model.quality_names = names
        inner = getattr(network, "net", network)
        built = (getattr(inner, "num_diagnosis", names[0]), getattr(inner, "num_quality", names[1]))
        if tuple(built) != names[:2]:
            raise BundleError(
                f"bundle '{spec.name}': metadata.json names {names[0]} diagnosis and {names[1]} quality classes, the "
                f"network has {built[0]} and {built[1]}"
            )
        if has_inference and "postprocessing" in parser:
            try:
                model.postprocessing = parser.get_parsed_content("postprocessing", instantiate=True)
            except Exception as e:
                raise BundleError(f"bundle '{spec.name}': cannot build 'postprocessing' ({e})") from e
        if model.postprocessing is None:
            model.postprocessing = Compose([SplitHeadsd("pred", dict(zip(HEADS, names[:2])))])
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
