"""Hex-byte BPE, compatible with the vocab.json + merges.txt that aprender's `apr tokenize train` writes.

Layout (docs/aprender-interop.md, "Hex-byte BPE"): ids 0-4 are `<unk> <s> </s> <pad> <mask>`,
ids 5-260 the 256 lowercase hex strings "00".."ff", then one id per merge. A text is one word:
its UTF-8 bytes, one hex string each, with no pre-tokenization. Merges apply in file order,
left to right, non-overlapping; a merged token is the concatenation of its parts.
"""

from __future__ import annotations

import heapq
import itertools
import json
import re
from array import array
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from shiptwo.errors import FormatError, UsageError
from shiptwo.fileio import atomic_write_bytes
from shiptwo.progress import Progress
from shiptwo.tokenize._common import (
    EOS_CANDIDATES,
    HEX_BYTE_KEYS,
    HEX_BYTE_THRESHOLD,
    UNK_CANDIDATES,
    bytes_to_unicode,
)
from shiptwo.tokenize.detect import VocabFormat, count_hex_keys
from shiptwo.tokenize.vocabfiles import (
    check_vocab_ids,
    merges_text,
    read_json,
    read_merges,
    vocab_in_id_order,
)

SPECIAL_TOKENS: tuple[str, ...] = ("<unk>", "<s>", "</s>", "<pad>", "<mask>")
# Pair keys pack (left_id, right_id) into one int; ids stay far below 2**32.
_SHIFT = 32
_HEX_TOKEN = re.compile(r"(?:[0-9a-f]{2})+")


def _is_special(token: str) -> bool:
    return token.startswith("<") and token.endswith(">")


