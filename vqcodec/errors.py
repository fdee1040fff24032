"""Every failure a user can cause derives from `VqcodecError`; the CLI prints its message as
one line and exits with status 1. Programming errors stay ordinary exceptions (tracebacks)."""
from __future__ import annotations


class VqcodecError(ValueError):
    """Base of everything a user can cause: bad input, files, models, options."""


class InputError(VqcodecError):
    """An input image or audio file that cannot be used."""


class ContainerError(VqcodecError):
    """Anything that is not a valid `.vqc` container (magic, version, CRC, header fields)."""


class CorruptPayloadError(ContainerError):
    """A `.vqc` payload that does not decode, or decodes to other indices than were coded."""


class ModelError(VqcodecError):
    """A model that cannot be found or loaded, or does not fit the file."""


class DeviceError(VqcodecError):
    """A `--device` that cannot be used here (e.g. cuda without a GPU)."""


class RDError(VqcodecError):
    """A failure of an RD evaluation: bad folder, option or missing dependency."""


class TrainingError(VqcodecError):
    """Training data or options that cannot be used."""
