"""Parse and validate the --models and --tasks mini-languages and the names inside them."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from netrain.errors import SpecError

NAME_RE = re.compile(r"\A[A-Za-z0-9_-]+\Z")
MAX_NNETS = 100_000


class ModelName:
    """The two spellings of a model: ``class.architecture`` and the file-name form
    ``class-architecture`` (as in the seed's ``scripts/<class>-<architecture>-sbatch.sh``)."""

    cls: str
    architecture: str

    @property
    def key(self) -> str:
        return f"{self.cls}.{self.architecture}"

    @property
    def slug(self) -> str:
        return f"{self.cls}-{self.architecture}"


@dataclass(frozen=True, order=True)
class ModelSpec(ModelName):
    """One ``class.architecture=nnets`` item of --models."""

    cls: str
    architecture: str
    nnets: int


def check_name(value: str, what: str) -> str:
    """Return ``value`` if it is a safe name (letters, digits, '_' and '-'), else raise."""
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        raise SpecError(
            f"{what} {value!r} is not a valid name: use only letters, digits, '_' and '-'"
        )
    return value


def parse_models(text: str) -> list[ModelSpec]:
    """Parse ``"classifier.clu_one=10, chransynth=32, autoencoder.classical=45"``.

    An item without a class takes the class of the item before it (the seed's grammar).
    """
    if text is None or not text.strip():
        raise SpecError('--models is empty: give e.g. --models "classifier.clu_one=10"')
    items = text.split(",")
    specs: list[ModelSpec] = []
    seen: set[str] = set()
    current_cls: str | None = None
    for pos, raw in enumerate(items, start=1):
        item = raw.strip()
        if not item:
            raise SpecError(
                f"--models item {pos} is empty (stray comma?): write items as "
                '"class.architecture=N, architecture=N"'
            )
        if "=" not in item:
            raise SpecError(
                f"--models item {item!r} has no '=N': write it as class.architecture=N "
                "(N networks per array task)"
            )
        name, _, count = item.partition("=")
        name, count = name.strip(), count.strip()
        if "." in name:
            cls, _, arch = name.partition(".")
            check_name(cls, "model class")
        else:
            if current_cls is None:
                raise SpecError(
                    f"--models item {item!r} has no class and none comes before it: "
                    "write class.architecture=N for the first model"
                )
            cls, arch = current_cls, name
        check_name(arch, "model architecture")
        nnets = parse_positive_int(count, f"--models item {item!r}: the number of networks")
        if nnets > MAX_NNETS:
            raise SpecError(
                f"--models item {item!r}: {nnets} networks per task is more than {MAX_NNETS}: "
                "use more array tasks (--array) with fewer networks each"
            )
        spec = ModelSpec(cls, arch, nnets)
        if spec.key in seen:
            raise SpecError(f"--models names {spec.key} twice: give each model once")
        seen.add(spec.key)
        specs.append(spec)
        current_cls = cls
    return specs


def parse_positive_int(text: str, what: str) -> int:
    """Parse a strictly positive decimal integer (no sign, no spaces, no underscores)."""
    if not re.fullmatch(r"[0-9]+", text or ""):
        raise SpecError(f"{what} must be a positive whole number, got {text!r}")
    value = int(text)
    if value <= 0:
        raise SpecError(f"{what} must be at least 1, got {value}")
    return value


def parse_tasks(text: str) -> list[int]:
    """Parse an index list like ``"0-3,7"`` into sorted unique indices."""
    if not text or not text.strip():
        raise SpecError('--tasks is empty: give indices like "0-3,7"')
    out: set[int] = set()
    for raw in text.split(","):
        part = raw.strip()
        m = re.fullmatch(r"([0-9]+)(?:-([0-9]+))?", part)
        if not m:
            raise SpecError(f"--tasks part {part!r} is not an index or a range like 0-3")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise SpecError(f"--tasks range {part!r} runs backwards: write {hi}-{lo}")
        if hi - lo > 10_000_000:
            raise SpecError(f"--tasks range {part!r} is too large")
        out.update(range(lo, hi + 1))
    return sorted(out)


def format_indices(indices: Sequence[int], sep: str = ",") -> str:
    """The inverse of :func:`parse_tasks`: ``[0,1,2,3,7] -> "0-3,7"`` (SLURM --array syntax;
    ``sep=", "`` for a message)."""
    parts: list[str] = []
    idx = sorted(set(indices))
    i = 0
    while i < len(idx):
        j = i
        while j + 1 < len(idx) and idx[j + 1] == idx[j] + 1:
            j += 1
        parts.append(str(idx[i]) if i == j else f"{idx[i]}-{idx[j]}")
        i = j + 1
    return sep.join(parts)


def parse_model_filter(text: str) -> list[str]:
    """Parse ``--models class.arch,class.arch`` as used by run/submit/cancel/resubmit: a count
    (``=N``) is an error, not silently dropped."""
    keys: list[str] = []
    cls: str | None = None
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            raise SpecError("--models has an empty item (stray comma?)")
        name, eq, _ = item.partition("=")
        name = name.strip()
        if eq:
            raise SpecError(f"--models item {item!r} has a count: here --models only selects "
                            f"models (counts are for generate and add); write {name!r}")
        if "." in name:
            cls, _, arch = name.partition(".")
            check_name(cls, "model class")
        elif cls is None:
            raise SpecError(f"--models item {item!r} needs a class: write class.architecture")
        else:
            arch = name
        check_name(arch, "model architecture")
        keys.append(f"{cls}.{arch}")
    return keys