class HexByteTokenizer:
    """A hex-byte BPE vocab with aprender's encode/decode semantics.

    Build one with `HexByteTokenizer.load(dir)` or `train_hex_bpe(...)`; `save(dir)` writes the
    two files aprender reads.
    """

    format = VocabFormat.HEX_BYTE

    def __init__(
        self,
        vocab: dict[str, int],
        merges: Sequence[tuple[str, str]],
        *,
        source: Path | None = None,
        engine: bool = True,
    ):
        self.vocab: dict[str, int] = dict(vocab)
        self.merges: list[tuple[str, str]] = list(merges)
        self.source = source
        self.id_to_token: dict[int, str] = {i: t for t, i in self.vocab.items()}
        self.vocab_size = max(self.vocab.values()) + 1 if self.vocab else 0
        self.unk_id: int | None = next((self.vocab[t] for t in UNK_CANDIDATES if t in self.vocab), None)
        self.eos_id: int | None = next((self.vocab[t] for t in EOS_CANDIDATES if t in self.vocab), None)
        # Bytes whose hex key is missing get negative ids: they never merge and encode as <unk>.
        self._byte_ids = [self.vocab.get(k, -1 - b) for b, k in enumerate(HEX_BYTE_KEYS)]
        self._ranks: dict[int, tuple[int, int]] = {}
        for rank, (left, right) in enumerate(self.merges):
            key = (self.vocab[left] << _SHIFT) | self.vocab[right]
            # A repeated merge line keeps its first (lowest) rank, as a pass in file order would.
            self._ranks.setdefault(key, (rank, self.vocab[left + right]))
        self._decode_hex = {i: ("" if _is_special(t) else t) for i, t in self.id_to_token.items()}
        self._engine: Any = None
        self._engine_checked = not engine

    @property
    def engine(self) -> str:
        """Which encoder runs: "tokenizers" (Rust BPE, same ids) when the merges allow it, else "python"."""
        return "tokenizers" if self._rust() is not None else "python"

    def _rust(self) -> Any:
        # Hugging Face's BPE merges the lowest-ranked pair first, leftmost on ties. That equals
        # aprender's one pass per merge in file order whenever a merge's result can only take part
        # in later merges: every part is a byte or was created by an earlier merge, and no token is
        # created twice. Trained files always are; any other file takes the Python encoder.
        if self._engine_checked:
            return self._engine
        self._engine_checked = True
        if self.unk_id is None:
            return None
        created: dict[str, int] = {}
        for rank, (left, right) in enumerate(self.merges):
            if any(len(part) > 2 and created.get(part, rank) >= rank for part in (left, right)):
                return None
            if left + right in created:
                return None
            created[left + right] = rank
        table = bytes_to_unicode()

        def spell(token: str) -> str:
            return "".join(table[b] for b in bytes.fromhex(token)) if _HEX_TOKEN.fullmatch(token) else token

        spelled = {spell(t): i for t, i in self.vocab.items()}
        if len(spelled) != len(self.vocab):
            return None  # a hex token spells the same characters as a special one, e.g. "<unk>"
        from tokenizers import Tokenizer, pre_tokenizers
        from tokenizers.models import BPE

        rust = Tokenizer(
            BPE(
                vocab=spelled,
                merges=[(spell(a), spell(b)) for a, b in self.merges],
                unk_token=self.id_to_token[self.unk_id],
                fuse_unk=False,
            )
        )
        # The whole text is one word: byte characters, no regex split.
        rust.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        self._engine = rust
        return rust

    # -- files -----------------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path) -> HexByteTokenizer:
        """Load vocab.json + merges.txt from a dir (or from a vocab.json path beside merges.txt).

        Refuses (FormatError) a vocab with fewer than 200 of the 256 hex-byte keys: that is a
        GPT-2 byte-level vocab, and encoding with it would turn every byte into <unk>.
        """
        path = Path(path)
        vocab_path = path / "vocab.json" if path.is_dir() else path
        merges_path = vocab_path.with_name("merges.txt")
        vocab = read_json(vocab_path, what="vocab.json")
        if not isinstance(vocab, dict):
            raise FormatError(f"{vocab_path}: not an object of token -> non-negative integer id")
        check_vocab_ids(vocab_path, vocab)  # before vocab_size (the largest id + 1) sizes anything
        hex_keys = count_hex_keys(vocab)
        if hex_keys < HEX_BYTE_THRESHOLD:
            raise FormatError(
                f'{vocab_path}: {hex_keys} of 256 hex-byte keys ("00".."ff") present, below the '
                f"{HEX_BYTE_THRESHOLD} a hex-byte vocab needs: this is not a hex-byte vocab "
                "(GPT-2 byte-level?); load it with shiptwo.tokenize.load_tokenizer() or check it with "
                "`shiptwo tokenize detect`"
            )
        if len(set(vocab.values())) != len(vocab):
            raise FormatError(f"{vocab_path}: two tokens share one id; ids must be unique")
        merges = read_merges(merges_path, vocab, comment="#")  # aprender skips every `#` line
        return cls(vocab, merges, source=vocab_path)

    def save(self, directory: str | Path) -> None:
        """Write vocab.json (token -> id, in id order) and merges.txt (`#version: 0.2` first).

        `directory` is created if missing; UsageError when it is a file or cannot be created.
        """
        directory = Path(directory)
        if directory.exists() and not directory.is_dir():
            raise UsageError(
                f"{directory}: exists and is not a directory; the tokenizer is saved as a directory of "
                "vocab.json + merges.txt: choose a new or existing directory"
            )
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(
                f"{directory}: cannot create the directory ({exc.strerror or exc}); choose another path"
            ) from exc
        ordered = vocab_in_id_order(self.vocab)
        atomic_write_bytes(directory / "vocab.json", (json.dumps(ordered, indent=2) + "\n").encode())
        atomic_write_bytes(directory / "merges.txt", merges_text(self.merges).encode())

    # -- codec -----------------------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        """Encode a text as one word; bytes missing from the vocab become <unk>."""
        rust = self._rust()
        if rust is not None:
            ids: list[int] = rust.encode(text, add_special_tokens=False).ids
            return ids
        return self.encode_bytes(text.encode("utf-8"))

    def encode_batch(self, texts: Iterable[str]) -> list[list[int]]:
        """Encode many texts (in parallel when the Rust encoder runs)."""
        rust = self._rust()
        if rust is not None:
            return [e.ids for e in rust.encode_batch_fast(list(texts), add_special_tokens=False)]
        return [self.encode_bytes(t.encode("utf-8")) for t in texts]

    def encode_bytes(self, data: bytes) -> list[int]:
        """The Python encoder: one pass per merge in file order, done with a heap (any merges file)."""
        byte_ids = self._byte_ids
        ids = [byte_ids[b] for b in data]
        n = len(ids)
        if n > 1:
            ids = self._merge(ids)
        if self.unk_id is not None:
            unk = self.unk_id
            return [i if i >= 0 else unk for i in ids]
        if any(i < 0 for i in ids):
            missing = sorted({HEX_BYTE_KEYS[-1 - i] for i in ids if i < 0})
            raise FormatError(
                f"{self.source}: bytes {missing[:8]} are not in the vocab and it has no <unk> token"
            )
        return ids

    def _merge(self, ids: list[int]) -> list[int]:
        # Linked list over positions plus a heap of (rank, position): every merge is O(log n), and
        # popping in (rank, position) order is exactly a pass per merge in file order, left to right.
        ranks = self._ranks
        n = len(ids)
        nxt = list(range(1, n + 1))
        prv = list(range(-1, n - 1))
        heap: list[tuple[int, int, int, int]] = []
        for i in range(n - 1):
            found = ranks.get((ids[i] << _SHIFT) | ids[i + 1]) if ids[i] >= 0 and ids[i + 1] >= 0 else None
            if found is not None:
                heap.append((found[0], i, ids[i], ids[i + 1]))
        heapq.heapify(heap)
        alive = [True] * n
        while heap:
            rank, i, left, right = heapq.heappop(heap)
            j = nxt[i]
            if not alive[i] or j >= n or ids[i] != left or ids[j] != right:
                continue  # stale: a neighbour merged since this pair was pushed
            ids[i] = ranks[(left << _SHIFT) | right][1]
            alive[j] = False
            k = nxt[j]
            nxt[i] = k
            if k < n:
                prv[k] = i
            # A new pair whose merge comes earlier in the file than this one was already passed.
            p = prv[i]
            if p >= 0 and ids[p] >= 0:
                found = ranks.get((ids[p] << _SHIFT) | ids[i])
                if found is not None and found[0] > rank:
                    heapq.heappush(heap, (found[0], p, ids[p], ids[i]))
            if k < n and ids[k] >= 0:
                found = ranks.get((ids[i] << _SHIFT) | ids[k])
                if found is not None and found[0] > rank:
                    heapq.heappush(heap, (found[0], i, ids[i], ids[k]))
        return [ids[i] for i in range(n) if alive[i]]

    def decode(self, ids: Iterable[int]) -> str:
        """Drop `<...>` tokens, join the hex, and decode the bytes as UTF-8 (invalid bytes -> U+FFFD)."""
        table = self._decode_hex
        try:
            hexstr = "".join(table[i] for i in ids)
        except KeyError as exc:
            raise FormatError(
                f"{self.source}: id {exc.args[0]} is not in the vocab (size {self.vocab_size})"
            ) from exc
        return bytes.fromhex(hexstr).decode("utf-8", errors="replace")

    def id_to_piece(self, token_id: int) -> str:
        return self.id_to_token.get(token_id, f"<id {token_id}>")


