"""JSON for scripts: what every `--format json` prints goes through `dumps` or `print_json`.

`json.dumps` writes a non-finite float as the bare tokens `NaN`, `Infinity` and `-Infinity`, which
are not JSON: `jq`, JavaScript's `JSON.parse` and Go's encoding/json all refuse the whole document.
Here such a float becomes the string Python prints for it ("nan", "inf", "-inf"), the same
spelling the training run directory uses (`shiptwo.qwen2.rundir.json_number`). A string rather
than null, because null already means "no value" in these outputs (the stats of an empty tensor)
and an infinite relative error is a value a script must be able to tell apart from a missing one.
Then `allow_nan=False` makes any float this walk missed an error instead of invalid output.
"""

from __future__ import annotations

import json
import math
from typing import Any


def finite_json(value: Any) -> Any:
    """`value` with every non-finite float (in dicts, lists and tuples, at any depth) as a string."""
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_json(v) for v in value]
    return value


def dumps(value: Any, *, indent: int | None = None, ensure_ascii: bool = True) -> str:
    """Strict JSON text of `value`: never NaN or Infinity (see the module docstring)."""
    return json.dumps(finite_json(value), indent=indent, ensure_ascii=ensure_ascii, allow_nan=False)


def print_json(value: Any, *, indent: int | None = None, ensure_ascii: bool = True) -> None:
    """Print `dumps(value)` to stdout: the one way a command writes its `--format json` result."""
    print(dumps(value, indent=indent, ensure_ascii=ensure_ascii))
