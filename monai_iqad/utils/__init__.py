"""monai_iqad.utils: small shared helpers (atomic file writes, distributed helpers, the project's errors)."""

from __future__ import annotations

from .config import as_bool, console_is_interactive
from .cpu import (
    EmulatedBF16Warning,
    cpu_bf16,
    cpu_bf16_kind,
    cpu_flags,
    native_cpu_bf16,
    warn_if_emulated_cpu_bf16,
)
from .dist import (
    all_reduce_gradients,
    average_buffers,
    broadcast_parameters,
    get_rank,
    get_world_size,
    is_dist,
    is_rank0,
    unwrap_module,
)
from .errors import (
    CheckpointError,
    CheckpointNotFoundError,
    EmptyDataError,
    FileWriteError,
    InputError,
    MonaiIqadError,
    install_bundle_excepthook,
    install_excepthook,
)
from .io import atomic_torch_save, atomic_write, atomic_write_json, atomic_write_text, remove_stale_temporaries

# a `python -m monai.bundle run` process shows the project's errors as one message plus a hint (see utils/errors.py)
install_bundle_excepthook()