# Corpora this many bytes long or longer index their positions in 64 bits, not C ints.
WIDE_FROM = 2**31 - 1
_TYPECODES = {array("i").itemsize: "i", array("q").itemsize: "q"}


def train_hex_bpe(
    texts: Iterable[str], *, vocab_size: int, min_frequency: int = 2, progress: Progress | None = None
) -> HexByteTokenizer:
    """Train a hex-byte BPE the way aprender does: each text is one word of its UTF-8 bytes.

    Repeatedly merges the most frequent adjacent pair (counted over all positions), ties broken
    by the smallest (left_id, right_id), until `vocab_size` ids exist or no pair occurs
    `min_frequency` times. UsageError when `min_frequency` < 1. `progress` is advanced by one
    per merge (its total: `vocab_size` less the 261 specials and bytes).

    Memory: the corpus as three C-int arrays and each pair's positions as one more, 16 bytes per
    corpus byte once indexed (about 25 while indexing), growing with the merges as positions are
    only appended: 38 at 1739 merges on 5 MB of Python (benchmarks/bench_tokenize_train.py).
    Sets and lists of Python ints cost 200, which put a 1 GB corpus out of reach of most machines.
    """
    if min_frequency < 1:
        raise UsageError(
            f"min_frequency must be >= 1 (a pair must occur at least once to merge), got {min_frequency}"
        )
    base = len(SPECIAL_TOKENS) + 256
    if vocab_size < base:
        raise FormatError(f"vocab_size {vocab_size} is below the {base} ids of specials and bytes")
    vocab: dict[str, int] = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    for b, key in enumerate(HEX_BYTE_KEYS):
        vocab[key] = len(SPECIAL_TOKENS) + b
    tokens: list[str] = list(vocab)
    sym, nxt, prv, where = _index_corpus(texts)
    # `where[pair]` holds the positions of the pair's left symbol, appended as occurrences appear
    # and never removed: an occurrence that a merge consumed is skipped when its pair's turn comes
    # (its symbols no longer match), and `count` alone is kept exact.
    count = {pair: len(ps) for pair, ps in where.items()}
    heap = [(-n, a, b) for (a, b), n in count.items()]
    heapq.heapify(heap)
    merges: list[tuple[str, str]] = []
    while len(tokens) < vocab_size and heap:
        neg, a, b = heapq.heappop(heap)
        if count.get((a, b)) != -neg:
            continue  # stale entry; the current count was pushed separately
        if -neg < min_frequency:
            break
        merged = tokens[a] + tokens[b]
        new_id = vocab.get(merged)
        if new_id is None:
            new_id = vocab[merged] = len(tokens)
            tokens.append(merged)
        merges.append((tokens[a], tokens[b]))
        if progress is not None:
            progress.update(1)
        del count[(a, b)]
        changed: set[tuple[int, int]] = set()
        for i in _sorted_unique(where.pop((a, b))):  # left to right, non-overlapping
            j = nxt[i]
            if sym[i] != a or j < 0 or sym[j] != b:
                continue  # consumed: by an earlier merge, or by the previous occurrence (a == b)
            p, k = prv[i], nxt[j]
            # The occurrences beside this one end; every live one is counted, except those of
            # the pair being merged, whose count is gone (`aaa`: merging the first `aa` ends the second).
            for gone in ((sym[p], a) if p >= 0 else None, (b, sym[k]) if k >= 0 else None):
                if gone in count:
                    count[gone] -= 1
                    changed.add(gone)
            sym[i] = new_id
            sym[j] = -1
            nxt[i] = k
            if k >= 0:
                prv[k] = i
            if p >= 0:
                pair = (sym[p], new_id)
                count[pair] = count.get(pair, 0) + 1
                where.setdefault(pair, array(sym.typecode)).append(p)
                changed.add(pair)
            if k >= 0:
                pair = (new_id, sym[k])
                count[pair] = count.get(pair, 0) + 1
                where.setdefault(pair, array(sym.typecode)).append(i)
                changed.add(pair)
        for pair in changed:
            n = count.get(pair, 0)
            if n > 0:
                heapq.heappush(heap, (-n, pair[0], pair[1]))
            else:
                count.pop(pair, None)
                where.pop(pair, None)
    return HexByteTokenizer(vocab, merges)


def _index_corpus(
    texts: Iterable[str],
) -> tuple[array[int], array[int], array[int], dict[tuple[int, int], array[int]]]:
    """The texts as one symbol sequence in a doubly linked list (`sym`, `nxt`, `prv`; -1 ends a
    text, so no pair crosses a boundary), and every adjacent pair's left positions, ascending.

    numpy does the per-byte work, in an order that frees each temporary before the next is made
    (peak about 25 bytes per corpus byte, while sorting); the arrays come back as `array`s, whose
    items index as Python ints for the merge loop. Positions are C ints (4 bytes) below WIDE_FROM
    bytes of corpus and 64-bit beyond, where a C int would wrap and cut texts short silently.
    """
    import numpy as np

    buf = bytearray()
    ends: list[int] = []
    for text in texts:
        data = text.encode("utf-8")
        if data:
            buf += data
            ends.append(len(buf))
    n = len(buf)
    index: type[np.signedinteger[Any]] = np.intc if n < WIDE_FROM else np.int64
    sym = np.frombuffer(buf, dtype=np.uint8).astype(index)
    del buf
    sym += len(SPECIAL_TOKENS)
    last = np.asarray(ends, dtype=np.intp) - 1
    # Every position but a text's last starts a pair; sorted by pair, stably, so that each pair's
    # positions stay ascending.
    starts_pair = np.ones(n, dtype=bool)
    starts_pair[last] = False
    left = np.flatnonzero(starts_pair).astype(index)
    del starts_pair
    stride = len(SPECIAL_TOKENS) + 256
    keys = sym[left]
    keys *= stride
    keys += sym[left + 1]  # < 261**2: fits a C int
    order = np.argsort(keys, kind="stable")
    left = left[order]
    keys = keys[order]
    del order
    bounds = [0, *(np.flatnonzero(np.diff(keys)) + 1).tolist(), len(keys)] if len(keys) else []
    where: dict[tuple[int, int], array[int]] = {}
    for s, e in itertools.pairwise(bounds):
        where[divmod(int(keys[s]), stride)] = _as_array(left[s:e])
    del left, keys
    nxt = np.arange(1, n + 1, dtype=index)
    nxt[last] = -1
    nxt_a = _as_array(nxt)
    del nxt
    prv = np.arange(-1, n - 1, dtype=index)
    prv[np.concatenate(([0], last[:-1] + 1)) if len(last) else last] = -1
    prv_a = _as_array(prv)
    del prv
    return _as_array(sym), nxt_a, prv_a, where


def _as_array(values: Any) -> array[int]:
    """A C-int or int64 numpy array's items as an `array` of the same width, copied once, without
    a bytes in between."""
    out = array(_TYPECODES[values.dtype.itemsize])
    out.frombytes(memoryview(values).cast("B"))
    return out


def _sorted_unique(positions: array[int]) -> array[int]:
    """`positions` ascending (they are appended in the order merges make them), each once."""
    import numpy as np

    dtype = np.intc if positions.itemsize == np.dtype(np.intc).itemsize else np.int64
    return _as_array(np.unique(np.frombuffer(positions, dtype=dtype)))
